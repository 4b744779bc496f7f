package devices

import (
	"cmp"
	"context"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/iotgate/iotgate"
)

// Presence tracks which devices are online, in memory: presence is
// volatile by nature and is rebuilt by probing every device after each
// (re)connection. Online/offline transitions are recorded in the store.
type Presence struct {
	store iotgate.PresenceStore
	clock iotgate.Clock
	log   *slog.Logger

	mu    sync.Mutex
	res   map[string]map[string]*iotgate.Resource // bare JID -> full JID -> resource
	ids   map[string]int64                        // bare JID -> device ID, for events
	stale bool
	since time.Time

	events   chan iotgate.PresenceEvent
	onOnline []func(jid string)
}

// NewPresence returns a tracker. Presence is stale until MarkFresh: iotgate
// doesn't know who is online before its stream is up and probes answered.
func NewPresence(store iotgate.PresenceStore, clock iotgate.Clock, log *slog.Logger) *Presence {
	if clock == nil {
		clock = time.Now
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Presence{store: store, clock: clock, log: log,
		res: map[string]map[string]*iotgate.Resource{}, ids: map[string]int64{},
		stale: true, since: clock(), events: make(chan iotgate.PresenceEvent, 10000)}
}

// OnOnline registers f to be called with a device's bare JID each time
// the device gains an available resource (for example to deliver queued
// commands). f is called outside the tracker's lock and must not block.
func (p *Presence) OnOnline(f func(jid string)) {
	p.mu.Lock()
	p.onOnline = append(p.onOnline, f)
	p.mu.Unlock()
}

// Update applies a presence stanza from device d.
func (p *Presence) Update(d *iotgate.Device, u iotgate.PresenceUpdate) {
	now := p.clock().UTC()
	var fire []func(string)
	defer func() {
		for _, f := range fire {
			f(d.JID)
		}
	}()
	p.mu.Lock()
	defer p.mu.Unlock()
	rs := p.res[d.JID]
	wasOnline := len(rs) > 0
	if u.Available {
		if rs == nil {
			rs = map[string]*iotgate.Resource{}
			p.res[d.JID] = rs
		}
		r := rs[u.From]
		if r == nil {
			r = &iotgate.Resource{JID: u.From, Since: now}
			rs[u.From] = r
			fire = p.onOnline
		}
		r.Show, r.Status, r.Priority = u.Show, u.Status, u.Priority
	} else if rs != nil {
		delete(rs, u.From)
		if len(rs) == 0 {
			delete(p.res, d.JID)
		}
	}
	p.ids[d.JID] = d.ID
	if online := len(p.res[d.JID]) > 0; online != wasOnline {
		p.record(iotgate.PresenceEvent{DeviceID: d.ID, DeviceJID: d.JID, At: now, Online: online, Resources: p.resources(d.JID)})
	}
}

// Forget drops a device (deleted, or unsubscribed).
func (p *Presence) Forget(jid string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.res, jid)
	delete(p.ids, jid)
}

// MarkStale says the stream is down: nobody is known to be online. Every
// online device gets an offline event.
func (p *Presence) MarkStale() {
	now := p.clock().UTC()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stale {
		return
	}
	for jid := range p.res {
		p.record(iotgate.PresenceEvent{DeviceID: p.ids[jid], DeviceJID: jid, At: now, Online: false})
	}
	clear(p.res)
	p.stale, p.since = true, now
}

// MarkFresh says the stream is up and probes were sent.
func (p *Presence) MarkFresh() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stale {
		p.stale, p.since = false, p.clock().UTC()
	}
}

func (p *Presence) record(ev iotgate.PresenceEvent) {
	if p.store == nil {
		return
	}
	select {
	case p.events <- ev:
	default:
		p.log.Warn("presence history queue full, event dropped", "device", ev.DeviceJID)
	}
}

// Online reports whether the device has an available resource, and whether
// that knowledge is stale (the stream is down).
func (p *Presence) Online(jid string) (online, stale bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.res[jid]) > 0, p.stale
}

// Resources returns the device's available resources, highest priority
// first (then most recent).
func (p *Presence) Resources(jid string) []iotgate.Resource {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.resources(jid)
}

// resources is Resources with p.mu held.
func (p *Presence) resources(jid string) []iotgate.Resource {
	out := make([]iotgate.Resource, 0, len(p.res[jid]))
	for _, r := range p.res[jid] {
		out = append(out, *r)
	}
	slices.SortFunc(out, func(a, b iotgate.Resource) int {
		if c := cmp.Compare(b.Priority, a.Priority); c != 0 {
			return c
		}
		return b.Since.Compare(a.Since)
	})
	return out
}

// OnlineJIDs returns the bare JIDs of every online device.
func (p *Presence) OnlineJIDs() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]string, 0, len(p.res))
	for jid := range p.res {
		out = append(out, jid)
	}
	return out
}

// Run writes presence history until ctx ends.
func (p *Presence) Run(ctx context.Context) {
	writeBatches(ctx, p.events, 1000, func(batch []iotgate.PresenceEvent) {
		if p.store == nil {
			return
		}
		if err := p.store.InsertPresenceEvents(context.WithoutCancel(ctx), batch); err != nil {
			p.log.Error("store presence history failed", "events", len(batch), "err", err)
		}
	})
}
