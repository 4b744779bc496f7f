package component

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/iotgate/iotgate"
)

func TestSendWhileDown(t *testing.T) {
	c, err := New(Config{Addr: "127.0.0.1:1", Domain: "iot.localhost"})
	if err != nil {
		t.Fatal(err)
	}
	err = c.Send(context.Background(), &Stanza{Kind: KindMessage, To: "a@localhost"})
	var e *iotgate.Error
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
		if iotgate.ErrorCode(err) != iotgate.EInvalid {
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
		cfg.KeepAliveSlowTimeout = 300 * time.Millisecond
	})
	fs.conn() // never reads nor answers: a half-open peer
	waitFor(t, "stream up", func() bool { return isUp(c) })
	waitFor(t, "dead stream noticed", func() bool {
		ok, _, err := c.Health(context.Background())
		return !ok && err != nil && strings.Contains(err.Error(), "keepalive")
	})
}

// TestKeepAliveSlowOrDead checks the rule that tells a slow server from a
// dead one: after a missed ping answer, a connection still alive (the
// kernel sees the peer's TCP acknowledge) gets until KeepAliveSlowTimeout;
// one without a sign of life is dropped at once.
func TestKeepAliveSlowOrDead(t *testing.T) {
	const (
		timeout = 100 * time.Millisecond
		slow    = 1500 * time.Millisecond
	)
	tests := []struct {
		name string
		// tcpAlive is what the kernel says of the peer.
		tcpAlive bool
		// answerAfter delays the answer to the first ping; 0: never.
		answerAfter time.Duration
		wantDrop    string        // "" if the stream must stay up
		dropAfter   time.Duration // the drop must not come sooner
		dropBefore  time.Duration // ... nor later
	}{
		{name: "SlowServerKept", tcpAlive: true, answerAfter: 5 * timeout},
		{name: "StuckServerDropped", tcpAlive: true, wantDrop: "presumed stuck", dropAfter: slow, dropBefore: slow + time.Second},
		{name: "DeadHostDropped", tcpAlive: false, wantDrop: "presumed dead", dropAfter: timeout, dropBefore: slow},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := newFakeServer(t, "s")
			c := startConn(t, fs.addr(), "s", func(cfg *Config) {
				cfg.KeepAlive = time.Hour // the test sends the one ping below
				cfg.KeepAliveTimeout = timeout
				cfg.KeepAliveSlowTimeout = slow
				cfg.tcpAlive = func(net.Conn, time.Duration) (bool, bool) { return tt.tcpAlive, true }
			})
			fc := fs.conn()
			waitFor(t, "stream up", func() bool { return isUp(c) })
			c.mu.Lock()
			sess := c.sess
			c.mu.Unlock()
			// One keepalive round, as the ticker would start it.
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			kaDone := make(chan struct{})
			started := time.Now()
			go func() {
				defer close(kaDone)
				c.keepAliveRound(ctx, sess)
			}()
			ping := fc.readAny(t)
			if !strings.Contains(ping.Inner, "urn:xmpp:ping") {
				t.Fatalf("got %+v, want a ping", ping)
			}
			if tt.answerAfter > 0 {
				time.Sleep(tt.answerAfter)
				fc.send(fmt.Sprintf(`<iq type='result' id='%s' from='%s' to='%s'/>`, ping.ID, ping.To, ping.From))
			}
			select {
			case <-kaDone:
			case <-time.After(slow + 3*time.Second):
				t.Fatal("keepalive round did not end")
			}
			took := time.Since(started)
			if tt.wantDrop == "" {
				if sess.closed() {
					t.Fatalf("stream dropped: %v", sess.err)
				}
				if got := c.SlowServer(); got != 1 {
					t.Errorf("SlowServer() = %d, want 1", got)
				}
				return
			}
			if !sess.closed() {
				t.Fatal("stream not dropped")
			}
			if !strings.Contains(sess.err.Error(), tt.wantDrop) {
				t.Errorf("drop reason %q, want %q", sess.err, tt.wantDrop)
			}
			if took < tt.dropAfter || took > tt.dropBefore {
				t.Errorf("dropped after %s, want between %s and %s", took, tt.dropAfter, tt.dropBefore)
			}
		})
	}
}

func TestMalformedXMLEndsStream(t *testing.T) {
	tests := []struct{ name, in, cond string }{
		{"MismatchedTags", `<message from='a@localhost/r'><a></b></message>`, "not-well-formed"},
		{"CommentBetweenStanzas", `<!-- hi -->`, "restricted-xml"},
		{"PIBetweenStanzas", `<?pi x?>`, "restricted-xml"},
		{"DoctypeInStanza", `<message from='a@localhost/r'><!DOCTYPE x></message>`, "restricted-xml"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := newFakeServer(t, "s")
			c := startConn(t, fs.addr(), "s", nil)
			fc := fs.conn()
			waitFor(t, "stream up", func() bool { return isUp(c) })
			fc.send(tt.in)
			var got []string
			fc.SetReadDeadline(time.Now().Add(5 * time.Second))
			for {
				start, err := fc.nextStart()
				if err != nil {
					break
				}
				var v struct {
					Inner string `xml:",innerxml"`
				}
				fc.dec.DecodeElement(&v, &start)
				got = append(got, start.Name.Local+": "+v.Inner)
			}
			if s := strings.Join(got, "\n"); !strings.Contains(s, "<"+tt.cond) {
				t.Errorf("the component sent %q, want a stream error %s", s, tt.cond)
			}
			fs.conn()
			waitFor(t, "reconnect", func() bool { return isUp(c) && c.Reconnects() == 1 })
		})
	}
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

