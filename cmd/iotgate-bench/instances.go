package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/iotgate/iotgate/internal/servers"
)

// secondInstanceID is the IOTGATE_INSTANCE_ID of the second instance; the
// first has the default (the host name). Each run restarts the second
// instance under the same ID, as an operator would.
const secondInstanceID = "bench-second"

// failoverIQTimeout is how long a device waits for the answer to an IQ
// reading during the failover load before it gives up on it (the IQs in
// flight to the killed instance are never answered) and sends the next.
const failoverIQTimeout = 2 * time.Second

// instancesScenario compares one iotgate instance with two on the same
// servers and cores, and measures the failover after kill -9 of one of
// two; this needs ejabberd, which spreads the domain's stanzas over both
// component connections. On Prosody, which keeps one connection per
// component and refuses the other, it measures the takeover of a standby
// instance after kill -9 of the active one instead.
type instancesScenario struct {
	e      *env
	ingest *ingestScenario // nil on Prosody
	cmds   *commandsScenario
	// second is the second instance while it runs (ejabberd).
	second *servers.Iotgate
	// spareID is the instance ID the next standby gets (Prosody): the
	// ID of the instance killed last, so that IDs are reused as an
	// operator restarting a host would.
	spareID string
}

// newInstances logs in the command devices (those of the commands
// scenario) and, on ejabberd, the ingest devices.
func newInstances(ctx context.Context, e *env) (*instancesScenario, error) {
	s := &instancesScenario{e: e, spareID: secondInstanceID}
	var err error
	if s.cmds, err = newCommands(ctx, e); err != nil {
		return nil, err
	}
	if e.cfg.server != "ejabberd" {
		return s, nil
	}
	if s.ingest, err = newIngest(ctx, e); err != nil {
		s.cmds.close()
		return nil, err
	}
	return s, nil
}

func (s *instancesScenario) close() {
	if s.ingest != nil {
		s.ingest.close()
	}
	s.cmds.close()
	s.stopSecond()
}

// rates is what one load of IQ readings delivered, and one of commands
// at each -concurrency.
type rates struct {
	ingest   float64
	commands []float64
}

// run measures one run: the load through one instance, the same load
// split over two, then kill -9 of the second during IQ ingest.
func (s *instancesScenario) run(ctx context.Context, res *results) error {
	const sc = "instances"
	if s.ingest == nil {
		return s.takeover(ctx, res)
	}
	one, err := s.measure(ctx, res, "one instance", s.e.gate)
	if err != nil {
		return err
	}
	if err := s.startSecond(ctx); err != nil {
		return err
	}
	two, err := s.measure(ctx, res, "two instances", s.e.gate, s.second)
	if err != nil {
		return err
	}
	res.add(sc, "IQ ingest: two ÷ one instance", "ratio", "≥ 0.8", two.ingest/one.ingest)
	for i, c := range s.e.cfg.concurrency {
		res.add(sc, fmt.Sprintf("REST commands c%d: two ÷ one instance", c), "ratio", "≥ 0.8", two.commands[i]/one.commands[i])
	}
	return s.failover(ctx, res)
}

// measure runs the ingest scenario's IQ load and the commands scenario's
// REST load at each -concurrency, the commands sent through gates in
// turn, and records the rates and each process's CPU under label.
func (s *instancesScenario) measure(ctx context.Context, res *results, label string, gates ...*servers.Iotgate) (rates, error) {
	const sc = "instances"
	e := s.e
	var r rates
	before, err := countReadings(ctx, e.db)
	if err != nil {
		return r, err
	}
	m := e.meter(gates...)
	_, took, refused, err := s.ingest.iqsRefused(ctx, gateDomain, e.cfg.ingestWindow)
	if err != nil {
		return r, fmt.Errorf("%s: IQ readings: %w", label, err)
	}
	res.addCPU(fmt.Sprintf("instances: IQ window %d, %s", e.cfg.ingestWindow, label), m.stop())
	if refused.n > 0 {
		// Refused readings are not stored: they fall out of the rate. The
		// note tells how many; a device would send them again.
		res.note(fmt.Sprintf("instances, %s: %d of %d IQ readings refused (not stored, left out of the rate), first: %v",
			label, refused.n, len(s.ingest.clients)*e.cfg.ingestReadings, refused.first))
	}
	after, err := countReadings(ctx, e.db)
	if err != nil {
		return r, err
	}
	if total := int64(len(s.ingest.clients)*e.cfg.ingestReadings) - refused.n; after-before != total {
		e.log.Warn("IQ readings stored differ from those acknowledged", "instances", label, "stored", after-before, "sent", total)
	}
	r.ingest = float64(after-before) / took.Seconds()
	res.add(sc, fmt.Sprintf("%s: IQ window %d, stored (%d devices × %d)", label, e.cfg.ingestWindow, len(s.ingest.clients), e.cfg.ingestReadings),
		"readings/s", "", r.ingest)

	for _, c := range e.cfg.concurrency {
		name := fmt.Sprintf("REST sync c%d", c)
		m = e.meter(gates...)
		cmd, err := load(ctx, c, e.cfg.duration, s.cmds.restVia(gates...))
		if err != nil {
			return r, fmt.Errorf("%s: REST commands at concurrency %d: %w", label, c, err)
		}
		res.addCPU("instances: "+name+", "+label, m.stop())
		noteFailures(res, "instances: "+name+", "+label, cmd)
		r.commands = append(r.commands, cmd.rate)
		res.add(sc, label+": "+name, "req/s", "", cmd.rate)
		res.add(sc, label+": "+name+" p50", "ms", "", ms(cmd.lat.quantile(0.5)))
		res.add(sc, label+": "+name+" p99", "ms", "", ms(cmd.lat.quantile(0.99)))
	}
	return r, nil
}

