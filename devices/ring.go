package devices

import (
	"slices"
	"sync"
	"time"

	"github.com/iotgate/iotgate"
)

// readingRing keeps the newest readings of recently read devices in
// memory, already encoded as the API writes them, so that the newest
// pages of a device (GET /v1/devices/{jid}/readings) cost no query and
// no encoding. It answers exactly as the store would, byte for byte, or
// not at all (the caller then asks the store):
//
//   - A device's slot is seeded from the store, on a page miss, with its
//     newest readings (one page query of perDevice rows); from then on the
//     committer appends each reading it commits, after the commit, in the
//     store's form (postgres.StoredJSON: jsonb's key order and number
//     forms). A slot thus holds every reading of the device from its
//     oldest entry on; whole says it holds every reading the device has.
//     Pages that reach below the oldest entry of a slot that isn't whole,
//     or that would meet the page byte budget, go to the store.
//   - Readings committed by other instances arrive as change
//     notifications of each commit's newest reading (notified). One the
//     slot doesn't hold drops it (the next page seeds it again), unless
//     this instance is committing readings of the device (committing):
//     then the slot is suspect, serving nothing until the committer adds
//     that reading (its own commit, notified before it was added), and is
//     dropped otherwise. A lost notification
//     (the feed reconnecting), a device change or deletion drops the slot
//     (forget); a fill that raced with any change is discarded (gen).
//     While the feed is down (live), nothing is served nor filled: every
//     slot is dropped when it is back, before live turns true.
//   - Readings older than the retention (less a margin for the clocks of
//     the instance that drops them) are cut from the slot, and the slot is
//     no longer whole: the store may or may not still have them.
//
// A nil ring keeps nothing: its committed, notified and forget do
// nothing.
//
// Memory is bounded: at most perDevice readings per device, maxDevices
// slots and maxBytes in all (readings' XML, JSON and encoding, plus
// entryOverhead each); the least recently used slot goes first.
type readingRing struct {
	maxBytes, maxDevices, perDevice int
	retention                       time.Duration
	stored                          func([]byte) ([]byte, bool)
	encode                          func([]byte, *iotgate.Reading) []byte
	// live tells whether change notifications flow (nil: always); the
	// ring neither serves nor fills while they don't.
	live func() bool

	mu    sync.Mutex
	slots map[string]*ringSlot // by bare JID
	lru   ringSlot             // sentinel: lru.next is the most recent
	bytes int
	epoch uint64
	// served counts the pages answered.
	served uint64
}

// ringSlot is one device's readings, oldest first.
type ringSlot struct {
	jid     string
	devID   int64
	entries []ringEntry
	whole   bool
	filling bool   // created by startFill, empty until fill
	gen     uint64 // bumped by every change; a fill must find its own
	// committing counts this instance's commits in flight with readings
	// of the device; suspect are readings notified meanwhile that the
	// slot doesn't hold yet (they may be those commits').
	committing int
	suspect    []int64
	suspectAt  time.Time
	bytes      int
	prev       *ringSlot
	next       *ringSlot
}

type ringEntry struct {
	r    *iotgate.Reading // never changed once here
	enc  []byte
	cost int64 // at least the reading's size in the store's page budget
	mem  int
}

func (e ringEntry) mark() mark { return markOf(e.r) }

// Retention margin and the time a suspect slot waits for its own append.
const (
	ringRetentionMargin = time.Hour
	ringSuspectWait     = time.Second
	ringMaxSuspects     = 16
	// entryOverhead is what an entry costs beyond its bytes, roughly.
	entryOverhead = 256
)

func newReadingRing(maxBytes, maxDevices, perDevice int, retention time.Duration,
	stored func([]byte) ([]byte, bool), encode func([]byte, *iotgate.Reading) []byte,
) *readingRing {
	r := &readingRing{maxBytes: maxBytes, maxDevices: maxDevices, perDevice: perDevice, retention: retention,
		stored: stored, encode: encode, slots: map[string]*ringSlot{}}
	r.lru.next, r.lru.prev = &r.lru, &r.lru
	return r
}

