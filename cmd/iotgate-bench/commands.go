package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/iotgate/iotgate/component"
	"github.com/iotgate/iotgate/internal/device"
	"github.com/iotgate/iotgate/internal/servers"
)

// commandPayload is the command every request carries: valid against the
// thermostat schema.
const commandPayload = `<set xmlns="urn:example:thermostat"><target>21.5</target></set>`

// stateReply is what the simulated devices answer at once: a <state>
// valid against the schema, so iotgate renders it as it would a real one.
const stateReply = `<state xmlns="urn:example:thermostat"><temperature>19.75</temperature><target>21.5</target><mode>heat</mode><heating>1</heating></state>`

// commandsScenario holds the online devices across runs.
type commandsScenario struct {
	e       *env
	jids    []string
	full    []string // their full JIDs, for the raw IQs
	clients []*device.Client
	body    []byte
	modRest *modRest // the peer row's load; nil: not on this server
}

// newCommands creates, registers and logs in the command devices, and
// waits until iotgate sees them online.
func newCommands(ctx context.Context, e *env) (*commandsScenario, error) {
	jids := e.deviceJIDs("cmd", e.cfg.cmdDevices)
	if err := e.ensureDevices(ctx, e.gate, jids); err != nil {
		return nil, err
	}
	answer := func(device.IQ) device.Reply { return device.Reply{Type: "result", Payload: stateReply} }
	clients, err := e.dialDevices(ctx, jids, true, answer)
	if err != nil {
		return nil, err
	}
	if err := e.waitOnline(ctx, e.gate, jids, time.Minute); err != nil {
		closeDevices(clients)
		return nil, err
	}
	s := &commandsScenario{e: e, jids: jids, clients: clients}
	for _, c := range clients {
		s.full = append(s.full, c.JID())
	}
	s.modRest = newModRest(e.xs, e.api, s.full)
	s.body, err = json.Marshal(map[string]any{"payload": commandPayload, "type": "set", "mode": "sync", "timeout_ms": 10000})
	return s, err
}

func (s *commandsScenario) close() { closeDevices(s.clients) }

// run measures one run: for each concurrency, REST commands through
// iotgate, then raw IQs from the sink component to the same devices; at
// the highest concurrency on Prosody, then the same IQs through Prosody's
// mod_rest (the peer row).
func (s *commandsScenario) run(ctx context.Context, res *results) error {
	const sc = "commands"
	for _, c := range s.e.cfg.concurrency {
		rest := fmt.Sprintf("REST sync c%d", c)
		raw := fmt.Sprintf("raw IQ ceiling c%d", c)
		m := s.e.meter(s.e.gate)
		op, restFails := s.counted(s.rest)
		restRes, err := load(ctx, c, s.e.cfg.duration, op)
		if err != nil {
			return fmt.Errorf("REST commands at concurrency %d: %w (%s)", c, err, s.deviceFailures(restFails))
		}
		restUse := m.stop().per(int64(restRes.lat.count()))
		res.addCPU("commands: "+rest, restUse)
		s.noteFailures(res, "commands: "+rest, restRes, restFails)
		m = s.e.meter(s.e.gate)
		op, rawFails := s.counted(s.raw)
		rawRes, err := load(ctx, c, s.e.cfg.duration, op)
		if err != nil {
			return fmt.Errorf("raw IQs at concurrency %d: %w (%s)", c, err, s.deviceFailures(rawFails))
		}
		res.addCPU("commands: "+raw, m.stop().per(int64(rawRes.lat.count())))
		s.noteFailures(res, "commands: "+raw, rawRes, rawFails)
		restRate, restLat := restRes.rate, restRes.lat
		rawRate, rawLat := rawRes.rate, rawRes.lat
		res.add(sc, rest, "req/s", "", restRate)
		res.add(sc, rest+" p50", "ms", "", ms(restLat.quantile(0.5)))
		res.add(sc, rest+" p99", "ms", "", ms(restLat.quantile(0.99)))
		res.add(sc, raw, "IQ/s", "", rawRate)
		res.add(sc, raw+" p50", "ms", "", ms(rawLat.quantile(0.5)))
		res.add(sc, raw+" p99", "ms", "", ms(rawLat.quantile(0.99)))
		if c == s.e.cfg.concurrency[len(s.e.cfg.concurrency)-1] {
			res.add(sc, fmt.Sprintf("c%d: REST ÷ raw rate", c), "ratio", "≥ 0.75", restRate/rawRate)
			res.add(sc, fmt.Sprintf("c%d: REST ÷ raw p99", c), "ratio", "≤ 1.5", ms(restLat.quantile(0.99))/ms(rawLat.quantile(0.99)))
			res.addPerOp(sc, rest, "command", restUse, "≤ 0.08", "≤ 0.07")
			if err := s.peerRow(ctx, res, c, restRate); err != nil {
				return err
			}
		}
	}
	return nil
}