// startSecond starts the second instance on the same servers and
// database and waits until it is ready and sees the command devices
// online (presence is shared through PostgreSQL).
func (s *instancesScenario) startSecond(ctx context.Context) error {
	metrics := s.e.gateEnvMetrics // the first instance's, for a failed run's log
	g, err := s.e.startGate(ctx, s.e.pg.DSN(), "IOTGATE_INSTANCE_ID", secondInstanceID)
	s.e.gateEnvMetrics = metrics
	if err != nil {
		return fmt.Errorf("start the second instance: %w", err)
	}
	s.second = g
	// Presence is shared through PostgreSQL: the devices online before
	// the second instance started are online to it too.
	if err := s.e.waitOnline(ctx, g, s.cmds.jids, 10*time.Second); err != nil {
		return fmt.Errorf("second instance: %w", err)
	}
	return nil
}

// stopSecond stops the second instance if it runs.
func (s *instancesScenario) stopSecond() {
	if s.second == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.second.Stop(ctx); err != nil {
		s.e.log.Warn("stop the second instance", "err", err)
	}
	s.e.saveGateLog(s.second)
	s.second = nil
}

// failover runs the IQ readings of every ingest device (the same window
// of outstanding IQs, each given up after failoverIQTimeout) through both
// instances, kills the second with SIGKILL a quarter into the load, and
// measures how long after its death every device has had a reading sent
// after it acknowledged, and how long until a command through the
// survivor succeeds.
func (s *instancesScenario) failover(ctx context.Context, res *results) error {
	const sc = "instances"
	e, ing := s.e, s.ingest
	n := len(ing.clients)
	var (
		killed   atomic.Int64 // unix ns after the process died; 0 before
		acked    atomic.Int64
		firstAck = make([]atomic.Int64, n) // unix ns of a device's first result for an IQ sent after the death
	)
	readingOp := func(ctx context.Context, i int) error {
		d := i % n
		sent := time.Now().UnixNano()
		ictx, cancel := context.WithTimeout(ctx, failoverIQTimeout)
		rep, err := ing.clients[d].SendIQ(ictx, "set", gateDomain, ing.models[d].Reading(false))
		cancel()
		if err != nil {
			return err
		}
		if rep.Type != "result" && rep.Type != "" {
			return fmt.Errorf("answer %s: %s %s", rep.Type, rep.Condition, rep.Text)
		}
		acked.Add(1)
		if k := killed.Load(); k != 0 && sent > k {
			firstAck[d].CompareAndSwap(0, time.Now().UnixNano())
		}
		return nil
	}
	before, err := countReadings(ctx, e.db)
	if err != nil {
		return err
	}
	d := max(e.cfg.duration, 2*time.Second)
	var (
		wg       sync.WaitGroup
		cmdAfter time.Duration
		cmdErr   error
	)
	victim := s.second
	wg.Go(func() {
		select {
		case <-ctx.Done():
			return
		case <-time.After(d / 4):
		}
		if err := victim.Kill(); err != nil {
			cmdErr = err
			return
		}
		k := time.Now()
		killed.Store(k.UnixNano())
		cmdAfter, cmdErr = s.commandAfter(ctx, k)
	})
	r, err := load(ctx, n*e.cfg.ingestWindow, d, readingOp)
	wg.Wait()
	e.saveGateLog(victim)
	s.second = nil
	if err != nil {
		return fmt.Errorf("failover: IQ readings: %w", err)
	}
	if cmdErr != nil {
		return fmt.Errorf("failover: %w", cmdErr)
	}
	k := killed.Load()
	var last int64
	delays := make([]time.Duration, n)
	for i := range firstAck {
		t := firstAck[i].Load()
		if t == 0 {
			return fmt.Errorf("failover: %s acknowledged no reading sent after the kill within the load (%s)", ing.clients[i].JID(), d)
		}
		last = max(last, t)
		delays[i] = time.Duration(t - k).Round(time.Millisecond)
	}
	slices.Sort(delays)
	e.log.Info("failover: each device's first acknowledged reading after the kill", "delays", delays)
	after, err := countReadings(ctx, e.db)
	if err != nil {
		return err
	}
	stored := after - before
	res.add(sc, fmt.Sprintf("failover: kill -9 of one of two → readings of all %d devices acknowledged again", n), "ms", "",
		ms(time.Duration(last-k)))
	res.add(sc, "failover: kill -9 of one of two → a command through the survivor succeeds", "ms", "", ms(cmdAfter))
	verdict := "none lost"
	if stored < acked.Load() {
		verdict = fmt.Sprintf("%d ACKNOWLEDGED READINGS LOST", acked.Load()-stored)
	}
	res.note(fmt.Sprintf("instances, failover: %d IQ readings acknowledged, %d stored (%s); %d given up after %s (in flight to the killed instance)",
		acked.Load(), stored, verdict, r.failed, failoverIQTimeout))
	return nil
}

