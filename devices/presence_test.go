package devices

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/iotgate/iotgate"
	"github.com/iotgate/iotgate/internal/memstore"
)

func TestPresence(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var clockMu sync.Mutex
	clock := func() time.Time { clockMu.Lock(); defer clockMu.Unlock(); now = now.Add(time.Second); return now }
	d := &iotgate.Device{ID: 7, JID: "t@example.com"}
	type step struct {
		name       string
		do         func(p *Presence)
		wantOnline bool
		wantStale  bool
		wantRes    []string // full JIDs, in order
	}
	steps := []step{
		{"StaleAtStart", func(p *Presence) {}, false, true, nil},
		{"Fresh", func(p *Presence) { p.MarkFresh() }, false, false, nil},
		{"OneResource", func(p *Presence) {
			p.Update(d, iotgate.PresenceUpdate{From: "t@example.com/a", Available: true, Priority: 0})
		}, true, false, []string{"t@example.com/a"}},
		{"HigherPriorityFirst", func(p *Presence) {
			p.Update(d, iotgate.PresenceUpdate{From: "t@example.com/b", Available: true, Priority: 5, Show: "away"})
		}, true, false, []string{"t@example.com/b", "t@example.com/a"}},
		{"ResourceLeaves", func(p *Presence) {
			p.Update(d, iotgate.PresenceUpdate{From: "t@example.com/b"})
		}, true, false, []string{"t@example.com/a"}},
		{"UnknownResourceLeaves", func(p *Presence) {
			p.Update(d, iotgate.PresenceUpdate{From: "t@example.com/zzz"})
		}, true, false, []string{"t@example.com/a"}},
		{"StreamDrops", func(p *Presence) { p.MarkStale() }, false, true, nil},
		{"BackAndProbed", func(p *Presence) {
			p.MarkFresh()
			p.Update(d, iotgate.PresenceUpdate{From: "t@example.com/a", Available: true})
		}, true, false, []string{"t@example.com/a"}},
		{"Forgotten", func(p *Presence) { p.Forget(d.JID) }, false, false, nil},
	}
	store := &memstore.PresenceStore{}
	p := NewPresence(store, PresenceConfig{Clock: clock})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go p.Run(ctx)
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			s.do(p)
			online, stale := p.Online(d.JID)
			if online != s.wantOnline || stale != s.wantStale {
				t.Errorf("online, stale = %v, %v; want %v, %v", online, stale, s.wantOnline, s.wantStale)
			}
			if got := resourceJIDs(p.Resources(d.JID)); !slices.Equal(got, s.wantRes) {
				t.Errorf("resources = %v, want %v", got, s.wantRes)
			}
		})
	}
	// The store records transitions only: online, offline (stream drop),
	// online; each with the resources available after it.
	want := []string{"true t@example.com/a", "false", "true t@example.com/a"}
	waitFor(t, func() bool { return len(store.Events()) >= len(want) })
	if got := transitions(store.Events()); !slices.Equal(got, want) {
		t.Errorf("events = %q, want %q", got, want)
	}
}

func resourceJIDs(rs []iotgate.Resource) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.JID)
	}
	return out
}

func transitions(evs []iotgate.PresenceEvent) []string {
	var out []string
	for _, ev := range evs {
		s := fmt.Sprint(ev.Online)
		for _, r := range ev.Resources {
			s += " " + r.JID
		}
		out = append(out, s)
	}
	return out
}

