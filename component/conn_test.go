package component

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/iotgate/iotgate/devices"
)

func startConn(t *testing.T, addr, secret string, mod func(*Config)) *Conn {
	t.Helper()
	cfg := Config{Addr: addr, Domain: "iot.localhost", Secret: secret, Version: "test",
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond, CloseTimeout: 50 * time.Millisecond}
	if mod != nil {
		mod(&cfg)
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Error("Run did not return after cancel")
		}
	})
	return c
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func isUp(c *Conn) bool {
	ok, _, _ := c.Health(context.Background())
	return ok
}

func TestBuiltinIQs(t *testing.T) {
	fs := newFakeServer(t, "s3cret")
	c := startConn(t, fs.addr(), "s3cret", nil)
	fc := fs.conn()
	waitFor(t, "stream up", func() bool { return isUp(c) })

	tests := []struct {
		name     string
		in       string
		wantType string
		want     string // substring of the reply's payload
	}{
		{"Ping", `<iq type='get' id='1' from='a@localhost/r' to='iot.localhost'><ping xmlns='urn:xmpp:ping'/></iq>`, "result", ""},
		{"DiscoInfo", `<iq type='get' id='2' from='a@localhost/r' to='iot.localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>`, "result", `<feature var="urn:xmpp:ping"/>`},
		{"DiscoInfoIdentity", `<iq type='get' id='3' from='a@localhost/r' to='iot.localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>`, "result", `<identity category="component" type="generic" name="iotgate"/>`},
		{"DiscoInfoNode", `<iq type='get' id='4' from='a@localhost/r' to='iot.localhost'><query xmlns='http://jabber.org/protocol/disco#info' node='x'/></iq>`, "error", "item-not-found"},
		{"DiscoItems", `<iq type='get' id='5' from='a@localhost/r' to='iot.localhost'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>`, "result", `disco#items`},
		{"Version", `<iq type='get' id='6' from='a@localhost/r' to='iot.localhost'><query xmlns='jabber:iq:version'/></iq>`, "result", `<name>iotgate</name><version>test</version>`},
		{"UnknownGet", `<iq type='get' id='7' from='a@localhost/r' to='iot.localhost'><query xmlns='urn:example:nope'/></iq>`, "error", "service-unavailable"},
		{"UnknownSet", `<iq type='set' id='8' from='a@localhost/r' to='iot.localhost'><x xmlns='urn:example:nope'/></iq>`, "error", "service-unavailable"},
		{"BadType", `<iq type='frob' id='9' from='a@localhost/r' to='iot.localhost'><ping xmlns='urn:xmpp:ping'/></iq>`, "error", "bad-request"},
		{"PingToOtherJID", `<iq type='get' id='10' from='a@localhost/r' to='x@iot.localhost'><ping xmlns='urn:xmpp:ping'/></iq>`, "error", "service-unavailable"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fc.send(tt.in)
			got := fc.read(t)
			if got.Type != tt.wantType {
				t.Fatalf("type = %q, want %q (payload %s)", got.Type, tt.wantType, got.Inner)
			}
			if !strings.Contains(got.Inner, tt.want) {
				t.Errorf("payload %q does not contain %q", got.Inner, tt.want)
			}
			if got.To != "a@localhost/r" {
				t.Errorf("to = %q, want the requester", got.To)
			}
			if !strings.HasSuffix(got.From, "iot.localhost") {
				t.Errorf("from = %q, want on iot.localhost", got.From)
			}
		})
	}
}