// entry makes the entry of r, whose Data is already in the store's form.
func (g *readingRing) entry(r *iotgate.Reading) ringEntry {
	enc := g.encode(nil, r)
	// The store counts octet_length(xml) + pg_column_size(data); jsonb's
	// binary form is within 8 times its text (as PostgreSQL prints it)
	// plus 64 bytes: measured 6 times for an array of zeros, 18 bytes for
	// a bare 0 (TestStoredJSONMatchesPostgres holds it to the bound).
	cost := int64(len(r.XML)) + 8*int64(len(r.Data)) + 64
	return ringEntry{r: r, enc: enc, cost: cost, mem: len(r.XML) + len(r.Data) + len(enc) + entryOverhead}
}

func (g *readingRing) unlink(s *ringSlot) {
	s.prev.next, s.next.prev = s.next, s.prev
	s.prev, s.next = nil, nil
}

func (g *readingRing) touch(s *ringSlot) {
	if s.prev != nil {
		g.unlink(s)
	}
	s.next, s.prev = g.lru.next, &g.lru
	g.lru.next.prev = s
	g.lru.next = s
}

func (g *readingRing) drop(s *ringSlot) {
	g.unlink(s)
	delete(g.slots, s.jid)
	g.bytes -= s.bytes
	s.gen++
}

// evict drops least recently used slots, but not keep, until the ring is
// within its bounds.
func (g *readingRing) evict(keep *ringSlot) {
	for (g.bytes > g.maxBytes || len(g.slots) > g.maxDevices) && g.lru.prev != &g.lru {
		s := g.lru.prev
		if s == keep {
			if s.prev == &g.lru {
				break
			}
			s = s.prev
		}
		g.drop(s)
	}
	// keep alone past the bytes: trim its oldest.
	for keep != nil && g.bytes > g.maxBytes && len(keep.entries) > 0 {
		g.trimOldest(keep, 1)
	}
}

func (g *readingRing) trimOldest(s *ringSlot, n int) {
	for _, e := range s.entries[:n] {
		s.bytes -= e.mem
		g.bytes -= e.mem
	}
	s.entries = slices.Delete(s.entries, 0, n)
	s.whole = false
}

// fillToken is what startFill hands to fill.
type fillToken struct {
	slot  *ringSlot
	gen   uint64
	epoch uint64
}

