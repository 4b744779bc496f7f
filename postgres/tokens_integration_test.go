//go:build integration

package postgres_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/iotgate/iotgate"
	"github.com/iotgate/iotgate/auth"
)

// TestTokenStore runs the token store against a real PostgreSQL, and the
// auth service over it.
func TestTokenStore(t *testing.T) {
	ctx := context.Background()
	db, _, _ := newStack(t)
	at := time.Date(2026, 1, 2, 15, 4, 5, 123456000, time.UTC)
	exp := at.Add(time.Hour)
	h := auth.Hash("iotg_secret-1")
	tok := &iotgate.Token{ID: "tok_1", Name: "ops", Scopes: []iotgate.Scope{iotgate.ScopeDevicesRead, iotgate.ScopeCommandsSend},
		Devices: iotgate.Selector{"site": "berlin"}, Hash: h[:], CreatedAt: at, ExpiresAt: &exp}
	if err := db.CreateToken(ctx, tok); err != nil {
		t.Fatal(err)
	}

	t.Run("RoundTrip", func(t *testing.T) {
		for name, get := range map[string]func() (*iotgate.Token, error){
			"ByID":   func() (*iotgate.Token, error) { return db.Token(ctx, "tok_1") },
			"ByHash": func() (*iotgate.Token, error) { return db.TokenByHash(ctx, h[:]) },
		} {
			got, err := get()
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if got.ID != "tok_1" || got.Name != "ops" || len(got.Scopes) != 2 || got.Scopes[1] != iotgate.ScopeCommandsSend ||
				got.Devices["site"] != "berlin" || !bytes.Equal(got.Hash, h[:]) || !got.CreatedAt.Equal(at) ||
				got.ExpiresAt == nil || !got.ExpiresAt.Equal(exp) || got.RevokedAt != nil || got.LastUsedAt != nil {
				t.Errorf("%s: %+v", name, got)
			}
		}
	})
	t.Run("Errors", func(t *testing.T) {
		other := auth.Hash("iotg_other")
		tests := []struct {
			name string
			err  error
			code string
		}{
			{"DuplicateID", db.CreateToken(ctx, &iotgate.Token{ID: "tok_1", Name: "x", Scopes: []iotgate.Scope{iotgate.ScopeAdmin}, Hash: other[:], CreatedAt: at}), iotgate.EConflict},
			{"DuplicateHash", db.CreateToken(ctx, &iotgate.Token{ID: "tok_2", Name: "x", Scopes: []iotgate.Scope{iotgate.ScopeAdmin}, Hash: h[:], CreatedAt: at}), iotgate.EConflict},
			{"ShortHash", db.CreateToken(ctx, &iotgate.Token{ID: "tok_3", Name: "x", Scopes: []iotgate.Scope{iotgate.ScopeAdmin}, Hash: []byte("short"), CreatedAt: at}), iotgate.EInvalid},
			{"NoScopes", db.CreateToken(ctx, &iotgate.Token{ID: "tok_4", Name: "x", Hash: other[:], CreatedAt: at}), iotgate.EInvalid},
			{"UnknownID", func() error { _, err := db.Token(ctx, "tok_x"); return err }(), iotgate.ENotFound},
			{"UnknownHash", func() error { _, err := db.TokenByHash(ctx, other[:]); return err }(), iotgate.ENotFound},
			{"RevokeUnknown", func() error { _, err := db.RevokeToken(ctx, "tok_x", at); return err }(), iotgate.ENotFound},
			{"TouchUnknown", db.TouchToken(ctx, "tok_x", at), iotgate.ENotFound},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				if got := iotgate.ErrorCode(tt.err); got != tt.code {
					t.Errorf("err = %v, want %s", tt.err, tt.code)
				}
			})
		}
	})
	t.Run("TouchNeverGoesBack", func(t *testing.T) {
		for _, d := range []time.Duration{time.Minute, time.Second} {
			if err := db.TouchToken(ctx, "tok_1", at.Add(d)); err != nil {
				t.Fatal(err)
			}
		}
		got, _ := db.Token(ctx, "tok_1")
		if got.LastUsedAt == nil || !got.LastUsedAt.Equal(at.Add(time.Minute)) {
			t.Errorf("last used %v, want %v", got.LastUsedAt, at.Add(time.Minute))
		}
	})
	t.Run("RevokeOnce", func(t *testing.T) {
		first, err := db.RevokeToken(ctx, "tok_1", at.Add(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		again, err := db.RevokeToken(ctx, "tok_1", at.Add(2*time.Hour))
		if err != nil || first.RevokedAt == nil || !again.RevokedAt.Equal(*first.RevokedAt) {
			t.Errorf("revoked at %v then %v (%v), want the first time kept", first.RevokedAt, again.RevokedAt, err)
		}
	})
	t.Run("Service", func(t *testing.T) {
		svc, err := auth.NewService(db, auth.Config{})
		if err != nil {
			t.Fatal(err)
		}
		created, secret, err := svc.Create(ctx, auth.CreateRequest{Name: "svc", Scopes: []iotgate.Scope{iotgate.ScopeAdmin}})
		if err != nil {
			t.Fatal(err)
		}
		got, err := svc.Authenticate(ctx, secret)
		if err != nil || got.ID != created.ID {
			t.Fatalf("Authenticate = %+v, %v", got, err)
		}
		if stored, _ := db.Token(ctx, created.ID); stored.LastUsedAt == nil {
			t.Error("first use not recorded")
		}
		list, err := svc.List(ctx)
		if err != nil || len(list) != 2 || list[0].ID != "tok_1" || list[1].ID != created.ID {
			t.Errorf("List = %v, %v", list, err)
		}
		if _, err := svc.Revoke(ctx, created.ID); err != nil {
			t.Fatal(err)
		}
		if _, err := svc.Authenticate(ctx, secret); iotgate.ErrorCode(err) != iotgate.EUnauthorized {
			t.Errorf("after revocation: %v, want unauthorized", err)
		}
	})
}

// TestCommandSentBy: a command keeps the token that sent it.
func TestCommandSentBy(t *testing.T) {
	ctx := context.Background()
	db, _, d := commandFixture(t)
	c := newCommand(d, "sb", cmdTime, iotgate.CommandSent)
	c.TokenID, c.SentBy = "tok_1", "ops"
	if err := db.CreateCommand(ctx, c, cmdTime.Add(-time.Hour), 0); err != nil {
		t.Fatal(err)
	}
	anon := newCommand(d, "anon", cmdTime, iotgate.CommandSent)
	if err := db.CreateCommand(ctx, anon, cmdTime.Add(-time.Hour), 0); err != nil {
		t.Fatal(err)
	}
	for id, want := range map[string][2]string{"sb": {"tok_1", "ops"}, "anon": {"", ""}} {
		got, err := db.Command(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if got.TokenID != want[0] || got.SentBy != want[1] {
			t.Errorf("%s: sent by %q (%q), want %q (%q)", id, got.SentBy, got.TokenID, want[1], want[0])
		}
	}
}