func TestSendIQReplyMatching(t *testing.T) {
	fs := newFakeServer(t, "s")
	c := startConn(t, fs.addr(), "s", nil)
	fc := fs.conn()
	waitFor(t, "stream up", func() bool { return isUp(c) })

	type result struct {
		st  *Stanza
		err error
	}
	res := make(chan result, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		st, err := c.SendIQ(ctx, &Stanza{Kind: KindIQ, Type: TypeGet, To: "thermo1@localhost/dev", Inner: []byte(`<q xmlns='urn:x'/>`)})
		res <- result{st, err}
	}()
	req := fc.read(t)
	if len(req.ID) < 20 {
		t.Errorf("IQ id %q is too short to be unguessable", req.ID)
	}
	if req.From != "iot.localhost" {
		t.Errorf("from = %q, want iot.localhost", req.From)
	}
	// Right id, wrong sender: must be ignored.
	fc.send(fmt.Sprintf(`<iq type='result' id='%s' from='evil@localhost/x' to='iot.localhost'><spoof/></iq>`, req.ID))
	// Right id, bare JID of the right device but not the resource asked.
	fc.send(fmt.Sprintf(`<iq type='result' id='%s' from='thermo1@localhost' to='iot.localhost'><spoof/></iq>`, req.ID))
	// Wrong id, right sender.
	fc.send(`<iq type='result' id='guess' from='thermo1@localhost/dev' to='iot.localhost'><spoof/></iq>`)
	select {
	case r := <-res:
		t.Fatalf("SendIQ returned on a spoofed reply: %v %v", r.st, r.err)
	case <-time.After(100 * time.Millisecond):
	}
	fc.send(fmt.Sprintf(`<iq type='result' id='%s' from='thermo1@localhost/dev' to='iot.localhost'><ok xmlns='urn:x'/></iq>`, req.ID))
	r := <-res
	if r.err != nil {
		t.Fatal(r.err)
	}
	if !strings.Contains(string(r.st.Inner), "<ok") {
		t.Errorf("got reply %s, want the genuine one", r.st)
	}
	if n := c.PendingIQs(); n != 0 {
		t.Errorf("pending IQs = %d after reply, want 0", n)
	}
}

func TestPendingIQsFailWhenStreamDrops(t *testing.T) {
	fs := newFakeServer(t, "s")
	c := startConn(t, fs.addr(), "s", nil)
	fc := fs.conn()
	waitFor(t, "stream up", func() bool { return isUp(c) })

	const n = 5
	errs := make(chan error, n)
	for range n {
		go func() {
			_, err := c.SendIQ(context.Background(), &Stanza{Kind: KindIQ, Type: TypeSet, To: "d@localhost/r", Inner: []byte(`<x xmlns='urn:x'/>`)})
			errs <- err
		}()
	}
	for range n {
		fc.read(t)
	}
	start := time.Now()
	fc.Close()
	for range n {
		err := <-errs
		var e *devices.Error
		if !errors.As(err, &e) || e.Code != devices.EUnavailable || e.Detail != "xmpp_unavailable" {
			t.Errorf("err = %v, want unavailable/xmpp_unavailable", err)
		}
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("pending IQs failed after %s, want at once", d)
	}
	// And it reconnects by itself.
	fs.conn()
	waitFor(t, "reconnect", func() bool { return isUp(c) && c.Reconnects() == 1 })
}

func TestSendWhileDown(t *testing.T) {
	c, err := New(Config{Addr: "127.0.0.1:1", Domain: "iot.localhost"})
	if err != nil {
		t.Fatal(err)
	}
	err = c.Send(context.Background(), &Stanza{Kind: KindMessage, To: "a@localhost"})
	var e *devices.Error
	if !errors.As(err, &e) || e.Detail != "xmpp_unavailable" {
		t.Fatalf("Send while down: %v, want xmpp_unavailable", err)
	}
	_, err = c.SendIQ(context.Background(), &Stanza{Kind: KindIQ, Type: TypeGet, To: "a@localhost"})
	if !errors.As(err, &e) || e.Detail != "xmpp_unavailable" {
		t.Fatalf("SendIQ while down: %v, want xmpp_unavailable", err)
	}
}

func TestSendFromOtherDomainRefused(t *testing.T) {
	fs := newFakeServer(t, "s")
	c := startConn(t, fs.addr(), "s", nil)
	fs.conn()
	waitFor(t, "stream up", func() bool { return isUp(c) })
	for _, from := range []string{"localhost", "a@localhost", "evil.iot.localhost", "not a jid@@"} {
		err := c.Send(context.Background(), &Stanza{Kind: KindMessage, From: from, To: "a@localhost"})
		if devices.ErrorCode(err) != devices.EInvalid {
			t.Errorf("from %q: err = %v, want invalid", from, err)
		}
	}
	if err := c.Send(context.Background(), &Stanza{Kind: KindMessage, From: "thermo@iot.localhost", To: "a@localhost"}); err != nil {
		t.Errorf("from a JID on our domain: %v", err)
	}
}

