//go:build integration

package servers

import (
	"testing"
	"time"
)

// TestEjabberdCluster starts a two-node cluster and checks what tests of
// several iotgate instances rely on: accounts are shared, each node takes
// the component's connections, and the nodes and epmd go away at Close.
func TestEjabberdCluster(t *testing.T) {
	ctx := testCtx(t)
	start := time.Now()
	c, err := StartEjabberdCluster(ctx, XMPPOptions{}, 2)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("StartEjabberdCluster(2 nodes) took %v", time.Since(start).Round(time.Millisecond))
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
