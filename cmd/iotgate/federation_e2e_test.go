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
	metrics    string // iotgate's metrics address
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

// newFedEnv starts the two servers linked by s2s, and iotgate on home
// serving devices of the peer's domain only (IOTGATE_DEVICE_DOMAINS): the
// home server's own users stand for an untrusted domain.
func newFedEnv(t *testing.T, ctx context.Context, home string) *fedEnv {
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
	e := &fedEnv{comp: comp, metrics: freeAddr(t)}
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
		"IOTGATE_DEVICE_DOMAINS": peerDomain, "IOTGATE_METRICS_ADDR": e.metrics,
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
	start := time.Now()
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

	// iotgate restarts: its presence probes cross the s2s link and
	// find the device online again.
	e.g.stop()
	e.g = startGate(t, e.env)
	e.g.waitReady(200, 30*time.Second, nil)
	e.g.waitState(jid, 15*time.Second, "online after iotgate restarted", func(s stateBody) bool { return s.Online && !s.PresenceStale })

	testRefusedDomain(t, e)

	// A whole keepalive interval passes without the stream being given
	// up. (The ping goes to the IP-literal component domain itself; both
	// servers also answer a ping to a bogus parent domain with an error,
	// which counts as alive, so this guards the stream, not the choice.)
	if d := 17*time.Second - time.Since(start); d > 0 {
		time.Sleep(d)
	}
	if n := metricValue(t, e.metrics, "iotgate_xmpp_reconnects_total"); n != 0 {
		t.Errorf("%v reconnects, want none", n)
	}
	e.g.waitReady(200, time.Second, nil)
}

// testRefusedDomain checks the allow-list: a device of the home server's
// domain, outside IOTGATE_DEVICE_DOMAINS, can't be registered, its IQ is
// answered cancel/not-allowed, its message and presence are dropped and
// counted.
func testRefusedDomain(t *testing.T, e *fedEnv) {
	ctx := e.ctx
	jid := "intruder@" + e.home.Domain()
	var problem struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	}
	code := e.g.do("POST", "/v1/devices", map[string]any{"jid": jid, "schema": "thermostat"}, &problem)
	if code != 403 || problem.Code != "device_domain_not_allowed" || !strings.Contains(problem.Message, e.peer.Domain()) {
		t.Errorf("register %s: %d %+v, want 403 device_domain_not_allowed naming %s", jid, code, problem, e.peer.Domain())
	}

	servers.RegisterUserForTest(t, e.home, "intruder", "pw-intruder")
	dev, err := device.Dial(ctx, device.Options{Addr: e.home.C2SAddr(), JID: jid, Password: "pw-intruder"})
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	before := metricValue(t, e.metrics, "iotgate_xmpp_domain_refused_total")
	reading := `<reading xmlns="urn:example:thermostat"><temperature>30</temperature><mode>heat</mode></reading>`
	rep, err := dev.SendIQ(ctx, "set", e.comp, reading)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Type != "error" || rep.ErrorType != "cancel" || rep.Condition != "not-allowed" || !strings.Contains(rep.Text, e.peer.Domain()) {
		t.Errorf("IQ from a refused domain: %+v, want cancel/not-allowed naming %s", rep, e.peer.Domain())
	}
	if err := dev.SendMessage(ctx, e.comp, "m1", reading); err != nil {
		t.Fatal(err)
	}
	if err := dev.SendPresence(ctx, e.comp, "subscribe"); err != nil {
		t.Fatal(err)
	}
	// IQ, message and subscription request: three refused.
	deadline := time.Now().Add(10 * time.Second)
	for metricValue(t, e.metrics, "iotgate_xmpp_domain_refused_total") < before+3 {
		if time.Now().After(deadline) {
			t.Fatalf("iotgate_xmpp_domain_refused_total = %v, want %v", metricValue(t, e.metrics, "iotgate_xmpp_domain_refused_total"), before+3)
		}
		time.Sleep(25 * time.Millisecond)
	}
	// The message got no answer (a refused message is dropped, never
	// bounced) and the subscription none either.
	select {
	case m := <-dev.Messages():
		t.Errorf("refused message answered: %+v", m)
	case p := <-dev.Presences():
		if p.From == e.comp {
			t.Errorf("refused subscription answered: %+v", p)
		}
	case <-time.After(500 * time.Millisecond):
	}
}
