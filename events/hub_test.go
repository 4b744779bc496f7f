package events

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/iotgate/iotgate"
	"github.com/iotgate/iotgate/internal/memstore"
)

// env is a hub over an in-memory log, woken at every append.
type env struct {
	log  *memstore.EventLog
	hub  *Hub
	wake chan struct{}
}

func newEnv(t *testing.T, cfg Config) *env {
	t.Helper()
	e := &env{log: &memstore.EventLog{}, wake: make(chan struct{}, 1)}
	e.log.SetLabels("a@x", map[string]string{"site": "berlin"})
	e.log.SetLabels("b@x", map[string]string{"site": "paris"})
	cfg.Wake = e.wake
	if cfg.Poll == 0 {
		cfg.Poll = time.Hour // wake-ups only, unless a test says
	}
	e.hub = NewHub(e.log, cfg)
	if err := e.hub.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.hub.Close)
	return e
}

// add appends n events of device dev and type typ and wakes the hub.
func (e *env) add(n int, dev string, typ iotgate.EventType) []int64 {
	evs := make([]iotgate.Event, n)
	for i := range evs {
		evs[i] = iotgate.Event{Type: typ, Time: time.Now(), Device: dev, Data: json.RawMessage(`{}`)}
	}
	ids := e.log.Append(evs...)
	select {
	case e.wake <- struct{}{}:
	default:
	}
	return ids
}

// collect reads from s until it has n events or the deadline passes.
func collect(t *testing.T, s *Subscription, n int) []*iotgate.Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var got []*iotgate.Event
	for len(got) < n {
		evs, err := s.Next(ctx)
		if err != nil {
			t.Fatalf("after %d of %d events: %v", len(got), n, err)
		}
		got = append(got, evs...)
	}
	return got
}

func ids(evs []*iotgate.Event) []int64 {
	out := make([]int64, len(evs))
	for i, e := range evs {
		out[i] = e.ID
	}
	return out
}

func TestFanOutFilters(t *testing.T) {
	e := newEnv(t, Config{})
	ctx := context.Background()
	all, _ := e.hub.Subscribe(ctx, "t1", iotgate.EventFilter{}, nil)
	berlin, _ := e.hub.Subscribe(ctx, "t2", iotgate.EventFilter{Scope: iotgate.Selector{"site": "berlin"}}, nil)
	presence, _ := e.hub.Subscribe(ctx, "t3", iotgate.EventFilter{Types: []iotgate.EventType{iotgate.EventPresence}, Devices: []string{"b@x"}}, nil)
	if got := e.hub.Subscribers(); got != 3 {
		t.Fatalf("Subscribers = %d, want 3", got)
	}
	a := e.add(2, "a@x", iotgate.EventReading)
	b := e.add(1, "b@x", iotgate.EventReading)
	p := e.add(1, "b@x", iotgate.EventPresence)
	gone := e.add(1, "gone@x", iotgate.EventReading) // no labels: scoped subscribers never see it

	for _, tc := range []struct {
		name string
		s    *Subscription
		want []int64
	}{
		{"All", all, []int64{a[0], a[1], b[0], p[0], gone[0]}},
		{"Scope", berlin, a},
		{"TypeAndDevice", presence, p},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := ids(collect(t, tc.s, len(tc.want)))
			if !equal(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
	// Nothing more for the scoped one, even after another event.
	e.add(1, "a@x", iotgate.EventReading)
	if got := collect(t, berlin, 1); got[0].Device != "a@x" {
		t.Errorf("scoped subscriber got %s's event", got[0].Device)
	}
	if e.hub.Delivered() < 9 {
		t.Errorf("Delivered = %d, want at least 9", e.hub.Delivered())
	}
}

func equal(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestResumeSeam resumes while events keep being appended: every event
// after the resume id arrives once, in order.
func TestResumeSeam(t *testing.T) {
	for _, tc := range []struct {
		name string
		scan int
	}{{"WideScan", 0}, {"NarrowScan", 7}} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, Config{})
			e.log.Scan = tc.scan
			e.add(2500, "a@x", iotgate.EventReading)
			const more = 3000
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range more / 10 {
					e.add(10, "a@x", iotgate.EventReading)
				}
			}()
			after := int64(100)
			s, err := e.hub.Subscribe(context.Background(), "t", iotgate.EventFilter{Devices: []string{"a@x"}}, &after)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			got := collect(t, s, 2500+more-100)
			wg.Wait()
			for i, ev := range got {
				if want := after + 1 + int64(i); ev.ID != want {
					t.Fatalf("event %d has id %d, want %d (gap or duplicate at the seam)", i, ev.ID, want)
				}
			}
		})
	}
}

