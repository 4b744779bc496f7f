package webhooks_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/iotgate/iotgate"
	"github.com/iotgate/iotgate/internal/memstore"
	"github.com/iotgate/iotgate/webhooks"
)

func seq(from, to int64) []int64 {
	var out []int64
	for i := from; i <= to; i++ {
		out = append(out, i)
	}
	return out
}

func TestDeliverSigned(t *testing.T) {
	e := newEnv(t)
	r := newReceiver(t, nil)
	e.readings("old@example.com", 2) // before the webhook: not sent
	w := e.create(t, r.URL, webhooks.CreateRequest{})
	if !strings.HasPrefix(w.Secret, webhooks.SecretPrefix) || !strings.HasPrefix(w.ID, "wh_") {
		t.Fatalf("id %q secret %q", w.ID, w.Secret)
	}
	d := e.start(t, fastConfig())
	e.readings("thermo1@example.com", 3)
	eventually(t, "a delivery", func() bool { return len(r.deliveries()) == 1 })

	got := r.deliveries()[0]
	if err := verifySignature(w.Secret, got.header.Get("Iotgate-Signature"), got.body, time.Now(), 5*time.Minute); err != nil {
		t.Errorf("signature: %v (header %q)", err, got.header.Get("Iotgate-Signature"))
	}
	if err := verifySignature("whsec_wrong-secret-000000", got.header.Get("Iotgate-Signature"), got.body, time.Now(), 5*time.Minute); err == nil {
		t.Error("a wrong secret verifies")
	}
	for h, want := range map[string]string{"Content-Type": "application/json", "Iotgate-Event-Ids": "3-5", "Iotgate-Webhook-Id": w.ID} {
		if g := got.header.Get(h); g != want {
			t.Errorf("%s = %q, want %q", h, g, want)
		}
	}
	if got.payload.Webhook != w.ID || len(got.payload.Events) != 3 || got.payload.Events[0].Device != "thermo1@example.com" ||
		string(got.payload.Events[2].Data) != `{"seq":2}` {
		t.Errorf("payload %s", got.body)
	}
	eventually(t, "the cursor stored", func() bool {
		s, _ := e.store.Webhook(context.Background(), w.ID)
		return s.Cursor == 5 && s.LastSuccessAt != nil && s.Attempts == 0
	})
	if n := d.Deliveries()[webhooks.OutcomeOK]; n != 1 {
		t.Errorf("ok deliveries %d", n)
	}
}

func TestBatching(t *testing.T) {
	t.Run("FullBatches", func(t *testing.T) {
		e := newEnv(t)
		r := newReceiver(t, nil)
		e.create(t, r.URL, webhooks.CreateRequest{})
		e.readings("a@example.com", 5)
		cfg := fastConfig()
		cfg.BatchSize = 2
		e.start(t, cfg)
		eventually(t, "5 events", func() bool { return len(r.acked()) == 5 })
		var sizes []int
		for _, d := range r.deliveries() {
			sizes = append(sizes, len(d.payload.Events))
		}
		if !slices.Equal(sizes, []int{2, 2, 1}) {
			t.Errorf("batch sizes %v, want [2 2 1]", sizes)
		}
	})
	t.Run("WaitsForMore", func(t *testing.T) {
		e := newEnv(t)
		r := newReceiver(t, nil)
		e.create(t, r.URL, webhooks.CreateRequest{})
		cfg := fastConfig()
		cfg.BatchWait = 500 * time.Millisecond
		e.start(t, cfg)
		e.readings("a@example.com", 1)
		time.Sleep(100 * time.Millisecond)
		e.readings("a@example.com", 1)
		eventually(t, "2 events", func() bool { return len(r.acked()) == 2 })
		if n := len(r.deliveries()); n != 1 {
			t.Errorf("%d deliveries, want 1 batch of 2", n)
		}
	})
}

