package memstore

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/iotgate/iotgate"
)

var _ iotgate.PresenceStore = (*PresenceStore)(nil)

// PresenceStore is an iotgate.PresenceStore in memory: it keeps every
// device's resources and the transitions they made, in order. It knows no
// devices, so it never skips one.
type PresenceStore struct {
	mu      sync.Mutex
	res     map[string]map[string]iotgate.Resource // bare JID -> full JID -> resource
	updated map[string]time.Time                   // full JID -> last confirmed, by time.Now
	ids     map[string]int64
	events  []iotgate.PresenceEvent
}

// ApplyPresence applies cs in order. It never fails.
func (p *PresenceStore) ApplyPresence(_ context.Context, cs []iotgate.PresenceChange) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.res == nil {
		p.res, p.updated, p.ids = map[string]map[string]iotgate.Resource{}, map[string]time.Time{}, map[string]int64{}
	}
	for _, c := range cs {
		rs := p.res[c.DeviceJID]
		if rs == nil {
			rs = map[string]iotgate.Resource{}
			p.res[c.DeviceJID] = rs
		}
		p.ids[c.DeviceJID] = c.DeviceID
		was := len(rs) > 0
		iotgate.ApplyPresence(rs, c.PresenceUpdate, c.At)
		p.updated[c.From] = time.Now()
		if online := len(rs) > 0; online != was {
			p.events = append(p.events, iotgate.PresenceEvent{DeviceID: c.DeviceID, DeviceJID: c.DeviceJID,
				At: c.At, Online: online, Resources: iotgate.SortedResources(rs)})
		}
	}
	return nil
}

// ExpirePresence removes the resources not confirmed within age (by
// time.Now). It never fails.
func (p *PresenceStore) ExpirePresence(_ context.Context, age time.Duration, at time.Time) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	before := time.Now().Add(-age)
	for jid, rs := range p.res {
		was := len(rs) > 0
		for full := range rs {
			if p.updated[full].Before(before) {
				delete(rs, full)
			}
		}
		if was && len(rs) == 0 {
			p.events = append(p.events, iotgate.PresenceEvent{DeviceID: p.ids[jid], DeviceJID: jid, At: at})
		}
	}
	return nil
}

// DeviceResources returns the resources of jids (all when nil).
func (p *PresenceStore) DeviceResources(_ context.Context, jids []string) (map[string][]iotgate.Resource, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := map[string][]iotgate.Resource{}
	for jid, rs := range p.res {
		if len(rs) > 0 && (jids == nil || slices.Contains(jids, jid)) {
			out[jid] = iotgate.SortedResources(rs)
		}
	}
	return out, nil
}

// Events returns the transitions recorded, oldest first.
func (p *PresenceStore) Events() []iotgate.PresenceEvent {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.events)
}
