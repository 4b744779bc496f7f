//go:build integration

package postgres_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/iotgate/iotgate"
	"github.com/iotgate/iotgate/internal/memstore"
	"github.com/iotgate/iotgate/webhooks"
)

// TestWebhookStore runs the webhook store against a real PostgreSQL: CRUD,
// leases between two owners, and a cursor that never goes back.
func TestWebhookStore(t *testing.T) {
	ctx := context.Background()
	db, _, _ := newStack(t)
	at := time.Date(2026, 1, 2, 15, 4, 5, 123456000, time.UTC)
	w := &iotgate.Webhook{ID: "wh_1", URL: "https://hooks.example.com/x", Types: []iotgate.EventType{iotgate.EventReading, iotgate.EventPresence},
		Devices: iotgate.Selector{"site": "berlin", "floor": "2"}, Secret: "whsec_0123456789abcdef", TokenID: "tok_1",
		Cap: iotgate.Selector{"site": "berlin"}, CreatedAt: at, UpdatedAt: at, WebhookState: iotgate.WebhookState{Cursor: 41}}
	if err := db.CreateWebhook(ctx, w); err != nil {
		t.Fatal(err)
	}

	t.Run("RoundTrip", func(t *testing.T) {
		got, err := db.Webhook(ctx, "wh_1")
		if err != nil {
			t.Fatal(err)
		}
		if got.URL != w.URL || len(got.Types) != 2 || got.Types[1] != iotgate.EventPresence || got.Devices["floor"] != "2" ||
			got.Secret != w.Secret || got.TokenID != "tok_1" || got.Cap["site"] != "berlin" || !got.CreatedAt.Equal(at) ||
			got.Cursor != 41 || got.Paused || got.Failing || got.LastAttemptAt != nil || got.NextAttemptAt != nil {
			t.Errorf("%+v", got)
		}
		all, err := db.Webhooks(ctx)
		if err != nil || len(all) != 1 || all[0].ID != "wh_1" {
			t.Errorf("list %v, %v", all, err)
		}
	})
	t.Run("Errors", func(t *testing.T) {
		tests := []struct {
			name string
			err  error
			code string
		}{
			{"DuplicateID", db.CreateWebhook(ctx, w), iotgate.EConflict},
			{"Unknown", func() error { _, err := db.Webhook(ctx, "wh_x"); return err }(), iotgate.ENotFound},
			{"DeleteUnknown", db.DeleteWebhook(ctx, "wh_x"), iotgate.ENotFound},
			{"PauseUnknown", func() error { _, err := db.PauseWebhook(ctx, "wh_x", true, at); return err }(), iotgate.ENotFound},
			{"RecordUnknown", func() error {
				_, err := db.RecordDelivery(ctx, "a", "wh_x", iotgate.WebhookState{}, at, at)
				return err
			}(), iotgate.ENotFound},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				if got := iotgate.ErrorCode(tt.err); got != tt.code {
					t.Errorf("err = %v, want %s", tt.err, tt.code)
				}
			})
		}
	})
	t.Run("Lease", func(t *testing.T) {
		now := at.Add(time.Hour)
		a, err := db.ClaimWebhooks(ctx, "a", now, now.Add(time.Minute), 10)
		if err != nil || len(a) != 1 {
			t.Fatalf("a claims %v, %v", a, err)
		}
		b, err := db.ClaimWebhooks(ctx, "b", now.Add(time.Second), now.Add(time.Minute), 10)
		if err != nil || len(b) != 0 {
			t.Fatalf("b claims a leased webhook: %v, %v", b, err)
		}
		if _, err := db.RecordDelivery(ctx, "b", "wh_1", iotgate.WebhookState{Cursor: 50}, now, now.Add(time.Minute)); iotgate.ErrorCode(err) != iotgate.EConflict {
			t.Errorf("b records without the lease: %v", err)
		}
		if _, err := db.RecordDelivery(ctx, "a", "wh_1", iotgate.WebhookState{Cursor: 50}, now, now.Add(time.Minute)); err != nil {
			t.Fatal(err)
		}
		// The lease runs out: b takes over, and a's late write is refused.
		later := now.Add(2 * time.Minute)
		b, err = db.ClaimWebhooks(ctx, "b", later, later.Add(time.Minute), 10)
		if err != nil || len(b) != 1 || b[0].Cursor != 50 {
			t.Fatalf("b claims after expiry: %v, %v", b, err)
		}
		if _, err := db.RecordDelivery(ctx, "a", "wh_1", iotgate.WebhookState{Cursor: 60}, later, later.Add(time.Minute)); iotgate.ErrorCode(err) != iotgate.EConflict {
			t.Errorf("a records after losing the lease: %v", err)
		}
		if err := db.ReleaseWebhook(ctx, "a", "wh_1"); err != nil {
			t.Fatal(err)
		}
		if c, _ := db.ClaimWebhooks(ctx, "c", later, later.Add(time.Minute), 10); len(c) != 0 {
			t.Error("a's release freed b's lease")
		}
		if err := db.ReleaseWebhook(ctx, "b", "wh_1"); err != nil {
			t.Fatal(err)
		}
		if c, _ := db.ClaimWebhooks(ctx, "c", later, later.Add(time.Minute), 10); len(c) != 1 {
			t.Error("released webhook not claimable")
		}
		db.ReleaseWebhook(ctx, "c", "wh_1")
	})
	t.Run("CursorOnlyForward", func(t *testing.T) {
		now := at.Add(3 * time.Hour)
		if ws, _ := db.ClaimWebhooks(ctx, "a", now, now.Add(time.Minute), 10); len(ws) != 1 {
			t.Fatal("claim")
		}
		fail := now.Add(-time.Minute)
		next := now.Add(time.Hour)
		st := iotgate.WebhookState{Cursor: 10, LastError: "HTTP 500", Attempts: 3, FailingSince: &fail, NextAttemptAt: &next, LastAttemptAt: &now}
		if _, err := db.RecordDelivery(ctx, "a", "wh_1", st, now, now.Add(time.Minute)); err != nil {
			t.Fatal(err)
		}
		got, _ := db.Webhook(ctx, "wh_1")
		if got.Cursor != 50 || got.LastError != "HTTP 500" || got.Attempts != 3 || !got.NextAttemptAt.Equal(next) || !got.FailingSince.Equal(fail) {
			t.Errorf("after a backward write %+v", got.WebhookState)
		}
		db.ReleaseWebhook(ctx, "a", "wh_1")
		// A retry pending later is not due.
		if ws, _ := db.ClaimWebhooks(ctx, "a", now, now.Add(time.Minute), 10); len(ws) != 0 {
			t.Error("claimed before its retry is due")
		}
	})
	t.Run("PauseResume", func(t *testing.T) {
		now := at.Add(4 * time.Hour)
		ws, _ := db.ClaimWebhooks(ctx, "a", now.Add(2*time.Hour), now.Add(3*time.Hour), 10)
		if len(ws) != 1 {
			t.Fatal("claim")
		}
		st := ws[0].WebhookState
		st.Failing = true
		if _, err := db.RecordDelivery(ctx, "a", "wh_1", st, now, now.Add(3*time.Hour)); err != nil {
			t.Fatal(err)
		}
		db.ReleaseWebhook(ctx, "a", "wh_1")
		if ws, _ := db.ClaimWebhooks(ctx, "a", now.Add(5*time.Hour), now.Add(6*time.Hour), 10); len(ws) != 0 {
			t.Error("claimed a failing webhook")
		}
		p, err := db.PauseWebhook(ctx, "wh_1", true, now)
		if err != nil || !p.Paused || !p.Failing {
			t.Fatalf("pause %+v, %v", p, err)
		}
		// A delivery in flight learns of the pause when it records.
		if ws, _ := db.ClaimWebhooks(ctx, "a", now, now.Add(time.Minute), 10); len(ws) != 0 {
			t.Error("claimed a paused webhook")
		}
		r, err := db.PauseWebhook(ctx, "wh_1", false, now)
		if err != nil || r.Paused || r.Failing || r.Attempts != 0 || r.FailingSince != nil || r.NextAttemptAt != nil || r.Cursor != 50 || !r.UpdatedAt.Equal(now) {
			t.Fatalf("resume %+v, %v", r, err)
		}
		if ws, _ := db.ClaimWebhooks(ctx, "a", now, now.Add(time.Minute), 10); len(ws) != 1 {
			t.Error("resumed webhook not claimable")
		}
	})
	t.Run("PausedWhileLeased", func(t *testing.T) {
		// PauseResume left the webhook leased to a until at+4h+1m.
		now := at.Add(4 * time.Hour)
		if _, err := db.PauseWebhook(ctx, "wh_1", true, now); err != nil {
			t.Fatal(err)
		}
		paused, err := db.RecordDelivery(ctx, "a", "wh_1", iotgate.WebhookState{Cursor: 70}, now, now.Add(time.Minute))
		if err != nil || !paused {
			t.Errorf("record while paused: %v, %v", paused, err)
		}
		if got, _ := db.Webhook(ctx, "wh_1"); got.Cursor != 70 {
			t.Errorf("cursor %d: the delivery made before the pause is lost", got.Cursor)
		}
	})
	t.Run("Delete", func(t *testing.T) {
		if err := db.DeleteWebhook(ctx, "wh_1"); err != nil {
			t.Fatal(err)
		}
		if _, err := db.Webhook(ctx, "wh_1"); iotgate.ErrorCode(err) != iotgate.ENotFound {
			t.Errorf("after delete: %v", err)
		}
	})
}

