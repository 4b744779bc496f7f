package devices

import (
	"sync"
	"time"

	"github.com/iotgate/iotgate"
)

// cache is what the device service keeps in memory so that REST reads and
// lookups (ingest, presence, commands) need no query: device records by
// JID, and the newest reading of recently read or active devices.
//
// Every write through this Service invalidates device records after
// Register, Update and Delete, and hands every committed batch of
// readings to committed. Writes made by other instances on the same
// database reach it through Service.Forget (change notifications, see
// docs/design.md). Device records also expire after the service's
// CacheTTL, as a bound on what a change made behind iotgate's back (by
// hand, in SQL) or a lost notification can hide.
//
// Two races are closed here rather than by the callers:
//   - a fill (a record or reading read from the store on a miss) that
//     started before an invalidation must not be kept: fills carry the
//     epoch they started in, and invalidations bump it;
//   - a reading filled from the store may be older than one committed
//     meanwhile: seen holds the newest committed reading of every device
//     since start (a few dozen bytes per device, never evicted), and a
//     fill older than it is not kept. Readings committed by other
//     instances move it too (storedElsewhere).
//
// Memory is bounded: at most maxDevices records, maxStrangers JIDs known
// not to be registered and maxLatest readings (about 1 KB each with their
// XML and JSON); beyond that an arbitrary entry of the same kind is
// evicted (Go's map iteration order is random, which makes it a random
// eviction at the cost of a map lookup). Strangers are kept apart so that
// a flood from rotating JIDs never evicts a registered device.
type cache struct {
	maxDevices, maxStrangers, maxLatest int

	mu        sync.Mutex
	devs      map[string]cachedDevice // registered, by bare JID
	strangers map[string]time.Time    // known not registered since, by bare JID
	epoch     uint64
	latest    map[string]latestEntry // by bare JID
	seen      map[int64]mark         // by device ID
}

type cachedDevice struct {
	dev *iotgate.Device // never modified once cached
	at  time.Time
}

// latestEntry is the newest reading of the device with ID devID; r is nil
// when it has none. The device ID guards against a JID deleted and
// registered again: the old device's entry then doesn't match.
type latestEntry struct {
	devID int64
	r     *iotgate.Reading
	enc   []byte // r encoded for the API, made at its first state read
}

// mark is a position in a device's readings, in the store's order
// (received_at, then id).
type mark struct {
	at time.Time
	id int64
}

func markOf(r *iotgate.Reading) mark { return mark{r.ReceivedAt, r.ID} }

func (m mark) after(o mark) bool {
	if c := m.at.Compare(o.at); c != 0 {
		return c > 0
	}
	return m.id > o.id
}

func newCache(maxDevices, maxStrangers, maxLatest int) *cache {
	return &cache{maxDevices: maxDevices, maxStrangers: maxStrangers, maxLatest: maxLatest,
		devs: map[string]cachedDevice{}, strangers: map[string]time.Time{},
		latest: map[string]latestEntry{}, seen: map[int64]mark{}}
}

// device returns the cached record of jid if it is younger than ttl at
// now; dev is nil for a JID known not to be registered. epoch is what a
// fill after a miss passes to putDevice.
func (c *cache) device(jid string, now time.Time, ttl time.Duration) (dev *iotgate.Device, ok bool, epoch uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.devs[jid]; ok && now.Sub(e.at) < ttl {
		return e.dev, true, c.epoch
	}
	if at, ok := c.strangers[jid]; ok && now.Sub(at) < ttl {
		return nil, true, c.epoch
	}
	return nil, false, c.epoch
}

// sender tells whether jid is cached as a registered device, even
// expired (registered), or else is cached fresh as not registered
// (known).
func (c *cache) sender(jid string, now time.Time, ttl time.Duration) (registered, known bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.devs[jid]; ok {
		return true, true
	}
	at, ok := c.strangers[jid]
	return false, ok && now.Sub(at) < ttl
}

// currentEpoch is what a fill passes to putDevice or putLatest.
func (c *cache) currentEpoch() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.epoch
}

// putDevice caches a record read from the store (nil: not registered)
// unless an invalidation happened since epoch.
func (c *cache) putDevice(jid string, dev *iotgate.Device, at time.Time, epoch uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if epoch != c.epoch {
		return
	}
	if dev == nil {
		delete(c.devs, jid)
		if _, ok := c.strangers[jid]; !ok && len(c.strangers) >= c.maxStrangers {
			evictOne(c.strangers)
		}
		c.strangers[jid] = at
		return
	}
	delete(c.strangers, jid)
	if _, ok := c.devs[jid]; !ok && len(c.devs) >= c.maxDevices {
		evictOne(c.devs)
	}
	c.devs[jid] = cachedDevice{dev: dev, at: at}
}

