//go:build integration

package main

import (
	"context"
	"database/sql"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/iotgate/iotgate/component"
	"github.com/iotgate/iotgate/internal/device"
	"github.com/iotgate/iotgate/internal/servers"
	"github.com/iotgate/iotgate/schemas/examples"
)

// The end-to-end proof that nothing slow runs on the stream's read loop
// (issue #11 part 3a): a device whose readings are slow to validate, and a
// flood of unknown senders, each cost only themselves.
//
//	IOTGATE_INTEGRATION=1 go test -race -tags integration -count=1 -run 'TestE2EReadLoop' -v ./cmd/iotgate/

// newReadLoopEnv starts PostgreSQL, the XMPP server with iotgate's
// component and the extra ones given, and iotgate with its metrics
// endpoint, whose address it returns, with extra settings given as
// name, value pairs.
func newReadLoopEnv(t *testing.T, ctx context.Context, name string, extra map[string]string, settings ...string) (*commandsEnv, string) {
	t.Helper()
	comps := map[string]string{e2eDomain: e2eSecret}
	for d, s := range extra {
		comps[d] = s
	}
	e := &commandsEnv{t: t, ctx: ctx, pg: servers.PostgresForTest(t)}
	// ejabberd gives a component connection every domain of its
	// listener: on a shared one, the second component would take
	// iotgate's stanzas too. A listener each, then.
	e.xs = servers.XMPPForTest(t, name, servers.XMPPOptions{Components: comps, SeparateComponentListeners: len(extra) > 0})
	metricsAddr := freeAddr(t)
	e.env = map[string]string{
		"IOTGATE_XMPP_ADDR": e.xs.ComponentAddrOf(e2eDomain), "IOTGATE_DOMAIN": e2eDomain,
		"IOTGATE_SECRET": e2eSecret, "IOTGATE_DATABASE_URL": e.pg.DSN(),
		"IOTGATE_METRICS_ADDR": metricsAddr,
	}
	for i := 0; i+1 < len(settings); i += 2 {
		e.env[settings[i]] = settings[i+1]
	}
	e.g = startGate(t, e.env)
	e.g.waitReady(200, 30*time.Second, nil)
	if code := e.g.do("POST", "/v1/schemas", map[string]string{"name": "thermostat", "xsd": string(examples.Thermostat())}, nil); code != 201 {
		t.Fatalf("register schema: %d", code)
	}
	return e, metricsAddr
}

// dialDevice logs in a device registered by e.register.
func (e *commandsEnv) dialDevice(jid string) *device.Client {
	e.t.Helper()
	user, _, _ := strings.Cut(jid, "@")
	c, err := device.Dial(e.ctx, device.Options{Addr: e.xs.C2SAddr(), JID: jid, Password: "pw-" + user})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { c.Close() })
	return c
}

// prober logs in a user who is no device, to ping iotgate.
func (e *commandsEnv) prober() *device.Client {
	e.t.Helper()
	servers.RegisterUserForTest(e.t, e.xs, "prober", "pw-prober")
	return e.dialDevice("prober@" + e.xs.Domain())
}

// steadyWatch is a device sending an IQ reading every 20 ms and a poller
// of /readyz every 25 ms, both until stop; RTTs are kept by phase (0
// before the trouble, 1 during). Alongside each reading, a client of its
// own pings iotgate (answered by the stream's reader, before any lane):
// that measures what every stanza shares with the trouble (the XMPP
// server, the one component stream, the CPUs), which no lane helps.
type steadyWatch struct {
	phase    atomic.Int32
	mu       sync.Mutex
	rtt      [2][]time.Duration
	ping     [2][]time.Duration
	sent     int
	acked    int
	errs     map[string]int
	notReady int
	stop     chan struct{}
	wg       sync.WaitGroup
}

