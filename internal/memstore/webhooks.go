package memstore

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/iotgate/iotgate"
)

var _ iotgate.WebhookStore = (*WebhookStore)(nil)

// WebhookStore is an in-memory iotgate.WebhookStore with the lease
// semantics of the PostgreSQL store.
type WebhookStore struct {
	mu    sync.Mutex
	hooks map[string]*memHook
	order []string
}

type memHook struct {
	w          *iotgate.Webhook
	leaseOwner string
	leaseUntil time.Time
}

// NewWebhookStore returns an empty store.
func NewWebhookStore() *WebhookStore { return &WebhookStore{hooks: map[string]*memHook{}} }

func webhookNotFound(id string) error {
	return iotgate.Errorf(iotgate.ENotFound, "webhook %s not found", id)
}

func (m *WebhookStore) CreateWebhook(_ context.Context, w *iotgate.Webhook) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.hooks[w.ID]; ok {
		return iotgate.Errorf(iotgate.EConflict, "webhook %s exists", w.ID)
	}
	m.hooks[w.ID] = &memHook{w: w.Clone()}
	m.order = append(m.order, w.ID)
	return nil
}

func (m *WebhookStore) Webhook(_ context.Context, id string) (*iotgate.Webhook, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	h, ok := m.hooks[id]
	if !ok {
		return nil, webhookNotFound(id)
	}
	return h.w.Clone(), nil
}

func (m *WebhookStore) Webhooks(context.Context) ([]*iotgate.Webhook, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := []*iotgate.Webhook{}
	for _, id := range m.order {
		out = append(out, m.hooks[id].w.Clone())
	}
	return out, nil
}

func (m *WebhookStore) DeleteWebhook(_ context.Context, id string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.hooks[id]; !ok {
		return webhookNotFound(id)
	}
	delete(m.hooks, id)
	m.order = slices.DeleteFunc(m.order, func(s string) bool { return s == id })
	return nil
}

func (m *WebhookStore) PauseWebhook(_ context.Context, id string, paused bool, at time.Time) (*iotgate.Webhook, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	h, ok := m.hooks[id]
	if !ok {
		return nil, webhookNotFound(id)
	}
	h.w.Paused, h.w.UpdatedAt = paused, at
	if !paused {
		h.w.Failing, h.w.FailingSince, h.w.NextAttemptAt, h.w.Attempts = false, nil, nil, 0
	}
	return h.w.Clone(), nil
}

func (m *WebhookStore) ClaimWebhooks(_ context.Context, owner string, now, until time.Time, limit int) ([]*iotgate.Webhook, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := []*iotgate.Webhook{}
	for _, id := range m.order {
		if len(out) >= limit {
			break
		}
		h := m.hooks[id]
		w := h.w
		if w.Paused || w.Failing || w.NextAttemptAt != nil && w.NextAttemptAt.After(now) ||
			h.leaseOwner != "" && h.leaseUntil.After(now) {
			continue
		}
		h.leaseOwner, h.leaseUntil = owner, until
		out = append(out, w.Clone())
	}
	return out, nil
}

func (m *WebhookStore) RecordDelivery(_ context.Context, owner, id string, st iotgate.WebhookState, now, until time.Time) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	h, ok := m.hooks[id]
	if !ok {
		return false, webhookNotFound(id)
	}
	if h.leaseOwner != owner || !h.leaseUntil.After(now) {
		return false, iotgate.Errorf(iotgate.EConflict, "webhook %s is not leased to %s", id, owner)
	}
	st.Cursor = max(st.Cursor, h.w.Cursor)
	h.w.WebhookState = st
	h.w = h.w.Clone() // don't keep the caller's pointers
	h.leaseUntil = until
	return h.w.Paused, nil
}

func (m *WebhookStore) ReleaseWebhook(_ context.Context, owner, id string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if h, ok := m.hooks[id]; ok && h.leaseOwner == owner {
		h.leaseOwner, h.leaseUntil = "", time.Time{}
	}
	return nil
}
