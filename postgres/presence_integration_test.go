//go:build integration

package postgres_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/iotgate/iotgate"
	"github.com/iotgate/iotgate/devices"
	"github.com/iotgate/iotgate/internal/memstore"
	"github.com/iotgate/iotgate/postgres"
	"github.com/iotgate/iotgate/schemas"
)

// presenceHistory returns a device's stored transitions, oldest first.
func presenceHistory(t *testing.T, db *postgres.DB, dev int64) []bool {
	t.Helper()
	rows, err := db.SQL().Query(`SELECT online FROM presence_events WHERE device_id = $1 ORDER BY id`, dev)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []bool
	for rows.Next() {
		var b bool
		if err := rows.Scan(&b); err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

func presenceEventCount(t *testing.T, db *postgres.DB, jid string) int {
	t.Helper()
	n := 0
	for _, e := range eventsAfter(t, db, 0) {
		if e.Type == iotgate.EventPresence && e.Device == jid {
			n++
		}
	}
	return n
}

func change(d *iotgate.Device, at time.Time, res string, available bool, prio int) iotgate.PresenceChange {
	return iotgate.PresenceChange{DeviceID: d.ID, DeviceJID: d.JID, At: at,
		PresenceUpdate: iotgate.PresenceUpdate{From: d.JID + "/" + res, Available: available, Priority: prio}}
}

func storedResources(t *testing.T, db *postgres.DB, jid string) []string {
	t.Helper()
	got, err := db.DeviceResources(context.Background(), []string{jid})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range got[jid] {
		out = append(out, r.JID)
	}
	return out
}

func TestPresenceStore(t *testing.T) {
	ctx := context.Background()
	a, b := instances(t)
	reg := schemas.NewRegistry(a, schemas.Config{})
	svc := devices.NewService(a, reg, devices.ServiceConfig{})
	devs := thermostats(t, reg, svc, "p1@example.com", "p2@example.com", "p3@example.com", "p4@example.com", "p5@example.com", "p6@example.com")
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

	t.Run("UpsertDelete", func(t *testing.T) {
		d := devs[0]
		lctx, cancel := context.WithCancel(ctx)
		defer cancel()
		keys := make(chan string, 100)
		b.ListenChanges(lctx).Subscribe(postgres.ChangePresence, func(k string) { keys <- k })
		if k := <-keys; k != "" {
			t.Fatalf("first key %q, want the start's \"\"", k)
		}
		if err := a.ApplyPresence(ctx, []iotgate.PresenceChange{
			change(d, t0, "a", true, 1), change(d, t0.Add(time.Second), "b", true, 5),
		}); err != nil {
			t.Fatal(err)
		}
		select {
		case k := <-keys:
			if k != d.JID {
				t.Errorf("notified %q, want %q", k, d.JID)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("no change notification")
		}
		if got, want := storedResources(t, b, d.JID), []string{d.JID + "/b", d.JID + "/a"}; !slices.Equal(got, want) {
			t.Errorf("resources = %v, want %v", got, want)
		}
		// A change keeps the resource's since; a leave deletes it.
		up := change(d, t0.Add(2*time.Second), "a", true, 1)
		up.Show = "away"
		if err := b.ApplyPresence(ctx, []iotgate.PresenceChange{up, change(d, t0.Add(3*time.Second), "b", false, 0)}); err != nil {
			t.Fatal(err)
		}
		got, err := a.DeviceResources(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if rs := got[d.JID]; len(rs) != 1 || rs[0].Show != "away" || !rs[0].Since.Equal(t0) {
			t.Errorf("resources = %+v, want /a away since %v", rs, t0)
		}
		if h := presenceHistory(t, a, d.ID); !slices.Equal(h, []bool{true}) {
			t.Errorf("history = %v, want [true]", h)
		}
		if n := presenceEventCount(t, a, d.JID); n != 1 {
			t.Errorf("%d presence events, want 1", n)
		}
	})

	t.Run("BatchOrder", func(t *testing.T) {
		d := devs[1]
		if err := a.ApplyPresence(ctx, []iotgate.PresenceChange{
			change(d, t0, "x", true, 0), change(d, t0.Add(time.Second), "x", false, 0), change(d, t0.Add(2*time.Second), "x", true, 0),
			change(devs[2], t0, "y", true, 0),
		}); err != nil {
			t.Fatal(err)
		}
		if h := presenceHistory(t, a, d.ID); !slices.Equal(h, []bool{true, false, true}) {
			t.Errorf("history = %v, want [true false true]", h)
		}
		if got := storedResources(t, a, d.JID); !slices.Equal(got, []string{d.JID + "/x"}) {
			t.Errorf("resources = %v, want /x", got)
		}
	})

	t.Run("BareUnavailable", func(t *testing.T) {
		// A probe of an account without sessions is answered unavailable
		// from the bare JID: every resource goes.
		d := devs[2]
		bare := change(d, t0.Add(time.Hour), "", false, 0)
		bare.From = d.JID
		if err := a.ApplyPresence(ctx, []iotgate.PresenceChange{change(d, t0.Add(time.Minute), "y2", true, 0), bare}); err != nil {
			t.Fatal(err)
		}
		if got := storedResources(t, a, d.JID); len(got) != 0 {
			t.Errorf("resources = %v, want none", got)
		}
		if h := presenceHistory(t, a, d.ID); !slices.Equal(h, []bool{true, false}) {
			t.Errorf("history = %v, want [true false]", h)
		}
	})

	t.Run("ConcurrentWriters", func(t *testing.T) {
		// Two instances get a resource each of one device at once, then
		// both leave at once: each transition is recorded once.
		d := devs[3]
		const rounds = 20
		for i := range rounds {
			at := t0.Add(time.Duration(i) * time.Minute)
			for _, available := range []bool{true, false} {
				var wg sync.WaitGroup
				errs := make([]error, 2)
				for j, db := range []*postgres.DB{a, b} {
					wg.Add(1)
					go func() {
						defer wg.Done()
						errs[j] = db.ApplyPresence(ctx, []iotgate.PresenceChange{change(d, at, fmt.Sprint("r", j), available, 0)})
					}()
				}
				wg.Wait()
				for _, err := range errs {
					if err != nil {
						t.Fatal(err)
					}
				}
			}
		}
		h := presenceHistory(t, a, d.ID)
		if len(h) != 2*rounds {
			t.Fatalf("%d transitions, want %d", len(h), 2*rounds)
		}
		for i, on := range h {
			if on != (i%2 == 0) {
				t.Fatalf("history = %v, want alternating from true", h)
			}
		}
		if n := presenceEventCount(t, a, d.JID); n != 2*rounds {
			t.Errorf("%d presence events, want %d", n, 2*rounds)
		}
	})

	t.Run("Expire", func(t *testing.T) {
		// p5 has a resource confirmed after the probes went out and one
		// not; p6 only one not.
		t2 := t0.Add(2 * time.Hour)
		if err := a.ApplyPresence(ctx, []iotgate.PresenceChange{
			change(devs[4], t0, "old", true, 0), change(devs[5], t0, "old", true, 0),
		}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
		probes := time.Now()
		if err := a.ApplyPresence(ctx, []iotgate.PresenceChange{change(devs[4], t2, "new", true, 0)}); err != nil {
			t.Fatal(err)
		}
		before := map[string]int{}
		for _, d := range devs[:4] {
			before[d.JID] = len(storedResources(t, a, d.JID))
		}
		if err := b.ExpirePresence(ctx, time.Since(probes), t2); err != nil {
			t.Fatal(err)
		}
		if got := storedResources(t, a, devs[4].JID); !slices.Equal(got, []string{devs[4].JID + "/new"}) {
			t.Errorf("p5 resources = %v, want /new", got)
		}
		if got := storedResources(t, a, devs[5].JID); len(got) != 0 {
			t.Errorf("p6 resources = %v, want none", got)
		}
		if h := presenceHistory(t, a, devs[4].ID); !slices.Equal(h, []bool{true}) {
			t.Errorf("p5 history = %v, want [true]", h)
		}
		if h := presenceHistory(t, a, devs[5].ID); !slices.Equal(h, []bool{true, false}) {
			t.Errorf("p6 history = %v, want [true false]", h)
		}
		// Older resources of other devices (all confirmed before t1) go too.
		for _, d := range devs[:4] {
			if n := len(storedResources(t, a, d.JID)); n != 0 {
				t.Errorf("%s keeps %d resources (had %d)", d.JID, n, before[d.JID])
			}
		}
	})

	t.Run("DeletedDevice", func(t *testing.T) {
		d := devs[0]
		if err := a.ApplyPresence(ctx, []iotgate.PresenceChange{change(d, t0, "z", true, 0)}); err != nil {
			t.Fatal(err)
		}
		if err := a.DeleteDevice(ctx, d.JID); err != nil {
			t.Fatal(err)
		}
		if got := storedResources(t, b, d.JID); len(got) != 0 {
			t.Errorf("resources of a deleted device: %v", got)
		}
		// Changes still queued for it are skipped.
		if err := b.ApplyPresence(ctx, []iotgate.PresenceChange{change(d, t0, "z", true, 0), change(devs[1], t0.Add(time.Hour), "w", true, 0)}); err != nil {
			t.Fatal(err)
		}
		if got := storedResources(t, b, devs[1].JID); !slices.Contains(got, devs[1].JID+"/w") {
			t.Errorf("resources = %v, want /w among them", got)
		}
	})
}

// TestPresenceProbeStorm measures the answers to the probes of 1000
// devices (one available presence each) arriving at once at one
// instance: the time until every resource is stored, through
// devices.Presence's batches, and until another instance (its own pool
// and listener) shows them all.
func TestPresenceProbeStorm(t *testing.T) {
	const n = 1000
	ctx := context.Background()
	db, other := instances(t)
	reg := schemas.NewRegistry(db, schemas.Config{})
	svc := devices.NewService(db, reg, devices.ServiceConfig{})
	jids := make([]string, n)
	for i := range jids {
		jids[i] = fmt.Sprintf("storm%04d@example.com", i)
	}
	devs := thermostats(t, reg, svc, jids...)
	p := devices.NewPresence(db, devices.PresenceConfig{})
	q := devices.NewPresence(other, devices.PresenceConfig{})
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go p.Run(rctx)
	go q.Run(rctx)
	keys := make(chan string, 10)
	changes := other.ListenChanges(rctx)
	changes.Subscribe(postgres.ChangePresence, q.Refresh)
	changes.Subscribe(postgres.ChangePresence, func(k string) {
		select {
		case keys <- k:
		default:
		}
	})
	<-keys // listening
	p.MarkFresh()
	start := time.Now()
	for _, d := range devs {
		p.Update(d, iotgate.PresenceUpdate{From: d.JID + "/probe", Available: true})
	}
	for {
		got, err := db.DeviceResources(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) == n {
			break
		}
		if time.Since(start) > 30*time.Second {
			t.Fatalf("%d of %d devices stored after 30 s", len(got), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
	took := time.Since(start)
	for len(q.OnlineJIDs()) < n {
		if time.Since(start) > 30*time.Second {
			t.Fatalf("the other instance shows %d of %d online after 30 s", len(q.OnlineJIDs()), n)
		}
		time.Sleep(time.Millisecond)
	}
	seen := time.Since(start)
	var events int
	if err := db.SQL().QueryRow(`SELECT count(*) FROM presence_events`).Scan(&events); err != nil {
		t.Fatal(err)
	}
	t.Logf("probe storm: %d devices' presence stored in %v, all online on the other instance after %v (%d transitions recorded)", n, took, seen, events)
	if events != n {
		t.Errorf("%d transitions, want %d", events, n)
	}
}

// TestPresenceEventRetention: presence history no longer grows without
// bound: the maintainer deletes the events older than the retention, in
// batches, even one stored out of order (another instance's clock), and
// keeps the newer ones.
func TestPresenceEventRetention(t *testing.T) {
	ctx := context.Background()
	db, reg, svc := newStack(t)
	devs := thermostats(t, reg, svc, "flap1@example.com", "flap2@example.com")
	now := time.Now().UTC()
	day := 24 * time.Hour
	var evs []iotgate.PresenceEvent
	for i := 10; i >= 0; i-- { // oldest first, as they come
		for _, d := range devs {
			evs = append(evs, iotgate.PresenceEvent{DeviceID: d.ID, DeviceJID: d.JID, At: now.Add(-time.Duration(i) * 4 * day), Online: i%2 == 0})
		}
	}
	// Stored last, yet old.
	evs = append(evs, iotgate.PresenceEvent{DeviceID: devs[0].ID, DeviceJID: devs[0].JID, At: now.Add(-60 * day), Online: true})
	if err := db.InsertPresenceEvents(ctx, evs); err != nil {
		t.Fatal(err)
	}
	count := func() (old, young int) {
		t.Helper()
		if err := db.SQL().QueryRowContext(ctx, `SELECT count(*) FILTER (WHERE at < $1), count(*) FILTER (WHERE at >= $1) FROM presence_events`,
			now.Add(-30*day)).Scan(&old, &young); err != nil {
			t.Fatal(err)
		}
		return old, young
	}
	old, young := count()
	if old != 7 || young != 16 { // ages 32, 36, 40 days for each device, and the late one
		t.Fatalf("before: %d old, %d young events; want 7, 16", old, young)
	}

	m := &postgres.Maintainer{DB: db, PresenceEventRetention: 30 * day, Batch: 2, Pause: time.Millisecond, Now: func() time.Time { return now }}
	got, err := m.Maintain(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got.PresenceEvents != 7 {
		t.Errorf("Maintain deleted %d presence events, want 7", got.PresenceEvents)
	}
	if old, young := count(); old != 0 || young != 16 {
		t.Errorf("after: %d old, %d young events; want 0, 16", old, young)
	}
}

// DeviceJIDs pages through every registered JID in order, whatever the
// page size, and the memory store pages the same way.
func TestDeviceJIDsPages(t *testing.T) {
	ctx := context.Background()
	db, reg, svc := newStack(t)
	want := []string{"a@example.com", "b@example.com", "b@example.org", "c@example.com", "z@example.com"}
	thermostats(t, reg, svc, "z@example.com", "b@example.org", "a@example.com", "c@example.com", "b@example.com")
	mem := memstore.NewDeviceStore()
	for _, j := range want {
		if err := mem.CreateDevice(ctx, &iotgate.Device{JID: j}); err != nil {
			t.Fatal(err)
		}
	}
	for _, store := range []struct {
		name string
		list func(ctx context.Context, after string, limit int) ([]string, error)
	}{{"postgres", db.DeviceJIDs}, {"memstore", mem.DeviceJIDs}} {
		for _, limit := range []int{1, 2, 5, 6} {
			var got []string
			after := ""
			for range 10 {
				page, err := store.list(ctx, after, limit)
				if err != nil {
					t.Fatal(err)
				}
				if len(page) > limit {
					t.Fatalf("%s: page of %d, limit %d", store.name, len(page), limit)
				}
				got = append(got, page...)
				if len(page) < limit {
					break
				}
				after = page[len(page)-1]
			}
			if !slices.Equal(got, want) {
				t.Errorf("%s, pages of %d: %v, want %v", store.name, limit, got, want)
			}
		}
	}
}
