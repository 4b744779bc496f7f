package auth

import (
	"context"
	"testing"
	"time"

	"github.com/iotgate/iotgate"
	"github.com/iotgate/iotgate/internal/memstore"
)

// racingStore runs during after its first TokenByHash has read the
// token and before it returns it: a change committed elsewhere, and its
// notification, between a lookup's read and its caching.
type racingStore struct {
	*memstore.TokenStore
	during func()
}

func (r *racingStore) TokenByHash(ctx context.Context, h []byte) (*iotgate.Token, error) {
	t, err := r.TokenStore.TokenByHash(ctx, h)
	if f := r.during; f != nil {
		r.during = nil
		f()
	}
	return t, err
}

// TestForget checks that a token revoked by another instance is refused
// once its notification calls Forget, even when a lookup read it before
// and returns after.
func TestForget(t *testing.T) {
	tests := []struct {
		name string
		key  func(id string) string
		// race revokes during the first lookup instead of after it.
		race bool
	}{
		{name: "Cached", key: func(id string) string { return id }},
		{name: "CachedAll", key: func(string) string { return "" }},
		{name: "LookupInFlight", key: func(id string) string { return id }, race: true},
		{name: "LookupInFlightAll", key: func(string) string { return "" }, race: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			st := &racingStore{TokenStore: memstore.NewTokenStore()}
			s, err := NewService(st, Config{CacheTTL: time.Hour})
			if err != nil {
				t.Fatal(err)
			}
			tok, secret, err := s.Create(ctx, CreateRequest{Name: "x", Scopes: []iotgate.Scope{iotgate.ScopeAdmin}})
			if err != nil {
				t.Fatal(err)
			}
			// Another instance revokes it: the store changes, then the
			// notification arrives.
			revokeElsewhere := func() {
				if _, err := st.TokenStore.RevokeToken(ctx, tok.ID, time.Now()); err != nil {
					t.Fatal(err)
				}
				s.Forget(tt.key(tok.ID))
			}
			if tt.race {
				st.during = revokeElsewhere
			}
			// Read before the revocation: this request may pass.
			if _, err := s.Authenticate(ctx, secret); err != nil {
				t.Fatal(err)
			}
			if !tt.race {
				revokeElsewhere()
			}
			if _, err := s.Authenticate(ctx, secret); iotgate.ErrorCode(err) != iotgate.EUnauthorized {
				t.Errorf("after Forget: err = %v, want unauthorized", err)
			}
		})
	}
}

// TestForgetKeepsOthers checks that forgetting one token leaves the
// others cached.
func TestForgetKeepsOthers(t *testing.T) {
	ctx := context.Background()
	s, st, _ := newTestService(t, Config{CacheTTL: time.Hour})
	a, _, _ := s.Create(ctx, CreateRequest{Name: "a", Scopes: []iotgate.Scope{iotgate.ScopeAdmin}})
	_, secretB, _ := s.Create(ctx, CreateRequest{Name: "b", Scopes: []iotgate.Scope{iotgate.ScopeAdmin}})
	if _, err := s.Authenticate(ctx, secretB); err != nil {
		t.Fatal(err)
	}
	s.Forget(a.ID)
	if _, err := s.Authenticate(ctx, secretB); err != nil {
		t.Fatal(err)
	}
	if st.Lookups() != 1 {
		t.Errorf("%d store lookups, want 1: b stays cached", st.Lookups())
	}
}