// commandAfter sends commands through the first instance, one at a time,
// from killed on, until one succeeds, and returns how long after killed
// that was.
func (s *instancesScenario) commandAfter(ctx context.Context, killed time.Time) (time.Duration, error) {
	op := s.cmds.restVia(s.e.gate)
	var errs []error
	for i := 0; ; i++ {
		cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		err := op(cctx, i)
		cancel()
		if err == nil {
			return time.Since(killed), nil
		}
		errs = append(errs, err)
		if time.Since(killed) > 30*time.Second || ctx.Err() != nil {
			return 0, fmt.Errorf("no command through the survivor succeeded within 30 s: %w", errors.Join(errs[:min(len(errs), 3)]...))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// takeover starts a standby instance (Prosody refuses its stream while
// the active one holds the domain: /readyz 503, role standby), kills the
// active one with SIGKILL, and measures how long until the standby is
// ready (200, role active) and a command through it succeeds. The
// standby then is the bench's iotgate.
func (s *instancesScenario) takeover(ctx context.Context, res *results) error {
	const sc = "instances"
	e := s.e
	_, oldID, err := e.readyz(ctx, e.gate)
	if err != nil {
		return err
	}
	env := e.gateEnv(e.pg.DSN())
	env["IOTGATE_INSTANCE_ID"] = s.spareID
	g, err := servers.StartIotgate(servers.IotgateOptions{Bin: e.bin, Env: env})
	if err != nil {
		return fmt.Errorf("start the standby: %w", err)
	}
	if _, err := e.waitRole(ctx, g, time.Minute, "standby"); err != nil {
		_ = g.Stop(context.Background())
		return err
	}
	old := e.gate
	if err := old.Kill(); err != nil {
		_ = g.Stop(context.Background())
		return err
	}
	killed := time.Now()
	e.saveGateLog(old)
	e.gate, s.spareID = g, oldID
	// Ready is 200 with role active, or member while the dead instance's
	// last heartbeat (it was streaming) has not expired yet (10 s): either
	// way the standby holds the stream and serves.
	ready, err := e.waitRole(ctx, g, time.Minute, "active", "member")
	if err != nil {
		return fmt.Errorf("standby after kill -9 of the active instance: %w", err)
	}
	cmd, err := s.commandAfter(ctx, killed)
	if err != nil {
		return err
	}
	res.add(sc, "takeover: kill -9 of the active → the standby ready (200, active or member)", "ms", "≤ 5000", ms(ready.Sub(killed)))
	res.add(sc, "takeover: kill -9 of the active → a command through the new active succeeds", "ms", "", ms(cmd))
	return nil
}

// readyz returns g's readiness: its role, and its instance ID.
func (e *env) readyz(ctx context.Context, g *servers.Iotgate) (role, instance string, err error) {
	code, b, err := e.call(ctx, g, http.MethodGet, "/readyz", nil)
	if err != nil {
		return "", "", fmt.Errorf("readyz: %w", err)
	}
	var r struct {
		Role     string `json:"role"`
		Instance string `json:"instance"`
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return "", "", fmt.Errorf("readyz: %d %s: %w", code, b, err)
	}
	if (code == http.StatusOK) != (r.Role == "active" || r.Role == "member") {
		return "", "", fmt.Errorf("readyz: %d with role %q", code, r.Role)
	}
	return r.Role, r.Instance, nil
}

// waitRole polls g's /readyz every 10 ms until it says one of roles, and returns
// when it did.
func (e *env) waitRole(ctx context.Context, g *servers.Iotgate, within time.Duration, roles ...string) (time.Time, error) {
	deadline := time.Now().Add(within)
	for {
		got, _, err := e.readyz(ctx, g)
		if err == nil && slices.Contains(roles, got) {
			return time.Now(), nil
		}
		if time.Now().After(deadline) {
			return time.Time{}, fmt.Errorf("instance not %s within %s (last: %q, %v)", strings.Join(roles, " or "), within, got, err)
		}
		select {
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		case <-g.Done():
			return time.Time{}, fmt.Errorf("instance exited while waiting to be %s:\n%s", strings.Join(roles, " or "), tail(g.Logs().String(), 40))
		case <-time.After(10 * time.Millisecond):
		}
	}
}
