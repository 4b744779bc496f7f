package events

import (
	"context"
	"encoding/json"
	"sync"
	"time"

	"github.com/iotgate/iotgate"
)

// Subscription is one subscriber's view of the log: the events its filter
// selects, in id order, first a replay from the log (when it resumes),
// then live ones from the hub. Live events wait in a bounded backlog until
// Next takes them. It is used by one goroutine (Next), while the hub adds
// to it.
type Subscription struct {
	hub    *Hub
	token  string
	filter iotgate.EventFilter

	// Replay state, used by Next only: the events after replayAfter up to
	// replayUntil (the hub's position at registration) come from the log.
	pending     []*iotgate.Event // the gap event, before anything else
	replayAfter int64
	replayUntil int64
	// sent is the id of the last event Next returned: live events up to
	// it are dropped, so the seam has no duplicate.
	sent int64

	mu      sync.Mutex
	backlog []*iotgate.Event
	// spare is the backlog TryNext handed out last: the next call
	// reuses its array, so that a busy stream doesn't grow a new
	// backlog from nothing at every wake-up.
	spare []*iotgate.Event
	bytes int
	err   error         // why it ended; nil while open
	ready chan struct{} // buffer 1: the backlog grew or it ended
}

// Subscribe opens a subscription for the token tokenID (for its limit)
// selecting filter. With after set, it first replays the log's events
// after that id (preceded by a gap event when some of them have been
// trimmed already); without it, it is live only. Close it when done.
// Errors: too_many_requests (the hub's or the token's limit), unavailable
// (the hub is closed, or the log can't be read).
func (h *Hub) Subscribe(ctx context.Context, tokenID string, filter iotgate.EventFilter, after *int64) (*Subscription, error) {
	s := &Subscription{hub: h, token: tokenID, filter: filter, ready: make(chan struct{}, 1)}
	// Register first, so that every event after the hub's position is
	// buffered while the replay reads up to it.
	pos, b, err := h.register(ctx, s)
	if err != nil {
		return nil, err
	}
	if after == nil {
		s.sent = pos
		return s, nil
	}
	if b == nil {
		read, err := h.log.EventBounds(ctx)
		if err != nil {
			s.Close()
			return nil, err
		}
		b = &read
	}
	s.sent, s.replayAfter, s.replayUntil = *after, *after, pos
	if *after < b.Trimmed {
		data, _ := json.Marshal(iotgate.GapEventData{After: *after, Oldest: b.Trimmed + 1})
		// Its id is the trim horizon: a client resuming from it does not
		// get the gap again.
		s.pending = []*iotgate.Event{{ID: b.Trimmed, Type: iotgate.EventGap, Time: time.Now().UTC(), Data: data}}
		s.replayAfter = b.Trimmed
	}
	return s, nil
}

// Next returns the next events, waiting until there are some. It returns
// ErrSlowSubscriber when the subscription was cut off, ErrClosed when the
// hub closed or the subscription was, and ctx's error when ctx ends.
// Errors of the replay's reads: unavailable. The slice returned is valid
// until the next call of Next or TryNext.
func (s *Subscription) Next(ctx context.Context) ([]*iotgate.Event, error) {
	for {
		evs, err := s.TryNext(ctx)
		if err != nil || len(evs) > 0 {
			return evs, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-s.ready:
		}
	}
}

// TryNext is Next without the wait: it returns no events and no error
// when none are waiting; Ready then receives once some are (or the
// subscription ended). A stream that has its own timer (pings) waits on
// Ready instead of a deadline per Next, which costs a timer and a context
// per call. Errors: those of Next, but ctx's only from replay reads.
func (s *Subscription) TryNext(ctx context.Context) ([]*iotgate.Event, error) {
	if len(s.pending) > 0 {
		out := s.pending
		s.pending = nil
		s.sent = max(s.sent, out[len(out)-1].ID)
		return out, nil
	}
	for s.replayAfter < s.replayUntil {
		evs, err := s.replay(ctx)
		if err != nil {
			return nil, err
		}
		if len(evs) > 0 {
			return s.deliver(evs), nil
		}
	}
	s.mu.Lock()
	evs, err := s.backlog, s.err
	clear(s.spare)
	s.backlog, s.spare, s.bytes = s.spare[:0], evs, 0
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}
	// Drop what the replay sent already (and, for a client resuming
	// ahead of the hub, what it has seen).
	i := 0
	for i < len(evs) && evs[i].ID <= s.sent {
		i++
	}
	if evs = evs[i:]; len(evs) > 0 {
		return s.deliver(evs), nil
	}
	return nil, nil
}

// Ready receives after live events were added or the subscription ended
// (it may also receive when TryNext has taken them already).
func (s *Subscription) Ready() <-chan struct{} { return s.ready }

// replay reads one batch of the log for the replay.
func (s *Subscription) replay(ctx context.Context) ([]*iotgate.Event, error) {
	b, err := s.hub.log.Events(ctx, iotgate.EventQuery{After: s.replayAfter, Limit: readBatch, Filter: &s.filter})
	if err != nil {
		return nil, err
	}
	var out []*iotgate.Event
	for _, e := range b.Events {
		// Past the hub's position, events come live.
		if e.ID > s.replayUntil {
			break
		}
		if s.filter.Matches(e) {
			out = append(out, e)
		}
	}
	s.replayAfter = min(b.Next, s.replayUntil)
	if !b.More {
		s.replayAfter = s.replayUntil
	}
	return out, nil
}

func (s *Subscription) deliver(evs []*iotgate.Event) []*iotgate.Event {
	s.sent = evs[len(evs)-1].ID
	s.hub.delivered.Add(uint64(len(evs)))
	return evs
}

// push adds the events of evs that s's filter selects to the backlog; it
// returns false, ending the subscription, when the backlog is over its
// bound. Called by the hub with its lock held.
func (s *Subscription) push(evs []*iotgate.Event) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return true
	}
	cfg := &s.hub.cfg
	added := false
	for _, e := range evs {
		if !s.filter.Matches(e) {
			continue
		}
		if len(s.backlog)+1 > cfg.MaxBacklog || s.bytes+len(e.Data) > cfg.MaxBacklogBytes {
			s.backlog, s.bytes = nil, 0
			s.endLocked(ErrSlowSubscriber)
			return false
		}
		s.backlog = append(s.backlog, e)
		s.bytes += len(e.Data)
		added = true
	}
	if added {
		s.signal()
	}
	return true
}

// Err returns why the subscription ended, nil while it is open.
func (s *Subscription) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Close ends the subscription and frees its place in the hub's limits.
func (s *Subscription) Close() {
	s.hub.unregister(s)
	s.end(ErrClosed)
}

func (s *Subscription) end(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.endLocked(err)
}

func (s *Subscription) endLocked(err error) {
	if s.err == nil {
		s.err = err
		s.signal()
	}
}

func (s *Subscription) signal() {
	select {
	case s.ready <- struct{}{}:
	default:
	}
}
