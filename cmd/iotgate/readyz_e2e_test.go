//go:build integration

package main

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/iotgate/iotgate/internal/servers"
)

// TestE2EDownCausesHidden stops the XMPP server, then PostgreSQL: /readyz
// (no token) and the 503 of a command say which part is down, never its
// address (the dial errors that say so go to iotgate's log).
func TestE2EDownCausesHidden(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	e := newCommandsEnv(t, ctx, servers.XMPPServerNames[0])
	jid := e.register("thermo")
	_, xmppPort, _ := net.SplitHostPort(e.xs.ComponentAddr())
	pgPort := e.pg.Addr()[strings.LastIndex(e.pg.Addr(), ":")+1:]
	hidden := []string{"127.0.0.1", ":" + xmppPort, ":" + pgPort, "dial", "connect:", "pq:", "refused"}
	checkBody := func(what, body string) {
		t.Helper()
		for _, h := range hidden {
			if strings.Contains(body, h) {
				t.Errorf("%s shows %q: %s", what, h, body)
			}
		}
	}
	readyz := func() (int, string) {
		t.Helper()
		resp, err := http.Get(e.g.base + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}

	if err := e.xs.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	e.g.waitReady(503, 10*time.Second, func(b readyBody) bool {
		return !b.Checks["xmpp"].OK && strings.Contains(b.Checks["xmpp"].Error, "cannot establish")
	})
	code, body := readyz()
	t.Logf("XMPP server down: /readyz %d %s", code, body)
	checkBody("/readyz with the XMPP server down", body)

	b, _ := json.Marshal(map[string]any{"payload": "<get xmlns='urn:example:thermostat'/>"})
	resp, err := e.g.client.Post(e.g.base+"/v1/devices/"+jid+"/commands", "application/json", strings.NewReader(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	t.Logf("command with the XMPP server down: %d %s", resp.StatusCode, raw)
	if resp.StatusCode != 503 && resp.StatusCode != 409 {
		t.Errorf("command with the XMPP server down: %d, want 503 or 409", resp.StatusCode)
	}
	checkBody("a command's answer with the XMPP server down", string(raw))

	if err := e.pg.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	e.g.waitReady(503, 10*time.Second, func(b readyBody) bool { return !b.Checks["database"].OK })
	time.Sleep(1100 * time.Millisecond) // past the cached answer: a fresh check of a database long gone
	code, body = readyz()
	t.Logf("PostgreSQL down too: /readyz %d %s", code, body)
	checkBody("/readyz with PostgreSQL down", body)
	if !strings.Contains(body, "database unreachable") {
		t.Errorf("/readyz does not say the database is unreachable: %s", body)
	}
	if logs := e.g.logs.String(); !strings.Contains(logs, ":"+pgPort) && !strings.Contains(logs, ":"+xmppPort) {
		t.Errorf("iotgate's log has neither address: operators lose the detail")
	}
}