func TestStreamErrorsExplained(t *testing.T) {
	tests := []struct {
		name   string
		secret string
		reject string
		want   string
	}{
		{"WrongSecret", "wrong", "", "refused the component secret"},
		{"Conflict", "s", "conflict", "already holds the component domain"},
		{"HostUnknown", "s", "host-unknown", "does not serve the component domain iot.localhost"},
		{"SystemShutdown", "s", "system-shutdown", "shutting down"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := newFakeServer(t, "s")
			fs.setReject(tt.reject)
			c := startConn(t, fs.addr(), tt.secret, nil)
			// It keeps retrying.
			waitFor(t, "three attempts", func() bool { return fs.dialCount() >= 3 })
			ok, _, err := c.Health(context.Background())
			if ok || err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Health = %v, %v; want down with %q", ok, err, tt.want)
			}
		})
	}
}

func TestKeepAliveDetectsDeadServer(t *testing.T) {
	fs := newFakeServer(t, "s")
	c := startConn(t, fs.addr(), "s", func(cfg *Config) {
		cfg.KeepAlive = 50 * time.Millisecond
		cfg.KeepAliveTimeout = 100 * time.Millisecond
	})
	fs.conn() // never reads nor answers: a half-open peer
	waitFor(t, "stream up", func() bool { return isUp(c) })
	waitFor(t, "dead stream noticed", func() bool {
		ok, _, err := c.Health(context.Background())
		return !ok && err != nil && strings.Contains(err.Error(), "keepalive")
	})
}

func TestOversizedStanzaClosesStream(t *testing.T) {
	fs := newFakeServer(t, "s")
	c := startConn(t, fs.addr(), "s", func(cfg *Config) { cfg.MaxStanzaBytes = 4096 })
	fc := fs.conn()
	waitFor(t, "stream up", func() bool { return isUp(c) })
	go fc.send(`<message from='a@localhost/r' to='iot.localhost'><body>` + strings.Repeat("x", 64<<10) + `</body></message>`)
	waitFor(t, "stream closed", func() bool { return !isUp(c) })
	fs.conn()
	waitFor(t, "reconnect", func() bool { return isUp(c) })
}

func TestHandlerReceivesStanzas(t *testing.T) {
	fs := newFakeServer(t, "s")
	c := startConn(t, fs.addr(), "s", nil)
	got := make(chan *Stanza, 4)
	c.SetHandler(HandlerFunc(func(_ context.Context, st *Stanza) bool {
		got <- st
		return true
	}))
	fc := fs.conn()
	waitFor(t, "stream up", func() bool { return isUp(c) })
	fc.send(`<message from='d@localhost/r' to='iot.localhost' id='m1'><body>hi</body><r xmlns='urn:x' a='1'><v>2</v></r></message>`)
	select {
	case st := <-got:
		kids, err := st.Children()
		if err != nil || len(kids) != 2 {
			t.Fatalf("children = %v, %v", kids, err)
		}
		if kids[1].Name.Space != "urn:x" || string(kids[1].Raw) != `<r xmlns='urn:x' a='1'><v>2</v></r>` {
			t.Errorf("child = %+v (raw %s)", kids[1].Name, kids[1].Raw)
		}
		if st.From != "d@localhost/r" || st.ID != "m1" {
			t.Errorf("stanza attrs = %+v", st)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("handler not called")
	}
}

func TestBackoff(t *testing.T) {
	min, max := 100*time.Millisecond, 5*time.Second
	tests := []struct {
		n        int
		lo, high time.Duration
	}{
		{0, 50 * time.Millisecond, 100 * time.Millisecond},
		{1, 100 * time.Millisecond, 200 * time.Millisecond},
		{3, 400 * time.Millisecond, 800 * time.Millisecond},
		{10, 2500 * time.Millisecond, 5 * time.Second},
		{1000, 2500 * time.Millisecond, 5 * time.Second},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.n), func(t *testing.T) {
			for range 100 {
				if d := backoff(tt.n, min, max); d < tt.lo || d > tt.high {
					t.Fatalf("backoff(%d) = %s, want in [%s, %s]", tt.n, d, tt.lo, tt.high)
				}
			}
		})
	}
}

func TestNoGoroutineLeakAfterRun(t *testing.T) {
	before := runtime.NumGoroutine()
	t.Run("cycle", func(t *testing.T) {
		fs := newFakeServer(t, "s")
		c := startConn(t, fs.addr(), "s", nil)
		fc := fs.conn()
		waitFor(t, "stream up", func() bool { return isUp(c) })
		fc.Close()
		fs.conn()
		waitFor(t, "reconnect", func() bool { return isUp(c) })
	})
	waitFor(t, "goroutines to end", func() bool { return runtime.NumGoroutine() <= before+1 })
}
