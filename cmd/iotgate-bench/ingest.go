package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/iotgate/iotgate/internal/device"
	"github.com/iotgate/iotgate/internal/device/sim"
)

// ingestScenario holds the logged-in devices across runs.
type ingestScenario struct {
	e       *env
	clients []*device.Client
	models  []*sim.Thermostat
}

// newIngest creates, registers and logs in the ingest devices.
func newIngest(ctx context.Context, e *env) (*ingestScenario, error) {
	jids := e.deviceJIDs("ingest", e.cfg.ingestDevices)
	if err := e.ensureDevices(ctx, e.gate, jids); err != nil {
		return nil, err
	}
	clients, err := e.dialDevices(ctx, jids, false, nil)
	if err != nil {
		return nil, err
	}
	s := &ingestScenario{e: e, clients: clients}
	for i := range clients {
		s.models = append(s.models, sim.NewThermostat(uint64(i+1)))
	}
	return s, nil
}

func (s *ingestScenario) close() { closeDevices(s.clients) }

// run measures one run: messages and IQs, each through iotgate and
// through the null sink, in that order, with the same devices and counts.
func (s *ingestScenario) run(ctx context.Context, res *results) error {
	e := s.e
	total := int64(len(s.clients) * e.cfg.ingestReadings)
	const sc = "ingest"
	devs := fmt.Sprintf("%d devices × %d", len(s.clients), e.cfg.ingestReadings)

	// Messages: rate only; a message has no answer to time.
	m := e.meter(e.gate)
	gateMsg, err := s.messages(ctx, gateDomain, total, func(ctx context.Context) (int64, error) { return countReadings(ctx, e.db) })
	if err != nil {
		return fmt.Errorf("messages to iotgate: %w", err)
	}
	msgUse := m.stop().per(total)
	res.addCPU("ingest: message, iotgate", msgUse)
	m = e.meter(e.gate)
	sinkMsg, err := s.messages(ctx, sinkDomain, total, func(context.Context) (int64, error) { return e.sink.messages.Load(), nil })
	if err != nil {
		return fmt.Errorf("messages to the null sink: %w", err)
	}
	res.addCPU("ingest: message, null sink", m.stop().per(total))
	res.add(sc, "message, iotgate, stored ("+devs+")", "readings/s", "", gateMsg)
	res.add(sc, "message, null sink, received", "stanzas/s", "", sinkMsg)
	res.add(sc, "message: iotgate ÷ null sink", "ratio", "≥ 0.92", gateMsg/sinkMsg)
	res.addPerOp(sc, "message, iotgate", "reading", msgUse, "≤ 0.03", "≤ 0.025")

	// The same messages paced at half that rate, timed from send to the
	// commit's notification on iotgate's change feed.
	paced, n, missing, err := s.pacedMessages(ctx, gateMsg/2, e.cfg.duration)
	if err != nil {
		return fmt.Errorf("paced messages to iotgate: %w", err)
	}
	if paced.count() == 0 {
		return fmt.Errorf("paced messages to iotgate: none of %d seen committed", n)
	}
	if missing > 0 {
		res.note(fmt.Sprintf("ingest: message at half the max rate: %d of %d messages not seen committed within 10 s (left out of the figures)", missing, n))
	}
	const half = "message at half the max rate"
	res.add(sc, half+", sent", "readings/s", "", float64(n)/e.cfg.duration.Seconds())
	res.add(sc, half+", send → commit p50", "ms", "", ms(paced.quantile(0.5)))
	res.add(sc, half+", send → commit p99", "ms", "< 50", ms(paced.quantile(0.99)))

	w := e.cfg.ingestWindow
	before, err := countReadings(ctx, e.db)
	if err != nil {
		return err
	}
	m = e.meter(e.gate)
	gateLat, gateTook, err := s.iqs(ctx, gateDomain, w)
	if err != nil {
		return fmt.Errorf("IQs to iotgate: %w", err)
	}
	iqUse := m.stop()
	after, err := countReadings(ctx, e.db)
	if err != nil {
		return err
	}
	iqUse = iqUse.per(after - before)
	res.addCPU("ingest: IQ, iotgate", iqUse)
	if after-before != total {
		e.log.Warn("IQ readings stored differ from those acknowledged", "stored", after-before, "sent", total)
	}
	m = e.meter(e.gate)
	sinkLat, sinkTook, err := s.iqs(ctx, sinkDomain, w)
	if err != nil {
		return fmt.Errorf("IQs to the null sink: %w", err)
	}
	res.addCPU("ingest: IQ, null sink", m.stop().per(int64(sinkLat.count())))
	gateIQ := float64(after-before) / gateTook.Seconds()
	sinkIQ := float64(sinkLat.count()) / sinkTook.Seconds()
	name := fmt.Sprintf("IQ window %d", w)
	res.add(sc, name+", iotgate, stored", "readings/s", "", gateIQ)
	res.add(sc, name+", null sink, answered", "stanzas/s", "", sinkIQ)
	res.add(sc, "IQ: iotgate ÷ null sink", "ratio", "≥ 0.85", gateIQ/sinkIQ)
	res.addPerOp(sc, name+", iotgate", "reading", iqUse, "", "")
	res.add(sc, name+", iotgate, send→result p50", "ms", "", ms(gateLat.quantile(0.5)))
	res.add(sc, name+", iotgate, send→result p99", "ms", "", ms(gateLat.quantile(0.99)))
	res.add(sc, name+", null sink, send→result p50", "ms", "", ms(sinkLat.quantile(0.5)))
	res.add(sc, name+", null sink, send→result p99", "ms", "", ms(sinkLat.quantile(0.99)))
	return nil
}

