//go:build integration

package main

import (
	"context"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/iotgate/iotgate/internal/device"
	"github.com/iotgate/iotgate/internal/servers"
)

//	IOTGATE_INTEGRATION=1 go test -race -tags integration -run 'TestE2EEdgeStream' -count 1 -v ./cmd/iotgate/

func TestE2EEdgeStreamOversize(t *testing.T) {
	forEachXMPPServer(t, testEdgeStreamOversize)
}

// testEdgeStreamOversize sends, through a server whose clients may send 8
// MiB stanzas, a 2 MB IQ reading from a registered device, a 250 KiB
// message of apostrophes from a user who is no device, and a too deep IQ,
// while another device sends IQ readings and a command waits for a device
// that answers after 1.5 s. Each big stanza costs only itself: the stream
// stays up, nothing else is lost.
func testEdgeStreamOversize(t *testing.T, name string) {
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	const limit = 1 << 20
	metricsAddr := freeAddr(t)
	e := newCommandsEnvWith(t, ctx, name, servers.XMPPOptions{C2SMaxStanzaBytes: 8 << 20},
		"IOTGATE_METRICS_ADDR", metricsAddr, "IOTGATE_MAX_STANZA_BYTES", strconv.Itoa(limit))
	g := e.g
	bigJID, steadyJID, thermoJID := e.register("big"), e.register("steady"), e.register("thermo")
	servers.RegisterUserForTest(t, e.xs, "stranger", "pw-stranger")
	thermo := e.online("thermo", thermostat)
	dial := func(jid string) *device.Client {
		user, _, _ := strings.Cut(jid, "@")
		c, err := device.Dial(ctx, device.Options{Addr: e.xs.C2SAddr(), JID: jid, Password: "pw-" + user})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	big, steady, stranger := dial(bigJID), dial(steadyJID), dial("stranger@"+e.xs.Domain())
	reconnectsBefore := metricValue(t, metricsAddr, "iotgate_xmpp_reconnects_total")

	// The steady device and a /readyz poller run throughout.
	var phase atomic.Int32 // 0 before the attack, 1 during
	var mu sync.Mutex
	rtt := [2][]time.Duration{}
	steadyErrs := map[string]int{}
	notReady := 0
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		for seq := 1; ; seq++ {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			p := phase.Load()
			t0 := time.Now()
			rep, err := steady.SendIQ(ctx, "set", e2eDomain, `<reading xmlns="urn:example:thermostat" seq="`+strconv.Itoa(seq)+`"><temperature>19.5</temperature><mode>heat</mode></reading>`)
			d := time.Since(t0)
			mu.Lock()
			switch {
			case err != nil:
				steadyErrs[err.Error()]++
			case rep.Type != "result":
				steadyErrs[string(rep.ErrorType)+"/"+string(rep.Condition)]++
			default:
				rtt[p] = append(rtt[p], d)
			}
			mu.Unlock()
		}
	}()
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(25 * time.Millisecond):
			}
			if code := g.doQuiet("/readyz", &readyBody{}); code != 200 {
				mu.Lock()
				notReady++
				mu.Unlock()
			}
		}
	}()
	time.Sleep(2 * time.Second)
	phase.Store(1)

	// A command in flight: the device answers after 1.5 s.
	cmd := make(chan commandAnswer, 1)
	go func() { cmd <- g.command(thermoJID, map[string]any{"payload": setTarget("43")}) }()
	time.Sleep(200 * time.Millisecond)

	// 1. A 2 MB IQ reading from a registered device.
	bigReading := `<reading xmlns="urn:example:thermostat"><temperature>19.5</temperature><mode>heat</mode><note>` + strings.Repeat("x", 2_000_000) + `</note></reading>`
	t0 := time.Now()
	rep, err := big.SendIQ(ctx, "set", e2eDomain, bigReading)
	if err != nil {
		t.Fatalf("2 MB IQ: %v", err)
	}
	t.Logf("%s: 2 MB IQ reading answered in %s: %s/%s %q", name, time.Since(t0).Round(time.Millisecond), rep.ErrorType, rep.Condition, rep.Text)
	if rep.Type != "error" || rep.ErrorType != "modify" || rep.Condition != "policy-violation" || !strings.Contains(rep.Text, strconv.Itoa(limit)) {
		t.Errorf("2 MB IQ answered %+v, want modify/policy-violation naming the limit", rep)
	}

	// 2. 250 KiB of apostrophes from a user who is no device: Prosody
	// forwards them as &apos;, six times the size.
	if err := stranger.SendMessage(ctx, e2eDomain, "", `<body>`+strings.Repeat("'", 250<<10)+`</body>`); err != nil {
		t.Fatalf("apostrophes: %v", err)
	}
	// 3. A stanza nested deeper than the default 64 levels.
	deep := `<reading xmlns="urn:example:thermostat">` + strings.Repeat("<n>", 100) + strings.Repeat("</n>", 100) + `</reading>`
	rep, err = big.SendIQ(ctx, "set", e2eDomain, deep)
	if err != nil {
		t.Fatalf("deep IQ: %v", err)
	}
	t.Logf("%s: deep IQ answered %s/%s %q", name, rep.ErrorType, rep.Condition, rep.Text)
	if rep.Type != "error" || rep.Condition != "policy-violation" || !strings.Contains(rep.Text, "nested too deeply") {
		t.Errorf("deep IQ answered %+v, want policy-violation", rep)
	}

	select {
	case a := <-cmd:
		t.Logf("%s: command during the attack: %d %s in %s", name, a.status, a.cmd.Status, a.took.Round(time.Millisecond))
		if a.status != 200 || a.cmd.Status != "succeeded" {
			t.Errorf("command during the attack: %d %+v, want succeeded", a.status, a.cmd)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("command not answered")
	}
	time.Sleep(time.Second)
	close(stop)
	wg.Wait()
	_ = thermo

	// The rejection of the registered device, the metrics.
	var rej struct {
		Items []struct {
			Via, Reason string
		} `json:"items"`
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(rej.Items) < 2 && time.Now().Before(deadline) {
		g.do("GET", "/v1/devices/"+url.PathEscape(bigJID)+"/rejections", nil, &rej)
		time.Sleep(50 * time.Millisecond)
	}
	if len(rej.Items) < 2 || !strings.Contains(rej.Items[0].Reason+rej.Items[1].Reason, "too large") {
		t.Errorf("rejections of %s = %+v, want the big and the deep IQ", bigJID, rej.Items)
	}
	oversize := metricValue(t, metricsAddr, "iotgate_xmpp_stanzas_oversize_total")
	reconnects := metricValue(t, metricsAddr, "iotgate_xmpp_reconnects_total") - reconnectsBefore
	t.Logf("%s: iotgate_xmpp_stanzas_oversize_total %.0f, reconnects during the attack %.0f, /readyz not 200 %d times", name, oversize, reconnects, notReady)
	// The apostrophes are over the limit only if the server escaped them.
	if oversize < 2 || oversize > 3 {
		t.Errorf("oversize stanzas = %.0f, want 2 or 3", oversize)
	}
	if reconnects != 0 || notReady != 0 {
		t.Errorf("reconnects %.0f, /readyz not 200 %d times; want the stream kept", reconnects, notReady)
	}
	mu.Lock()
	defer mu.Unlock()
	p99 := [2]time.Duration{}
	for p, what := range []string{"before", "during"} {
		p99[p] = percentile(rtt[p], 0.99)
		t.Logf("%s: steady device IQ round trip %s the attack: p50 %s p99 %s (%d)", name, what, percentile(rtt[p], 0.5), p99[p], len(rtt[p]))
	}
	if len(steadyErrs) != 0 {
		t.Errorf("steady device errors: %v", steadyErrs)
	}
	if p99[1] > p99[0]+time.Second {
		t.Errorf("steady IQ p99 during the attack %s > before %s + 1s", p99[1], p99[0])
	}
}
