package memstore

import (
	"context"
	"maps"
	"sync"
	"time"

	"github.com/iotgate/iotgate"
)

var _ iotgate.EventLog = (*EventLog)(nil)

// EventLog is an iotgate.EventLog in memory. Tests append events with
// Append (the PostgreSQL stores write them with each change) and set
// device labels with SetLabels.
type EventLog struct {
	// Scan bounds how many ids one Events call looks at when it has a
	// filter (0: 1000), as the PostgreSQL log bounds its scans.
	Scan int

	mu      sync.Mutex
	events  []*iotgate.Event
	next    int64
	trimmed int64
	labels  map[string]map[string]string
	// wake is closed and replaced on every Append.
	wake chan struct{}
}

// Append assigns ids to evs in order, stores copies and returns the ids.
func (l *EventLog) Append(evs ...iotgate.Event) []int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	ids := make([]int64, len(evs))
	for i, e := range evs {
		l.next++
		e.ID = l.next
		e.Labels = maps.Clone(e.Labels)
		l.events = append(l.events, &e)
		ids[i] = e.ID
	}
	if l.wake != nil {
		close(l.wake)
		l.wake = nil
	}
	return ids
}

// Appended returns a channel closed at the next Append.
func (l *EventLog) Appended() <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.wake == nil {
		l.wake = make(chan struct{})
	}
	return l.wake
}

// SetLabels sets a device's current labels (nil: the device is gone),
// which events other than device events are read with.
func (l *EventLog) SetLabels(jid string, labels map[string]string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.labels == nil {
		l.labels = map[string]map[string]string{}
	}
	if labels == nil {
		delete(l.labels, jid)
		return
	}
	l.labels[jid] = maps.Clone(labels)
}

// Events returns copies of the events after q.After, at most q.Limit, in
// id order, filtered by q.Filter; it looks at no more than Scan ids when
// filtering. It never fails.
func (l *EventLog) Events(_ context.Context, q iotgate.EventQuery) (*iotgate.EventBatch, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	scan := l.Scan
	if scan <= 0 {
		scan = 1000
	}
	out := &iotgate.EventBatch{Next: q.After}
	looked := 0
	for _, e := range l.events {
		if e.ID <= q.After {
			continue
		}
		if len(out.Events) >= q.Limit || (q.Filter != nil && looked >= scan) {
			out.More = true
			break
		}
		looked++
		out.Next = e.ID
		c := *e
		if c.Type != iotgate.EventDevice {
			c.Labels = maps.Clone(l.labels[c.Device])
		}
		if q.Filter != nil && !q.Filter.Matches(&c) {
			continue
		}
		out.Events = append(out.Events, &c)
	}
	return out, nil
}

// EventBounds returns the newest id and the trim horizon. It never fails.
func (l *EventLog) EventBounds(context.Context) (iotgate.EventBounds, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return iotgate.EventBounds{Last: l.next, Trimmed: l.trimmed}, nil
}

// TrimEvents deletes up to limit of the oldest events older than before.
// It never fails.
func (l *EventLog) TrimEvents(_ context.Context, before time.Time, limit int) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for n < len(l.events) && n < limit && l.events[n].Time.Before(before) {
		l.trimmed = l.events[n].ID
		n++
	}
	l.events = l.events[n:]
	return n, nil
}

// CountingEventLog counts the reads made of the event log it wraps
// (Events and EventBounds): what an idle reader costs the store.
type CountingEventLog struct {
	iotgate.EventLog
	mu            sync.Mutex
	reads, bounds int
}

func (l *CountingEventLog) Events(ctx context.Context, q iotgate.EventQuery) (*iotgate.EventBatch, error) {
	l.mu.Lock()
	l.reads++
	l.mu.Unlock()
	return l.EventLog.Events(ctx, q)
}

func (l *CountingEventLog) EventBounds(ctx context.Context) (iotgate.EventBounds, error) {
	l.mu.Lock()
	l.bounds++
	l.mu.Unlock()
	return l.EventLog.EventBounds(ctx)
}

// Calls returns the reads of events and of bounds so far.
func (l *CountingEventLog) Calls() (reads, bounds int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.reads, l.bounds
}
