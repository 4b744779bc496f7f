package component

import (
	"strings"
	"testing"

	"github.com/iotgate/iotgate"
)

// TestNotServed is the decision table: which stanzas iotgate serves, and
// what the sender is told. "stranger" is not a registered device (see
// fakeIngester).
func TestNotServed(t *testing.T) {
	fs := newFakeServer(t, "s")
	c := startConn(t, fs.addr(), "s", nil)
	ing := &fakeIngester{got: make(chan iotgate.IncomingReading, 100)}
	h := NewReadingHandler(c, ing, RateLimit{}, nil)
	h.Namespaces = fakeNamespaces{"urn:x"}
	c.SetHandler(h)
	fc := fs.conn()
	waitFor(t, "stream up", func() bool { return isUp(c) })

	tests := []struct {
		name      string
		in        string
		ingested  bool
		wantType  string // "" means no reply expected
		wantInner []string
		unserved  uint64 // added to the count
	}{
		{"IQUnknownNamespaceStranger", `<iq type='set' id='a' from='stranger@localhost/r' to='iot.localhost'><query xmlns='urn:example:no-such-namespace'/></iq>`,
			false, "error", []string{`type="cancel"`, "service-unavailable", "urn:example:no-such-namespace"}, 1},
		{"IQUnknownNamespaceDevice", `<iq type='set' id='b' from='d@localhost/r' to='iot.localhost'><r xmlns='urn:y'/></iq>`,
			false, "error", []string{`type="cancel"`, "service-unavailable"}, 1},
		{"IQNoNamespace", `<iq type='set' id='b2' from='d@localhost/r' to='iot.localhost'><r/></iq>`,
			false, "error", []string{`type="cancel"`, "service-unavailable", "without a namespace"}, 1},
		{"IQGetUnknownNamespace", `<iq type='get' id='c' from='stranger@localhost/r' to='iot.localhost'><query xmlns='urn:example:no-such-namespace'/></iq>`,
			false, "error", []string{`type="cancel"`, "service-unavailable"}, 0},
		{"IQReadingStranger", `<iq type='set' id='d' from='stranger@localhost/r' to='iot.localhost'><r xmlns='urn:x'/></iq>`,
			true, "error", []string{`type="auth"`, "registration-required"}, 0},
		{"IQReadingDevice", `<iq type='set' id='e' from='d@localhost/r' to='iot.localhost'><r xmlns='urn:x'/></iq>`,
			true, "result", nil, 0},
		{"IQMixedPayloads", `<iq type='set' id='f' from='d@localhost/r' to='iot.localhost'><n xmlns='urn:y'/><r xmlns='urn:x'/></iq>`,
			true, "result", nil, 0},
		{"IQNoPayloadStranger", `<iq type='set' id='g' from='stranger@localhost/r' to='iot.localhost'/>`,
			true, "error", []string{"registration-required"}, 0},
		{"MessageUnknownNamespace", `<message id='h' from='d@localhost/r' to='iot.localhost'><body>hi</body></message>`,
			false, "", nil, 1},
		{"MessageUnknownNamespaceStranger", `<message id='i' from='stranger@localhost/r' to='iot.localhost'><r xmlns='urn:y'/></message>`,
			false, "", nil, 1},
		{"MessageReadingWithBody", `<message id='j' from='d@localhost/r' to='iot.localhost'><body>x</body><r xmlns='urn:x'>bad</r></message>`,
			true, "error", []string{"bad-request"}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := h.Unserved()
			fc.send(tt.in)
			// A ping to the component after each case: its answer comes
			// after any reply to the case, so "no reply" is observable.
			fc.send(`<iq type='get' id='marker' from='d@localhost/r' to='iot.localhost'><ping xmlns='urn:xmpp:ping'/></iq>`)
			// Results are sent from another goroutine, so they may come
			// after the marker's.
			var got fakeStanza
			for marker := false; !marker || tt.wantType != "" && got.ID == ""; {
				m := fc.read(t)
				switch {
				case m.ID == "marker" && !marker:
					marker = true
				case m.ID != "marker" && got.ID == "" && tt.wantType != "":
					got = m
				default:
					t.Fatalf("unexpected stanza %+v", m)
				}
			}
			if got.Type != tt.wantType {
				t.Fatalf("reply type %q, want %q: %s", got.Type, tt.wantType, got.Inner)
			}
			for _, w := range tt.wantInner {
				if !strings.Contains(got.Inner, w) {
					t.Errorf("reply %q lacks %q", got.Inner, w)
				}
			}
			ingested := false
			select {
			case <-ing.got:
				ingested = true
			default:
			}
			if ingested != tt.ingested {
				t.Errorf("ingested = %v, want %v", ingested, tt.ingested)
			}
			// A message is handled off the read loop, so its count may
			// come after the marker's answer: wait for it, lest it land
			// in the next case's count.
			waitFor(t, "the unserved count", func() bool { return h.Unserved()-before >= tt.unserved })
			if n := h.Unserved() - before; n != tt.unserved {
				t.Errorf("unserved count +%d, want +%d", n, tt.unserved)
			}
		})
	}
}
