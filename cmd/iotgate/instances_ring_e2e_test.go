//go:build integration

package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/iotgate/iotgate/internal/device"
	"github.com/iotgate/iotgate/internal/servers"
	"github.com/iotgate/iotgate/schemas/examples"
)

// TestE2EInstancesReadingRing runs two iotgate instances that keep the
// newest readings of a device in memory (A and B, on one PostgreSQL and
// one ejabberd, which spreads the device's IQs over both, so that each
// stores about half of them) and a third that keeps none (C: every page
// from PostgreSQL). Once a reading is acknowledged, the newest page of
// every instance must show it within a second (the change notification),
// although A and B serve that page from memory; and A's and B's pages
// must be byte for byte C's, for the newest page and for pages with
// cursors, since/until and both orders. A device deleted on A must lose
// its readings on B.
// pollUntil calls cond every 10 ms until it holds or d has passed, and
// reports whether it held.
func pollUntil(d time.Duration, cond func() bool) bool {
	for start := time.Now(); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Since(start) > d {
			return false
		}
	}
	return true
}

func TestE2EInstancesReadingRing(t *testing.T) {
	pg := servers.PostgresForTest(t)
	xs := servers.EjabberdForTest(t, servers.XMPPOptions{Components: map[string]string{e2eDomain: e2eSecret}})
	metrics := map[string]string{}
	var gates []*gate
	for _, id := range []string{"ring-a", "ring-b", "ring-c"} {
		metrics[id] = freeAddr(t)
		env := map[string]string{
			"IOTGATE_INSTANCE_ID":  id,
			"IOTGATE_XMPP_ADDR":    xs.ComponentAddr(),
			"IOTGATE_DOMAIN":       e2eDomain,
			"IOTGATE_SECRET":       e2eSecret,
			"IOTGATE_DATABASE_URL": pg.DSN(),
			"IOTGATE_METRICS_ADDR": metrics[id],
		}
		if id == "ring-c" {
			env["IOTGATE_READING_CACHE_BYTES"] = "0"
		}
		gates = append(gates, startGate(t, env))
	}
	for _, g := range gates {
		g.waitReady(200, 60*time.Second, nil)
	}
	a, b, c := gates[0], gates[1], gates[2]
	jid := "ring1@" + xs.Domain()
	path := "/v1/devices/" + url.PathEscape(jid)
	if code := a.do("POST", "/v1/schemas", map[string]string{"name": "thermostat", "xsd": string(examples.Thermostat())}, nil); code != 201 {
		t.Fatalf("register schema: %d", code)
	}
	if code := a.do("POST", "/v1/devices", map[string]any{"jid": jid, "schema": "thermostat"}, nil); code != 201 {
		t.Fatalf("register device: %d", code)
	}
	servers.RegisterUserForTest(t, xs, "ring1", "pw1")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dev, err := device.Dial(ctx, device.Options{Addr: xs.C2SAddr(), JID: jid, Password: "pw1"})
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	// Every instance knows the schema's namespace (B and C from the
	// notification) before the first reading.
	time.Sleep(coherent)

	sent := 0
	send := func(n int) {
		t.Helper()
		for range n {
			sent++
			x := fmt.Sprintf(`<reading xmlns="urn:example:thermostat" unit="C" seq="%d"><temperature>%d.%02d</temperature><mode>heat</mode></reading>`, sent, sent%100, sent%7)
			rep, err := dev.SendIQ(ctx, "set", e2eDomain, x)
			if err != nil {
				t.Fatal(err)
			}
			if rep.Type != "result" {
				t.Fatalf("reading %d: %+v, want result", sent, rep)
			}
		}
	}
	newest := path + "/readings?limit=5"
	send(3)
	for _, g := range []*gate{a, b} {
		if code, _, body := g.getRaw(g.token, newest); code != 200 {
			t.Fatalf("first page: %d %s", code, body)
		}
	}
	// Each reading, whichever instance stored it, shows at once or
	// within the notification's delay on every instance, although A and
	// B answer from memory.
	for range 20 {
		send(1)
		// The device's client writes attributes in single quotes.
		seq := fmt.Sprintf("seq='%d'", sent)
		for name, g := range map[string]*gate{"A": a, "B": b, "C": c} {
			var last []byte
			if !pollUntil(coherent, func() bool {
				code, _, body := g.getRaw(g.token, newest)
				last = body
				return code == 200 && bytes.Contains(body, []byte(seq))
			}) {
				t.Fatalf("reading %d not in the newest page of %s within %s: %s", sent, name, coherent, last)
			}
		}
	}
	fromMemory := func(id string) int {
		t.Helper()
		resp, err := http.Get("http://" + metrics[id] + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		for line := range strings.SplitSeq(string(body), "\n") {
			if v, ok := strings.CutPrefix(line, "iotgate_reading_pages_from_memory_total"); ok {
				f := strings.Fields(v)
				n, _ := strconv.ParseFloat(f[len(f)-1], 64)
				return int(n)
			}
		}
		t.Fatalf("no iotgate_reading_pages_from_memory_total on %s", id)
		return 0
	}

	// Most of those pages came from memory (seeded again after the
	// other instance's readings), not all from PostgreSQL.
	if n := fromMemory("ring-a") + fromMemory("ring-b"); n < 20 {
		t.Fatalf("%d newest pages of A and B served from memory during the readings, want at least 20", n)
	}

	t.Run("SameBytes", func(t *testing.T) {
		// The pages of C, from PostgreSQL, are the reference; walk them
		// with their cursors, asking A and B for the same.
		before := fromMemory("ring-a") + fromMemory("ring-b")
		queries := []string{"?limit=5", "?limit=1", "?limit=23", "?limit=100", "?order=asc&limit=4", "?limit=7&order=desc"}
		var all struct {
			Items []struct {
				ReceivedAt string `json:"received_at"`
			} `json:"items"`
		}
		if code := c.do("GET", path+"/readings?limit=100&order=asc", nil, &all); code != 200 || len(all.Items) != sent {
			t.Fatalf("all readings from C: %d, %d of %d", code, len(all.Items), sent)
		}
		mid := url.QueryEscape(all.Items[sent/2].ReceivedAt)
		queries = append(queries, "?limit=4&since="+mid, "?limit=4&until="+mid, "?limit=3&order=asc&since="+mid)
		for _, q := range queries {
			next := path + "/readings" + q
			for pages := 0; next != "" && pages < 30; pages++ {
				code, _, want := c.getRaw(c.token, next)
				if code != 200 {
					t.Fatalf("C %s: %d %s", next, code, want)
				}
				for name, g := range map[string]*gate{"A": a, "B": b} {
					if code, _, got := g.getRaw(g.token, next); code != 200 || !bytes.Equal(got, want) {
						t.Fatalf("%s %s: %d\n%s\nwant (C, from PostgreSQL)\n%s", name, next, code, got, want)
					}
				}
				next = ""
				if i := bytes.Index(want, []byte(`"next_cursor":"`)); i >= 0 {
					cur := want[i+len(`"next_cursor":"`):]
					cur = cur[:bytes.IndexByte(cur, '"')]
					next = path + "/readings" + q + "&cursor=" + string(cur)
				}
			}
		}
		if after := fromMemory("ring-a") + fromMemory("ring-b"); after-before < len(queries) {
			t.Fatalf("%d pages of A and B served from memory, want at least %d", after-before, len(queries))
		}
		if n := fromMemory("ring-c"); n != 0 {
			t.Fatalf("C served %d pages from memory, want none (IOTGATE_READING_CACHE_BYTES=0)", n)
		}
	})

	t.Run("SelectorLimitedToken", func(t *testing.T) {
		// The device's newest page is in A's memory; a token limited to
		// other devices gets 404 for it all the same.
		if code, _, body := a.getRaw(a.token, newest); code != 200 {
			t.Fatalf("admin: %d %s", code, body)
		}
		var limited tokenBody
		if code := a.do("POST", "/v1/tokens", map[string]any{"name": "paris", "scopes": []string{"devices:read"}, "devices": map[string]string{"site": "paris"}}, &limited); code != 201 {
			t.Fatalf("create token: %d", code)
		}
		before := fromMemory("ring-a")
		for _, q := range []string{newest, path + "/readings?limit=2&order=asc"} {
			if code, _, body := a.getRaw(limited.Secret, q); code != 404 || !bytes.Contains(body, []byte(`"not_found"`)) {
				t.Fatalf("limited token, %s: %d %s, want 404 not_found", q, code, body)
			}
		}
		if n := fromMemory("ring-a") - before; n != 0 {
			t.Fatalf("%d pages served from memory to a token that may not see the device", n)
		}
	})

	t.Run("DeviceDeleted", func(t *testing.T) {
		if code := a.do("DELETE", path, nil, nil); code != 204 && code != 200 {
			t.Fatalf("DELETE on A: %d", code)
		}
		if code := a.do("POST", "/v1/devices", map[string]any{"jid": jid, "schema": "thermostat"}, nil); code != 201 {
			t.Fatalf("register again on A: %d", code)
		}
		pollWithin(t, "the readings of the deleted device gone from B", coherent, func() bool {
			code, _, body := b.getRaw(b.token, newest)
			return code == 200 && bytes.HasPrefix(body, []byte(`{"items":[]`))
		})
	})
}
