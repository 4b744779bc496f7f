package devices

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/iotgate/iotgate"
)

// signal tells Run that readings are queued.
func (s *Service) signal() {
	select {
	case s.queued <- struct{}{}:
	default:
	}
}

// take appends queued readings to batch, up to MaxBatch: round-robin
// over the devices, at most MaxBatchPerDevice of each, so a device
// flooding the queue fills a batch only up to its share. The devices
// taken (keys) stay checked out, out of other batches, until release.
func (s *Service) take(batch []*pendingReading) ([]*pendingReading, []string) {
	s.queueMu.Lock()
	defer s.queueMu.Unlock()
	var keys []string
	for len(batch) < s.cfg.MaxBatch {
		key, p, ok := s.queue.next()
		if !ok {
			break
		}
		keys = append(keys, key)
		batch = append(batch, p)
	}
	for round := 1; round < s.cfg.MaxBatchPerDevice && len(batch) < s.cfg.MaxBatch; round++ {
		more := false
		for _, key := range keys {
			if len(batch) == s.cfg.MaxBatch {
				break
			}
			if p, ok := s.queue.more(key); ok {
				batch = append(batch, p)
				more = true
			}
		}
		if !more {
			break
		}
	}
	for _, p := range batch {
		if p.via == "iq" {
			s.iqQueued--
		}
	}
	return batch, keys
}

// linger returns how long to wait before committing what is queued, so
// that message readings trickling in share a transaction: none when an
// IQ reading waits for its answer or a batch's worth is queued.
func (s *Service) linger() time.Duration {
	s.queueMu.Lock()
	defer s.queueMu.Unlock()
	if s.iqQueued > 0 || s.queue.len() >= s.cfg.MaxBatchPerDevice || s.queue.len() == 0 {
		return 0
	}
	return max(0, s.cfg.MessageLinger-time.Since(s.firstAt))
}

// release returns devices taken into a batch to the queue's turn order,
// once their commit is done.
func (s *Service) release(keys []string) {
	s.queueMu.Lock()
	for _, key := range keys {
		s.queue.done(key)
	}
	ready := s.queue.hasReady()
	s.queueMu.Unlock()
	if ready {
		s.signal()
	}
}

// Run commits queued readings and rejections until ctx ends, then commits
// what is still queued (within a short grace period) and returns.
//
// Up to Committers batches are committed at once. A device's readings
// are in at most one of them (its queue stays checked out until that
// commit ends), so they are stored in order, and a device that floods
// the queue occupies one commit at a time: another device's reading never
// waits behind the flood's commit for a free one.
func (s *Service) Run(ctx context.Context) {
	defer close(s.stopped)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); s.runRejections(ctx) }()
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	lingering := time.NewTimer(time.Hour)
	lingering.Stop()
	var lingerC <-chan time.Time
	backoff := minRetry
	type outcome struct {
		keys []string
		ok   bool
	}
	finished := make(chan outcome, s.cfg.Committers)
	inflight := 0
	for {
		var retryC <-chan time.Time
		if inflight == 0 && s.heldCount() > 0 {
			retry.Reset(backoff)
			retryC = retry.C
		}
		select {
		case <-s.queued:
		case <-retryC:
		case <-lingerC:
			lingerC = nil
		case o := <-finished:
			inflight--
			s.release(o.keys)
			if o.ok {
				backoff = minRetry
			} else {
				backoff = min(2*backoff, maxRetry)
			}
		case <-ctx.Done():
			retry.Stop()
			lingering.Stop()
			s.closing.Store(true)
			for ; inflight > 0; inflight-- {
				s.release((<-finished).keys)
			}
			s.drain()
			wg.Wait()
			return
		}
		retry.Stop()
		if d := s.linger(); d > 0 {
			if lingerC == nil {
				lingering.Reset(d)
				lingerC = lingering.C
			}
			continue
		}
		if lingerC != nil {
			lingering.Stop()
			lingerC = nil
		}
		for inflight < s.cfg.Committers {
			// Held readings go first: they are the oldest. Then group
			// commit: whatever else is waiting. Under load a batch
			// grows while the previous commit runs; idle, a reading is
			// committed alone without waiting.
			batch, keys := s.take(s.takeHeld(make([]*pendingReading, 0, s.cfg.MaxBatch)))
			if len(batch) == 0 {
				break
			}
			inflight++
			go func() { finished <- outcome{keys, s.commit(ctx, batch)} }()
		}
	}
}

// The pace of commit attempts for held readings while the database is down.
const (
	minRetry = 100 * time.Millisecond
	maxRetry = 2 * time.Second
)

// heldCount returns how many message readings wait for another attempt.
func (s *Service) heldCount() int {
	s.heldMu.Lock()
	defer s.heldMu.Unlock()
	return len(s.held)
}

// takeHeld moves held readings into batch, as many as fit.
func (s *Service) takeHeld(batch []*pendingReading) []*pendingReading {
	s.heldMu.Lock()
	defer s.heldMu.Unlock()
	n := min(len(s.held), s.cfg.MaxBatch-len(batch))
	if n <= 0 {
		return batch
	}
	batch = append(batch, s.held[:n]...)
	for _, p := range s.held[:n] {
		s.heldBytes -= p.size()
	}
	rest := copy(s.held, s.held[n:])
	clear(s.held[rest:]) // let the moved readings go when they are done
	s.held = s.held[:rest]
	s.count(func(st *IngestStats) { st.Held = uint64(len(s.held)) })
	return batch
}

// Stopped is closed when Run has returned, every queued reading committed
// or refused.
func (s *Service) Stopped() <-chan struct{} { return s.stopped }

