package auth

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/iotgate/iotgate"
	"github.com/iotgate/iotgate/internal/memstore"
)

func TestTickets(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 1, 2, 15, 0, 0, 0, time.UTC)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	tokens := memstore.NewTokenStore()
	svc, err := NewService(tokens, Config{Now: clock, Bootstrap: strings.Repeat("b", MinBootstrapLen)})
	if err != nil {
		t.Fatal(err)
	}
	store := &memstore.TicketStore{}
	tickets := NewTickets(svc, store, nil)
	tok, _, err := svc.Create(ctx, CreateRequest{Name: "ui", Scopes: []iotgate.Scope{iotgate.ScopeDevicesRead}, Devices: iotgate.Selector{"site": "berlin"}})
	if err != nil {
		t.Fatal(err)
	}
	issue := func(t *testing.T, tok *iotgate.Token) string {
		t.Helper()
		secret, exp, err := tickets.Issue(ctx, tok)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(secret, TicketPrefix) || !exp.Equal(clock().Add(iotgate.EventTicketTTL)) {
			t.Fatalf("Issue = %q, %v", secret, exp)
		}
		return secret
	}

	t.Run("SingleUse", func(t *testing.T) {
		secret := issue(t, tok)
		got, err := tickets.Redeem(ctx, secret)
		if err != nil || got.ID != tok.ID || got.Devices["site"] != "berlin" {
			t.Fatalf("Redeem = %+v, %v", got, err)
		}
		if _, err := tickets.Redeem(ctx, secret); iotgate.ErrorCode(err) != iotgate.EUnauthorized {
			t.Errorf("second Redeem: %v, want unauthorized", err)
		}
	})
	t.Run("Unknown", func(t *testing.T) {
		if _, err := tickets.Redeem(ctx, TicketPrefix+"nope"); iotgate.ErrorCode(err) != iotgate.EUnauthorized {
			t.Errorf("Redeem: %v, want unauthorized", err)
		}
	})
	t.Run("Expired", func(t *testing.T) {
		secret := issue(t, tok)
		advance(iotgate.EventTicketTTL)
		if _, err := tickets.Redeem(ctx, secret); iotgate.ErrorCode(err) != iotgate.EUnauthorized {
			t.Errorf("Redeem: %v, want unauthorized", err)
		}
	})
	t.Run("Bootstrap", func(t *testing.T) {
		boot, err := svc.Authenticate(ctx, strings.Repeat("b", MinBootstrapLen))
		if err != nil {
			t.Fatal(err)
		}
		got, err := tickets.Redeem(ctx, issue(t, boot))
		if err != nil || got.ID != BootstrapID || !got.Allows(iotgate.ScopeAdmin) {
			t.Errorf("Redeem = %+v, %v", got, err)
		}
	})
	t.Run("RevokedToken", func(t *testing.T) {
		secret := issue(t, tok)
		if _, err := svc.Revoke(ctx, tok.ID); err != nil {
			t.Fatal(err)
		}
		if _, err := tickets.Redeem(ctx, secret); iotgate.ErrorCode(err) != iotgate.EUnauthorized {
			t.Errorf("Redeem: %v, want unauthorized", err)
		}
	})
	t.Run("Sweep", func(t *testing.T) {
		issue(t, tok)
		advance(2 * sweepEvery)
		issue(t, tok) // sweeps the first
		if n := store.Len(); n != 1 {
			t.Errorf("%d tickets stored, want 1", n)
		}
	})
}
