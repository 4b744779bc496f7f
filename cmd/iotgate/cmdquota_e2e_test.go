//go:build integration

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/iotgate/iotgate/internal/device"
	"github.com/iotgate/iotgate/internal/servers"
)

// rawCommand sends a command with an Idempotency-Key as g's token and
// returns the status and the body as sent.
func rawCommand(t *testing.T, g *gate, jid string, body map[string]any, key string) (int, string) {
	t.Helper()
	b, _ := json.Marshal(body)
	req, err := http.NewRequest("POST", g.base+"/v1/devices/"+url.PathEscape(jid)+"/commands", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", key)
	resp, err := g.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(raw)
}

// TestE2ECommandTenants: two tenants (tokens limited to their own devices)
// on one iotgate. Tenant B can't squat on A's Idempotency-Keys nor learn
// A's command IDs through them; A's commands to silent devices hold at
// most A's quotas, so B's commands still go through; a timed-out command
// frees its slot and its IQ at once; a device's queue is bounded.
func TestE2ECommandTenants(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	metricsAddr := freeAddr(t)
	e := newCommandsEnv(t, ctx, "prosody",
		"IOTGATE_METRICS_ADDR", metricsAddr,
		"IOTGATE_MAX_COMMANDS_IN_FLIGHT", "6",
		"IOTGATE_MAX_COMMANDS_IN_FLIGHT_PER_TOKEN", "3",
		"IOTGATE_MAX_COMMANDS_IN_FLIGHT_PER_DEVICE", "2",
		"IOTGATE_MAX_QUEUED_PER_DEVICE", "3")
	g := e.g
	register := func(user, tenant string) string {
		t.Helper()
		jid := user + "@" + e.xs.Domain()
		if code := g.do("POST", "/v1/devices", map[string]any{"jid": jid, "schema": "thermostat", "labels": map[string]string{"tenant": tenant}}, nil); code != 201 {
			t.Fatalf("register %s: %d", jid, code)
		}
		return jid
	}
	tokenFor := func(tenant string) *gate {
		t.Helper()
		var tok tokenBody
		if code := g.do("POST", "/v1/tokens", map[string]any{"name": "tenant-" + tenant, "scopes": []string{"devices:read", "commands:send"},
			"devices": map[string]string{"tenant": tenant}}, &tok); code != 201 {
			t.Fatalf("create token for %s: %d", tenant, code)
		}
		as := *g
		as.client = &http.Client{Transport: bearerTransport{token: tok.Secret}}
		return &as
	}
	a, b := tokenFor("a"), tokenFor("b")
	offlineA, offlineB := register("offa", "a"), register("offb", "b") // never log in
	silent1, silent2 := register("silent1", "a"), register("silent2", "a")
	answering := register("answering", "b")
	silent3 := register("silent3", "ops")
	for _, u := range []string{"silent1", "silent2", "silent3", "answering"} {
		servers.RegisterUserForTest(t, e.xs, u, "pw-"+u)
	}
	mute := func(device.IQ) device.Reply { return device.Reply{Type: device.NoReply} }
	e.online("silent1", mute)
	e.online("silent2", mute)
	e.online("silent3", mute)
	e.online("answering", thermostat)
	queue := func(target string) map[string]any {
		return map[string]any{"payload": setTarget(target), "mode": "queue"}
	}
	const key = "7f3c-set-21.5" // the README's example: predictable

	t.Run("IdempotencyKeyNotSquatted", func(t *testing.T) {
		// B takes the key first, on its own device...
		squat := b.command(offlineB, queue("30"), "Idempotency-Key", key)
		if squat.status != 202 {
			t.Fatalf("B's command: %d %s", squat.status, squat.code)
		}
		// ...A's first use of it is A's own command, not a 422.
		mine := a.command(offlineA, queue("21.5"), "Idempotency-Key", key)
		if mine.status != 202 || mine.cmd.ID == "" || mine.cmd.ID == squat.cmd.ID || mine.header.Get("Idempotent-Replayed") != "" {
			t.Fatalf("A's command: %d %s %+v, want a new one (202)", mine.status, mine.code, mine.cmd)
		}
		if again := a.command(offlineA, queue("21.5"), "Idempotency-Key", key); again.status != 202 || again.cmd.ID != mine.cmd.ID || again.header.Get("Idempotent-Replayed") != "true" {
			t.Errorf("A's retry: %d %s, want A's command %s replayed", again.status, again.cmd.ID, mine.cmd.ID)
		}
		// B reusing the key with another body learns only of its own
		// command, never of A's.
		status, raw := rawCommand(t, b, offlineB, queue("31"), key)
		if status != 422 || !strings.Contains(raw, "idempotency_key_reused") || !strings.Contains(raw, squat.cmd.ID) || strings.Contains(raw, mine.cmd.ID) {
			t.Errorf("B's reuse: %d %s; want 422 idempotency_key_reused naming B's %s, never A's %s", status, raw, squat.cmd.ID, mine.cmd.ID)
		}
		// A key of A's that B has never used: B's use of it is a new
		// command of B's, whatever A did with it.
		if fresh := a.command(offlineA, queue("22"), "Idempotency-Key", "only-a"); fresh.status != 202 {
			t.Fatalf("A: %d", fresh.status)
		}
		if other := b.command(offlineB, queue("33"), "Idempotency-Key", "only-a"); other.status != 202 || other.header.Get("Idempotent-Replayed") != "" {
			t.Errorf("B with A's key: %d %s replayed %q, want a new command of B's", other.status, other.code, other.header.Get("Idempotent-Replayed"))
		}
	})

	// A floods its silent devices with commands that wait up to 300 s:
	// before the quotas, 6 of them took every slot of the instance.
	t.Run("FloodHoldsOnlyItsQuotas", func(t *testing.T) {
		async := func(target string) map[string]any {
			return map[string]any{"payload": setTarget(target), "mode": "async", "timeout_ms": 300000}
		}
		for i, tc := range []struct {
			jid, code string
		}{
			{silent1, ""}, {silent1, ""}, {silent1, "device_commands_in_flight"},
			{silent2, ""}, {silent2, "token_commands_in_flight"}, {silent2, "token_commands_in_flight"},
		} {
			got := a.command(tc.jid, async("21"))
			switch {
			case tc.code == "" && got.status != 202:
				t.Fatalf("A's command %d to %s: %d %s, want 202", i, tc.jid, got.status, got.code)
			case tc.code != "" && (got.status != 429 || got.code != tc.code || got.header.Get("Retry-After") == ""):
				t.Fatalf("A's command %d to %s: %d %s (Retry-After %q), want 429 %s", i, tc.jid, got.status, got.code, got.header.Get("Retry-After"), tc.code)
			}
		}
		// B's commands to its own device still go through, several.
		for range 3 {
			if got := b.command(answering, map[string]any{"payload": setTarget("22")}); got.status != 200 || got.cmd.Status != "succeeded" {
				t.Errorf("B's command while A floods: %d %s %+v, want 200", got.status, got.code, got.cmd)
			}
		}
		if n := metricValue(t, metricsAddr, "iotgate_xmpp_pending_iqs"); n != 3 {
			t.Errorf("pending IQs = %v, want A's 3", n)
		}
	})

	// A command that times out frees its slot and its IQ then, not a
	// minute later: the next command to the device is sent at once.
	t.Run("TimeoutFreesAtOnce", func(t *testing.T) {
		sync := map[string]any{"payload": setTarget("21"), "timeout_ms": 1000}
		done := make(chan commandAnswer, 2)
		for range 2 {
			go func() { done <- g.command(silent3, sync) }()
		}
		for range 2 {
			if got := <-done; got.status != 504 || got.code != "timeout" {
				t.Fatalf("silent device: %d %s, want 504 timeout", got.status, got.code)
			}
		}
		if n := metricValue(t, metricsAddr, "iotgate_xmpp_pending_iqs"); n != 3 {
			t.Errorf("pending IQs after the timeouts = %v, want A's 3 only", n)
		}
		for range 2 {
			if got := g.command(silent3, map[string]any{"payload": setTarget("21"), "mode": "async", "timeout_ms": 1000}); got.status != 202 {
				t.Errorf("command after the timeouts: %d %s, want 202 (the device's slots are free)", got.status, got.code)
			}
		}
	})

	t.Run("QueueBounded", func(t *testing.T) {
		sleeper := register("sleeper", "ops")
		for i := range 3 {
			if got := g.command(sleeper, queue("20")); got.status != 202 || got.cmd.Status != "queued" {
				t.Fatalf("queued command %d: %d %s %+v", i, got.status, got.code, got.cmd)
			}
		}
		got := g.command(sleeper, queue("20"))
		if got.status != 429 || got.code != "device_queue_full" || got.header.Get("Retry-After") == "" {
			t.Errorf("fourth queued command: %d %s (Retry-After %q), want 429 device_queue_full", got.status, got.code, got.header.Get("Retry-After"))
		}
		// Another device's queue is its own.
		if got := g.command(offlineA, queue("20")); got.status != 202 {
			t.Errorf("another device's queue: %d %s, want 202", got.status, got.code)
		}
	})
}