// TestWebhookClaimExclusive: concurrent claims of two owners never lease
// one webhook to both.
func TestWebhookClaimExclusive(t *testing.T) {
	ctx := context.Background()
	db, _, _ := newStack(t)
	at := time.Now().UTC()
	for i := range 20 {
		w := &iotgate.Webhook{ID: "wh_" + string(rune('a'+i)), URL: "https://h.example.com/", Secret: "whsec_0123456789abcdef", CreatedAt: at, UpdatedAt: at}
		if err := db.CreateWebhook(ctx, w); err != nil {
			t.Fatal(err)
		}
	}
	got := make(chan []*iotgate.Webhook, 2)
	for _, owner := range []string{"a", "b"} {
		go func() {
			var all []*iotgate.Webhook
			for range 10 {
				ws, err := db.ClaimWebhooks(ctx, owner, at, at.Add(time.Hour), 3)
				if err != nil {
					t.Error(err)
				}
				all = append(all, ws...)
			}
			got <- all
		}()
	}
	seen := map[string]int{}
	for range 2 {
		for _, w := range <-got {
			seen[w.ID]++
		}
	}
	if len(seen) != 20 {
		t.Errorf("%d webhooks claimed, want 20", len(seen))
	}
	for id, n := range seen {
		if n != 1 {
			t.Errorf("%s claimed %d times", id, n)
		}
	}
}