// messages sends ingestReadings messages from every device to `to`, as
// fast as the streams take them, and waits until count (which must grow
// by total) says they all arrived. It returns arrivals per second, from
// the first send to the poll that saw the last one (polled every 10 ms).
func (s *ingestScenario) messages(ctx context.Context, to string, total int64, count func(context.Context) (int64, error)) (float64, error) {
	base, err := count(ctx)
	if err != nil {
		return 0, err
	}
	start := time.Now()
	var wg sync.WaitGroup
	errs := make([]error, len(s.clients))
	for i, c := range s.clients {
		wg.Go(func() {
			for range s.e.cfg.ingestReadings {
				if err := c.SendMessage(ctx, to, "", s.models[i].Reading(false)); err != nil {
					errs[i] = err
					return
				}
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return 0, err
	}
	// Wait for the last arrival; give up after 10 s without progress.
	last, lastChange := base, time.Now()
	for {
		n, err := count(ctx)
		if err != nil {
			return 0, err
		}
		if n != last {
			last, lastChange = n, time.Now()
		}
		if n-base >= total {
			return float64(n-base) / time.Since(start).Seconds(), nil
		}
		if time.Since(lastChange) > 10*time.Second {
			return 0, fmt.Errorf("%s: %d of %d messages arrived, none for 10 s", to, n-base, total)
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// iqs sends ingestReadings IQ readings from every device to `to`, with
// window IQs outstanding per device, and returns the send→answer
// latencies and how long the whole took. Every answer must be a result.
func (s *ingestScenario) iqs(ctx context.Context, to string, window int) (*latencies, time.Duration, error) {
	lat, took, refused, err := s.iqsRefused(ctx, to, window)
	if err == nil && refused.n > 0 {
		err = fmt.Errorf("%d IQs not answered with a result, first: %w", refused.n, refused.first)
	}
	if err != nil {
		return nil, 0, err
	}
	return lat, took, nil
}

// refusals counts IQs answered with an error, and keeps the first.
type refusals struct {
	n     int64
	first error
}

// iqsRefused is iqs that counts the IQs answered with an error (left out
// of the latencies) instead of failing; it fails only if an IQ could not
// be sent or got no answer.
func (s *ingestScenario) iqsRefused(ctx context.Context, to string, window int) (*latencies, time.Duration, refusals, error) {
	lat := &latencies{}
	var failed atomic.Int64
	var firstErr, firstRefusal atomic.Pointer[error]
	start := time.Now()
	var wg sync.WaitGroup
	for i, c := range s.clients {
		var left atomic.Int64
		left.Store(int64(s.e.cfg.ingestReadings))
		for range window {
			wg.Go(func() {
				for left.Add(-1) >= 0 {
					payload := s.models[i].Reading(false)
					t0 := time.Now()
					ictx, cancel := context.WithTimeout(ctx, opTimeout)
					rep, err := c.SendIQ(ictx, "set", to, payload)
					cancel()
					if err != nil {
						firstErr.CompareAndSwap(nil, &err)
						return
					}
					if rep.Type != "result" && rep.Type != "" {
						failed.Add(1)
						err := fmt.Errorf("answer %s: %s %s", rep.Type, rep.Condition, rep.Text)
						firstRefusal.CompareAndSwap(nil, &err)
						continue
					}
					lat.add(time.Since(t0))
				}
			})
		}
	}
	wg.Wait()
	took := time.Since(start)
	if p := firstErr.Load(); p != nil {
		return nil, 0, refusals{}, *p
	}
	r := refusals{n: failed.Load()}
	if p := firstRefusal.Load(); p != nil {
		r.first = *p
	}
	return lat, took, r, nil
}