func startSteadyWatch(ctx context.Context, g *gate, c, prober *device.Client) *steadyWatch {
	w := &steadyWatch{errs: map[string]int{}, stop: make(chan struct{})}
	w.wg.Add(2)
	go func() {
		defer w.wg.Done()
		for seq := 1; ; seq++ {
			select {
			case <-w.stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			p := w.phase.Load()
			var ping time.Duration
			pinged := pingAsync(ctx, prober, &ping)
			t0 := time.Now()
			rep, err := c.SendIQ(ctx, "set", e2eDomain, readingPayload(seq))
			d := time.Since(t0)
			perr := <-pinged
			w.mu.Lock()
			if perr != nil {
				w.errs["ping: "+perr.Error()]++
			} else {
				w.ping[p] = append(w.ping[p], ping)
			}
			w.sent++
			switch {
			case err != nil:
				w.errs[err.Error()]++
			case rep.Type != "result":
				w.errs[string(rep.ErrorType)+"/"+string(rep.Condition)+" "+rep.Text]++
			default:
				w.acked++
				w.rtt[p] = append(w.rtt[p], d)
			}
			w.mu.Unlock()
		}
	}()
	go func() {
		defer w.wg.Done()
		for {
			select {
			case <-w.stop:
				return
			case <-time.After(25 * time.Millisecond):
			}
			if code := g.doQuiet("/readyz", &readyBody{}); code != 200 {
				w.mu.Lock()
				w.notReady++
				w.mu.Unlock()
			}
		}
	}()
	return w
}

// halt stops the device and the poller and waits for them.
func (w *steadyWatch) halt() {
	close(w.stop)
	w.wg.Wait()
}

// check asserts that every reading of the steady device (and every ping)
// was acknowledged, that enough were sent in each phase and that /readyz
// stayed 200, and returns the readings' p99 before and during, and how
// much the pings' p99 grew.
func (w *steadyWatch) check(t *testing.T, name string) (before, during, pingGrowth time.Duration) {
	t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	before, during = percentile(w.rtt[0], 0.99), percentile(w.rtt[1], 0.99)
	pingGrowth = max(0, percentile(w.ping[1], 0.99)-percentile(w.ping[0], 0.99))
	t.Logf("%s: steady device: sent %d, acknowledged %d, errors %v; IQ round trip before: p50 %s p99 %s (%d), during: p50 %s p99 %s (%d); "+
		"ping of iotgate before: p50 %s p99 %s, during: p50 %s p99 %s; /readyz not 200: %d times",
		name, w.sent, w.acked, w.errs, percentile(w.rtt[0], 0.5), before, len(w.rtt[0]),
		percentile(w.rtt[1], 0.5), during, len(w.rtt[1]),
		percentile(w.ping[0], 0.5), percentile(w.ping[0], 0.99), percentile(w.ping[1], 0.5), percentile(w.ping[1], 0.99), w.notReady)
	if w.acked != w.sent || len(w.errs) > 0 {
		t.Errorf("steady device: %d of %d readings acknowledged (errors %v), want all", w.acked, w.sent, w.errs)
	}
	if len(w.rtt[0]) < 20 || len(w.rtt[1]) < 50 {
		t.Errorf("too few steady readings: %d before, %d during", len(w.rtt[0]), len(w.rtt[1]))
	}
	if w.notReady != 0 {
		t.Errorf("/readyz not 200 %d times, want always 200", w.notReady)
	}
	return before, during, pingGrowth
}

// slowXSD is a schema whose xs:pattern the registration probe misses on
// purpose, standing for whatever a heuristic probe will always miss: it
// probes runs of one character, of pairs and of each repeated group's
// text, and the groups here start with an optional atom, which it
// doesn't sample. libxml2's backtracking matcher takes time of the fourth
// power of the length on it: tens of ms on a value of the default
// IOTGATE_MAX_PATTERN_VALUE (256 characters) that fails at its last
// character. The test raises IOTGATE_MAX_PATTERN_TOTAL so that a reading
// holds sixteen of them and costs well above this machine's noise.
const slowXSD = `<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema" targetNamespace="urn:example:slow" xmlns="urn:example:slow" elementFormDefault="qualified">
  <xs:simpleType name="Code"><xs:restriction base="xs:string"><xs:pattern value="((z)?abc)*((z)?abc)*((z)?abc)*((z)?abc)*d"/></xs:restriction></xs:simpleType>
  <xs:element name="reading"><xs:complexType><xs:sequence><xs:element name="code" type="Code" maxOccurs="16"/></xs:sequence></xs:complexType></xs:element>
</xs:schema>`

// slowReading is a reading of slowXSD with sixteen 256-character codes
// that fail to match at their end: refused as invalid, after the full
// cost.
var slowReading = `<reading xmlns="urn:example:slow">` + strings.Repeat(`<code>`+strings.Repeat("abc", 85)+`!</code>`, 16) + `</reading>`

func TestE2EReadLoopSlowValidation(t *testing.T) {
	forEachXMPPServer(t, testReadLoopSlowValidation)
}

// testReadLoopSlowValidation measures what one slow reading costs alone,
// then keeps three of them in flight from one device while another device
// sends an IQ reading every 20 ms. Validation runs on the lanes' workers,
// one sender at a time in order: the slow device waits behind its own
// readings, nobody else does.
func testReadLoopSlowValidation(t *testing.T, name string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// In the process (no pattern sandbox): this test is about the read
	// loop around validations that take seconds, which the sandbox would
	// cut at its budget (TestE2EPatternTimeout covers that).
	e, metricsAddr := newReadLoopEnv(t, ctx, name, nil, "IOTGATE_MAX_PATTERN_TOTAL", "4096", "IOTGATE_PATTERN_TIMEOUT", "0")
	g := e.g
	if code := g.do("POST", "/v1/schemas", map[string]string{"name": "slow", "xsd": slowXSD}, nil); code != 201 {
		t.Fatalf("register the slow schema: %d, want 201 (accepted by the probe)", code)
	}
	slowJID := "slow@" + e.xs.Domain()
	if code := g.do("POST", "/v1/devices", map[string]any{"jid": slowJID, "schema": "slow"}, nil); code != 201 {
		t.Fatalf("register device %s: %d", slowJID, code)
	}
	servers.RegisterUserForTest(t, e.xs, "slow", "pw-slow")
	slow, steady := e.dialDevice(slowJID), e.dialDevice(e.register("steady"))
	reconnectsBefore := metricValue(t, metricsAddr, "iotgate_xmpp_reconnects_total")

	slowErrs := map[string]int{}
	var slowMu sync.Mutex
	sendSlow := func() (time.Duration, bool) {
		t0 := time.Now()
		rep, err := slow.SendIQ(ctx, "set", e2eDomain, slowReading)
		d := time.Since(t0)
		slowMu.Lock()
		defer slowMu.Unlock()
		switch {
		case err != nil:
			slowErrs[err.Error()]++
		case rep.Type != "error" || rep.ErrorType != "modify" || rep.Condition != "bad-request":
			slowErrs[fmt.Sprintf("%s %s/%s %s", rep.Type, rep.ErrorType, rep.Condition, rep.Text)]++
		default:
			return d, true
		}
		return d, false
	}

	// 1. What one slow reading costs, alone: its round trip, one at a time.
	var alone []time.Duration
	for range 3 {
		if d, ok := sendSlow(); ok {
			alone = append(alone, d)
		}
	}
	cost := percentile(alone, 0.5)
	t.Logf("%s: one slow reading alone (sixteen 256-character values, pattern ((z)?abc)*((z)?abc)*((z)?abc)*((z)?abc)*d): round trip p50 %s %v", name, cost, alone)
	// Below this the test would prove little on a machine where the
	// steady device's own p99 can reach 100 ms.
	const minCost = 300 * time.Millisecond
	if len(alone) != 3 || cost < minCost {
		t.Fatalf("slow readings alone: %v (errors %v); want 3 refused as bad-request, costing at least %s each", alone, slowErrs, minCost)
	}

	// 2. The steady device alone, then with three slow readings always
	// in flight.
	w := startSteadyWatch(ctx, g, steady, e.prober())
	time.Sleep(2 * time.Second)
	w.phase.Store(1)
	const during = 8 * time.Second
	var slowRTT []time.Duration
	var swg sync.WaitGroup
	end := time.Now().Add(during)
	for range 3 {
		swg.Add(1)
		go func() {
			defer swg.Done()
			for time.Now().Before(end) {
				d, ok := sendSlow()
				slowMu.Lock()
				if ok {
					slowRTT = append(slowRTT, d)
				}
				slowMu.Unlock()
			}
		}()
	}
	swg.Wait()
	w.halt()
	reconnects := metricValue(t, metricsAddr, "iotgate_xmpp_reconnects_total") - reconnectsBefore

	slowMu.Lock()
	t.Logf("%s: slow device, 3 in flight for %s: %d answered bad-request, round trip p50 %s p99 %s; errors %v",
		name, during, len(slowRTT), percentile(slowRTT, 0.5), percentile(slowRTT, 0.99), slowErrs)
	if len(slowErrs) > 0 || len(slowRTT) < 3 {
		t.Errorf("slow device: %d readings answered bad-request, errors %v; want every one refused as bad-request", len(slowRTT), slowErrs)
	}
	slowMu.Unlock()
	before, p99, _ := w.check(t, name)
	t.Logf("%s: steady IQ p99 %s during (%.1fx before; %.2f of one slow reading's cost %s); stream reconnects %.0f",
		name, p99, float64(p99)/float64(before), float64(p99)/float64(cost), cost, reconnects)
	// Had validation run on the read loop, the slow device (never idle,
	// three in flight) would hold the reader for a whole slow validation
	// at a time, and every steady reading would wait for the one under
	// way: half a cost on average, a whole one at worst, so a p99 near
	// the cost. Half the cost leaves room for the noise of this 2-core
	// machine, on one core of which libxml2 runs all along.
	if p99 > cost/2 {
		t.Errorf("steady device IQ p99 during the slow readings = %s, want below half of one slow reading's cost (%s)", p99, cost/2)
	}
	if reconnects != 0 {
		t.Errorf("stream reconnected %.0f times, want 0", reconnects)
	}
}

// evilDomain is a second component on the XMPP server, which the test
// connects to itself to send stanzas from as many JIDs as it likes.
const (
	evilDomain = "evil.localhost"
	evilSecret = "evil-secret"
)

func TestE2EReadLoopStrangerFlood(t *testing.T) {
	forEachXMPPServer(t, testReadLoopStrangerFlood)
}

// testReadLoopStrangerFlood sends IQ readings from thousands of unknown,
// rotating JIDs (x1@evil.localhost, x2@..., each once) through a second
// component, while a registered device sends an IQ reading every 20 ms.
// Strangers have their own lane and a bounded lookup rate: each is told
// registration-required, or to wait once lookups are throttled or their
// lane is full; the device is not slowed much, and the database sees a
// bounded number of lookups.
func testReadLoopStrangerFlood(t *testing.T, name string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	e, metricsAddr := newReadLoopEnv(t, ctx, name, map[string]string{evilDomain: evilSecret})
	g := e.g
	steady := e.dialDevice(e.register("steady"))

	evil, err := component.New(component.Config{Addr: e.xs.ComponentAddrOf(evilDomain), Domain: evilDomain, Secret: evilSecret, MaxPendingIQs: 20000})
	if err != nil {
		t.Fatal(err)
	}
	evilCtx, evilStop := context.WithCancel(ctx)
	evilDone := make(chan struct{})
	go func() { defer close(evilDone); evil.Run(evilCtx) }()
	t.Cleanup(func() { evilStop(); <-evilDone })
	for ok := false; !ok; {
		if ok, _, _ = evil.Health(ctx); !ok {
			if ctx.Err() != nil {
				t.Fatal("the evil component never connected")
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	reading := []byte(`<reading xmlns="urn:example:thermostat"><temperature>66.6</temperature><mode>heat</mode></reading>`)
	strangerIQ := func(i int) (string, error) {
		ictx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		rep, err := evil.SendIQ(ictx, &component.Stanza{Kind: component.KindIQ, Type: component.TypeSet,
			From: "x" + strconv.Itoa(i) + "@" + evilDomain, To: e2eDomain, Inner: reading})
		if err != nil {
			return "", err
		}
		se, ok := rep.StanzaError()
		if rep.Type != "error" || !ok {
			return rep.Type, nil
		}
		return string(se.Type) + "/" + string(se.Condition), nil
	}
	// The server routes a component's stanza to another component: one
	// stranger first, answered as any unregistered JID is.
	if got, err := strangerIQ(0); err != nil || got != "auth/registration-required" {
		t.Fatalf("first stranger's IQ: %q %v, want auth/registration-required", got, err)
	}

	db, err := sql.Open("postgres", e.pg.DSN())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	reconnectsBefore := metricValue(t, metricsAddr, "iotgate_xmpp_reconnects_total")

	w := startSteadyWatch(ctx, g, steady, e.prober())
	time.Sleep(2 * time.Second)
	// Device lookups by JID are index scans of devices_pkey (jid): count
	// them from here on. Counts a backend has not flushed yet are added
	// after the reset: if anything, more lookups are counted.
	if _, err := db.ExecContext(ctx, `SELECT pg_stat_reset()`); err != nil {
		t.Fatal(err)
	}
	floodStart := time.Now()
	w.phase.Store(1)

	// 3000 strangers at 300 a second: a flood of 10 s at six times the
	// lookup rate. (Faster, the test's own component, a race build too,
	// takes much of the 2 CPUs the flood is meant to show iotgate
	// sharing fairly.)
	const (
		strangers = 3000
		pace      = time.Second / 300
		inFlight  = 300
		floodMax  = 15 * time.Second
	)
	var mu sync.Mutex
	answers := map[string]int{}
	sem := make(chan struct{}, inFlight)
	var fwg sync.WaitGroup
	sent := 0
	for i := 1; i <= strangers && time.Since(floodStart) < floodMax; i++ {
		time.Sleep(time.Until(floodStart.Add(time.Duration(i) * pace)))
		sem <- struct{}{}
		sent++
		fwg.Add(1)
		go func() {
			defer fwg.Done()
			got, err := strangerIQ(i)
			<-sem
			if err != nil {
				got = "error: " + err.Error()
			}
			mu.Lock()
			answers[got]++
			mu.Unlock()
		}()
	}
	floodTook := time.Since(floodStart)
	fwg.Wait()
	answered := time.Since(floodStart)
	time.Sleep(500 * time.Millisecond) // the steady device, once the flood is over
	w.halt()

	reconnects := metricValue(t, metricsAddr, "iotgate_xmpp_reconnects_total") - reconnectsBefore
	limited := metricValue(t, metricsAddr, "iotgate_xmpp_rate_limited_total")
	// iotgate stops here: its connections close and their backends flush
	// their statistics as they exit.
	g.stop()
	window := time.Since(floodStart)
	var lookups, seqScans int64
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := db.QueryRowContext(ctx, `SELECT coalesce(i.idx_scan, 0), coalesce(s.seq_scan, 0)
			FROM pg_stat_user_indexes i JOIN pg_stat_user_tables s USING (relid)
			WHERE i.indexrelname = 'devices_pkey'`).Scan(&lookups, &seqScans)
		if err != nil {
			t.Fatal(err)
		}
		if lookups >= int64(answers["auth/registration-required"]) || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}

	regRequired, wait := answers["auth/registration-required"], answers["wait/policy-violation"]
	t.Logf("%s: %d strangers' IQ readings sent in %s (%.0f/s, %d in flight at most), all answered after %s: %v",
		name, sent, floodTook.Round(time.Millisecond), float64(sent)/floodTook.Seconds(), inFlight, answered.Round(time.Millisecond), answers)
	t.Logf("%s: PostgreSQL devices_pkey index scans (device lookups) over %s: %d, devices seq scans %d; iotgate_xmpp_rate_limited_total %.0f; stream reconnects %.0f",
		name, window.Round(time.Millisecond), lookups, seqScans, limited, reconnects)
	if regRequired+wait != sent {
		t.Errorf("strangers' answers %v: registration-required %d + wait %d != %d sent", answers, regRequired, wait, sent)
	}
	if regRequired == 0 || wait == 0 {
		t.Errorf("strangers' answers %v: want both registration-required (looked up) and wait (throttled)", answers)
	}
	// Every registration-required needed a lookup (each JID is new), so
	// the index scans counted are at least those: the proxy counts
	// lookups. At most: 50 a second over the window plus the burst of
	// 200 (devices.ServiceConfig StrangerRate, StrangerBurst), since each
	// stranger reserves its lookup, however many were queued before the
	// throttle showed at the read loop; +2 for the steady device's
	// refreshes below.
	maxLookups := int64(50*window.Seconds()) + 200 + 2
	if lookups < int64(regRequired) || lookups > maxLookups {
		t.Errorf("device lookups in PostgreSQL = %d, want between %d (registration-required answers) and %d (50/s over %s + 200)",
			lookups, regRequired, maxLookups, window.Round(time.Millisecond))
	}
	// And the steady device was never looked up meanwhile: its record
	// stayed cached, among devices, whatever the strangers did. Slack:
	// its record's refresh once the cache TTL (30 s) is over, on a slow
	// run.
	const refreshes = 2
	if lookups > int64(regRequired)+refreshes {
		t.Errorf("device lookups in PostgreSQL = %d, more than the %d strangers told registration-required (+%d): the registered device was looked up", lookups, regRequired, refreshes)
	}
	before, p99, shared := w.check(t, name)
	// The flood shares with the steady device the XMPP server, the one
	// component stream and its reader (which answers every throttled
	// stranger), and the 2 CPUs, with a race build of iotgate and of the
	// test's own component on them: that growth, measured by the pings,
	// no lane takes back and is allowed on top of 3x the p99 before (the
	// target of issue #11). Floor: single stalls of this noisy machine
	// that the pings don't always catch (as in TestE2EFaultDeviceFlood),
	// a little higher since the flood answers 1000 stanzas a second.
	const floor = 300 * time.Millisecond
	limit := max(3*before+shared, floor)
	t.Logf("%s: steady IQ p99 %s before, %s during the flood (%.1fx); pings' p99 grew by %s; limit max(3 × %s + %s, %s) = %s",
		name, before, p99, float64(p99)/float64(before), shared, before, shared, floor, limit)
	if p99 > limit {
		t.Errorf("steady device IQ p99 during the flood = %s, want at most %s", p99, limit)
	}
	if reconnects != 0 {
		t.Errorf("stream reconnected %.0f times, want 0", reconnects)
	}
}
