package api

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/iotgate/iotgate"
)

func TestConcurrency(t *testing.T) {
	l := newConcurrency(2, 3)
	steps := []struct {
		key         string
		ok, keyFull bool
	}{
		{"a", true, false}, {"a", true, false}, {"a", false, true}, // a's cap
		{"b", true, false}, {"b", false, false}, // the server's cap
	}
	for i, s := range steps {
		if ok, keyFull := l.acquire(s.key); ok != s.ok || keyFull != s.keyFull {
			t.Fatalf("step %d: acquire(%s) = %v, %v; want %v, %v", i, s.key, ok, keyFull, s.ok, s.keyFull)
		}
	}
	l.release("a")
	if ok, _ := l.acquire("b"); !ok {
		t.Error("a slot released by a is not free for b")
	}
	for _, k := range []string{"a", "b", "b"} {
		l.release(k)
	}
	if len(l.n) != 0 || l.all != 0 {
		t.Errorf("after every release: %v, %d in all; want nothing", l.n, l.all)
	}
}

// blockingDevices holds every page of readings or rejections until
// release is closed, as a slow page of huge rows would.
type blockingDevices struct {
	*fakeDevices
	started chan struct{}
	release chan struct{}
}

func (b *blockingDevices) Readings(ctx context.Context, jid string, f iotgate.ReadingFilter) (*iotgate.ReadingPage, error) {
	b.started <- struct{}{}
	<-b.release
	return b.fakeDevices.Readings(ctx, jid, f)
}

func (b *blockingDevices) Rejections(ctx context.Context, jid string, f iotgate.ReadingFilter) (*iotgate.RejectionPage, error) {
	b.started <- struct{}{}
	<-b.release
	return b.fakeDevices.Rejections(ctx, jid, f)
}

// TestHeavyRequestsBounded performs the attack of issue #15: one token
// asks for many large pages at once. Beyond its cap it gets 429
// too_many_concurrent with Retry-After, while another token is still
// served; beyond the server's cap everyone waits; other routes are not
// limited; the slots come back when the pages are done.
func TestHeavyRequestsBounded(t *testing.T) {
	fake := newFakeDevices()
	fake.add("thermo1@example.com", nil)
	svc := &blockingDevices{fakeDevices: fake, started: make(chan struct{}, 10), release: make(chan struct{})}
	reader := func(id string) *iotgate.Token {
		return &iotgate.Token{ID: id, Name: id, Scopes: []iotgate.Scope{iotgate.ScopeDevicesRead}}
	}
	auth := newFakeAuth(map[string]*iotgate.Token{"secret-b": reader("tok_b"), "secret-c": reader("tok_c")})
	srv := newServer(Config{MaxHeavyPerToken: 2, MaxHeavy: 3}, Deps{Devices: svc, Auth: auth})
	as := func(secret string) []string { return []string{"Authorization", "Bearer " + secret} }

	var wg sync.WaitGroup
	codes := make(chan int, 3)
	start := func(secret, target string) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			codes <- do(t, srv, http.MethodGet, target, nil, as(secret)...).Code
		}()
		<-svc.started
	}
	start(testToken, "/v1/devices/thermo1@example.com/readings?limit=1000")
	start(testToken, "/v1/devices/thermo1@example.com/rejections?limit=1000")

	tooMany := func(secret, want string) {
		t.Helper()
		rec := do(t, srv, http.MethodGet, "/v1/devices/thermo1@example.com/readings?limit=1000", nil, as(secret)...)
		if rec.Code != http.StatusTooManyRequests || rec.Header().Get("Retry-After") != "1" {
			t.Fatalf("status %d, Retry-After %q; want 429, 1 (body %s)", rec.Code, rec.Header().Get("Retry-After"), rec.Body.String())
		}
		if got := decode[ErrorResponse](t, rec); got.Code != iotgate.DetailTooManyConcurrent || !strings.Contains(got.Message, want) {
			t.Errorf("body %+v; want code %s, message with %q", got, iotgate.DetailTooManyConcurrent, want)
		}
	}
	tooMany(testToken, "this token has 2 list requests")
	// A device list is heavy only when it asks for states.
	if rec := do(t, srv, http.MethodGet, "/v1/devices?include=state", nil); rec.Code != http.StatusTooManyRequests {
		t.Errorf("GET /v1/devices?include=state with the token's slots taken: %d, want 429", rec.Code)
	}
	if rec := do(t, srv, http.MethodGet, "/v1/devices", nil); rec.Code != http.StatusOK {
		t.Errorf("GET /v1/devices with the token's slots taken: %d, want 200", rec.Code)
	}
	// Another token is served meanwhile (its page starts).
	start("secret-b", "/v1/devices/thermo1@example.com/readings")
	// The server's cap (3) is reached: a third token waits too.
	tooMany("secret-c", "on this server")
	// Cheap routes are not counted.
	if rec := do(t, srv, http.MethodGet, "/v1/devices/thermo1@example.com", nil); rec.Code != http.StatusOK {
		t.Errorf("GET device while pages are in progress: %d", rec.Code)
	}

	close(svc.release)
	wg.Wait()
	close(codes)
	for c := range codes {
		if c != http.StatusOK {
			t.Errorf("a page in progress ended with %d", c)
		}
	}
	if rec := do(t, srv, http.MethodGet, "/v1/devices/thermo1@example.com/readings", nil); rec.Code != http.StatusOK {
		t.Errorf("after the pages: %d, want 200", rec.Code)
	}
	heavyLimitEmpty(t, srv)
}

// heavyLimitEmpty checks that every slot was given back.
func heavyLimitEmpty(t *testing.T, srv *Server) {
	t.Helper()
	srv.heavyLimit.mu.Lock()
	defer srv.heavyLimit.mu.Unlock()
	if srv.heavyLimit.all != 0 || len(srv.heavyLimit.n) != 0 {
		t.Errorf("slots still held: %v", srv.heavyLimit.n)
	}
}

// TestPageBytesPassed checks that the list handlers hand the configured
// byte budget to the services, which hand it to the store.
func TestPageBytesPassed(t *testing.T) {
	devs := newFakeDevices()
	devs.add("thermo1@example.com", nil)
	cmds := &fakeCommands{cmds: map[string]*iotgate.Command{}}
	srv := newServer(Config{MaxPageBytes: 12345}, Deps{Devices: devs, Commands: cmds})
	for _, path := range []string{"readings", "rejections", "commands"} {
		if rec := do(t, srv, http.MethodGet, "/v1/devices/thermo1@example.com/"+path, nil); rec.Code != http.StatusOK {
			t.Fatalf("GET %s: %d %s", path, rec.Code, rec.Body.String())
		}
		got := devs.lastReadingFilter.MaxBytes
		if path == "commands" {
			got = cmds.lastFilter.MaxBytes
		}
		if got != 12345 {
			t.Errorf("%s: MaxBytes %d, want 12345", path, got)
		}
	}
}
