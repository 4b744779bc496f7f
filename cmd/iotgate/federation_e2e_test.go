//go:build integration

package main

import (
	"context"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/iotgate/iotgate/internal/device"
	"github.com/iotgate/iotgate/internal/servers"
	"github.com/iotgate/iotgate/schemas/examples"
)

// fedEnv is iotgate attached to a home XMPP server as a component with an
// IP-literal domain, and a second server of the other kind, federated with
// it by s2s, where the device lives.
type fedEnv struct {
	*commandsEnv
	home, peer servers.XMPPServer
	comp       string // iotgate's component domain
}

// otherXMPPServer returns the server kind that is not name.
func otherXMPPServer(name string) string {
	for _, n := range servers.XMPPServerNames {
		if n != name {
			return n
		}
	}
	return name
}

// newFedEnv starts the two servers linked by s2s, and iotgate on home with
// extra settings given as name, value pairs.
func newFedEnv(t *testing.T, ctx context.Context, home string, settings ...string) *fedEnv {
	t.Helper()
	ip := func() string {
		t.Helper()
		a, err := servers.FreeS2SIP()
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	comp, peerDomain := ip(), ip()
	e := &fedEnv{comp: comp}
	e.home = servers.XMPPForTest(t, home, servers.XMPPOptions{
		Components: map[string]string{comp: e2eSecret}, S2SAddrs: []string{comp},
	})
	e.peer = servers.XMPPForTest(t, otherXMPPServer(home), servers.XMPPOptions{
		Domain: peerDomain, S2SAddrs: []string{peerDomain},
	})
	pg := servers.PostgresForTest(t)
	env := map[string]string{
		"IOTGATE_XMPP_ADDR": e.home.ComponentAddr(), "IOTGATE_DOMAIN": comp,
		"IOTGATE_SECRET": e2eSecret, "IOTGATE_DATABASE_URL": pg.DSN(),
	}
	for i := 0; i+1 < len(settings); i += 2 {
		env[settings[i]] = settings[i+1]
	}
	g := startGate(t, env)
	g.waitReady(200, 30*time.Second, nil)
	if code := g.do("POST", "/v1/schemas", map[string]string{"name": "thermostat", "xsd": string(examples.Thermostat())}, nil); code != 201 {
		t.Fatalf("register schema: %d", code)
	}
	// The device helpers of commandsEnv work on the peer server.
	e.commandsEnv = &commandsEnv{t: t, ctx: ctx, xs: e.peer, pg: pg, env: env, g: g}
	return e
}

// online logs user in on the peer server, subscribes it to iotgate across
// the s2s link and waits until iotgate sees it online.
func (e *fedEnv) online(user string, handler func(device.IQ) device.Reply) *device.Client {
	e.t.Helper()
	jid := user + "@" + e.peer.Domain()
	c, err := device.Dial(e.ctx, device.Options{Addr: e.peer.C2SAddr(), JID: jid, Password: "pw-" + user, IQHandler: handler})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { c.Close() })
	if err := c.Subscribe(e.ctx, e.comp); err != nil {
		e.t.Fatal(err)
	}
	if err := c.SendAvailable(e.ctx, 0, ""); err != nil {
		e.t.Fatal(err)
	}
	// The first stanza over a new s2s link waits for dialback both ways.
	e.g.waitState(jid, 30*time.Second, "online across s2s", func(s stateBody) bool { return s.Online })
	return c
}

func TestE2EFederation(t *testing.T) {
	forEachXMPPServer(t, testFederation)
}

// testFederation runs iotgate on home and a device on a server of the
// other kind: the device registers, is seen online, sends a reading,
// answers a sync command, and gets a command queued while it was offline
// when it logs in again, everything across the s2s link.
func testFederation(t *testing.T, home string) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	e := newFedEnv(t, ctx, home)
	t.Logf("iotgate as %s on %s, device on %s (%s)", e.comp, home, otherXMPPServer(home), e.peer.Domain())
	jid := e.register("sensor")

	dev := e.online("sensor", thermostat)
	st := e.g.waitState(jid, 5*time.Second, "one resource", func(s stateBody) bool { return len(s.Resources) == 1 })
	if st.Resources[0].JID != dev.JID() {
		t.Errorf("resources = %+v, want %s", st.Resources, dev.JID())
	}

	// A reading by IQ is acknowledged after it is stored.
	reading := `<reading xmlns="urn:example:thermostat"><temperature>19.5</temperature><mode>heat</mode></reading>`
	rep, err := dev.SendIQ(ctx, "set", e.comp, reading)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Type != "result" {
		t.Fatalf("IQ reading across s2s: %+v, want result", rep)
	}
	var page struct {
		Items []struct {
			XML string `json:"xml"`
		} `json:"items"`
	}
	if code := e.g.do("GET", "/v1/devices/"+url.PathEscape(jid)+"/readings", nil, &page); code != 200 || len(page.Items) != 1 || !strings.Contains(page.Items[0].XML, "19.5") {
		t.Errorf("readings: %d %+v, want the one sent", code, page.Items)
	}

	// A sync command is answered by the device.
	a := e.g.command(jid, map[string]any{"payload": setTarget("21")})
	if a.status != 200 || a.cmd.Status != "succeeded" || a.cmd.Response == nil || !strings.Contains(a.cmd.Response.XML, "<target>21</target>") {
		t.Fatalf("sync command across s2s: %d %s %+v", a.status, a.code, a.cmd)
	}
	t.Logf("sync command answered in %s", a.took.Round(time.Millisecond))

	// Offline: a queued command waits, and is delivered at login.
	dev.Close()
	e.g.waitState(jid, 15*time.Second, "offline after logout", func(s stateBody) bool { return !s.Online })
	q := e.g.command(jid, map[string]any{"payload": setTarget("23"), "mode": "queue"})
	if q.status != 202 || q.cmd.Status != "queued" {
		t.Fatalf("queue command: %d %s %+v", q.status, q.code, q.cmd)
	}
	e.online("sensor", thermostat)
	c := e.g.waitCommand(q.cmd.ID, 20*time.Second, "succeeded after login", func(c commandBody) bool { return c.Status == "succeeded" })
	if c.Response == nil || !strings.Contains(c.Response.XML, "<target>23</target>") {
		t.Errorf("queued command: %+v, want the device's answer", c)
	}
}
