//go:build integration

package postgres_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/iotgate/iotgate"
	"github.com/iotgate/iotgate/auth"
)

// TestTicketStore runs the event tickets on a real PostgreSQL: a ticket
// is redeemed once, even by concurrent redeemers (each on its own
// connection, as two instances would be), and expired ones are swept.
func TestTicketStore(t *testing.T) {
	ctx := context.Background()
	db, _, _ := newStack(t)
	svc, err := auth.NewService(db, auth.Config{})
	if err != nil {
		t.Fatal(err)
	}
	tok, _, err := svc.Create(ctx, auth.CreateRequest{Name: "ui", Scopes: []iotgate.Scope{iotgate.ScopeDevicesRead}})
	if err != nil {
		t.Fatal(err)
	}
	tickets := auth.NewTickets(svc, db, nil)

	t.Run("ConcurrentRedeemers", func(t *testing.T) {
		for round := range 20 {
			secret, _, err := tickets.Issue(ctx, tok)
			if err != nil {
				t.Fatal(err)
			}
			const redeemers = 4
			var wg sync.WaitGroup
			var mu sync.Mutex
			won, refused := 0, 0
			start := make(chan struct{})
			for range redeemers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					got, err := tickets.Redeem(ctx, secret)
					mu.Lock()
					defer mu.Unlock()
					switch {
					case err == nil && got.ID == tok.ID:
						won++
					case iotgate.ErrorCode(err) == iotgate.EUnauthorized:
						refused++
					default:
						t.Errorf("Redeem = %v, %v", got, err)
					}
				}()
			}
			close(start)
			wg.Wait()
			if won != 1 || refused != redeemers-1 {
				t.Fatalf("round %d: %d redeemers accepted, %d refused; want 1, %d", round, won, refused, redeemers-1)
			}
		}
	})
	t.Run("RoundTripAndSweep", func(t *testing.T) {
		at := time.Date(2026, 1, 2, 15, 4, 5, 123456000, time.UTC)
		old, fresh := auth.Hash("iotgt_old"), auth.Hash("iotgt_fresh")
		for _, tk := range []*iotgate.EventTicket{
			{Hash: old[:], TokenID: tok.ID, CreatedAt: at, ExpiresAt: at.Add(time.Minute)},
			{Hash: fresh[:], TokenID: tok.ID, CreatedAt: at, ExpiresAt: at.Add(time.Hour)},
		} {
			if err := db.CreateTicket(ctx, tk); err != nil {
				t.Fatal(err)
			}
		}
		if err := db.CreateTicket(ctx, &iotgate.EventTicket{Hash: old[:], TokenID: tok.ID, CreatedAt: at, ExpiresAt: at}); iotgate.ErrorCode(err) != iotgate.EConflict {
			t.Errorf("duplicate hash: %v, want conflict", err)
		}
		n, err := db.SweepTickets(ctx, at.Add(10*time.Minute))
		if err != nil || n != 1 {
			t.Fatalf("SweepTickets = %d, %v; want 1", n, err)
		}
		if _, err := db.RedeemTicket(ctx, old[:]); iotgate.ErrorCode(err) != iotgate.ENotFound {
			t.Errorf("swept ticket: %v, want not_found", err)
		}
		got, err := db.RedeemTicket(ctx, fresh[:])
		if err != nil || got.TokenID != tok.ID || !got.CreatedAt.Equal(at) || !got.ExpiresAt.Equal(at.Add(time.Hour)) {
			t.Errorf("RedeemTicket = %+v, %v", got, err)
		}
	})
}
