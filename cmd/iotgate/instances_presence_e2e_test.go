//go:build integration

package main

import (
	"context"
	"database/sql"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/iotgate/iotgate/internal/device"
	"github.com/iotgate/iotgate/internal/servers"
	"github.com/iotgate/iotgate/schemas/examples"
)

// presenceSpread polls a device's state on every gate until all of them
// satisfy cond, and returns how long after the first one did the last one
// did: 0 when they all did in the same round of polls (a GET each, 10 ms
// apart).
func presenceSpread(t *testing.T, gates []*gate, jid string, what string, cond func(stateBody) bool) time.Duration {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	var first time.Time
	for {
		n := 0
		for _, g := range gates {
			var st stateBody
			if g.doQuiet("/v1/devices/"+url.PathEscape(jid)+"/state", &st) == 200 && cond(st) {
				n++
			}
		}
		if n > 0 && first.IsZero() {
			first = time.Now()
		}
		if n == len(gates) {
			return time.Since(first)
		}
		if time.Now().After(deadline) {
			t.Fatalf("device %s: %s on %d of %d instances after 15 s", jid, what, n, len(gates))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestE2EInstancesPresence runs two iotgate instances for one domain on
// ejabberd, which spreads the component's stanzas over both streams:
// whichever instance receives the device's presence, both show it within
// a second, and each transition is recorded once.
func TestE2EInstancesPresence(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	pg := servers.PostgresForTest(t)
	xs := servers.XMPPForTest(t, "ejabberd", servers.XMPPOptions{Components: map[string]string{e2eDomain: e2eSecret}})
	env := map[string]string{
		"IOTGATE_XMPP_ADDR": xs.ComponentAddr(), "IOTGATE_DOMAIN": e2eDomain,
		"IOTGATE_SECRET": e2eSecret, "IOTGATE_DATABASE_URL": pg.DSN(),
		// Reconciliation after a restart's probes comes soon.
		"IOTGATE_PRESENCE_PROBE_GRACE": "1s",
	}
	a := startGate(t, env)
	a.waitReady(200, 30*time.Second, nil)
	b := startGate(t, env)
	b.waitReady(200, 30*time.Second, nil)
	gates := []*gate{a, b}
	if code := a.do("POST", "/v1/schemas", map[string]string{"name": "thermostat", "xsd": string(examples.Thermostat())}, nil); code != 201 {
		t.Fatalf("register schema: %d", code)
	}
	jid := "thermo1@" + xs.Domain()
	if code := a.do("POST", "/v1/devices", map[string]any{"jid": jid, "schema": "thermostat"}, nil); code != 201 {
		t.Fatalf("register device: %d", code)
	}
	servers.RegisterUserForTest(t, xs, "thermo1", "pw1")

	dev, err := device.Dial(ctx, device.Options{Addr: xs.C2SAddr(), JID: jid, Password: "pw1"})
	if err != nil {
		t.Fatal(err)
	}
	if err := dev.SendPresence(ctx, "", ""); err != nil {
		t.Fatal(err)
	}
	subscribe(t, ctx, dev)
	lag := presenceSpread(t, gates, jid, "online", func(s stateBody) bool { return s.Online && len(s.Resources) == 1 })
	t.Logf("online: the second instance showed it %v after the first (0: in the same round of polls)", lag)
	if lag > time.Second {
		t.Errorf("online on both instances %v apart, want within 1 s", lag)
	}

	// One instance restarts while the other streams: the device stays
	// online on the other all along, and after the restarted one's
	// probes and their grace, on both.
	b.stop()
	for end := time.Now().Add(2 * time.Second); time.Now().Before(end); {
		var st stateBody
		if code := a.doQuiet("/v1/devices/"+url.PathEscape(jid)+"/state", &st); code != 200 || !st.Online {
			t.Fatalf("while the other instance restarts: state %d %+v, want online", code, st)
		}
		time.Sleep(20 * time.Millisecond)
	}
	b = startGate(t, env)
	b.waitReady(200, 30*time.Second, nil)
	gates = []*gate{a, b}
	time.Sleep(2 * time.Second) // past the probes' grace
	presenceSpread(t, gates, jid, "online after the restart", func(s stateBody) bool { return s.Online && len(s.Resources) == 1 })

	dev.Close()
	lag = presenceSpread(t, gates, jid, "offline", func(s stateBody) bool { return !s.Online })
	t.Logf("offline: the second instance showed it %v after the first (0: in the same round of polls)", lag)
	if lag > time.Second {
		t.Errorf("offline on both instances %v apart, want within 1 s", lag)
	}

	db, err := sql.Open("postgres", pg.DSN())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.QueryContext(ctx, `SELECT p.online FROM presence_events p JOIN devices d ON d.id = p.device_id WHERE d.jid = $1 ORDER BY p.id`, jid)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var history []bool
	for rows.Next() {
		var on bool
		if err := rows.Scan(&on); err != nil {
			t.Fatal(err)
		}
		history = append(history, on)
	}
	if want := []bool{true, false}; !slices.Equal(history, want) {
		t.Errorf("presence history = %v, want %v (each transition once)", history, want)
	}
	var events int
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM events WHERE type = 'presence'`).Scan(&events); err != nil {
		t.Fatal(err)
	}
	if events != 2 {
		t.Errorf("%d presence events, want 2", events)
	}
}
