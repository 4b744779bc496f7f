package component

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/iotgate/iotgate"
)

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
		var e *iotgate.Error
		if !errors.As(err, &e) || e.Code != iotgate.EUnavailable || e.Detail != "xmpp_unavailable" {
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
	})
	fs.conn() // never reads nor answers: a half-open peer
	waitFor(t, "stream up", func() bool { return isUp(c) })
	waitFor(t, "dead stream noticed", func() bool {
		ok, _, err := c.Health(context.Background())
		return !ok && err != nil && strings.Contains(err.Error(), "keepalive")
	})
}

func TestOversizeStanzaCostsOnlyItself(t *testing.T) {
	fs := newFakeServer(t, "s")
	c := startConn(t, fs.addr(), "s", func(cfg *Config) {
		cfg.MaxStanzaBytes = 4096
		cfg.MaxStanzaDepth = 8
	})
	rec := &oversizeRecorder{got: make(chan *Stanza, 100)}
	c.SetHandler(rec)
	fc := fs.conn()
	waitFor(t, "stream up", func() bool { return isUp(c) })

	big := strings.Repeat("x", 64<<10)
	deep := strings.Repeat("<a>", 20) + strings.Repeat("</a>", 20)
	tests := []struct {
		name     string
		in       string
		want     []string // substrings of the replies, in order; none: no reply
		notified bool     // the OversizeHandler hears of it
	}{
		{"IQSet", `<iq type='set' id='s1' from='d@localhost/r' to='iot.localhost'><r xmlns='urn:x'>` + big + `</r></iq>`,
			[]string{`id="s1"`, `type="error"`, `type="modify"`, "policy-violation", "stanza too large: the limit is 4096 bytes"}, true},
		{"IQGetQuotedAttr", `<iq type='get' id='g1' from='d@localhost/r' to='iot.localhost'><r xmlns='urn:x' a='` + big + `>'/></iq>`,
			[]string{`id="g1"`, "policy-violation"}, true},
		{"Message", `<message id='m1' from='d@localhost/r' to='iot.localhost'><body>` + big + `</body></message>`,
			[]string{`<message`, `id="m1"`, `type="error"`, "policy-violation"}, true},
		{"MessageError", `<message type='error' id='m2' from='d@localhost/r' to='iot.localhost'><body>` + big + `</body></message>`, nil, false},
		{"IQResultUnknown", `<iq type='result' id='nobody' from='d@localhost/r' to='iot.localhost'><r>` + big + `</r></iq>`, nil, false},
		{"Presence", `<presence from='d@localhost/r' to='iot.localhost'><status>` + big + `</status></presence>`, nil, false},
		{"Deep", `<iq type='set' id='d1' from='d@localhost/r' to='iot.localhost'>` + deep + `</iq>`,
			[]string{`id="d1"`, "nested too deeply: the limit is 8 levels"}, true},
		{"CDATAAndComments", `<iq type='set' id='c1' from='d@localhost/r' to='iot.localhost'><r><![CDATA[</iq><iq>]]><!-- </iq> -->` + big + `</r></iq>`,
			[]string{`id="c1"`, "policy-violation"}, true},
		{"StartTagTooLarge", `<iq type='set' id='t1' from='d@localhost/r' to='iot.localhost' x='` + big + `'/>`, nil, false},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fc.send(tt.in)
			marker := fmt.Sprintf("marker%d", i)
			fc.send(`<iq type='get' id='` + marker + `' from='d@localhost/r' to='iot.localhost'><ping xmlns='urn:xmpp:ping'/></iq>`)
			var replies []string
			for {
				st := fc.read(t)
				if st.ID == marker {
					break
				}
				replies = append(replies, fmt.Sprintf(`<%s id="%s" type="%s">%s`, st.XMLName.Local, st.ID, st.Type, st.Inner))
			}
			if len(tt.want) == 0 {
				if len(replies) != 0 {
					t.Fatalf("replies = %q, want none", replies)
				}
			} else {
				if len(replies) != 1 {
					t.Fatalf("replies = %q, want one", replies)
				}
				for _, w := range tt.want {
					if !strings.Contains(replies[0], w) {
						t.Errorf("reply %q does not contain %q", replies[0], w)
					}
				}
			}
			select {
			case st := <-rec.got:
				if !tt.notified {
					t.Errorf("handler told of %s, want not", st)
				} else if st.From != "d@localhost/r" || len(st.Inner) != 0 {
					t.Errorf("handler told of %s, want the attributes only", st)
				}
			default:
				if tt.notified {
					t.Error("handler not told")
				}
			}
		})
	}
	if got, want := c.Oversize(), uint64(len(tests)); got != want {
		t.Errorf("Oversize() = %d, want %d", got, want)
	}
	if !isUp(c) || c.Reconnects() != 0 || fs.dialCount() != 1 {
		t.Errorf("up = %v, reconnects = %d, dials = %d; want the stream kept", isUp(c), c.Reconnects(), fs.dialCount())
	}
}

func TestOversizeMessageErrorsRateLimited(t *testing.T) {
	fs := newFakeServer(t, "s")
	c := startConn(t, fs.addr(), "s", func(cfg *Config) { cfg.MaxStanzaBytes = 1024 })
	fc := fs.conn()
	waitFor(t, "stream up", func() bool { return isUp(c) })
	big := strings.Repeat("'", 4096)
	for i := range 20 {
		fc.send(fmt.Sprintf(`<message id='m%d' from='d@localhost/r' to='iot.localhost'><body>%s</body></message>`, i, big))
	}
	fc.send(`<iq type='get' id='marker' from='d@localhost/r' to='iot.localhost'><ping xmlns='urn:xmpp:ping'/></iq>`)
	errs := 0
	for fc.read(t).ID != "marker" {
		errs++
	}
	if errs != int(errorBurst) {
		t.Errorf("%d error messages for 20 oversize messages, want the burst of %d", errs, int(errorBurst))
	}
	if c.Oversize() != 20 {
		t.Errorf("Oversize() = %d, want 20", c.Oversize())
	}
}

func TestOversizeAnswerFailsPendingIQ(t *testing.T) {
	fs := newFakeServer(t, "s")
	c := startConn(t, fs.addr(), "s", func(cfg *Config) { cfg.MaxStanzaBytes = 4096 })
	fc := fs.conn()
	waitFor(t, "stream up", func() bool { return isUp(c) })
	type result struct {
		rep iotgate.CommandReply
		err error
	}
	res := make(chan result, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		rep, err := c.SendCommand(ctx, "d@localhost/r", TypeGet, []byte(`<q xmlns='urn:x'/>`))
		res <- result{rep, err}
	}()
	req := fc.read(t)
	start := time.Now()
	fc.send(fmt.Sprintf(`<iq type='result' id='%s' from='d@localhost/r' to='iot.localhost'><r xmlns='urn:x'>%s</r></iq>`, req.ID, strings.Repeat("x", 64<<10)))
	r := <-res
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.rep.Error == nil || r.rep.Error.Condition != "policy-violation" || !strings.Contains(r.rep.Error.Text, "the limit is 4096 bytes") {
		t.Errorf("reply = %+v (error %+v), want policy-violation naming the limit", r.rep, r.rep.Error)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("the command failed after %s, want at once", d)
	}
	if !isUp(c) || c.Reconnects() != 0 {
		t.Error("stream not kept")
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
