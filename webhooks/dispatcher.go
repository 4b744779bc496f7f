package webhooks

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	crand "crypto/rand"

	"github.com/iotgate/iotgate"
)

// Defaults for the zero values of DispatcherConfig.
const (
	DefaultBatchSize   = 100
	DefaultBatchWait   = time.Second
	DefaultTimeout     = 10 * time.Second
	DefaultBackoffMin  = time.Second
	DefaultBackoffMax  = 10 * time.Minute
	DefaultRetryLimit  = 24 * time.Hour
	DefaultConcurrency = 8
	DefaultPoll        = time.Second
	DefaultLease       = time.Minute
)

// roundsPerClaim bounds the batches one webhook delivers per lease, so
// that a long backlog shares the delivery slots with the others.
const roundsPerClaim = 10

// DispatcherConfig tunes a Dispatcher. The zero value is usable.
type DispatcherConfig struct {
	// Owner names this process in leases; "" picks a random one.
	Owner string
	// BatchSize bounds the events of one delivery (0: 100).
	BatchSize int
	// BatchWait is how long a batch that isn't full waits for more
	// events before it is sent (0: 1 s; negative: no wait).
	BatchWait time.Duration
	// Timeout bounds one delivery, from connecting to the answer's
	// headers (0: 10 s).
	Timeout time.Duration
	// BackoffMin and BackoffMax bound the wait between retries, which
	// doubles from BackoffMin, with full jitter (0: 1 s and 10 min).
	BackoffMin, BackoffMax time.Duration
	// RetryLimit is how long a streak of failures lasts before the
	// webhook is marked failing (0: 24 h).
	RetryLimit time.Duration
	// Concurrency bounds the deliveries in flight in this process
	// (0: 8).
	Concurrency int
	// Poll is how often due webhooks are looked for without a wake-up
	// (0: 1 s).
	Poll time.Duration
	// Lease is how long a claimed webhook stays this process's without
	// a write (0: 1 min); more than BatchWait + Timeout.
	Lease time.Duration
	// AllowPrivate lets deliveries reach loopback, private and
	// link-local addresses.
	AllowPrivate bool
	// Wakeups, when set, says that events were written (postgres's
	// EventWakeups): due webhooks are looked for at once, when there may
	// be one that isn't being delivered (none is looked for while no
	// webhook is due; the poll finds new, resumed and retried ones).
	Wakeups <-chan struct{}
	// Now returns the current time; nil: time.Now.
	Now func() time.Time
	// Logger; nil discards.
	Logger *slog.Logger
}