// Two instances share one store: what one receives, the other shows once
// notified, and its OnOnline fires.
func TestPresenceRefresh(t *testing.T) {
	store := &memstore.PresenceStore{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a, b := NewPresence(store, PresenceConfig{}), NewPresence(store, PresenceConfig{})
	go a.Run(ctx)
	go b.Run(ctx)
	a.MarkFresh()
	b.MarkFresh()
	var mu sync.Mutex
	var fired []string
	b.OnOnline(func(jid string) { mu.Lock(); fired = append(fired, jid); mu.Unlock() })
	d := &iotgate.Device{ID: 1, JID: "d@example.com"}
	stored := func(n int) func() bool {
		return func() bool { got, _ := store.DeviceResources(ctx, nil); return len(got[d.JID]) == n }
	}

	a.Update(d, iotgate.PresenceUpdate{From: "d@example.com/r", Available: true, Priority: 3})
	waitFor(t, stored(1))
	if on, _ := b.Online(d.JID); on {
		t.Fatal("b shows online before any notification")
	}
	b.Refresh(d.JID)
	waitFor(t, func() bool { on, _ := b.Online(d.JID); return on })
	if rs := b.Resources(d.JID); len(rs) != 1 || rs[0].Priority != 3 {
		t.Errorf("b's resources = %+v, want d@example.com/r with priority 3", rs)
	}
	mu.Lock()
	if !slices.Equal(fired, []string{d.JID}) {
		t.Errorf("b's OnOnline fired for %v, want once for %s", fired, d.JID)
	}
	mu.Unlock()

	// A refresh of everything ("": the listener reconnected) drops what
	// went away, and fires nothing for what stays.
	a.Update(d, iotgate.PresenceUpdate{From: "d@example.com/r"})
	waitFor(t, stored(0))
	b.Refresh("")
	waitFor(t, func() bool { on, _ := b.Online(d.JID); return !on })
	mu.Lock()
	if len(fired) != 1 {
		t.Errorf("OnOnline fired %d times, want 1", len(fired))
	}
	mu.Unlock()
}

// An instance that starts (or reconnects) with devices already online in
// the store calls OnOnline for them once its stream is up.
func TestPresenceOnOnlineAtFresh(t *testing.T) {
	store := &memstore.PresenceStore{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	store.ApplyPresence(ctx, []iotgate.PresenceChange{{DeviceID: 1, DeviceJID: "d@example.com", At: time.Now(),
		PresenceUpdate: iotgate.PresenceUpdate{From: "d@example.com/r", Available: true}}})
	p := NewPresence(store, PresenceConfig{})
	go p.Run(ctx)
	var mu sync.Mutex
	var fired []string
	p.OnOnline(func(jid string) { mu.Lock(); fired = append(fired, jid); mu.Unlock() })
	p.Refresh("")
	waitFor(t, func() bool { on, _ := p.Online("d@example.com"); return on })
	p.MarkFresh()
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(fired, []string{"d@example.com", "d@example.com"}) {
		t.Errorf("OnOnline fired for %v, want d@example.com at the reload and at fresh", fired)
	}
}

type fakeFleet struct {
	others bool
	err    error
}

func (f fakeFleet) OthersStreaming(context.Context) (bool, error) { return f.others, f.err }

// A stream drop wipes the shared presence only when no other instance
// streams.
func TestPresenceStale(t *testing.T) {
	tests := []struct {
		name        string
		fleet       Fleet
		wantStored  bool // the resource survives in the store
		wantInCache bool // and in this instance's memory
	}{
		{"SingleInstance", nil, false, false},
		{"OthersStreaming", fakeFleet{others: true}, true, true},
		{"NobodyElse", fakeFleet{}, false, false},
		{"FleetUnknown", fakeFleet{err: errors.New("db down")}, true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			store := &memstore.PresenceStore{}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			p := NewPresence(store, PresenceConfig{Fleet: tt.fleet})
			go p.Run(ctx)
			p.MarkFresh()
			d := &iotgate.Device{ID: 1, JID: "d@example.com"}
			p.Update(d, iotgate.PresenceUpdate{From: "d@example.com/r", Available: true})
			waitFor(t, func() bool { return len(store.Events()) == 1 })
			p.MarkStale()
			// A marker change queued after the drop tells when it is done.
			p.Update(&iotgate.Device{ID: 2, JID: "m@example.com"}, iotgate.PresenceUpdate{From: "m@example.com/r", Available: true})
			waitFor(t, func() bool { got, _ := store.DeviceResources(ctx, []string{"m@example.com"}); return len(got) == 1 })
			got, _ := store.DeviceResources(ctx, []string{d.JID})
			if stored := len(got) == 1; stored != tt.wantStored {
				t.Errorf("stored after the drop: %v, want %v", stored, tt.wantStored)
			}
			// Notified, this instance shows what the store holds.
			p.Refresh(d.JID)
			waitFor(t, func() bool { online, _ := p.Online(d.JID); return online == tt.wantInCache })
			if _, stale := p.Online(d.JID); !stale {
				t.Error("presence not stale with the stream down")
			}
		})
	}
}

// After a reconnection's probes, a grace period later, the resources no
// stanza confirmed since the probes went out are dropped, once.
func TestPresenceReconcile(t *testing.T) {
	store := &memstore.PresenceStore{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	old := time.Now().Add(-time.Hour)
	// Left by a run that could not see them go.
	store.ApplyPresence(ctx, []iotgate.PresenceChange{
		{DeviceID: 1, DeviceJID: "gone@example.com", At: old, PresenceUpdate: iotgate.PresenceUpdate{From: "gone@example.com/r", Available: true}},
		{DeviceID: 2, DeviceJID: "here@example.com", At: old, PresenceUpdate: iotgate.PresenceUpdate{From: "here@example.com/r", Available: true}},
	})
	p := NewPresence(store, PresenceConfig{ProbeGrace: 100 * time.Millisecond})
	go p.Run(ctx)
	p.MarkFresh()
	// The probe of here@ is answered; gone@'s is not.
	p.Update(&iotgate.Device{ID: 2, JID: "here@example.com"}, iotgate.PresenceUpdate{From: "here@example.com/r", Available: true})
	waitFor(t, func() bool { got, _ := store.DeviceResources(ctx, nil); return len(got) == 1 })
	got, _ := store.DeviceResources(ctx, nil)
	if _, ok := got["here@example.com"]; !ok {
		t.Fatalf("resources left = %v, want here@example.com's", got)
	}
	evs := store.Events()
	if len(evs) != 3 || evs[2].DeviceJID != "gone@example.com" || evs[2].Online {
		t.Errorf("events = %+v, want gone@example.com offline last", evs)
	}
}

// When a round's probes are announced (ProbesSending), the resources they
// did not confirm are dropped a grace period after the last probe went out
// (ProbesSent), not after the round started: a million paced probes take
// longer than the grace period.
func TestPresenceReconcileAfterProbesSent(t *testing.T) {
	const grace = 100 * time.Millisecond
	tests := []struct {
		name    string
		sending time.Duration // how long the probes take; 0: not announced
	}{
		{"NotAnnounced", 0},
		{"ProbesLongerThanGrace", 4 * grace},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			store := &memstore.PresenceStore{}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			store.ApplyPresence(ctx, []iotgate.PresenceChange{{DeviceID: 1, DeviceJID: "gone@example.com", At: time.Now().Add(-time.Hour),
				PresenceUpdate: iotgate.PresenceUpdate{From: "gone@example.com/r", Available: true}}})
			p := NewPresence(store, PresenceConfig{ProbeGrace: grace})
			go p.Run(ctx)
			begun := time.Now()
			p.MarkFresh()
			var sent time.Time
			if tt.sending > 0 {
				p.ProbesSending()
				time.Sleep(tt.sending)
				if got, _ := store.DeviceResources(ctx, nil); len(got) != 1 {
					t.Fatalf("resources %v dropped while the probes were still going out", got)
				}
				p.ProbesSent()
				sent = time.Now()
			}
			waitFor(t, func() bool { got, _ := store.DeviceResources(ctx, nil); return len(got) == 0 })
			if tt.sending > 0 {
				if since := time.Since(sent); since < grace {
					t.Errorf("dropped %s after the last probe, want a grace period (%s) after it", since, grace)
				}
			} else if since := time.Since(begun); since < grace {
				t.Errorf("dropped %s after the round began, want %s", since, grace)
			}
		})
	}
}