// peerRow measures the same commands through Prosody's mod_rest at
// concurrency c, on the same devices, and adds its rows and iotgate's
// REST rate (restRate) ÷ its rate. On ejabberd it notes that the row is
// Prosody's.
func (s *commandsScenario) peerRow(ctx context.Context, res *results, c int, restRate float64) error {
	const sc = "commands"
	if s.modRest == nil {
		res.note(fmt.Sprintf("commands c%d: iotgate ÷ mod_rest rate (target ≥ 2.5): measured on Prosody only "+
			"(mod_rest is Prosody's community module; run with -server prosody)", c))
		return nil
	}
	name := fmt.Sprintf("mod_rest c%d", c)
	m := s.e.meter(s.e.gate)
	op, fails := s.counted(s.modRest.op)
	r, err := load(ctx, c, s.e.cfg.duration, op)
	if err != nil {
		return fmt.Errorf("mod_rest commands at concurrency %d: %w (%s)", c, err, s.deviceFailures(fails))
	}
	use := m.stop().per(int64(r.lat.count()))
	res.addCPU("commands: "+name, use)
	s.noteFailures(res, "commands: "+name, r, fails)
	res.add(sc, name, "req/s", "", r.rate)
	res.add(sc, name+" p50", "ms", "", ms(r.lat.quantile(0.5)))
	res.add(sc, name+" p99", "ms", "", ms(r.lat.quantile(0.99)))
	if v, ok := use.perOp(1); ok {
		res.add(sc, name+": Prosody CPU per command", cpuPerOpUnit, "", v)
	}
	res.add(sc, fmt.Sprintf("c%d: iotgate ÷ mod_rest rate", c), "ratio", "≥ 2.5", restRate/r.rate)
	return nil
}

// counted returns op, counting each failed operation against its device
// (the i-th operation goes to device i % len(s.jids), as rest and raw
// send it).
func (s *commandsScenario) counted(op func(ctx context.Context, i int) error) (func(ctx context.Context, i int) error, []atomic.Int64) {
	fails := make([]atomic.Int64, len(s.jids))
	return func(ctx context.Context, i int) error {
		err := op(ctx, i)
		if err != nil {
			fails[i%len(fails)].Add(1)
		}
		return err
	}, fails
}

// noteFailures notes a load's failed operations, if any, and the devices
// they went to, each with the state of its client session: failures at
// one device whose session is up are about that device or its route
// through the XMPP server, not about the path under test (#17).
func (s *commandsScenario) noteFailures(res *results, name string, r loadResult, fails []atomic.Int64) {
	noteFailures(res, name, r)
	if r.failed > 0 {
		res.note(fmt.Sprintf("%s: %s", name, s.deviceFailures(fails)))
	}
}

// deviceFailures says which devices the failures counted in fails went to.
func (s *commandsScenario) deviceFailures(fails []atomic.Int64) string {
	var devs []deviceFailure
	for i := range fails {
		if n := fails[i].Load(); n > 0 {
			d := deviceFailure{jid: s.jids[i], failed: n}
			select {
			case <-s.clients[i].Done():
				d.ended, d.err = true, s.clients[i].Err()
			default:
			}
			devs = append(devs, d)
		}
	}
	return deviceFailureText(devs, len(fails))
}

// deviceFailure is the failed operations of a load at one device.
type deviceFailure struct {
	jid    string
	failed int64
	ended  bool  // the device's client session had ended at the end of the load
	err    error // why, if it did (nil: a clean close)
}

// deviceFailureText describes the devices of devs, out of total devices.
func deviceFailureText(devs []deviceFailure, total int) string {
	if len(devs) == 0 {
		return "no failure at any device"
	}
	parts := make([]string, len(devs))
	for i, d := range devs {
		state := "client session up"
		switch {
		case d.ended && d.err != nil:
			state = fmt.Sprintf("client session ended: %v", d.err)
		case d.ended:
			state = "client session closed"
		}
		parts[i] = fmt.Sprintf("%s %d (%s)", d.jid, d.failed, state)
	}
	return fmt.Sprintf("failures at %d of %d devices: %s", len(devs), total, strings.Join(parts, "; "))
}

