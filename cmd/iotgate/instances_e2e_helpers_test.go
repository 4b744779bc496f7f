//go:build integration

package main

import (
	"testing"
	"time"

	"github.com/iotgate/iotgate/internal/servers"
)

// sharedGates starts one iotgate per instance ID on one PostgreSQL
// database and one ejabberd (which accepts a component connection per
// instance for the same domain and spreads stanzas over them), and waits
// until every one is ready. Each also serves its metrics on a free
// address, returned by instance ID.
func sharedGates(t *testing.T, ids ...string) (gates []*gate, metrics map[string]string, xs *servers.Ejabberd) {
	t.Helper()
	pg := servers.PostgresForTest(t)
	xs = servers.EjabberdForTest(t, servers.XMPPOptions{Components: map[string]string{e2eDomain: e2eSecret}})
	metrics = map[string]string{}
	for _, id := range ids {
		metrics[id] = freeAddr(t)
		gates = append(gates, startGate(t, map[string]string{
			"IOTGATE_INSTANCE_ID":  id,
			"IOTGATE_XMPP_ADDR":    xs.ComponentAddr(),
			"IOTGATE_DOMAIN":       e2eDomain,
			"IOTGATE_SECRET":       e2eSecret,
			"IOTGATE_DATABASE_URL": pg.DSN(),
			"IOTGATE_METRICS_ADDR": metrics[id],
		}))
	}
	for _, g := range gates {
		g.waitReady(200, 60*time.Second, nil)
	}
	return gates, metrics, xs
}

// pollWithin calls cond every 10 ms until it holds, and returns how long
// that took; it fails t if cond does not hold within d.
func pollWithin(t *testing.T, what string, d time.Duration, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > d {
			t.Fatalf("%s: not within %s", what, d)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return time.Since(start)
}