func (c DispatcherConfig) withDefaults() DispatcherConfig {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	if c.Owner == "" {
		c.Owner = "iotgate-" + strings.ToLower(crand.Text()[:12])
	}
	if c.BatchSize <= 0 {
		c.BatchSize = DefaultBatchSize
	}
	if c.Concurrency <= 0 {
		c.Concurrency = DefaultConcurrency
	}
	if c.BatchWait == 0 {
		c.BatchWait = DefaultBatchWait
	}
	c.BatchWait = max(c.BatchWait, 0)
	def(&c.Timeout, DefaultTimeout)
	def(&c.BackoffMin, DefaultBackoffMin)
	def(&c.BackoffMax, DefaultBackoffMax)
	def(&c.RetryLimit, DefaultRetryLimit)
	def(&c.Poll, DefaultPoll)
	def(&c.Lease, DefaultLease)
	// The lease is renewed after each batch: it must outlast the wait
	// for a batch and its delivery, or another instance takes over.
	c.Lease = max(c.Lease, 2*(c.BatchWait+c.Timeout))
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Dispatcher delivers webhooks: one per process. It claims due webhooks
// from the store (a lease, so that with several instances one delivers a
// given webhook at a time), reads the events after each one's cursor and
// POSTs them in order, at least once.
type Dispatcher struct {
	store  iotgate.WebhookStore
	events iotgate.EventLog
	cfg    DispatcherConfig
	client *http.Client

	mu      sync.Mutex
	running map[string]bool
	lag     map[string]lagMark
	// wake is true when a wake-up may find a due webhook that is not
	// delivered already: the last claim filled every free slot, or a
	// worker released its webhook since. Every commit of every instance
	// wakes the dispatcher; without it, each would cost a claim, webhooks
	// or none. released counts the releases, so that a claim that
	// overlapped one doesn't clear wake.
	wake     bool
	released uint64
	done     chan struct{} // a worker ended: there may be a free slot
	wg       sync.WaitGroup

	counts [4]atomic.Uint64 // by Outcomes' index
}

// lagMark is what a worker last saw of its webhook's backlog.
type lagMark struct {
	behind int64     // ids after the cursor
	oldest time.Time // the oldest undelivered event's time (zero: none)
}

// NewDispatcher returns a Dispatcher; Run starts it.
func NewDispatcher(store iotgate.WebhookStore, events iotgate.EventLog, cfg DispatcherConfig) *Dispatcher {
	cfg = cfg.withDefaults()
	return &Dispatcher{store: store, events: events, cfg: cfg, client: newClient(cfg.Timeout, cfg.AllowPrivate),
		running: map[string]bool{}, lag: map[string]lagMark{}, done: make(chan struct{}, 1)}
}

// Deliveries returns how many deliveries ended with each outcome.
func (d *Dispatcher) Deliveries() map[string]uint64 {
	out := make(map[string]uint64, len(Outcomes))
	for i, o := range Outcomes {
		out[o] = d.counts[i].Load()
	}
	return out
}

// Lag returns the largest lag among the webhooks this process delivered:
// event ids behind the log and the age of the oldest undelivered event.
func (d *Dispatcher) Lag() (events int64, seconds float64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	now := d.cfg.Now()
	for _, m := range d.lag {
		events = max(events, m.behind)
		if !m.oldest.IsZero() {
			seconds = max(seconds, now.Sub(m.oldest).Seconds())
		}
	}
	return events, seconds
}

// Run delivers until ctx ends, then waits for the deliveries in flight
// (which ctx cancels) and returns. It claims on every poll tick (webhooks
// created, resumed or due to retry, leases of other instances run out)
// and on a wake-up only when one may find something (see wake).
func (d *Dispatcher) Run(ctx context.Context) {
	t := time.NewTicker(d.cfg.Poll)
	defer t.Stop()
	defer d.wg.Wait()
	var pruned time.Time
	always := true
	for {
		d.claim(ctx, always)
		if now := d.cfg.Now(); now.Sub(pruned) >= pruneEvery {
			d.pruneLag(ctx)
			pruned = now
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			always = true
		case <-d.cfg.Wakeups:
			always = false
		case <-d.done:
			always = true
		}
	}
}

// claim leases due webhooks up to the free slots and starts a worker for
// each; unless always, only when a wake-up may find one.
func (d *Dispatcher) claim(ctx context.Context, always bool) {
	d.mu.Lock()
	free := d.cfg.Concurrency - len(d.running)
	skip, released := !always && !d.wake, d.released
	d.mu.Unlock()
	if free <= 0 || skip {
		return
	}
	now := d.cfg.Now()
	ws, err := d.store.ClaimWebhooks(ctx, d.cfg.Owner, now, now.Add(d.cfg.Lease), free)
	if err != nil {
		if ctx.Err() == nil {
			d.cfg.Logger.Warn("claim webhooks", "err", err)
		}
		return
	}
	d.mu.Lock()
	if d.released == released {
		// Fewer than asked for: every due webhook is delivered now,
		// here or by another instance, until one is released.
		d.wake = len(ws) >= free
	}
	d.mu.Unlock()
	for _, w := range ws {
		d.mu.Lock()
		if d.running[w.ID] {
			d.mu.Unlock()
			continue
		}
		d.running[w.ID] = true
		d.mu.Unlock()
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			more := d.deliver(ctx, w)
			// Release even when ctx is done, so another instance
			// need not wait for the lease to run out.
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			if err := d.store.ReleaseWebhook(rctx, d.cfg.Owner, w.ID); err != nil {
				d.cfg.Logger.Warn("release webhook", "webhook", w.ID, "err", err)
			}
			cancel()
			d.mu.Lock()
			delete(d.running, w.ID)
			d.wake = true
			d.released++
			d.mu.Unlock()
			if more {
				select {
				case d.done <- struct{}{}:
				default:
				}
			}
		}()
	}
}

