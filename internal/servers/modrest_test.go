//go:build integration

package servers

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/iotgate/iotgate/internal/device"
)

// TestProsodyModRest checks XMPPOptions.ModRest end to end: an IQ POSTed
// to mod_rest reaches a logged-in client from the mod_rest user's JID and
// the client's answer is the HTTP response.
func TestProsodyModRest(t *testing.T) {
	ctx := testCtx(t)
	p := ProsodyForTest(t, XMPPOptions{ModRest: true})
	user, from, password := p.ModRestUser()
	if p.ModRestURL() == "" || user == "" || password == "" {
		t.Fatalf("ModRestURL() = %q, ModRestUser() = %q, %q, %q: want all set", p.ModRestURL(), user, from, password)
	}
	RegisterUserForTest(t, p, "dev", "secret")
	seen := make(chan string, 8)
	dev, err := device.Dial(ctx, device.Options{Addr: p.C2SAddr(), JID: "dev@" + p.Domain(), Password: "secret",
		IQHandler: func(iq device.IQ) device.Reply {
			seen <- iq.From
			if strings.Contains(iq.Payload, "refuse") {
				return device.Reply{Type: "error", ErrorType: "cancel", Condition: "not-allowed"}
			}
			return device.Reply{Type: "result", Payload: `<state xmlns="urn:example:t"><on>1</on></state>`}
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	iq := func(payload string) string {
		return `<iq xmlns="jabber:client" type="set" to="` + dev.JID() + `">` + payload + `</iq>`
	}
	for _, tc := range []struct {
		name       string
		user, pass string
		body       string
		wantStatus int
		wantBody   []string // substrings of the response
		wantFrom   bool     // the device got the IQ
	}{
		{"OK", user, password, iq(`<set xmlns="urn:example:t"/>`), http.StatusOK,
			[]string{`type='result'`, `<on>1</on>`}, true},
		// mod_rest (this version, on 0.12) answers a stanza error from
		// the addressee with that stanza, in a 200.
		{"DeviceError", user, password, iq(`<refuse xmlns="urn:example:t"/>`), http.StatusOK,
			[]string{`type='error'`, `<not-allowed`}, true},
		{"ErrWrongPassword", user, password + "x", iq(`<set xmlns="urn:example:t"/>`), http.StatusForbidden, nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.ModRestURL(), strings.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			req.SetBasicAuth(tc.user, tc.pass)
			req.Header.Set("Content-Type", "application/xmpp+xml")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tc.wantStatus {
				t.Fatalf("status %d, want %d; body %s", resp.StatusCode, tc.wantStatus, b)
			}
			for _, w := range tc.wantBody {
				if !strings.Contains(string(b), w) {
					t.Errorf("body %s lacks %q", b, w)
				}
			}
			select {
			case got := <-seen:
				if !tc.wantFrom {
					t.Errorf("device got an IQ from %s, want none", got)
				} else if got != from {
					t.Errorf("device got the IQ from %s, want %s", got, from)
				}
			default:
				if tc.wantFrom {
					t.Error("device got no IQ")
				}
			}
		})
	}
}