func TestConflictBacksOffLonger(t *testing.T) {
	tests := []struct {
		reject   string
		min, max time.Duration // the time 4 dials take
	}{
		// Three waits of at least half of ConflictBackoff each.
		{"conflict", 3 * 200 * time.Millisecond, 5 * time.Second},
		// Three waits of at most MaxBackoff (50ms) each, plus handshakes.
		{"host-unknown", 0, 400 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.reject, func(t *testing.T) {
			fs := newFakeServer(t, "s")
			fs.setReject(tt.reject)
			start := time.Now()
			c := startConn(t, fs.addr(), "s", func(cfg *Config) { cfg.ConflictBackoff = 400 * time.Millisecond })
			waitFor(t, "four attempts", func() bool { return fs.dialCount() >= 4 })
			if d := time.Since(start); d < tt.min || d > tt.max {
				t.Errorf("4 attempts took %s, want between %s and %s", d, tt.min, tt.max)
			}
			// Once the server lets go, it connects.
			fs.setReject("")
			fs.conn()
			waitFor(t, "stream up", func() bool { return isUp(c) })
		})
	}
}

// TestDownErrorsHideAddress: what clients see of a down stream (/readyz,
// without a token; the 503 of a command) says what failed, never the
// server's address; the cause stays wrapped for the log.
func TestDownErrorsHideAddress(t *testing.T) {
	t.Run("DialFails", func(t *testing.T) {
		c := startConn(t, "127.0.0.1:1", "s", nil)
		var err error
		waitFor(t, "a failed dial", func() bool {
			_, _, err = c.Health(context.Background())
			return strings.Contains(err.Error(), "127.0.0.1")
		})
		checkHidden(t, "Health", err, "cannot establish a stream with the XMPP server", "127.0.0.1")
		checkHidden(t, "Send", c.Send(context.Background(), &Stanza{Kind: KindMessage, To: "a@localhost"}),
			"cannot establish a stream with the XMPP server", "127.0.0.1")
		_, err = c.SendIQ(context.Background(), &Stanza{Kind: KindIQ, Type: TypeGet, To: "a@localhost"})
		checkHidden(t, "SendIQ", err, "cannot establish a stream with the XMPP server", "127.0.0.1")
	})
	t.Run("SecretRefused", func(t *testing.T) {
		fs := newFakeServer(t, "s")
		c := startConn(t, fs.addr(), "wrong", nil)
		waitFor(t, "two attempts", func() bool { return fs.dialCount() >= 2 })
		_, _, err := c.Health(context.Background())
		checkHidden(t, "Health", err, "refused the component secret (not-authorized)", "IOTGATE_SECRET")
	})
}

// checkHidden checks that err is xmpp_unavailable with a client message
// containing want and not hidden.
func checkHidden(t *testing.T, op string, err error, want, hidden string) {
	t.Helper()
	var e *iotgate.Error
	if !errors.As(err, &e) || e.Detail != iotgate.DetailXMPPUnavailable {
		t.Fatalf("%s: err = %v, want xmpp_unavailable", op, err)
	}
	msg := iotgate.ErrorMessage(err)
	if !strings.Contains(msg, want) || strings.Contains(msg, hidden) {
		t.Errorf("%s: client message %q, want it to say %q and not %q", op, msg, want, hidden)
	}
}

// TestWriteBlockedSlowOrDead: a write blocked for WriteTimeout ends the
// stream when the server's TCP stack shows no life, and not when it is
// alive (a busy server that reads again within KeepAliveSlowTimeout).
func TestWriteBlockedSlowOrDead(t *testing.T) {
	const (
		writeTimeout = 100 * time.Millisecond
		slow         = 3 * time.Second
		stanzas      = 200 // 12 MB: more than the socket buffers hold
	)
	tests := []struct {
		name      string
		tcpAlive  bool
		readAfter time.Duration // the peer starts reading then
		wantDrop  bool
	}{
		{name: "BusyServerKept", tcpAlive: true, readAfter: time.Second},
		{name: "DeadServerDropped", tcpAlive: false, readAfter: 2 * time.Second, wantDrop: true},
	}
	inner := []byte("<body>" + strings.Repeat("a", 60000) + "</body>")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := newFakeServer(t, "s")
			c := startConn(t, fs.addr(), "s", func(cfg *Config) {
				cfg.KeepAlive = time.Hour
				cfg.WriteTimeout = writeTimeout
				cfg.KeepAliveSlowTimeout = slow
				cfg.tcpAlive = func(net.Conn, time.Duration) (bool, bool) { return tt.tcpAlive, true }
			})
			fc := fs.conn()
			waitFor(t, "stream up", func() bool { return isUp(c) })
			c.mu.Lock()
			sess := c.sess
			c.mu.Unlock()
			for i := range stanzas {
				st := &Stanza{Kind: KindMessage, To: "d@localhost", ID: strconv.Itoa(i), Inner: inner}
				if err := c.Send(context.Background(), st); err != nil {
					if tt.wantDrop {
						break
					}
					t.Fatalf("send %d: %v", i, err)
				}
			}
			time.Sleep(tt.readAfter)
			if tt.wantDrop {
				if !sess.closed() || !strings.Contains(sess.err.Error(), "write to XMPP server") {
					t.Fatalf("stream not dropped for a blocked write: closed %v, err %v", sess.closed(), sess.err)
				}
				return
			}
			for i := range stanzas {
				if st := fc.read(t); st.ID != strconv.Itoa(i) {
					t.Fatalf("got stanza %q, want %d", st.ID, i)
				}
			}
			if sess.closed() {
				t.Fatalf("stream dropped: %v", sess.err)
			}
			if c.SlowServer() == 0 {
				t.Error("SlowServer() = 0, want the blocked write counted")
			}
		})
	}
}
