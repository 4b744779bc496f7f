package memstore

import (
	"bytes"
	"context"
	"sync"
	"time"

	"github.com/iotgate/iotgate"
)

// TokenStore is an in-memory iotgate.TokenStore that counts hash lookups
// and touches, for tests of auth's cache and touch policy.
type TokenStore struct {
	mu      sync.Mutex
	tokens  map[string]*iotgate.Token
	lookups int
	touches int
}

var _ iotgate.TokenStore = (*TokenStore)(nil)

// NewTokenStore returns an empty store.
func NewTokenStore() *TokenStore { return &TokenStore{tokens: map[string]*iotgate.Token{}} }

// Lookups is how many times TokenByHash was called.
func (m *TokenStore) Lookups() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.lookups
}

// Touches is how many times TouchToken was called.
func (m *TokenStore) Touches() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.touches
}

// Len is the number of tokens stored.
func (m *TokenStore) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.tokens)
}

func (m *TokenStore) CreateToken(_ context.Context, t *iotgate.Token) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.tokens[t.ID] = t.Clone()
	return nil
}

func (m *TokenStore) Token(_ context.Context, id string) (*iotgate.Token, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	t, ok := m.tokens[id]
	if !ok {
		return nil, iotgate.Errorf(iotgate.ENotFound, "token %s not found", id)
	}
	return t.Clone(), nil
}

func (m *TokenStore) TokenByHash(_ context.Context, h []byte) (*iotgate.Token, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.lookups++
	for _, t := range m.tokens {
		if bytes.Equal(t.Hash, h) {
			return t.Clone(), nil
		}
	}
	return nil, iotgate.Errorf(iotgate.ENotFound, "token not found")
}

func (m *TokenStore) Tokens(context.Context) ([]*iotgate.Token, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []*iotgate.Token
	for _, t := range m.tokens {
		out = append(out, t.Clone())
	}
	return out, nil
}

func (m *TokenStore) RevokeToken(_ context.Context, id string, at time.Time) (*iotgate.Token, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	t, ok := m.tokens[id]
	if !ok {
		return nil, iotgate.Errorf(iotgate.ENotFound, "token %s not found", id)
	}
	if t.RevokedAt == nil {
		t.RevokedAt = &at
	}
	return t.Clone(), nil
}

func (m *TokenStore) TouchToken(_ context.Context, id string, at time.Time) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.touches++
	if t, ok := m.tokens[id]; ok {
		t.LastUsedAt = &at
	}
	return nil
}
