package memstore

import (
	"context"
	"sync"
	"time"

	"github.com/iotgate/iotgate"
)

var _ iotgate.TicketStore = (*TicketStore)(nil)

// TicketStore is an in-memory iotgate.TicketStore. The zero value is
// ready.
type TicketStore struct {
	mu      sync.Mutex
	tickets map[string]iotgate.EventTicket // by hash
}

// CreateTicket stores t. Errors: conflict.
func (m *TicketStore) CreateTicket(_ context.Context, t *iotgate.EventTicket) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.tickets == nil {
		m.tickets = map[string]iotgate.EventTicket{}
	}
	if _, ok := m.tickets[string(t.Hash)]; ok {
		return iotgate.Errorf(iotgate.EConflict, "ticket exists")
	}
	m.tickets[string(t.Hash)] = *t
	return nil
}

// RedeemTicket deletes and returns a ticket. Errors: not_found.
func (m *TicketStore) RedeemTicket(_ context.Context, hash []byte) (*iotgate.EventTicket, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	t, ok := m.tickets[string(hash)]
	if !ok {
		return nil, iotgate.Errorf(iotgate.ENotFound, "ticket not found")
	}
	delete(m.tickets, string(hash))
	return &t, nil
}

// SweepTickets deletes expired tickets. It never fails.
func (m *TicketStore) SweepTickets(_ context.Context, before time.Time) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for h, t := range m.tickets {
		if t.ExpiresAt.Before(before) {
			delete(m.tickets, h)
			n++
		}
	}
	return n, nil
}

// Len is the number of tickets stored.
func (m *TicketStore) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.tickets)
}