func TestGap(t *testing.T) {
	e := newEnv(t, Config{})
	e.add(10, "a@x", iotgate.EventReading)
	if _, err := e.log.TrimEvents(context.Background(), time.Now().Add(time.Hour), 4); err != nil {
		t.Fatal(err)
	}
	after := int64(2)
	s, err := e.hub.Subscribe(context.Background(), "t", iotgate.EventFilter{}, &after)
	if err != nil {
		t.Fatal(err)
	}
	got := collect(t, s, 7)
	if got[0].Type != iotgate.EventGap || got[0].ID != 4 {
		t.Fatalf("first event = %s %d, want gap 4", got[0].Type, got[0].ID)
	}
	var gap iotgate.GapEventData
	if err := json.Unmarshal(got[0].Data, &gap); err != nil || gap.After != 2 || gap.Oldest != 5 {
		t.Errorf("gap data = %+v (%v), want after 2, oldest 5", gap, err)
	}
	if want := []int64{4, 5, 6, 7, 8, 9, 10}; !equal(ids(got), want) {
		t.Errorf("ids = %v, want %v", ids(got), want)
	}

	// Resuming from the trim horizon: no gap.
	after = 4
	s2, _ := e.hub.Subscribe(context.Background(), "t", iotgate.EventFilter{}, &after)
	if got := collect(t, s2, 1); got[0].Type == iotgate.EventGap {
		t.Error("resume from the trim horizon starts with a gap")
	}
}

func TestSlowSubscriber(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"Count", Config{MaxBacklog: 5}},
		{"Bytes", Config{MaxBacklogBytes: 9}}, // 5 events of `{}`
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, tc.cfg)
			ctx := context.Background()
			slow, _ := e.hub.Subscribe(ctx, "t", iotgate.EventFilter{}, nil)
			fast, _ := e.hub.Subscribe(ctx, "t", iotgate.EventFilter{}, nil)
			for range 6 {
				e.add(1, "a@x", iotgate.EventReading)
				collect(t, fast, 1)
			}
			if _, err := slow.Next(ctx); !errors.Is(err, ErrSlowSubscriber) {
				t.Fatalf("slow Next = %v, want ErrSlowSubscriber", err)
			}
			if e.hub.CutOff() != 1 || e.hub.Subscribers() != 1 {
				t.Errorf("CutOff = %d, Subscribers = %d, want 1, 1", e.hub.CutOff(), e.hub.Subscribers())
			}
		})
	}
}

