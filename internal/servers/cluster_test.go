//go:build integration

package servers

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

// TestEjabberdCluster starts a two-node cluster and checks what tests of
// several iotgate instances rely on: accounts are shared, each node takes
// the component's connections, and the nodes and epmd go away at Close.
// The first join_cluster is made to fail the way it sometimes does by
// itself, leaving the joining node down: the harness must start that
// node again and join it on the next try.
func TestEjabberdCluster(t *testing.T) {
	ctx := testCtx(t)
	real := joinOnce
	t.Cleanup(func() { joinOnce = real })
	broken := 0
	joinOnce = func(e *Ejabberd, ctx context.Context, node string) error {
		if broken == 0 {
			broken++
			e.Kill()
			return errors.New("join_cluster broke the node (made by the test)")
		}
		return real(e, ctx, node)
	}
	start := time.Now()
	c, err := StartEjabberdCluster(ctx, XMPPOptions{}, 2)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("StartEjabberdCluster(2 nodes, one failed join) took %v", time.Since(start).Round(time.Millisecond))
	if broken != 1 {
		t.Fatalf("the failing join ran %d times, want 1", broken)
	}
	defer func() {
		if t.Failed() {
			t.Log(c.LogTail())
		}
	}()
	n1, n2 := c.Node(0), c.Node(1)
	if n1.Node() == n2.Node() || n1.C2SAddr() == n2.C2SAddr() || n1.ComponentAddr() == n2.ComponentAddr() {
		t.Fatalf("nodes share a name or port: %s %s / %s %s", n1.Node(), n1.C2SAddr(), n2.Node(), n2.C2SAddr())
	}
	// Registered through node 1, logs in on node 2.
	if err := c.RegisterUser(ctx, "alice", "pw"); err != nil {
		t.Fatal(err)
	}
	for _, n := range c.Nodes() {
		if err := c2sLogin(n.C2SAddr(), c.Domain(), "alice", "pw", false); err != nil {
			t.Errorf("login on %s: %v", n.Node(), err)
		}
		comp := c.Components()[0]
		cc, err := componentHandshake(n.ComponentAddr(), comp, c.ComponentSecret(comp))
		if err != nil {
			t.Errorf("component on %s: %v", n.Node(), err)
			continue
		}
		cc.Close()
	}
	dirs := []string{n1.Dir(), n2.Dir(), c.dir}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	for _, d := range dirs {
		assertGone(t, d, n1.C2SAddr(), n2.C2SAddr())
	}
}

// TestEjabberdClusterNodeKill kills one node of two: devices and the
// component connection on the other node carry on, and the killed node
// rejoins the cluster when started again.
func TestEjabberdClusterNodeKill(t *testing.T) {
	c := EjabberdClusterForTest(t, XMPPOptions{}, 2)
	comp := c.Components()[0]
	secret := c.ComponentSecret(comp)
	n1, n2 := c.Node(0), c.Node(1)
	p := &probe{t: t, c: c, comp: comp}
	for i, n := range []*Ejabberd{n1, n2} {
		user := fmt.Sprintf("d%d", i+1)
		RegisterUserForTest(t, n1, user, "pw")
		p.devices = append(p.devices, loginProbeDevice(t, n.C2SAddr(), c.Domain(), user, "pw"))
	}
	a := dialProbeComp(t, "A@n1", n1.ComponentAddr(), comp, secret)
	b := dialProbeComp(t, "B@n2", n2.ComponentAddr(), comp, secret)
	time.Sleep(200 * time.Millisecond)
	if r := p.tally(p.sendAll("before", 5, false), 3*time.Second, a, b); r.lost != 0 {
		t.Fatalf("before the kill: %v", r)
	}

	start := time.Now()
	if err := n1.Kill(); err != nil {
		t.Fatal(err)
	}
	t.Logf("kill of node 1 took %v", time.Since(start).Round(time.Millisecond))
	select {
	case <-a.done:
	case <-time.After(5 * time.Second):
		t.Error("the component connection to the killed node is still open")
	}
	// The device on node 2 still reaches the component through node 2,
	// and gets IQs from it.
	d2 := p.devices[1]
	p.devices = []*probeDevice{d2}
	keys := p.sendAll("after", 10, true)
	keys = append(keys, p.askAll(b, "after", 5)...)
	r := p.tally(keys, 3*time.Second, b)
	t.Logf("after the kill, device on node 2 -> B@n2: %v", r)
	if r.lost != 0 || r.dup != 0 || d2.errors() != 0 {
		t.Errorf("device on the surviving node: %v, %d errors", r, d2.errors())
	}
	if nodes, err := n2.ClusterNodes(testCtx(t)); err != nil {
		t.Error(err)
	} else {
		t.Logf("list_cluster on node 2 with node 1 down: %v", nodes)
	}

	start = time.Now()
	if err := n1.Start(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitFormed(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	t.Logf("node 1 restarted and back in the cluster in %v", time.Since(start).Round(time.Millisecond))
	if err := c2sLogin(n1.C2SAddr(), c.Domain(), "d1", "pw", false); err != nil {
		t.Errorf("login on the restarted node: %v", err)
	}
}