// drain commits what is left after shutdown began. Held readings get one
// last attempt; if it fails they are dropped, counted and logged.
func (s *Service) drain() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s.heldMu.Lock()
	s.draining = true
	s.heldMu.Unlock()
	for {
		batch, keys := s.take(s.takeHeld(make([]*pendingReading, 0, s.cfg.MaxBatch)))
		if len(batch) == 0 {
			return
		}
		s.commit(ctx, batch)
		s.release(keys)
	}
}

// commit stores batch and reports the outcome to each reading's sender.
// The store writes it in one transaction, or apart when the database
// refuses a value of some reading: only those are refused (invalid, with
// the reason, and recorded as rejections), the others are stored. When
// the database can't be reached, IQ readings are answered with a wait
// error (the device retries); message readings are held for the next
// attempt, within MaxHeld, MaxHeldBytes and HoldFor. It reports whether
// the database could be reached.
func (s *Service) commit(ctx context.Context, batch []*pendingReading) bool {
	rs := make([]*iotgate.Reading, len(batch))
	for i, p := range batch {
		rs[i] = p.r
	}
	began := time.Now()
	marked := s.ring.committing(rs)
	errs := s.store.InsertReadings(context.WithoutCancel(ctx), rs)
	now := s.cfg.Clock()
	stored := rs[:0:0]
	var firstErr error
	held, dropped, refused := 0, 0, 0
	// What each sender is told, once the stats count it: nil for stored,
	// errHeld while held.
	answers := make([]error, len(batch))
	for i, p := range batch {
		err := errs[i]
		switch {
		case err == nil:
			stored = append(stored, p.r)
			continue
		case iotgate.ErrorCode(err) == iotgate.EInvalid:
			// This reading's own fault: waiting won't help.
			refused++
			reason := &iotgate.Error{Code: iotgate.EInvalid, Message: "the reading could not be stored: the database refused a value in it (" + iotgate.ErrorMessage(err) + ")", Err: err}
			s.record(&iotgate.Rejection{DeviceID: p.r.DeviceID, DeviceJID: p.r.DeviceJID, ReceivedAt: p.r.ReceivedAt, Via: p.via, Reason: reason.Message, Payload: s.clip(p.r.XML)})
			s.cfg.Observer.ReadingRefused(RefusedInvalid)
			answers[i] = reason
			continue
		}
		if firstErr == nil {
			firstErr = err
		}
		// Only an unreachable database is worth waiting for.
		if p.via == "message" && iotgate.ErrorCode(err) == iotgate.EUnavailable && s.hold(p, now) {
			held++
			answers[i] = errHeld
			continue
		}
		dropped++
		if iotgate.ErrorCode(err) == iotgate.EUnavailable {
			s.resends.remember(p.r.DeviceID, p.resendKey, p.r.XML, p.r.ReceivedAt, now)
		}
		answers[i] = &iotgate.Error{Code: iotgate.EUnavailable, Message: "readings could not be stored, try again later", Err: err}
		s.cfg.Observer.ReadingRefused(RefusedUnavailable)
	}
	if len(stored) > 0 {
		s.cfg.Observer.ReadingsCommitted(len(stored), time.Since(began))
		// Before the acknowledgements: a device (or whoever it told) that
		// reads the state after its answer must find the reading.
		s.cache.committed(stored)
	}
	// Before the acknowledgements too, stored or not (marked is undone).
	s.ring.committed(stored, marked)
	s.heldMu.Lock()
	heldTotal, heldBytes := len(s.held), s.heldBytes
	s.heldMu.Unlock()
	s.count(func(st *IngestStats) {
		st.Accepted += uint64(len(stored))
		st.Rejected += uint64(refused)
		st.Dropped += uint64(dropped)
		st.Held = uint64(heldTotal)
		if len(stored) > 0 {
			st.Batches++
		}
	})
	// After the stats: a sender that reads them after its answer finds
	// its reading counted.
	for i, p := range batch {
		if answers[i] != errHeld {
			p.done(answers[i])
		}
	}
	if refused > 0 {
		s.log.Warn("readings refused by the database", "readings", len(batch), "refused", refused)
	}
	if firstErr != nil {
		s.log.Error("commit readings failed", "readings", len(batch), "refused", dropped, "held_for_retry", held,
			"held_total", heldTotal, "held_bytes", heldBytes, "err", firstErr)
		return false
	}
	return true
}

// errHeld marks a reading held for the next attempt: its sender is not
// answered yet.
var errHeld = errors.New("held")

// hold keeps p, a message reading the database could not take, for the
// next attempt if there is room (MaxHeld, MaxHeldBytes) and it is not too
// old (HoldFor); it reports whether p is held.
func (s *Service) hold(p *pendingReading, now time.Time) bool {
	s.heldMu.Lock()
	defer s.heldMu.Unlock()
	if s.draining || len(s.held) >= s.cfg.MaxHeld || s.heldBytes+p.size() > s.cfg.MaxHeldBytes || now.Sub(p.at) >= s.cfg.HoldFor {
		return false
	}
	// The failed attempt may have committed it: the next one must check.
	p.r.MaybeStored = true
	s.held = append(s.held, p)
	s.heldBytes += p.size()
	return true
}

// heldOverhead is what a held reading costs beyond its XML and JSON: the
// reading, its pending entry and the callback's closure, roughly.
const heldOverhead = 512

// size is what p costs in memory while held.
func (p *pendingReading) size() int { return len(p.r.XML) + len(p.r.Data) + heldOverhead }