func TestLimits(t *testing.T) {
	e := newEnv(t, Config{MaxSubscribers: 3, MaxPerToken: 2})
	ctx := context.Background()
	s1, err1 := e.hub.Subscribe(ctx, "t1", iotgate.EventFilter{}, nil)
	_, err2 := e.hub.Subscribe(ctx, "t1", iotgate.EventFilter{}, nil)
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	if _, err := e.hub.Subscribe(ctx, "t1", iotgate.EventFilter{}, nil); iotgate.ErrorCode(err) != iotgate.ETooMany {
		t.Errorf("third of one token: %v, want too_many_requests", err)
	}
	if _, err := e.hub.Subscribe(ctx, "t2", iotgate.EventFilter{}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := e.hub.Subscribe(ctx, "t3", iotgate.EventFilter{}, nil); iotgate.ErrorCode(err) != iotgate.ETooMany {
		t.Errorf("fourth of the hub: %v, want too_many_requests", err)
	}
	s1.Close()
	if _, err := e.hub.Subscribe(ctx, "t1", iotgate.EventFilter{}, nil); err != nil {
		t.Errorf("after a Close: %v", err)
	}
}

func TestClose(t *testing.T) {
	e := newEnv(t, Config{})
	s, _ := e.hub.Subscribe(context.Background(), "t", iotgate.EventFilter{}, nil)
	errc := make(chan error, 1)
	go func() {
		_, err := s.Next(context.Background())
		errc <- err
	}()
	e.hub.Close()
	if err := <-errc; !errors.Is(err, ErrClosed) {
		t.Errorf("Next after Close = %v, want ErrClosed", err)
	}
	if _, err := e.hub.Subscribe(context.Background(), "t", iotgate.EventFilter{}, nil); iotgate.ErrorCode(err) != iotgate.EUnavailable {
		t.Errorf("Subscribe after Close = %v, want unavailable", err)
	}
}

// TestPoll: without wake-ups, the poll timer delivers.
func TestPoll(t *testing.T) {
	e := newEnv(t, Config{Poll: 10 * time.Millisecond})
	s, _ := e.hub.Subscribe(context.Background(), "t", iotgate.EventFilter{}, nil)
	e.log.Append(iotgate.Event{Type: iotgate.EventReading, Device: "a@x", Data: json.RawMessage(`{}`)})
	collect(t, s, 1)
}

func TestTrimmer(t *testing.T) {
	log := &memstore.EventLog{}
	now := time.Now()
	for i := range 25 {
		log.Append(iotgate.Event{Type: iotgate.EventReading, Time: now.Add(time.Duration(i-30) * time.Hour), Device: "a@x"})
	}
	tr := &Trimmer{Log: log, Retention: 10 * time.Hour, Batch: 4, Pause: time.Millisecond, Now: func() time.Time { return now }}
	n, err := tr.Trim(context.Background())
	// Events at -30h .. -6h: those before -10h are 20 (-30h .. -11h).
	if err != nil || n != 20 {
		t.Fatalf("Trim = %d, %v; want 20", n, err)
	}
	b, _ := log.EventBounds(context.Background())
	if b.Trimmed != 20 {
		t.Errorf("Trimmed = %d, want 20", b.Trimmed)
	}
}

// BenchmarkFanOut measures append-to-delivery with 100 subscribers: the
// time from an append (and its wake-up) until every subscriber has the
// event.
func BenchmarkFanOut(b *testing.B) {
	log := &memstore.EventLog{}
	wake := make(chan struct{}, 1)
	hub := NewHub(log, Config{Wake: wake, Poll: time.Hour, MaxPerToken: 1000})
	if err := hub.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	defer hub.Close()
	const subs = 100
	var wg sync.WaitGroup
	got := make(chan struct{}, subs)
	for range subs {
		s, err := hub.Subscribe(context.Background(), "t", iotgate.EventFilter{}, nil)
		if err != nil {
			b.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				if _, err := s.Next(context.Background()); err != nil {
					return
				}
				got <- struct{}{}
			}
		}()
	}
	b.ResetTimer()
	for range b.N {
		log.Append(iotgate.Event{Type: iotgate.EventReading, Device: "a@x", Data: json.RawMessage(`{"t":21.5}`)})
		select {
		case wake <- struct{}{}:
		default:
		}
		for range subs {
			<-got
		}
	}
	b.StopTimer()
	hub.Close()
	wg.Wait()
}

// wakeIdle appends evs to log and wakes h through wake (unbuffered) twice:
// the second send returns only once the first wake-up has been handled.
func wakeIdle(log *memstore.EventLog, wake chan<- struct{}, evs ...iotgate.Event) []int64 {
	ids := log.Append(evs...)
	wake <- struct{}{}
	wake <- struct{}{}
	return ids
}