// TestWebhookDispatchers runs two dispatchers (two instances) over the
// real webhook store: a receiver that fails for a while gets every event
// once, in order, never two deliveries of one webhook at once, and the
// cursor stored in PostgreSQL ends at the last event. The event log is
// the in-memory one (the PostgreSQL log is tested with it).
func TestWebhookDispatchers(t *testing.T) {
	ctx := context.Background()
	db, _, _ := newStack(t)
	log := &memstore.EventLog{}
	svc := webhooks.NewService(db, log, webhooks.Config{AllowPrivate: true})

	var mu sync.Mutex
	var acked []int64
	inFlight, maxIn, n := 0, 0, 0
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var p webhooks.Payload
		json.NewDecoder(r.Body).Decode(&p)
		mu.Lock()
		n++
		inFlight++
		maxIn = max(maxIn, inFlight)
		fail := n <= 3
		mu.Unlock()
		time.Sleep(2 * time.Millisecond)
		mu.Lock()
		inFlight--
		if !fail {
			for _, e := range p.Events {
				acked = append(acked, e.ID)
			}
		}
		mu.Unlock()
		if fail {
			w.WriteHeader(http.StatusBadGateway)
		}
	}))
	defer recv.Close()
	wh, err := svc.Create(ctx, webhooks.CreateRequest{URL: recv.URL})
	if err != nil {
		t.Fatal(err)
	}

	rctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for _, owner := range []string{"a", "b"} {
		d := webhooks.NewDispatcher(db, log, webhooks.DispatcherConfig{Owner: owner, BatchSize: 5, BatchWait: time.Millisecond,
			Poll: 5 * time.Millisecond, BackoffMin: 5 * time.Millisecond, BackoffMax: 20 * time.Millisecond, AllowPrivate: true})
		wg.Add(1)
		go func() { defer wg.Done(); d.Run(rctx) }()
	}
	defer func() { cancel(); wg.Wait() }()

	var want []int64
	for i := range 20 {
		want = append(want, log.Append(iotgate.Event{Type: iotgate.EventReading, Time: time.Now(), Device: "a@example.com",
			Data: json.RawMessage(fmt.Sprintf(`{"i":%d}`, i))})...)
		time.Sleep(time.Millisecond)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		got, _ := db.Webhook(ctx, wh.ID)
		if got.Cursor == want[len(want)-1] {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("cursor %d, want %d", got.Cursor, want[len(want)-1])
		}
		time.Sleep(10 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(acked, want) {
		t.Errorf("acknowledged %v, want %v", acked, want)
	}
	if maxIn != 1 {
		t.Errorf("%d deliveries in flight at once", maxIn)
	}
}
