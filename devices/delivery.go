package devices

import (
	"context"
	"time"

	"github.com/iotgate/iotgate"
)

// DeviceOnline tells the service that a device gained an available
// resource, so its queued commands are delivered. It never blocks.
func (s *Commands) DeviceOnline(bareJID string) {
	s.mu.Lock()
	if !s.queuedFor[bareJID] {
		s.mu.Unlock()
		return
	}
	s.mu.Unlock()
	s.wakeDelivery(bareJID)
}

// wakeDelivery has Run deliver a device's queued commands.
func (s *Commands) wakeDelivery(bareJID string) {
	s.mu.Lock()
	s.wanted[bareJID] = true
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Run delivers queued commands, expires them, and retries deliveries that
// a missed presence change would strand, until ctx ends. Then it stops
// every execution: commands still waiting for an answer fail with reason
// "iotgate shut down before the device answered".
func (s *Commands) Run(ctx context.Context) {
	defer close(s.stopped)
	sweep := time.NewTicker(s.cfg.SweepInterval)
	defer sweep.Stop()
	redeliver := time.NewTicker(s.cfg.RedeliverInterval)
	defer redeliver.Stop()
	for range foreignWorkers {
		s.wg.Add(1)
		go func() { defer s.wg.Done(); s.recordForeigns(s.ctx) }()
	}
	for {
		select {
		case <-ctx.Done():
			s.mu.Lock()
			s.closed = true
			s.mu.Unlock()
			s.cancel()
			s.wg.Wait()
			return
		case <-s.wake:
			s.mu.Lock()
			for j := range s.wanted {
				if s.delivering[j] {
					s.again[j] = true
				} else if !s.closed && !s.draining {
					s.delivering[j] = true
					s.wg.Add(1)
					go s.deliver(j)
				}
			}
			clear(s.wanted)
			s.mu.Unlock()
		case <-sweep.C:
			s.expire()
		case <-redeliver.C:
			s.redeliver()
		}
	}
}

func (s *Commands) expire() {
	ctx, cancel := s.storeCtx()
	defer cancel()
	ids, err := s.store.ExpireCommands(ctx, s.now(), reasonExpired)
	if err != nil {
		s.log.Warn("expiring queued commands failed", "err", err)
		return
	}
	if len(ids) > 0 {
		s.log.Info("queued commands expired", "commands", len(ids))
	}
	for range ids {
		s.cfg.Observer.CommandFinished(iotgate.CommandExpired, "", 0)
	}
}

// observe reports a command that reached a terminal status, with how long
// it took from creation.
func (s *Commands) observe(c *iotgate.Command) {
	var d time.Duration
	if c.CompletedAt != nil {
		d = c.CompletedAt.Sub(c.CreatedAt)
	}
	s.cfg.Observer.CommandFinished(c.Status, c.ErrorCode, d)
}

func (s *Commands) redeliver() {
	ctx, cancel := s.storeCtx()
	defer cancel()
	jids, err := s.store.QueuedDeviceJIDs(ctx)
	if err != nil {
		s.log.Warn("listing devices with queued commands failed", "err", err)
		return
	}
	s.setQueued(jids)
	for _, j := range jids {
		if online, stale := s.presence.Online(j); online && !stale {
			s.DeviceOnline(j)
		}
	}
}

// deliver sends a device's queued commands, oldest first, one at a time,
// until none is left or the device is offline again.
func (s *Commands) deliver(bare string) {
	defer s.wg.Done()
	if s.cfg.Claims != nil {
		defer func() {
			ctx, cancel := s.storeCtx()
			defer cancel()
			if err := s.cfg.Claims.ReleaseDelivery(ctx, bare, s.cfg.Instance); err != nil {
				s.log.Warn("delivery claim not released; it runs out", "device", bare, "err", err)
			}
		}()
	}
	for {
		s.deliverQueue(bare)
		s.mu.Lock()
		if !s.again[bare] || s.ctx.Err() != nil {
			delete(s.delivering, bare)
			delete(s.again, bare)
			s.mu.Unlock()
			return
		}
		delete(s.again, bare)
		s.mu.Unlock()
	}
}

const deliverBatch = 100

func (s *Commands) deliverQueue(bare string) {
	skipped := map[string]bool{}
	for s.ctx.Err() == nil && s.claim(bare) {
		ctx, cancel := s.storeCtx()
		cmds, err := s.store.QueuedCommands(ctx, bare, deliverBatch+len(skipped))
		cancel()
		if err != nil {
			s.log.Warn("reading queued commands failed", "device", bare, "err", err)
			return
		}
		// Whatever happens next, the device's next online event must
		// wake delivery again, unless nothing is queued.
		s.markQueued(bare, len(cmds) > 0)
		if len(cmds) == 0 {
			return
		}
		progress := false
		for _, c := range cmds {
			if skipped[c.ID] {
				continue
			}
			if c.ExpiresAt != nil && !s.now().Before(*c.ExpiresAt) {
				skipped[c.ID] = true // the sweeper marks it
				continue
			}
			target, err := fullJID(bare, c.Resource)
			if err != nil {
				skipped[c.ID] = true
				continue
			}
			to, stale := s.pick(bare, target)
			if stale {
				return
			}
			if to == "" {
				if target == "" {
					return // the device is offline again
				}
				skipped[c.ID] = true // waits for its resource
				continue
			}
			if !s.claim(bare) {
				return
			}
			done, ok := s.deliverOne(c, to)
			if !ok {
				return
			}
			progress = true
			if !s.awaitClaimed(bare, done) {
				return
			}
			if cur, err := s.Command(s.ctx, c.ID); err == nil && (cur.Status == iotgate.CommandQueued || cur.ErrorCode == iotgate.DetailXMPPUnavailable) {
				return // bounced, or the stream is down: wait for the next online
			}
		}
		if !progress || len(cmds) < deliverBatch+len(skipped) {
			return
		}
	}
}

// claim takes or renews this instance's lease on delivering bare's queue
// (always true when this instance is alone). Another instance holding it
// is delivering: this one leaves it, and its redelivery timer looks again
// once the lease may have run out.
func (s *Commands) claim(bare string) bool {
	if s.cfg.Claims == nil {
		return true
	}
	ctx, cancel := s.storeCtx()
	defer cancel()
	ok, err := s.cfg.Claims.ClaimDelivery(ctx, bare, s.cfg.Instance, s.cfg.ClaimTTL)
	if err != nil {
		s.log.Warn("delivery claim failed", "device", bare, "err", err)
	}
	return ok && err == nil
}

// awaitClaimed waits until done is closed, renewing the delivery claim
// meanwhile (an answer may take longer than the lease). It returns false
// if the claim is lost.
func (s *Commands) awaitClaimed(bare string, done <-chan struct{}) bool {
	if s.cfg.Claims == nil {
		<-done
		return true
	}
	t := time.NewTicker(s.cfg.ClaimTTL / 3)
	defer t.Stop()
	for {
		select {
		case <-done:
			return true
		case <-t.C:
			if !s.claim(bare) {
				<-done
				return false
			}
		}
	}
}

// deliverOne moves a queued command to sent and starts it. ok is false
// when delivery should stop (shutting down, store failing).
func (s *Commands) deliverOne(c *iotgate.Command, to string) (done <-chan struct{}, ok bool) {
	release := s.slots.wait(s.ctx, c.TokenID, c.DeviceJID)
	if release == nil {
		return nil, false
	}
	dev, err := s.devs.Device(s.ctx, c.DeviceJID)
	var schema iotgate.PayloadSchema
	if err == nil {
		schema, _, err = s.schemas.Compiled(s.ctx, dev.Schema, dev.SchemaVersion)
	}
	if err != nil {
		release()
		if iotgate.ErrorCode(err) == iotgate.ENotFound {
			return closedChan, true // device deleted: its commands go with it
		}
		s.log.Warn("queued command not delivered", "command", c.ID, "err", err)
		return nil, false
	}
	now := s.now()
	s.markSent(c, to, now)
	err = s.updates.do(iotgate.CommandUpdate{Command: c, From: []iotgate.CommandStatus{iotgate.CommandQueued}, Event: &c.History[len(c.History)-1]})
	if err != nil {
		release()
		if iotgate.ErrorCode(err) == iotgate.EConflict || iotgate.ErrorCode(err) == iotgate.ENotFound {
			return closedChan, true // canceled or expired meanwhile
		}
		s.log.Warn("queued command not delivered", "command", c.ID, "err", err)
		return nil, false
	}
	_, settled := s.start(c, schema, release)
	return settled, true
}

var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()
