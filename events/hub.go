package events

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/iotgate/iotgate"
)

// Defaults for the zero values of Config.
const (
	DefaultPoll            = time.Second
	DefaultMaxBacklog      = 10000
	DefaultMaxBacklogBytes = 10 << 20
	DefaultMaxSubscribers  = 1000
	DefaultMaxPerToken     = 20
	// readBatch is how many events the hub (and a replay) reads at once.
	readBatch = 1000
)

// ErrSlowSubscriber ends a subscription whose backlog outgrew the bound:
// its client did not read fast enough. It resumes with the last id it got.
var ErrSlowSubscriber = errors.New("events: subscriber too slow, backlog bound exceeded")

// ErrClosed ends the subscriptions of a hub that is shut down.
var ErrClosed = errors.New("events: hub closed")

// Config tunes a Hub. The zero value is usable.
type Config struct {
	// Wake receives when events may have been written (PostgreSQL's
	// NOTIFY); the hub then reads the log after its last id, if it has
	// subscribers. Nil: the poll timer alone.
	Wake <-chan struct{}
	// Poll is how often the hub reads the log without a wake-up: the
	// safety net for lost notifications.
	Poll time.Duration
	// MaxBacklog and MaxBacklogBytes (of Data) bound what one subscriber
	// may have waiting; beyond either, it is cut off (ErrSlowSubscriber).
	MaxBacklog      int
	MaxBacklogBytes int
	// MaxSubscribers bounds the subscriptions of the hub, MaxPerToken
	// those of one token.
	MaxSubscribers int
	MaxPerToken    int
	// Logger receives read failures; nil discards them.
	Logger *slog.Logger
}

func (c Config) withDefaults() Config {
	if c.Poll <= 0 {
		c.Poll = DefaultPoll
	}
	if c.MaxBacklog <= 0 {
		c.MaxBacklog = DefaultMaxBacklog
	}
	if c.MaxBacklogBytes <= 0 {
		c.MaxBacklogBytes = DefaultMaxBacklogBytes
	}
	if c.MaxSubscribers <= 0 {
		c.MaxSubscribers = DefaultMaxSubscribers
	}
	if c.MaxPerToken <= 0 {
		c.MaxPerToken = DefaultMaxPerToken
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Hub reads the event log and fans its events out to subscriptions. One
// reader goroutine per process reads the log, whatever the number of
// subscribers; the hub never blocks on a subscriber. Create it with
// NewHub, then Start and finally Close.
type Hub struct {
	log iotgate.EventLog
	cfg Config

	mu       sync.Mutex
	subs     map[*Subscription]struct{}
	perToken map[string]int
	// last is the hub's position: every event up to it has been fanned
	// out to the subscriptions registered at that time.
	last    int64
	started bool
	closed  bool

	stop chan struct{}
	done chan struct{}
	// kick wakes the reader (buffer 1) when the first subscriber moved
	// the position: a wake-up the idle reader had dropped may have been
	// for events after it.
	kick chan struct{}

	delivered atomic.Uint64
	cutOff    atomic.Uint64
}

// NewHub returns a hub over log.
func NewHub(log iotgate.EventLog, cfg Config) *Hub {
	return &Hub{log: log, cfg: cfg.withDefaults(), subs: map[*Subscription]struct{}{}, perToken: map[string]int{},
		stop: make(chan struct{}), done: make(chan struct{}), kick: make(chan struct{}, 1)}
}

// Start reads where the log ends (the hub serves only what comes after)
// and starts the reader. Errors: unavailable (the log could not be read),
// invalid (started twice).
func (h *Hub) Start(ctx context.Context) error {
	b, err := h.log.EventBounds(ctx)
	if err != nil {
		return err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.started || h.closed {
		return iotgate.Errorf(iotgate.EInvalid, "event hub started twice or after Close")
	}
	h.started, h.last = true, b.Last
	go h.run()
	return nil
}

// Close stops the reader and ends every subscription with ErrClosed. It
// waits for the reader to return.
func (h *Hub) Close() {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return
	}
	h.closed = true
	started := h.started
	subs := h.subs
	h.subs = map[*Subscription]struct{}{}
	h.mu.Unlock()
	close(h.stop)
	for s := range subs {
		s.end(ErrClosed)
	}
	if started {
		<-h.done
	}
}

// Subscribers returns how many subscriptions are open (a gauge).
func (h *Hub) Subscribers() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.subs)
}

// Delivered counts events handed to subscribers, replays included.
func (h *Hub) Delivered() uint64 { return h.delivered.Load() }

