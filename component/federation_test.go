package component

import (
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/iotgate/iotgate/devices"
)

func TestPingToDefault(t *testing.T) {
	for _, tc := range []struct {
		name, domain, want string
	}{
		{"Subdomain", "iot.example.com", "example.com"},
		{"SingleLabel", "iot", "iot"},
		// An IP literal has no parent domain: "0.0.3" would be
		// routed nowhere and the keepalive would kill the stream.
		{"IPLiteral", "127.0.0.3", "127.0.0.3"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Config{Domain: tc.domain}
			cfg.setDefaults()
			if cfg.PingTo != tc.want {
				t.Errorf("PingTo = %q, want %q", cfg.PingTo, tc.want)
			}
		})
	}
}

// TestDeviceDomains sends stanzas from inside and outside the allow-list:
// refused IQ requests get cancel/not-allowed naming the allowed domains,
// refused messages and presence vanish, and no refused stanza reaches the
// handler or the built-in services.
func TestDeviceDomains(t *testing.T) {
	allow, err := devices.NewDomainAllowList([]string{"example.com"})
	if err != nil {
		t.Fatal(err)
	}
	fs := newFakeServer(t, "s")
	c := startConn(t, fs.addr(), "s", func(cfg *Config) { cfg.DeviceDomains = allow })
	fc := fs.conn()
	waitFor(t, "stream up", func() bool { return isUp(c) })
	var mu sync.Mutex
	var handled []string
	c.SetHandler(HandlerFunc(func(_ context.Context, st *Stanza) bool {
		mu.Lock()
		defer mu.Unlock()
		handled = append(handled, st.ID)
		return true
	}))

	tests := []struct {
		name      string
		in        string
		wantReply string // type and condition of the reply, "" for none
		handled   bool
		refused   bool
	}{
		{"IQSetAllowed", `<iq type='set' id='s1' from='dev@example.com/r' to='iot.localhost'><reading xmlns='urn:t'/></iq>`, "", true, false},
		{"MessageAllowed", `<message id='m1' from='dev@example.com/r' to='iot.localhost'><reading xmlns='urn:t'/></message>`, "", true, false},
		{"PresenceAllowed", `<presence id='p1' from='dev@example.com/r' to='iot.localhost'/>`, "", true, false},
		{"OwnDomain", `<message id='m2' from='iot.localhost' to='iot.localhost'/>`, "", true, false},
		{"IQSetRefused", `<iq type='set' id='s2' from='dev@evil.example/r' to='iot.localhost'><reading xmlns='urn:t'/></iq>`, "error not-allowed", false, true},
		{"IQGetRefused", `<iq type='get' id='g1' from='dev@evil.example/r' to='iot.localhost'><ping xmlns='urn:xmpp:ping'/></iq>`, "error not-allowed", false, true},
		{"SubdomainRefused", `<iq type='get' id='g2' from='sub.example.com' to='iot.localhost'><ping xmlns='urn:xmpp:ping'/></iq>`, "error not-allowed", false, true},
		{"MessageRefused", `<message id='m3' from='dev@evil.example/r' to='iot.localhost'><reading xmlns='urn:t'/></message>`, "", false, true},
		{"PresenceRefused", `<presence id='p2' type='subscribe' from='dev@evil.example' to='iot.localhost'/>`, "", false, true},
		// Answers to iotgate's own requests never count: they only
		// match what it sent.
		{"ResultNotCounted", `<iq type='result' id='nope' from='dev@evil.example/r' to='iot.localhost'/>`, "", false, false},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := c.DomainRefused()
			fc.send(tt.in)
			// An allowed ping behind it: its answer comes after any
			// answer to the stanza under test.
			marker := "marker" + string(rune('a'+i))
			fc.send(`<iq type='get' id='` + marker + `' from='dev@example.com/r' to='iot.localhost'><ping xmlns='urn:xmpp:ping'/></iq>`)
			got := fc.read(t)
			if tt.wantReply != "" {
				typ, cond, _ := strings.Cut(tt.wantReply, " ")
				if got.Type != typ || !strings.Contains(got.Inner, "<"+cond) {
					t.Fatalf("reply %+v, want %s", got, tt.wantReply)
				}
				if !strings.Contains(got.Inner, `type="cancel"`) || !strings.Contains(got.Inner, "allowed device domains: example.com") {
					t.Errorf("reply %s, want type cancel and a text naming the allowed domains", got.Inner)
				}
				got = fc.read(t)
			}
			if got.ID != marker || got.Type != "result" {
				t.Fatalf("got %+v, want the marker's result", got)
			}
			mu.Lock()
			wasHandled := strings.Contains(strings.Join(handled, ","), idOf(tt.in))
			mu.Unlock()
			if wasHandled != tt.handled {
				t.Errorf("handled = %v, want %v", wasHandled, tt.handled)
			}
			if refused := c.DomainRefused() - before; refused != map[bool]uint64{true: 1}[tt.refused] {
				t.Errorf("DomainRefused grew by %d", refused)
			}
		})
	}
}