// rest sends the i-th command over REST and checks that it succeeded.
func (s *commandsScenario) rest(ctx context.Context, i int) error {
	return s.restVia(s.e.gate)(ctx, i)
}

// restVia returns the op that sends the i-th command over REST through
// gates[i % len(gates)] (several instances share the load in turn) and
// checks that it succeeded.
func (s *commandsScenario) restVia(gates ...*servers.Iotgate) func(ctx context.Context, i int) error {
	return func(ctx context.Context, i int) error {
		g := gates[i%len(gates)]
		j := s.jids[i%len(s.jids)]
		req, err := http.NewRequestWithContext(ctx, http.MethodPost,
			g.URL()+"/v1/devices/"+url.PathEscape(j)+"/commands", bytes.NewReader(s.body))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/json")
		return s.e.do(g, req)
	}
}

// raw sends the i-th command as an IQ from the sink component straight to
// the device, as iotgate would, and checks that it got a result.
func (s *commandsScenario) raw(ctx context.Context, i int) error {
	to := s.full[i%len(s.full)]
	rep, err := s.e.sink.conn.SendIQ(ctx, &component.Stanza{
		Kind: component.KindIQ, Type: component.TypeSet, To: to, Inner: []byte(commandPayload),
	})
	if err != nil {
		return fmt.Errorf("IQ to %s: %w", to, err)
	}
	if rep.Type != component.TypeResult {
		return fmt.Errorf("IQ to %s: answer %s %s", to, rep.Type, rep.Inner)
	}
	return nil
}

// opTimeout bounds one operation of a load: a request or IQ that gets no
// answer within it counts as failed rather than hanging the bench.
const opTimeout = 10 * time.Second

// loadResult is what a load measured.
type loadResult struct {
	rate     float64 // successful ops per second
	lat      *latencies
	failed   int64
	firstErr error
}

// load runs op from c goroutines for d, each starting the next as soon as
// the last returned, and returns the successful ops per second and their
// latencies. Failed ops (errors, or no answer within opTimeout) are
// counted and the load goes on; it is an error only if none succeeded.
func load(ctx context.Context, c int, d time.Duration, op func(ctx context.Context, i int) error) (loadResult, error) {
	res := loadResult{lat: &latencies{}}
	var (
		next   atomic.Int64
		failed atomic.Int64
		mu     sync.Mutex
		wg     sync.WaitGroup
	)
	start := time.Now()
	deadline := start.Add(d)
	for range c {
		wg.Go(func() {
			for time.Now().Before(deadline) && ctx.Err() == nil {
				i := int(next.Add(1))
				t0 := time.Now()
				opCtx, cancel := context.WithTimeout(ctx, opTimeout)
				err := op(opCtx, i)
				cancel()
				if err != nil {
					failed.Add(1)
					mu.Lock()
					if res.firstErr == nil {
						res.firstErr = err
					}
					mu.Unlock()
					continue
				}
				res.lat.add(time.Since(t0))
			}
		})
	}
	wg.Wait()
	return finished(ctx, res, start, failed.Load(), "operations")
}

// finished completes res once a load's workers are done (started at start,
// failed operations failed): its rate, or an error if ctx ended or no
// operation (called what) succeeded.
func finished(ctx context.Context, res loadResult, start time.Time, failed int64, what string) (loadResult, error) {
	if err := ctx.Err(); err != nil {
		return res, err
	}
	res.failed = failed
	res.rate = float64(res.lat.count()) / time.Since(start).Seconds()
	if res.lat.count() == 0 {
		return res, fmt.Errorf("all %d %s failed, first: %w", res.failed, what, res.firstErr)
	}
	return res, nil
}

// noteFailures records the failed operations of a load, if any, as a
// note under the table: they are left out of the rate and latencies.
func noteFailures(res *results, name string, r loadResult) {
	if r.failed > 0 {
		res.note(fmt.Sprintf("%s: %d of %d operations failed (left out of the figures), first: %v",
			name, r.failed, r.failed+int64(r.lat.count()), r.firstErr))
	}
}
