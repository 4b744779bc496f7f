//go:build integration

package main

import (
	"context"
	"testing"
	"time"

	"github.com/iotgate/iotgate/internal/servers"
	"github.com/iotgate/iotgate/schemas/examples"
)

// TestE2EInstancesCluster runs two iotgate instances for one domain on a
// two-node ejabberd cluster, one instance per node, on one PostgreSQL, with
// devices on both nodes. ejabberd routes a node's stanzas for the domain to
// that node's component connection (to another node's only when it has
// none): a command sent by one instance to a device on the other node is
// answered on the other instance's connection.
func TestE2EInstancesCluster(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	pg := servers.PostgresForTest(t)
	cl := servers.EjabberdClusterForTest(t, servers.XMPPOptions{Components: map[string]string{e2eDomain: e2eSecret}}, 2)
	envOn := func(i int) *commandsEnv {
		e := &commandsEnv{t: t, ctx: ctx, xs: cl.Node(i), pg: pg, env: map[string]string{
			"IOTGATE_XMPP_ADDR": cl.Node(i).ComponentAddr(), "IOTGATE_DOMAIN": e2eDomain,
			"IOTGATE_SECRET": e2eSecret, "IOTGATE_DATABASE_URL": pg.DSN(),
		}}
		e.g = startGate(t, e.env)
		return e
	}
	e1, e2 := envOn(0), envOn(1)
	for _, e := range []*commandsEnv{e1, e2} {
		e.g.waitReady(200, 30*time.Second, func(r readyBody) bool { return r.Role == "member" })
	}
	if code := e1.g.do("POST", "/v1/schemas", map[string]string{"name": "thermostat", "xsd": string(examples.Thermostat())}, nil); code != 201 {
		t.Fatalf("register schema: %d", code)
	}
	t1, t2 := e1.register("t1"), e2.register("t2")
	e1.online("t1", thermostat)
	e2.online("t2", thermostat)

	t.Run("PresenceSeenByBoth", func(t *testing.T) {
		for _, g := range []*gate{e1.g, e2.g} {
			for _, j := range []string{t1, t2} {
				g.waitState(j, 2*time.Second, "online on every instance", func(s stateBody) bool { return s.Online && !s.PresenceStale })
			}
		}
	})

	t.Run("CommandsAcrossNodes", func(t *testing.T) {
		for i := range 10 {
			g, to := e1.g, t2 // answered on the other instance's connection
			if i%2 == 1 {
				g, to = e2.g, t1
			}
			if a := g.command(to, map[string]any{"payload": setTarget("21")}); a.status != 200 || a.cmd.Status != "succeeded" {
				t.Fatalf("command %d: %d %s %+v", i, a.status, a.code, a.cmd)
			}
		}
	})

	// The loads must outlast both faults (verify stops them): at loadMax
	// a fast machine sent everything before the instance was killed.
	l1, l2 := startLoadMax(e1, "la", "iq", 20*loadMax), startLoadMax(e2, "lb", "iq", 20*loadMax)
	l1.waitAcked(t, 100, 30*time.Second, "readings on node 1")
	l2.waitAcked(t, 100, 30*time.Second, "readings on node 2")

	t.Run("EjabberdNodeKilled", func(t *testing.T) {
		if err := cl.Node(0).Kill(); err != nil {
			t.Fatal(err)
		}
		killed := time.Now()
		// Node 2's devices carry on through instance 2.
		l2.waitAcked(t, l2.nAcked.Load()+50, 5*time.Second, "node 2's readings while node 1 is down")
		if a := e2.g.command(t2, map[string]any{"payload": setTarget("22")}); a.status != 200 {
			t.Errorf("command to a device on the surviving node: %d %s", a.status, a.code)
		}
		e1.g.waitReady(503, 10*time.Second, func(r readyBody) bool { return r.Role == "disconnected" })
		t.Logf("node 1 down for %s: node 2's devices unaffected", time.Since(killed).Round(time.Millisecond))
		if err := cl.Node(0).Start(ctx); err != nil {
			t.Fatal(err)
		}
		e1.g.waitReady(200, 30*time.Second, func(r readyBody) bool { return r.Role == "member" })
		l1.waitAcked(t, l1.nAcked.Load()+50, 30*time.Second, "node 1's readings after it restarted")
		// t1's session died with its node: it logs in again, as a real
		// device would.
		e2.g.waitState(t1, 15*time.Second, "offline once its node died", func(s stateBody) bool { return !s.Online })
		e1.online("t1", thermostat)
		e2.g.waitState(t1, 2*time.Second, "online again on the other instance", func(s stateBody) bool { return s.Online })
	})

	t.Run("InstanceKilled", func(t *testing.T) {
		if err := e1.g.proc.Kill(); err != nil {
			t.Fatal(err)
		}
		killed := time.Now()
		// Node 1 now routes to instance 2's connection on node 2.
		l1.waitAcked(t, l1.nAcked.Load()+50, 10*time.Second, "node 1's readings through the surviving instance")
		t.Logf("node 1's readings acknowledged again %s after kill -9 of its instance", time.Since(killed).Round(time.Millisecond))
		for {
			a := e2.g.command(t1, map[string]any{"payload": setTarget("23"), "timeout_ms": 2000})
			if a.status == 200 {
				t.Logf("command to a node 1 device served by the survivor %s after the kill", time.Since(killed).Round(time.Millisecond))
				break
			}
			if time.Since(killed) > 10*time.Second {
				t.Fatalf("survivor still fails commands to node 1's device: %d %s", a.status, a.code)
			}
			time.Sleep(100 * time.Millisecond)
		}
		e2.g.waitReady(200, 15*time.Second, func(r readyBody) bool { return r.Role == "active" })
	})

	for _, l := range []*load{l1, l2} {
		if _, _, _, lost := l.verify(t, e2.g); lost != 0 {
			t.Errorf("%d acknowledged readings lost", lost)
		}
	}
}