// deliver sends w's pending events, up to roundsPerClaim batches, and
// reports whether it stopped with more to send.
func (d *Dispatcher) deliver(ctx context.Context, w *iotgate.Webhook) (more bool) {
	f := w.Filter()
	st := w.WebhookState
	log := d.cfg.Logger.With("webhook", w.ID)
	var firstSeen time.Time // when the pending batch was first seen not full
	for round := 0; round < roundsPerClaim; {
		batch, err := d.events.Events(ctx, iotgate.EventQuery{After: st.Cursor, Limit: d.cfg.BatchSize, Filter: f})
		if err != nil {
			if ctx.Err() == nil {
				log.Warn("read events", "err", err)
			}
			return false
		}
		evs := batch.Events[:0:0]
		for _, e := range batch.Events {
			if f.Matches(e) {
				evs = append(evs, e)
			}
		}
		d.markLag(ctx, w.ID, st.Cursor, evs)
		if len(evs) == 0 {
			if batch.Next <= st.Cursor {
				return false
			}
			// Skip what the webhook doesn't select, for good: its lag
			// then counts only what is left.
			st.Cursor = batch.Next
			if !d.record(ctx, log, w.ID, st) {
				return false
			}
			if !batch.More {
				return false
			}
			round++
			continue
		}
		if len(evs) < d.cfg.BatchSize && !batch.More {
			now := d.cfg.Now()
			if firstSeen.IsZero() {
				firstSeen = now
			}
			if wait := d.cfg.BatchWait - now.Sub(firstSeen); wait > 0 {
				if !sleep(ctx, min(wait, d.cfg.Poll)) {
					return false
				}
				continue
			}
		}
		firstSeen = time.Time{}
		round++
		started := d.cfg.Now()
		outcome, why := d.post(ctx, w, evs)
		if ctx.Err() != nil {
			return false // shutting down: this batch is sent again later
		}
		d.count(outcome)
		now := d.cfg.Now().UTC()
		if outcome == OutcomeOK {
			log.Debug("webhook delivered", "events", len(evs), "first", evs[0].ID, "took", now.Sub(started))
			// A success ends the failure streak.
			st = iotgate.WebhookState{Cursor: batch.Next, LastAttemptAt: &now, LastSuccessAt: &now}
			if !d.record(ctx, log, w.ID, st) {
				return false
			}
			continue
		}
		st.LastAttemptAt, st.LastError = &now, why
		st.Attempts++
		if st.FailingSince == nil {
			st.FailingSince = &now
		}
		if now.Sub(*st.FailingSince) >= d.cfg.RetryLimit {
			st.Failing, st.NextAttemptAt = true, nil
			log.Warn("webhook failing: retries exhausted, resume it to retry", "since", *st.FailingSince, "attempts", st.Attempts, "err", why)
		} else {
			next := now.Add(d.backoff(st.Attempts))
			st.NextAttemptAt = &next
			log.Info("webhook delivery failed", "outcome", outcome, "err", why, "attempts", st.Attempts, "retry_at", next)
		}
		d.record(ctx, log, w.ID, st)
		return false
	}
	return true
}

// record writes st, extending the lease; false: stop (paused, lease
// lost, webhook deleted, store down).
func (d *Dispatcher) record(ctx context.Context, log *slog.Logger, id string, st iotgate.WebhookState) bool {
	now := d.cfg.Now()
	paused, err := d.store.RecordDelivery(ctx, d.cfg.Owner, id, st, now, now.Add(d.cfg.Lease))
	if err == nil {
		return !paused
	}
	switch iotgate.ErrorCode(err) {
	case iotgate.ENotFound:
		d.mu.Lock()
		delete(d.lag, id)
		d.mu.Unlock()
	case iotgate.EConflict:
		log.Warn("webhook lease lost; another instance delivers it", "err", err)
	default:
		if ctx.Err() == nil {
			log.Warn("record webhook delivery", "err", err)
		}
	}
	return false
}

// pruneEvery is how often the lag marks of deleted webhooks are dropped.
const pruneEvery = time.Minute

// pruneLag drops the lag marks of webhooks that no longer exist, so that
// Lag doesn't report a deleted webhook's backlog forever.
func (d *Dispatcher) pruneLag(ctx context.Context) {
	ws, err := d.store.Webhooks(ctx)
	if err != nil {
		return
	}
	keep := make(map[string]bool, len(ws))
	for _, w := range ws {
		keep[w.ID] = true
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for id := range d.lag {
		if !keep[id] {
			delete(d.lag, id)
		}
	}
}

// markLag notes w's backlog for Lag.
func (d *Dispatcher) markLag(ctx context.Context, id string, cursor int64, pending []*iotgate.Event) {
	var m lagMark
	if len(pending) > 0 {
		m.oldest = pending[0].Time
	}
	if b, err := d.events.EventBounds(ctx); err == nil {
		m.behind = max(0, b.Last-cursor)
	}
	d.mu.Lock()
	d.lag[id] = m
	d.mu.Unlock()
}

func (d *Dispatcher) count(outcome string) {
	for i, o := range Outcomes {
		if o == outcome {
			d.counts[i].Add(1)
		}
	}
}

// backoff returns the wait before retry n (1 = the first): full jitter
// over BackoffMin doubling up to BackoffMax, so that receivers coming
// back up are not hit by every webhook at once.
func (d *Dispatcher) backoff(n int) time.Duration {
	ceil := d.cfg.BackoffMin
	for i := 1; i < n && ceil < d.cfg.BackoffMax; i++ {
		ceil *= 2
	}
	ceil = min(ceil, d.cfg.BackoffMax)
	return time.Duration(rand.Int64N(int64(ceil) + 1))
}

// sleep waits for d or ctx; false: ctx ended.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