// flakyPresence refuses the first fails batches.
type flakyPresence struct {
	memstore.PresenceStore
	mu    sync.Mutex
	fails int
}

func (f *flakyPresence) ApplyPresence(ctx context.Context, cs []iotgate.PresenceChange) error {
	f.mu.Lock()
	if f.fails > 0 {
		f.fails--
		f.mu.Unlock()
		return errors.New("connection reset")
	}
	f.mu.Unlock()
	return f.PresenceStore.ApplyPresence(ctx, cs)
}

// A batch the store refuses once is stored on the next attempt.
func TestPresenceRetry(t *testing.T) {
	store := &flakyPresence{fails: 1}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := NewPresence(store, PresenceConfig{})
	go p.Run(ctx)
	p.Update(&iotgate.Device{ID: 1, JID: "d@example.com"}, iotgate.PresenceUpdate{From: "d@example.com/r", Available: true})
	waitFor(t, func() bool { return len(store.Events()) == 1 })
}

// TestPresenceMaxResources: a device that opens session after session
// gets at most MaxResources of them tracked; the one beyond is refused
// (too_many_requests) and changes nothing, while the tracked ones keep
// updating and a place freed is taken again.
func TestPresenceMaxResources(t *testing.T) {
	d := &iotgate.Device{ID: 7, JID: "t@example.com"}
	p := NewPresence(nil, PresenceConfig{MaxResources: 3})
	p.MarkFresh()
	var onlines int
	p.OnOnline(func(string) { onlines++ })
	res := func(r string) string { return "t@example.com/" + r }
	steps := []struct {
		name    string
		u       iotgate.PresenceUpdate
		wantErr string
		want    []string
	}{
		{"First", iotgate.PresenceUpdate{From: res("a"), Available: true, Priority: 3}, "", []string{res("a")}},
		{"Second", iotgate.PresenceUpdate{From: res("b"), Available: true, Priority: 2}, "", []string{res("a"), res("b")}},
		{"Third", iotgate.PresenceUpdate{From: res("c"), Available: true, Priority: 1}, "", []string{res("a"), res("b"), res("c")}},
		{"OneTooMany", iotgate.PresenceUpdate{From: res("d"), Available: true, Priority: 9}, iotgate.ETooMany, []string{res("a"), res("b"), res("c")}},
		{"TrackedOneUpdates", iotgate.PresenceUpdate{From: res("c"), Available: true, Priority: 5, Status: "busy"}, "", []string{res("c"), res("a"), res("b")}},
		{"UntrackedLeaves", iotgate.PresenceUpdate{From: res("d")}, "", []string{res("c"), res("a"), res("b")}},
		{"OneLeaves", iotgate.PresenceUpdate{From: res("a")}, "", []string{res("c"), res("b")}},
		{"PlaceTaken", iotgate.PresenceUpdate{From: res("d"), Available: true, Priority: 9}, "", []string{res("d"), res("c"), res("b")}},
	}
	for _, st := range steps {
		err := p.Update(d, st.u)
		if got := iotgate.ErrorCode(err); got != st.wantErr {
			t.Errorf("%s: err = %v, want code %q", st.name, err, st.wantErr)
		}
		var got []string
		for _, r := range p.Resources(d.JID) {
			got = append(got, r.JID)
		}
		if !slices.Equal(got, st.want) {
			t.Errorf("%s: resources %v, want %v", st.name, got, st.want)
		}
	}
	// a, b, c, then d when a place was free: the refused d fired nothing.
	if onlines != 4 {
		t.Errorf("OnOnline called %d times, want 4", onlines)
	}
}
