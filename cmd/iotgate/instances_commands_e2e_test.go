//go:build integration

package main

import (
	"context"
	"database/sql"
	"fmt"
	"maps"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/iotgate/iotgate/internal/device"
)

// secondGate starts another instance on e's servers and database, with an
// ID and HTTP address of its own.
func (e *commandsEnv) secondGate(settings ...string) (*gate, map[string]string) {
	e.t.Helper()
	env := maps.Clone(e.env)
	delete(env, "IOTGATE_INSTANCE_ID")
	for i := 0; i+1 < len(settings); i += 2 {
		env[settings[i]] = settings[i+1]
	}
	return startGate(e.t, env), env
}

// TestE2EInstancesStandby: on Prosody, which refuses a second connection
// for the domain, the second instance waits as a standby and takes over
// when the active one is killed.
func TestE2EInstancesStandby(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	e := newCommandsEnv(t, ctx, "prosody")
	thermo := e.register("thermo1")
	e.online("thermo1", thermostat)
	gB, _ := e.secondGate()
	gB.waitReady(503, 30*time.Second, func(r readyBody) bool { return r.Role == "standby" && r.Instance != "" })
	e.g.waitReady(200, 10*time.Second, func(r readyBody) bool { return r.Role == "active" })

	killed := time.Now()
	if err := e.g.proc.Kill(); err != nil {
		t.Fatal(err)
	}
	took := gB.waitReady(200, 30*time.Second, func(r readyBody) bool { return r.Role == "active" })
	t.Logf("standby ready (active) %s after kill -9 of the active instance (target: 5s)", took.Round(time.Millisecond))
	gB.waitState(thermo, 10*time.Second, "online seen by the new active instance", func(s stateBody) bool { return s.Online && !s.PresenceStale })
	t.Logf("device online on the new active instance %s after the kill", time.Since(killed).Round(time.Millisecond))
	if a := gB.command(thermo, map[string]any{"payload": setTarget("22")}); a.status != 200 || a.cmd.Status != "succeeded" {
		t.Fatalf("command through the new active instance: %d %s %+v", a.status, a.code, a.cmd)
	}
}

// TestE2EInstancesCommands: on ejabberd, which spreads a domain's stanzas
// over every component connection, commands sent through either of two
// instances get the same outcome as with one, whichever connection the
// device's answer comes back on.
func TestE2EInstancesCommands(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	e := newCommandsEnv(t, ctx, "ejabberd")
	gA := e.g
	gB, _ := e.secondGate()
	for _, g := range []*gate{gA, gB} {
		g.waitReady(200, 30*time.Second, func(r readyBody) bool { return r.Role == "member" })
	}
	thermo := e.register("thermo1")
	e.online("thermo1", thermostat)
	gB.waitState(thermo, 5*time.Second, "online on the other instance", func(s stateBody) bool { return s.Online })

	t.Run("SyncThroughBoth", func(t *testing.T) {
		const n = 40
		var wg sync.WaitGroup
		var mu sync.Mutex
		bad := map[string]int{}
		for i := range n {
			g := []*gate{gA, gB}[i%2]
			wg.Go(func() {
				a := g.command(thermo, map[string]any{"payload": setTarget("21"), "timeout_ms": 10000})
				if a.status != 200 || a.cmd.Status != "succeeded" {
					mu.Lock()
					bad[a.code+"/"+a.cmd.Status]++
					mu.Unlock()
				}
			})
			if i%8 == 7 {
				wg.Wait()
			}
		}
		wg.Wait()
		if len(bad) > 0 {
			t.Fatalf("%v of %d sync commands did not succeed", bad, n)
		}
		// The answers took both paths: some reached the instance that had
		// not sent the command.
		if strays := strings.Count(gA.logs.String()+gB.logs.String(), "answer recorded for another instance's command"); strays == 0 {
			t.Errorf("no answer reached the other instance in %d commands: the cross-instance path went untested", n)
		} else {
			t.Logf("%d of %d answers came back on the other instance's connection", strays, n)
		}
	})

	t.Run("ErrorAndTimeoutThroughBoth", func(t *testing.T) {
		for _, g := range []*gate{gA, gB} {
			for range 4 {
				if a := g.command(thermo, map[string]any{"payload": setTarget("99")}); a.status != 502 || a.code != "xmpp_error" {
					t.Errorf("device error: %d %s, want 502 xmpp_error", a.status, a.code)
				}
			}
			if a := g.command(thermo, map[string]any{"payload": setTarget("42"), "timeout_ms": 500}); a.status != 504 {
				t.Errorf("silent device: %d %s, want 504", a.status, a.code)
			}
		}
	})

	t.Run("QueuedDeliveredOnceInOrder", func(t *testing.T) {
		sleeper := e.register("sleeper")
		var ids []string
		for i := range 6 {
			g := []*gate{gA, gB}[i%2]
			a := g.command(sleeper, map[string]any{"payload": setTarget(string(rune('0' + i))), "mode": "queue"})
			if a.status != 202 || a.cmd.Status != "queued" {
				t.Fatalf("queue command %d: %d %s", i, a.status, a.code)
			}
			ids = append(ids, a.cmd.ID)
		}
		var mu sync.Mutex
		var got []string
		e.online("sleeper", func(iq device.IQ) device.Reply {
			mu.Lock()
			if m := targetRE.FindStringSubmatch(iq.Payload); m != nil {
				got = append(got, m[1])
			}
			mu.Unlock()
			return thermostat(iq)
		})
		for _, id := range ids {
			gB.waitCommand(id, 20*time.Second, "delivered", func(c commandBody) bool { return c.Status == "succeeded" })
		}
		time.Sleep(500 * time.Millisecond)
		mu.Lock()
		defer mu.Unlock()
		if strings.Join(got, "") != "012345" {
			t.Errorf("device received targets %v, want 0..5 once each, in order", got)
		}
	})

	t.Run("SenderKilled", func(t *testing.T) {
		// An answer that comes after its sending instance died is recorded
		// by the survivor; a command that never gets one fails once the
		// survivor reaps the dead instance.
		answered := gA.command(thermo, map[string]any{"payload": setTarget("43"), "mode": "async", "timeout_ms": 60000})
		silent := gA.command(thermo, map[string]any{"payload": setTarget("42"), "mode": "async", "timeout_ms": 60000})
		if answered.status != 202 || silent.status != 202 {
			t.Fatalf("async commands: %d, %d", answered.status, silent.status)
		}
		gA.waitCommand(silent.cmd.ID, 5*time.Second, "sent", func(c commandBody) bool { return c.Status == "sent" })
		if err := gA.proc.Kill(); err != nil {
			t.Fatal(err)
		}
		killed := time.Now()
		c := gB.waitCommand(answered.cmd.ID, 10*time.Second, "answer recorded by the survivor", func(c commandBody) bool { return c.Status == "succeeded" })
		if c.Response == nil {
			t.Errorf("answered command has no response: %+v", c)
		}
		c = gB.waitCommand(silent.cmd.ID, 30*time.Second, "failed by the survivor", func(c commandBody) bool { return c.Status == "failed" })
		t.Logf("dead instance's command failed %s after the kill (%s)", time.Since(killed).Round(time.Millisecond), c.Error)
		if a := gB.command(thermo, map[string]any{"payload": setTarget("23")}); a.status != 200 {
			t.Errorf("command through the survivor: %d %s", a.status, a.code)
		}
	})
}