func TestTypesAndSelector(t *testing.T) {
	e := newEnv(t)
	r := newReceiver(t, nil)
	e.log.SetLabels("b@example.com", map[string]string{"site": "berlin"})
	e.log.SetLabels("p@example.com", map[string]string{"site": "paris"})
	tok := &iotgate.Token{ID: "tok_1", Devices: iotgate.Selector{"site": "berlin"}}
	if _, err := e.svc.Create(context.Background(), webhooks.CreateRequest{URL: r.URL, Token: tok}); iotgate.ErrorCode(err) != iotgate.EForbidden {
		t.Fatalf("devices {} under a berlin token: %v, want forbidden", err)
	}
	w := e.create(t, r.URL, webhooks.CreateRequest{Token: tok, Devices: iotgate.Selector{"site": "berlin"},
		Types: []iotgate.EventType{iotgate.EventReading}})
	if w.TokenID != "tok_1" || w.Cap["site"] != "berlin" {
		t.Errorf("token %q cap %v", w.TokenID, w.Cap)
	}
	e.start(t, fastConfig())
	e.readings("p@example.com", 2)
	e.log.Append(iotgate.Event{Type: iotgate.EventPresence, Time: time.Now(), Device: "b@example.com", Data: []byte(`{}`)})
	want := e.readings("b@example.com", 2)
	eventually(t, "berlin's readings", func() bool { return len(r.acked()) >= 2 })
	time.Sleep(50 * time.Millisecond)
	if got := r.acked(); !slices.Equal(got, want) {
		t.Errorf("delivered %v, want %v", got, want)
	}
	eventually(t, "the cursor past everything", func() bool {
		s, _ := e.store.Webhook(context.Background(), w.ID)
		return s.Cursor == want[1]
	})
}

// TestDownThenUp: a receiver that fails for a while gets every event once,
// in order, once it is back.
func TestDownThenUp(t *testing.T) {
	e := newEnv(t)
	r := newReceiver(t, func(n int) int {
		if n <= 6 {
			return http.StatusServiceUnavailable
		}
		return http.StatusOK
	})
	w := e.create(t, r.URL, webhooks.CreateRequest{})
	cfg := fastConfig()
	cfg.BatchSize = 3
	d := e.start(t, cfg)
	var want []int64
	for range 5 {
		want = append(want, e.readings("a@example.com", 2)...)
		time.Sleep(10 * time.Millisecond)
	}
	eventually(t, "every event", func() bool { return len(r.acked()) >= len(want) })
	time.Sleep(50 * time.Millisecond)
	if got := r.acked(); !slices.Equal(got, want) {
		t.Errorf("acknowledged %v, want %v", got, want)
	}
	if n := d.Deliveries()[webhooks.OutcomeHTTPError]; n != 6 {
		t.Errorf("http_error deliveries %d, want 6", n)
	}
	s, _ := e.store.Webhook(context.Background(), w.ID)
	if s.Failing || s.Attempts != 0 || s.LastError != "" || s.FailingSince != nil {
		t.Errorf("state after recovery %+v", s.WebhookState)
	}
}

func TestFailingAfterRetryLimit(t *testing.T) {
	e := newEnv(t)
	var ok atomic.Bool
	r := newReceiver(t, func(int) int {
		if ok.Load() {
			return http.StatusOK
		}
		return http.StatusInternalServerError
	})
	w := e.create(t, r.URL, webhooks.CreateRequest{})
	cfg := fastConfig()
	cfg.RetryLimit = 150 * time.Millisecond
	d := e.start(t, cfg)
	want := e.readings("a@example.com", 3)
	ctx := context.Background()
	eventually(t, "failing", func() bool {
		s, _ := e.store.Webhook(ctx, w.ID)
		return s.Failing
	})
	s, _ := e.store.Webhook(ctx, w.ID)
	if s.LastError != "HTTP 500 Internal Server Error" || s.Cursor != 0 || s.Attempts < 2 || s.NextAttemptAt != nil {
		t.Errorf("failing state %+v", s.WebhookState)
	}
	lag, err := e.svc.Lag(ctx, s)
	if err != nil || lag.Events != 3 || lag.Seconds <= 0 {
		t.Errorf("lag %+v, %v", lag, err)
	}
	if ev, secs := d.Lag(); ev != 3 || secs <= 0 {
		t.Errorf("dispatcher lag %d events, %v s", ev, secs)
	}
	n := len(r.deliveries())
	time.Sleep(100 * time.Millisecond)
	if m := len(r.deliveries()); m != n {
		t.Errorf("a failing webhook was tried %d more times", m-n)
	}
	// Resuming retries from the cursor.
	ok.Store(true)
	if _, err := e.svc.SetPaused(ctx, w.ID, false); err != nil {
		t.Fatal(err)
	}
	eventually(t, "delivery after resume", func() bool {
		s, _ := e.store.Webhook(ctx, w.ID)
		return s.Cursor == want[2] && !s.Failing
	})
}