// TestIdleHub: a hub with no subscriber queries the store neither on a
// commit's wake-up nor on its poll timer; its first subscriber moves it to
// the log's end with one read of the bounds, and then gets only what
// follows, live, or, resuming, the events before as well.
func TestIdleHub(t *testing.T) {
	ev := iotgate.Event{Type: iotgate.EventReading, Device: "a@x", Time: time.Now(), Data: json.RawMessage(`{}`)}
	tests := []struct {
		name string
		// hadSubscriber: one came and left before the hub went idle.
		hadSubscriber bool
		// resume: the next subscriber resumes after id 0.
		resume bool
	}{
		{name: "LiveNeverSubscribed"},
		{name: "ResumeNeverSubscribed", resume: true},
		{name: "LiveAfterLastLeft", hadSubscriber: true},
		{name: "ResumeAfterLastLeft", hadSubscriber: true, resume: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mem := &memstore.EventLog{}
			log := &memstore.CountingEventLog{EventLog: mem}
			wake := make(chan struct{})
			// MaxBacklog below the events written while idle: a
			// position left behind would cut the subscriber off.
			h := NewHub(log, Config{Wake: wake, Poll: time.Millisecond, MaxBacklog: 4})
			if err := h.Start(context.Background()); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(h.Close)
			var seen []int64
			if tt.hadSubscriber {
				s, err := h.Subscribe(context.Background(), "t1", iotgate.EventFilter{}, nil)
				if err != nil {
					t.Fatal(err)
				}
				seen = mem.Append(ev, ev)
				if got := ids(collect(t, s, 2)); !equal(got, seen) {
					t.Fatalf("first subscriber got %v, want %v", got, seen)
				}
				s.Close()
			}
			reads0, bounds0 := log.Calls()
			var idle []int64
			for range 5 {
				idle = append(idle, wakeIdle(mem, wake, ev, ev)...)
			}
			time.Sleep(20 * time.Millisecond) // 20 poll ticks
			if reads, bounds := log.Calls(); reads != reads0 || bounds != bounds0 {
				t.Fatalf("idle hub read events %d times and bounds %d times on wake-ups and polls, want 0 and 0",
					reads-reads0, bounds-bounds0)
			}

			var after *int64
			want := []int64{}
			if tt.resume {
				after = new(int64)
				want = append(append(want, seen...), idle...)
			}
			s, err := h.Subscribe(context.Background(), "t1", iotgate.EventFilter{}, after)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if _, bounds := log.Calls(); bounds != bounds0+1 {
				t.Errorf("Subscribe read the bounds %d times, want 1", bounds-bounds0)
			}
			// Resuming replays in batches of its own, within the
			// backlog bound as live events come in threes.
			for range 2 {
				want = append(want, wakeIdle(mem, wake, ev, ev, ev)...)
				if got := ids(collect(t, s, len(want))); !equal(got, want) {
					t.Fatalf("subscriber got %v, want %v", got, want)
				}
				want = want[:0]
			}
			if err := s.Err(); err != nil {
				t.Errorf("subscriber ended: %v", err)
			}
		})
	}
}

// TestTryNext: TryNext never waits; Ready receives once live events are
// there or the subscription ended; batches come in order with nothing
// lost or repeated although their slices are reused.
func TestTryNext(t *testing.T) {
	e := newEnv(t, Config{})
	s, err := e.hub.Subscribe(context.Background(), "t", iotgate.EventFilter{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if evs, err := s.TryNext(ctx); len(evs) != 0 || err != nil {
		t.Fatalf("TryNext with nothing waiting = %v, %v; want none, nil", ids(evs), err)
	}
	var want, got []int64
	for _, n := range []int{3, 1, 5, 2} {
		want = append(want, e.add(n, "a@x", iotgate.EventReading)...)
		for len(got) < len(want) {
			select {
			case <-s.Ready():
			case <-time.After(5 * time.Second):
				t.Fatalf("Ready did not receive; got %v, want %v", got, want)
			}
			evs, err := s.TryNext(ctx)
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, ids(evs)...)
		}
	}
	if !equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	e.hub.Close()
	select {
	case <-s.Ready():
	case <-time.After(5 * time.Second):
		t.Fatal("Ready did not receive at Close")
	}
	if _, err := s.TryNext(ctx); !errors.Is(err, ErrClosed) {
		t.Errorf("TryNext after Close = %v, want ErrClosed", err)
	}
}

// racingLog commits an event right after reading the bounds, once, as
// another instance may while the first subscriber registers; its wake-up
// went to the idle hub, which dropped it.
type racingLog struct {
	*memstore.EventLog
	armed atomic.Bool
	ids   []int64
}

func (l *racingLog) EventBounds(ctx context.Context) (iotgate.EventBounds, error) {
	b, err := l.EventLog.EventBounds(ctx)
	if l.armed.CompareAndSwap(true, false) {
		l.ids = l.Append(iotgate.Event{Type: iotgate.EventReading, Device: "a@x", Time: time.Now(), Data: json.RawMessage(`{}`)})
	}
	return b, err
}

// TestFirstSubscriberRace: an event committed after the first subscriber
// read the log's end, whose wake-up the idle hub dropped, still reaches
// that subscriber without another wake-up (the poll is an hour).
func TestFirstSubscriberRace(t *testing.T) {
	log := &racingLog{EventLog: &memstore.EventLog{}}
	h := NewHub(log, Config{Poll: time.Hour})
	if err := h.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	log.armed.Store(true) // the subscriber's read of the bounds
	s, err := h.Subscribe(context.Background(), "t", iotgate.EventFilter{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got := ids(collect(t, s, 1)); !equal(got, log.ids) {
		t.Errorf("got %v, want %v", got, log.ids)
	}
}