// CutOff counts subscriptions ended with ErrSlowSubscriber.
func (h *Hub) CutOff() uint64 { return h.cutOff.Load() }

// run is the reader: it reads the log after each wake-up and poll tick.
func (h *Hub) run() {
	defer close(h.done)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-h.stop
		cancel()
	}()
	tick := time.NewTicker(h.cfg.Poll)
	defer tick.Stop()
	for {
		select {
		case <-h.stop:
			return
		case <-h.cfg.Wake:
		case <-h.kick:
		case <-tick.C:
		}
		if err := h.read(ctx); err != nil && ctx.Err() == nil {
			h.cfg.Logger.Warn("read event log", "err", err)
		}
	}
}

// read fans out every event after the hub's position, in batches. With no
// subscriber it does nothing: every commit of every instance wakes the
// hub, and an idle one must not cost the store a query per commit. Its
// position then goes stale; the first subscriber moves it to the log's
// end (register).
func (h *Hub) read(ctx context.Context) error {
	for {
		h.mu.Lock()
		after, idle := h.last, len(h.subs) == 0
		h.mu.Unlock()
		if idle {
			return nil
		}
		b, err := h.log.Events(ctx, iotgate.EventQuery{After: after, Limit: readBatch})
		if err != nil {
			return err
		}
		h.fanOut(b)
		if !b.More {
			return nil
		}
	}
}

// fanOut hands a batch to every subscription it matches and moves the
// position, in one critical section: a subscription registered before it
// gets all of the batch, one registered after none of it (its replay
// reads it).
func (h *Hub) fanOut(b *iotgate.EventBatch) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if b.Next <= h.last {
		return
	}
	// Up to the position, events were fanned out already, or come
	// before every subscription (a read that began before the first
	// subscriber moved the position).
	evs := b.Events
	for len(evs) > 0 && evs[0].ID <= h.last {
		evs = evs[1:]
	}
	if len(evs) > 0 && len(h.subs) > 0 {
		for _, e := range evs {
			if e.Encoded == nil {
				// Once here rather than once per stream.
				e.Encoded, _ = json.Marshal(e)
			}
		}
		// The batch to each subscription at once: one lock and one
		// wake-up per subscription, not per event.
		for s := range h.subs {
			if !s.push(evs) {
				h.removeLocked(s)
				h.cutOff.Add(1)
			}
		}
	}
	h.last = b.Next
}

// register adds s and returns the hub's position, and the log's bounds
// when it read them (nil otherwise). The first subscriber of
// an idle hub first moves the position to the log's end: the idle hub did
// not follow it (read), and a position left behind would hand the new
// subscriber the events in between. Errors: too_many_requests (a limit),
// unavailable (closed, or the log can't be read).
func (h *Hub) register(ctx context.Context, s *Subscription) (int64, *iotgate.EventBounds, error) {
	var bounds *iotgate.EventBounds
	for {
		h.mu.Lock()
		if h.closed || !h.started {
			h.mu.Unlock()
			return 0, nil, iotgate.Errorf(iotgate.EUnavailable, "the event hub is not running")
		}
		if len(h.subs) >= h.cfg.MaxSubscribers {
			n := len(h.subs)
			h.mu.Unlock()
			return 0, nil, iotgate.Errorf(iotgate.ETooMany, "this server has %d event streams open already", n)
		}
		if h.perToken[s.token] >= h.cfg.MaxPerToken {
			h.mu.Unlock()
			return 0, nil, iotgate.Errorf(iotgate.ETooMany, "this token has %d event streams open already", h.cfg.MaxPerToken)
		}
		if len(h.subs) > 0 || bounds != nil {
			// Never back: a read may have moved past the end meanwhile.
			if len(h.subs) == 0 {
				h.last = max(h.last, bounds.Last)
				select {
				case h.kick <- struct{}{}:
				default:
				}
			}
			h.subs[s] = struct{}{}
			h.perToken[s.token]++
			pos := h.last
			h.mu.Unlock()
			return pos, bounds, nil
		}
		h.mu.Unlock()
		// Outside the lock: the reader and the other streams go on.
		b, err := h.log.EventBounds(ctx)
		if err != nil {
			return 0, nil, err
		}
		bounds = &b
	}
}

// unregister removes s, if it is still registered.
func (h *Hub) unregister(s *Subscription) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.removeLocked(s)
}

func (h *Hub) removeLocked(s *Subscription) {
	if _, ok := h.subs[s]; !ok {
		return
	}
	delete(h.subs, s)
	if h.perToken[s.token]--; h.perToken[s.token] <= 0 {
		delete(h.perToken, s.token)
	}
}