func TestPaused(t *testing.T) {
	e := newEnv(t)
	r := newReceiver(t, nil)
	w := e.create(t, r.URL, webhooks.CreateRequest{})
	ctx := context.Background()
	if _, err := e.svc.SetPaused(ctx, w.ID, true); err != nil {
		t.Fatal(err)
	}
	e.start(t, fastConfig())
	want := e.readings("a@example.com", 2)
	time.Sleep(100 * time.Millisecond)
	if n := len(r.deliveries()); n != 0 {
		t.Fatalf("a paused webhook got %d deliveries", n)
	}
	e.svc.SetPaused(ctx, w.ID, false)
	eventually(t, "delivery after resume", func() bool { return slices.Equal(r.acked(), want) })
}

func TestTimeout(t *testing.T) {
	e := newEnv(t)
	r := newReceiver(t, nil)
	r.delay = 300 * time.Millisecond
	w := e.create(t, r.URL, webhooks.CreateRequest{})
	cfg := fastConfig()
	cfg.Timeout = 50 * time.Millisecond
	d := e.start(t, cfg)
	e.readings("a@example.com", 1)
	eventually(t, "a timeout", func() bool { return d.Deliveries()[webhooks.OutcomeTimeout] > 0 })
	eventually(t, "the error recorded", func() bool {
		s, _ := e.store.Webhook(context.Background(), w.ID)
		return strings.Contains(s.LastError, "no answer within 50ms")
	})
}

func TestRedirectNotFollowed(t *testing.T) {
	var hit atomic.Bool
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hit.Store(true) }))
	defer target.Close()
	redirect := httptest.NewServer(http.RedirectHandler(target.URL, http.StatusTemporaryRedirect))
	defer redirect.Close()
	e := newEnv(t)
	w := e.create(t, redirect.URL, webhooks.CreateRequest{})
	e.start(t, fastConfig())
	e.readings("a@example.com", 1)
	eventually(t, "the error recorded", func() bool {
		s, _ := e.store.Webhook(context.Background(), w.ID)
		return strings.Contains(s.LastError, "307") && strings.Contains(s.LastError, "redirects are not followed")
	})
	if hit.Load() {
		t.Error("the redirect was followed")
	}
}

// TestRestartResumes: a new dispatcher (a restarted iotgate) continues from
// the stored cursor.
func TestRestartResumes(t *testing.T) {
	e := newEnv(t)
	r := newReceiver(t, nil)
	e.create(t, r.URL, webhooks.CreateRequest{})
	ctx, cancel := context.WithCancel(context.Background())
	d1 := webhooks.NewDispatcher(e.store, e.log, webhooks.DispatcherConfig{Poll: 10 * time.Millisecond, BatchWait: time.Millisecond, AllowPrivate: true})
	done := make(chan struct{})
	go func() { d1.Run(ctx); close(done) }()
	want := e.readings("a@example.com", 3)
	eventually(t, "first events", func() bool { return len(r.acked()) == 3 })
	cancel()
	<-done
	want = append(want, e.readings("a@example.com", 3)...)
	e.start(t, fastConfig())
	eventually(t, "the rest", func() bool { return len(r.acked()) == 6 })
	if got := r.acked(); !slices.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
}

// TestLeaseRespected: two dispatchers (two instances) never deliver one
// webhook at the same time, and together deliver every event once in
// order.
func TestLeaseRespected(t *testing.T) {
	e := newEnv(t)
	r := newReceiver(t, nil)
	r.delay = 5 * time.Millisecond
	e.create(t, r.URL, webhooks.CreateRequest{})
	cfg := fastConfig()
	cfg.BatchSize = 2
	cfg.BatchWait = time.Millisecond
	cfg.Poll = time.Millisecond
	cfg.Owner = "a"
	e.start(t, cfg)
	cfg.Owner = "b"
	e.start(t, cfg)
	var want []int64
	for range 20 {
		want = append(want, e.readings("a@example.com", 3)...)
		time.Sleep(2 * time.Millisecond)
	}
	eventually(t, "every event", func() bool { return len(r.acked()) >= len(want) })
	time.Sleep(50 * time.Millisecond)
	if got := r.acked(); !slices.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.maxIn != 1 {
		t.Errorf("%d deliveries of one webhook in flight at once", r.maxIn)
	}
}

