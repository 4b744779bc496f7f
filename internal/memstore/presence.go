package memstore

import (
	"context"
	"slices"
	"sync"

	"github.com/iotgate/iotgate"
)

var _ iotgate.PresenceStore = (*PresenceStore)(nil)

// PresenceStore is an iotgate.PresenceStore in memory: it keeps the events it
// is given, in order.
type PresenceStore struct {
	mu     sync.Mutex
	events []iotgate.PresenceEvent
}

// InsertPresenceEvents records evs. It never fails.
func (p *PresenceStore) InsertPresenceEvents(_ context.Context, evs []iotgate.PresenceEvent) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.events = append(p.events, evs...)
	return nil
}

// Events returns the events recorded, oldest first.
func (p *PresenceStore) Events() []iotgate.PresenceEvent {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.events)
}
