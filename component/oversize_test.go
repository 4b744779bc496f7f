package component

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/iotgate/iotgate"
)

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
		rep, err := c.SendCommand(ctx, "d@localhost/r", TypeGet, "", []byte(`<q xmlns='urn:x'/>`))
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
