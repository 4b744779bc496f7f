package webhooks_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/iotgate/iotgate"
	"github.com/iotgate/iotgate/internal/memstore"
	"github.com/iotgate/iotgate/webhooks"
)

// verifySignature checks an Iotgate-Signature header the way a receiver
// does, written from the documented format only (no code of the package):
// header "t=<unix>,v1=<hex>", v1 = HMAC-SHA256(secret, "<t>.<body>"),
// and t no older than tolerance.
func verifySignature(secret, header string, body []byte, now time.Time, tolerance time.Duration) error {
	var ts, sig string
	for _, part := range strings.Split(header, ",") {
		k, v, _ := strings.Cut(part, "=")
		switch k {
		case "t":
			ts = v
		case "v1":
			sig = v
		}
	}
	t, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || sig == "" {
		return errors.New("malformed signature header")
	}
	if d := now.Sub(time.Unix(t, 0)); d > tolerance || d < -tolerance {
		return errors.New("timestamp outside tolerance")
	}
	mac := hmac.New(sha256.New, []byte(secret))
	fmt.Fprintf(mac, "%d.", t)
	mac.Write(body)
	want := hex.EncodeToString(mac.Sum(nil))
	if !hmac.Equal([]byte(sig), []byte(want)) {
		return errors.New("signature mismatch")
	}
	return nil
}

// delivery is one request a receiver got.
type delivery struct {
	header  http.Header
	body    []byte
	payload webhooks.Payload
}

// receiver is an HTTP server that records deliveries and answers with
// status(n), n counting requests from 1.
type receiver struct {
	*httptest.Server
	mu       sync.Mutex
	got      []delivery
	status   func(n int) int
	delay    time.Duration
	inFlight int
	maxIn    int
}

func newReceiver(t testing.TB, status func(n int) int) *receiver {
	t.Helper()
	r := &receiver{status: status}
	if r.status == nil {
		r.status = func(int) int { return http.StatusNoContent }
	}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		var p webhooks.Payload
		_ = json.Unmarshal(body, &p)
		r.mu.Lock()
		r.inFlight++
		r.maxIn = max(r.maxIn, r.inFlight)
		r.got = append(r.got, delivery{header: req.Header.Clone(), body: body, payload: p})
		n, delay := len(r.got), r.delay
		r.mu.Unlock()
		time.Sleep(delay)
		r.mu.Lock()
		r.inFlight--
		r.mu.Unlock()
		w.WriteHeader(r.status(n))
	}))
	t.Cleanup(r.Close)
	return r
}

func (r *receiver) deliveries() []delivery {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]delivery(nil), r.got...)
}

// acked returns the event ids of the deliveries answered 2xx, in order.
func (r *receiver) acked() []int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	var ids []int64
	for i, d := range r.got {
		if s := r.status(i + 1); s >= 200 && s < 300 {
			for _, e := range d.payload.Events {
				ids = append(ids, e.ID)
			}
		}
	}
	return ids
}

// env is a webhook service and dispatcher over in-memory stores.
type env struct {
	log   *memstore.EventLog
	store *memstore.WebhookStore
	svc   *webhooks.Service
}

func newEnv(t testing.TB) *env {
	t.Helper()
	e := &env{log: &memstore.EventLog{}, store: memstore.NewWebhookStore()}
	e.svc = webhooks.NewService(e.store, e.log, webhooks.Config{AllowPrivate: true})
	return e
}

// fastConfig delivers quickly, for tests.
func fastConfig() webhooks.DispatcherConfig {
	return webhooks.DispatcherConfig{BatchWait: 20 * time.Millisecond, Timeout: 2 * time.Second,
		BackoffMin: 5 * time.Millisecond, BackoffMax: 40 * time.Millisecond, Poll: 10 * time.Millisecond,
		AllowPrivate: true}
}

// start runs a dispatcher until the test ends.
func (e *env) start(t *testing.T, cfg webhooks.DispatcherConfig) *webhooks.Dispatcher {
	t.Helper()
	d := webhooks.NewDispatcher(e.store, e.log, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { d.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return d
}

func (e *env) create(t testing.TB, url string, req webhooks.CreateRequest) *iotgate.Webhook {
	t.Helper()
	req.URL = url
	w, err := e.svc.Create(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// readings appends n reading events of device.
func (e *env) readings(device string, n int) []int64 {
	evs := make([]iotgate.Event, n)
	for i := range evs {
		evs[i] = iotgate.Event{Type: iotgate.EventReading, Time: time.Now().UTC(), Device: device,
			Data: json.RawMessage(fmt.Sprintf(`{"seq":%d}`, i))}
	}
	return e.log.Append(evs...)
}

// eventually polls cond until it holds or 10 s pass.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