// startFill makes an empty slot for device devID, to be filled with what
// the caller reads from the store next; ok is false when the device has a
// slot already (serving, or being filled by another request).
func (g *readingRing) startFill(jid string, devID int64) (fillToken, bool) {
	if g.live != nil && !g.live() {
		return fillToken{}, false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if _, ok := g.slots[jid]; ok {
		return fillToken{}, false
	}
	s := &ringSlot{jid: jid, devID: devID, filling: true}
	g.slots[jid] = s
	g.touch(s)
	g.evict(s)
	return fillToken{slot: s, gen: s.gen, epoch: g.epoch}, true
}

// fill gives the slot of t the newest readings of its device, newest
// first, as a page read from the store after startFill returned them;
// whole says they are all the device has. Nothing is kept if anything
// changed since startFill.
func (g *readingRing) fill(t fillToken, rs []*iotgate.Reading, whole bool) {
	entries := make([]ringEntry, 0, len(rs))
	for i := len(rs) - 1; i >= 0; i-- {
		c := *rs[i]
		entries = append(entries, g.entry(&c))
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	s := t.slot
	if g.slots[s.jid] != s || s.gen != t.gen || g.epoch != t.epoch || !s.filling {
		return
	}
	s.filling = false
	s.entries, s.whole = entries, whole
	for _, e := range entries {
		s.bytes += e.mem
	}
	g.bytes += s.bytes
	if len(s.entries) > g.perDevice {
		g.trimOldest(s, len(s.entries)-g.perDevice)
	}
	g.evict(s)
}

// abandon drops the slot of a fill whose read failed.
func (g *readingRing) abandon(t fillToken) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if s := t.slot; g.slots[s.jid] == s && s.gen == t.gen && s.filling {
		g.drop(s)
	}
}

// committing marks the slots of the devices of rs, about to be committed
// by this instance: a notification of their readings that arrives before
// committed adds them is then not taken for another instance's. It
// returns the slots to pass to committed.
func (g *readingRing) committing(rs []*iotgate.Reading) []*ringSlot {
	if g == nil {
		return nil
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.slots) == 0 {
		return nil
	}
	var marked []*ringSlot
	for _, r := range rs {
		if s := g.slots[r.DeviceJID]; s != nil && !slices.Contains(marked, s) {
			s.committing++
			marked = append(marked, s)
		}
	}
	return marked
}

// committed takes readings just committed (ID 0: skipped by the store)
// and adds each to its device's slot, if it has one; marked is what
// committing returned for the batch (whether or not it was stored).
func (g *readingRing) committed(rs []*iotgate.Reading, marked []*ringSlot) {
	if g == nil {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, s := range marked {
		s.committing--
	}
	if len(g.slots) == 0 {
		return
	}
	var touched []*ringSlot
	for _, r := range rs {
		s := g.slots[r.DeviceJID]
		if s == nil || r.ID == 0 {
			continue
		}
		if s.filling || s.devID != r.DeviceID {
			// The fill may have read the store before this commit.
			g.drop(s)
			continue
		}
		if !slices.Contains(touched, s) {
			touched = append(touched, s)
		}
		if !g.add(s, r) {
			g.drop(s)
		}
	}
	for _, s := range marked {
		if g.slots[s.jid] == s && !slices.Contains(touched, s) && len(s.suspect) > 0 && s.committing == 0 {
			g.drop(s) // nothing of it stored here: the suspects are another's
		}
	}
	for _, s := range touched {
		if g.slots[s.jid] != s {
			continue
		}
		if len(s.suspect) > 0 && s.committing == 0 {
			// Notified, and not in this commit of the device: another
			// instance's.
			g.drop(s)
			continue
		}
		if n := len(s.entries) - g.perDevice; n > 0 {
			g.trimOldest(s, n)
		}
		g.evict(s)
	}
}

// add puts r into s in order, in the store's form; false if it can't.
// The caller holds mu.
func (g *readingRing) add(s *ringSlot, r *iotgate.Reading) bool {
	s.suspect = slices.DeleteFunc(s.suspect, func(id int64) bool { return id == r.ID })
	m := markOf(r)
	i, found := slices.BinarySearchFunc(s.entries, m, func(e ringEntry, m mark) int {
		switch {
		case e.mark().after(m):
			return 1
		case m.after(e.mark()):
			return -1
		}
		return 0
	})
	switch {
	case found:
		return true
	case len(s.entries) == 0 && !s.whole:
		return false // it no longer knows where its readings start
	case i == 0 && !s.whole:
		return true // older than the slot's oldest: outside what it holds
	}
	data, ok := g.stored(r.Data)
	if !ok {
		return false
	}
	c := *r
	c.Data = data
	c.ReceivedAt = c.ReceivedAt.UTC()
	if c.DeviceTime != nil {
		t := c.DeviceTime.UTC()
		c.DeviceTime = &t
	}
	e := g.entry(&c)
	s.entries = slices.Insert(s.entries, i, e)
	s.bytes += e.mem
	g.bytes += e.mem
	return true
}

// notified takes the change notification of device r.DeviceJID's newest
// reading in a commit, by any instance (this one's too).
func (g *readingRing) notified(r *iotgate.Reading, now time.Time) {
	if g == nil {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	s := g.slots[r.DeviceJID]
	switch {
	case s == nil:
		return
	case s.filling || s.devID != r.DeviceID:
		g.drop(s)
		return
	}
	m := markOf(r)
	for _, e := range s.entries {
		if e.r.ID == r.ID {
			return
		}
	}
	if len(s.entries) > 0 && !s.whole && s.entries[0].mark().after(m) {
		return // below what the slot holds (a commit's older readings too)
	}
	if s.committing == 0 || len(s.suspect) >= ringMaxSuspects {
		// Another instance's reading: the next page seeds the slot again.
		g.drop(s)
		return
	}
	if len(s.suspect) == 0 {
		s.suspectAt = now
	}
	s.suspect = append(s.suspect, r.ID)
}

// forget drops the slot of jid ("": every slot): the device changed or
// was deleted, or notifications may have been lost.
func (g *readingRing) forget(jid string) {
	if g == nil {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if jid == "" {
		g.epoch++
		for _, s := range g.slots {
			g.drop(s)
		}
		return
	}
	if s := g.slots[jid]; s != nil {
		g.drop(s)
	}
}

// page answers f (limit clamped) for device devID from memory, as the
// store would; ok is false when it can't be sure to.
func (g *readingRing) page(jid string, devID int64, f iotgate.ReadingFilter, now time.Time) (*iotgate.ReadingPage, bool) {
	if g.live != nil && !g.live() {
		return nil, false
	}
	var c iotgate.TimeCursor
	if f.Cursor != "" {
		var err error
		if c, err = iotgate.ParseTimeCursor(f.Cursor); err != nil {
			return nil, false // the store says why
		}
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	s := g.slots[jid]
	if s == nil || s.filling {
		return nil, false
	}
	if s.devID != devID {
		g.drop(s)
		return nil, false
	}
	if len(s.suspect) > 0 {
		if now.Sub(s.suspectAt) >= ringSuspectWait {
			g.drop(s)
		}
		return nil, false
	}
	g.touch(s)
	if g.retention > 0 {
		cut := now.Add(-g.retention + ringRetentionMargin)
		n := 0
		for n < len(s.entries) && s.entries[n].r.ReceivedAt.Before(cut) {
			n++
		}
		if n > 0 {
			g.trimOldest(s, n)
		}
	}
	limit := max(f.Limit, 1)
	cm := mark{c.At, c.ID}
	match := func(e ringEntry) bool {
		at := e.r.ReceivedAt
		switch {
		case f.Since != nil && at.Before(*f.Since), f.Until != nil && !at.Before(*f.Until):
			return false
		case f.Cursor != "" && f.Desc:
			return cm.after(e.mark())
		case f.Cursor != "":
			return e.mark().after(cm)
		}
		return true
	}
	// below: the rows under the slot's oldest entry can't match f.
	below := s.whole
	if len(s.entries) > 0 {
		oldest := s.entries[0]
		if f.Since != nil && f.Since.After(oldest.r.ReceivedAt) {
			below = true
		}
		if !f.Desc && f.Cursor != "" && !oldest.mark().after(cm) {
			below = true
		}
	}
	picked := make([]int, 0, min(limit+1, len(s.entries)))
	if f.Desc {
		for i := len(s.entries) - 1; i >= 0 && len(picked) <= limit; i-- {
			if match(s.entries[i]) {
				picked = append(picked, i)
			}
		}
	} else {
		if !below {
			return nil, false
		}
		for i := 0; i < len(s.entries) && len(picked) <= limit; i++ {
			if match(s.entries[i]) {
				picked = append(picked, i)
			}
		}
	}
	if len(picked) <= limit && !below {
		return nil, false
	}
	n := min(len(picked), limit)
	var cost int64
	for _, i := range picked[:n] {
		cost += s.entries[i].cost
	}
	if cost >= iotgate.PageBytes(f.MaxBytes) {
		return nil, false
	}
	page := &iotgate.ReadingPage{Items: make([]*iotgate.Reading, n), Encoded: make([][]byte, n)}
	for k, i := range picked[:n] {
		page.Items[k], page.Encoded[k] = s.entries[i].r, s.entries[i].enc
	}
	g.served++
	if len(picked) > limit {
		last := page.Items[n-1]
		page.NextCursor = iotgate.TimeCursor{At: last.ReceivedAt, ID: last.ID}.String()
	}
	return page, true
}

// size returns the slots and bytes held, for tests.
func (g *readingRing) size() (slots, bytes int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.slots), g.bytes
}

// ReadingCacheStats returns how many pages of readings were served from
// memory since start, and the bytes the readings kept for them hold.
func (s *Service) ReadingCacheStats() (pages uint64, bytes int) {
	if s.ring == nil {
		return 0, 0
	}
	s.ring.mu.Lock()
	defer s.ring.mu.Unlock()
	return s.ring.served, s.ring.bytes
}