// TestE2EInstancesQueueFailover: the instance delivering a device's queued
// commands dies mid-delivery; the other finishes the queue once the
// dead one's lease runs out, and nothing is sent twice.
func TestE2EInstancesQueueFailover(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	e := newCommandsEnv(t, ctx, "ejabberd")
	gB, envB := e.secondGate()
	byID := map[string]*gate{e.env["IOTGATE_INSTANCE_ID"]: e.g, envB["IOTGATE_INSTANCE_ID"]: gB}
	for _, g := range byID {
		g.waitReady(200, 30*time.Second, func(r readyBody) bool { return r.Role == "member" })
	}
	db, err := sql.Open("postgres", e.pg.DSN())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()

	slow := e.register("slowq")
	var ids []string
	for i := range 5 {
		a := e.g.command(slow, map[string]any{"payload": setTarget(fmt.Sprintf("4%d", i)), "mode": "queue", "timeout_ms": 10000})
		if a.status != 202 {
			t.Fatalf("queue command %d: %d %s", i, a.status, a.code)
		}
		ids = append(ids, a.cmd.ID)
	}
	var mu sync.Mutex
	got := map[string]int{}
	e.online("slowq", func(iq device.IQ) device.Reply {
		if m := targetRE.FindStringSubmatch(iq.Payload); m != nil {
			mu.Lock()
			got[m[1]]++
			mu.Unlock()
		}
		time.Sleep(time.Second) // a slow device: delivery takes a while
		return device.Reply{Type: "result"}
	})
	// The instance that sent the first command is the one delivering.
	var deliverer string
	deadline := time.Now().Add(15 * time.Second)
	for deliverer == "" {
		db.QueryRowContext(ctx, `SELECT instance FROM commands WHERE id = $1 AND status = 'sent'`, ids[0]).Scan(&deliverer)
		if time.Now().After(deadline) {
			t.Fatal("the first queued command was not sent")
		}
		time.Sleep(20 * time.Millisecond)
	}
	dying := byID[deliverer]
	if err := dying.proc.Kill(); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	var survivor *gate
	for id, g := range byID {
		if id != deliverer {
			survivor = g
		}
	}
	succeeded := 0
	for _, id := range ids {
		c := survivor.waitCommand(id, 60*time.Second, "finished", func(c commandBody) bool {
			return c.Status == "succeeded" || c.Status == "failed"
		})
		if c.Status == "succeeded" {
			succeeded++
		} else if !strings.Contains(c.ErrorCode, "restarted") {
			t.Errorf("command %s failed: %s %s", id, c.ErrorCode, c.Error)
		}
	}
	t.Logf("queue finished by the survivor %s after the deliverer's kill -9: %d of %d succeeded, the rest failed (restarted)",
		time.Since(killed).Round(time.Millisecond), succeeded, len(ids))
	if succeeded < len(ids)-1 {
		t.Errorf("%d of %d succeeded: only the one in flight at the kill may fail", succeeded, len(ids))
	}
	mu.Lock()
	defer mu.Unlock()
	for target, n := range got {
		if n > 1 {
			t.Errorf("target %s delivered %d times", target, n)
		}
	}
}