func TestLimit(t *testing.T) {
	e := newEnv(t)
	svc := webhooks.NewService(e.store, e.log, webhooks.Config{AllowPrivate: true, MaxWebhooks: 2})
	ctx := context.Background()
	for i := range 3 {
		_, err := svc.Create(ctx, webhooks.CreateRequest{URL: "http://127.0.0.1:9/hook"})
		if want := i == 2; want != (iotgate.ErrorCode(err) == iotgate.EConflict) {
			t.Errorf("webhook %d: %v", i, err)
		}
	}
}

// TestPauseInFlight: a webhook paused while its backlog is being delivered
// stops after the batch in flight, which is acknowledged and kept.
func TestPauseInFlight(t *testing.T) {
	e := newEnv(t)
	var svc *webhooks.Service
	var id atomic.Value
	r := newReceiver(t, func(n int) int {
		if n == 1 {
			svc.SetPaused(context.Background(), id.Load().(string), true)
		}
		return http.StatusOK
	})
	svc = e.svc
	w := e.create(t, r.URL, webhooks.CreateRequest{})
	id.Store(w.ID)
	e.readings("a@example.com", 10)
	cfg := fastConfig()
	cfg.BatchSize = 2
	e.start(t, cfg)
	eventually(t, "the first batch recorded", func() bool {
		s, _ := e.store.Webhook(context.Background(), w.ID)
		return s.Cursor == 2
	})
	time.Sleep(100 * time.Millisecond)
	if n := len(r.deliveries()); n != 1 {
		t.Errorf("%d deliveries after the pause, want 1", n)
	}
}

// countingStore counts the claims of a webhook store.
type countingStore struct {
	*memstore.WebhookStore
	claims atomic.Int64
}

func (s *countingStore) ClaimWebhooks(ctx context.Context, owner string, now, until time.Time, limit int) ([]*iotgate.Webhook, error) {
	s.claims.Add(1)
	return s.WebhookStore.ClaimWebhooks(ctx, owner, now, until, limit)
}

// TestWakeupClaims: every commit wakes the dispatcher, but it claims on a
// wake-up only when one may find a due webhook that isn't being delivered:
// never without webhooks or with paused ones, and again once its webhook
// was released, so that wake-ups alone (no poll) still deliver.
func TestWakeupClaims(t *testing.T) {
	tests := []struct {
		name string
		// webhook: one exists (paused: a paused one).
		webhook, paused bool
	}{
		{name: "NoWebhook"},
		{name: "Paused", webhook: true, paused: true},
		{name: "Due", webhook: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			r := newReceiver(t, nil)
			if tt.webhook {
				w := e.create(t, r.URL, webhooks.CreateRequest{})
				if tt.paused {
					if _, err := e.svc.SetPaused(context.Background(), w.ID, true); err != nil {
						t.Fatal(err)
					}
				}
			}
			store := &countingStore{WebhookStore: e.store}
			wake := make(chan struct{}) // a send returns once Run took it
			cfg := fastConfig()
			cfg.Poll = time.Hour // wake-ups only, after the claim at start
			cfg.BatchWait = -1
			cfg.Wakeups = wake
			d := webhooks.NewDispatcher(store, e.log, cfg)
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { d.Run(ctx); close(done) }()
			defer func() { cancel(); <-done }()
			eventually(t, "the claim at start", func() bool { return store.claims.Load() == 1 })
			due := tt.webhook && !tt.paused

			var want []int64
			sent := int64(0)
			for range 5 {
				want = append(want, e.readings("a@example.com", 2)...)
				wake <- struct{}{}
				sent++
				// A wake-up taken while the webhook's worker was
				// still releasing it finds nothing: the next one does.
				deadline := time.Now().Add(10 * time.Second)
				for due && len(r.acked()) < len(want) {
					if time.Now().After(deadline) {
						t.Fatalf("delivered %v after %d wake-ups, want %v", r.acked(), sent, want)
					}
					select {
					case wake <- struct{}{}:
						sent++
					case <-time.After(5 * time.Millisecond):
					}
				}
			}
			wake <- struct{}{} // the wake-ups before have been handled
			sent++
			claims := store.claims.Load() - 1
			switch {
			case !due && claims != 0:
				t.Errorf("%d claims on %d wake-ups, want 0", claims, sent)
			case due && (claims < 1 || claims > sent):
				// A worker still running delivers the next events
				// itself: fewer claims than rounds is fine.
				t.Errorf("%d claims on %d wake-ups, want 1..%d", claims, sent, sent)
			}
			if !due {
				want = nil
			}
			if got := r.acked(); !slices.Equal(got, want) {
				t.Errorf("delivered %v, want %v", got, want)
			}
		})
	}
}