// forget drops the cached record of jid after a write to the device;
// deleted also drops its reading and mark (a device registered again
// under the JID starts afresh).
func (c *cache) forget(jid string, deleted bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.epoch++
	delete(c.strangers, jid)
	if !deleted {
		delete(c.devs, jid)
		return
	}
	if e, ok := c.devs[jid]; ok && e.dev != nil {
		delete(c.seen, e.dev.ID)
	}
	if e, ok := c.latest[jid]; ok {
		delete(c.seen, e.devID)
	}
	delete(c.devs, jid)
	delete(c.latest, jid)
}

// stale is what a change made elsewhere (another instance, told through
// the store) costs the cache: jid's record ("" for every record) is read
// again at its next lookup, but stays known as a registered sender
// meanwhile, so that a device's readings don't queue as a stranger's
// behind the stranger throttle; it is no longer known as a stranger, and
// its newest reading is read again. Bumping the epoch keeps out a fill
// that read the store before the change and stores after it.
func (c *cache) stale(jid string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.epoch++
	if jid == "" {
		for j, e := range c.devs {
			e.at = time.Time{}
			c.devs[j] = e
		}
		clear(c.strangers)
		clear(c.latest)
		return
	}
	if e, ok := c.devs[jid]; ok {
		e.at = time.Time{}
		c.devs[jid] = e
	}
	delete(c.strangers, jid)
	delete(c.latest, jid)
}

// storedElsewhere takes a device's newest reading in a commit made by
// another instance (or this one, already seen through committed): it
// moves the device's mark, so that lastSeen shows it and a fill older
// than it is not kept, and drops a cached reading older than it, read
// again at its next use.
func (c *cache) storedElsewhere(r *iotgate.Reading) {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := markOf(r)
	if old, ok := c.seen[r.DeviceID]; ok && !m.after(old) {
		return
	}
	c.seen[r.DeviceID] = m
	if e, ok := c.latest[r.DeviceJID]; ok && (e.devID != r.DeviceID || e.r == nil || m.after(markOf(e.r))) {
		delete(c.latest, r.DeviceJID)
	}
}

// lastSeen returns when the newest reading of device id committed since
// start was received.
func (c *cache) lastSeen(id int64) (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	m, ok := c.seen[id]
	return m.at, ok
}

// latestReading returns the cached newest reading of device devID (nil:
// it has none) and the time of its newest reading committed since start.
func (c *cache) latestReading(jid string, devID int64) (r *iotgate.Reading, ok bool, seen time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	seen = c.seen[devID].at
	e, ok := c.latest[jid]
	if !ok || e.devID != devID {
		return nil, false, seen
	}
	return e.r, true, seen
}

// encodedLatest returns r, the cached newest reading of device devID,
// encoded with encode: made once, at the first call, and kept with it
// (nil if r is no longer the cached one).
func (c *cache) encodedLatest(jid string, devID int64, r *iotgate.Reading, encode func([]byte, *iotgate.Reading) []byte) []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.latest[jid]
	if !ok || e.devID != devID || e.r != r || r == nil {
		return nil
	}
	if e.enc == nil {
		e.enc = encode(nil, r)
		c.latest[jid] = e
	}
	return e.enc
}

// putLatest caches r (nil: none), read from the store as the newest
// reading of device devID, unless it is older than one committed since or
// the device was invalidated since epoch. It returns the newest reading
// it knows of, r or the cached one.
func (c *cache) putLatest(jid string, devID int64, r *iotgate.Reading, epoch uint64) *iotgate.Reading {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.latest[jid]; ok && e.devID == devID && e.r != nil && (r == nil || markOf(e.r).after(markOf(r))) {
		return e.r
	}
	if m, ok := c.seen[devID]; epoch != c.epoch || ok && (r == nil || m.after(markOf(r))) {
		return r
	}
	c.setLatest(jid, latestEntry{devID: devID, r: r})
	return r
}

// committed takes a batch of readings just committed: each device's
// newest becomes its cached latest reading, and moves its mark. Readings
// the store skipped (ID 0: their device was deleted) are ignored.
func (c *cache) committed(rs []*iotgate.Reading) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, r := range rs {
		if r.ID == 0 {
			continue
		}
		m := markOf(r)
		if old, ok := c.seen[r.DeviceID]; ok && !m.after(old) {
			continue
		}
		c.seen[r.DeviceID] = m
		c.setLatest(r.DeviceJID, latestEntry{devID: r.DeviceID, r: r})
	}
}

func (c *cache) setLatest(jid string, e latestEntry) {
	if _, ok := c.latest[jid]; !ok && len(c.latest) >= c.maxLatest {
		evictOne(c.latest)
	}
	c.latest[jid] = e
}

// sizes returns how many records and readings are cached, for tests.
func (c *cache) sizes() (devs, latest int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.devs), len(c.latest)
}

// evictOne deletes an arbitrary entry of m.
func evictOne[V any](m map[string]V) {
	for k := range m {
		delete(m, k)
		return
	}
}
