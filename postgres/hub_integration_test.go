//go:build integration

package postgres_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/iotgate/iotgate"
	"github.com/iotgate/iotgate/events"
	"github.com/iotgate/iotgate/internal/memstore"
	"github.com/iotgate/iotgate/internal/servers"
	"github.com/iotgate/iotgate/postgres"
	"github.com/iotgate/iotgate/schemas"
	"github.com/iotgate/iotgate/schemas/examples"
)

// instances opens two pools on one new database, as two iotgate instances
// sharing it would; they close when the test ends.
func instances(t *testing.T) (*postgres.DB, *postgres.DB) {
	t.Helper()
	dsn := servers.DatabaseForTest(t)
	open := func() *postgres.DB {
		db, err := postgres.Open(context.Background(), dsn, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		return db
	}
	return open(), open()
}

// TestEventHubOverPostgres runs the event hub of one instance over the
// real log, woken by NOTIFY, while another instance (another pool)
// writes: a scoped subscriber sees only its devices' events, live and
// resumed, and the wake-ups (not the 1 h poll) deliver them.
func TestEventHubOverPostgres(t *testing.T) {
	ctx := context.Background()
	reader, writer := instances(t)
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	hub := events.NewHub(reader, events.Config{Wake: reader.EventWakeups(wctx), Poll: time.Hour})
	if err := hub.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer hub.Close()

	reg := schemas.NewRegistry(writer, schemas.Config{})
	if _, err := reg.Register(ctx, "thermostat", string(examples.Thermostat()), ""); err != nil {
		t.Fatal(err)
	}
	scope := iotgate.EventFilter{Scope: iotgate.Selector{"site": "berlin"}}
	live, err := hub.Subscribe(ctx, "tok", scope, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	mk := func(jid, site string) *iotgate.Device {
		d := &iotgate.Device{JID: jid, Schema: "thermostat", SchemaVersion: 1, Labels: map[string]string{"site": site}, CreatedAt: time.Now(), UpdatedAt: time.Now()}
		if err := writer.CreateDevice(ctx, d); err != nil {
			t.Fatal(err)
		}
		return d
	}
	paris, berlin := mk("p@example.com", "paris"), mk("b@example.com", "berlin")
	// Presence changes of both, one at a time, timed from commit to
	// delivery.
	var lat []time.Duration
	next := func(s *events.Subscription) *iotgate.Event {
		t.Helper()
		nctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		evs, err := s.Next(nctx)
		if err != nil || len(evs) != 1 {
			t.Fatalf("Next = %d events, %v; want 1", len(evs), err)
		}
		return evs[0]
	}
	if e := next(live); e.Type != iotgate.EventDevice || e.Device != berlin.JID {
		t.Fatalf("first live event = %s %s, want berlin's device event", e.Type, e.Device)
	}
	for i := range 40 {
		for _, d := range []*iotgate.Device{paris, berlin} {
			start := time.Now()
			if err := writer.InsertPresenceEvents(ctx, []iotgate.PresenceEvent{{DeviceID: d.ID, DeviceJID: d.JID, At: time.Now(), Online: i%2 == 0}}); err != nil {
				t.Fatal(err)
			}
			if d == berlin {
				if e := next(live); e.Type != iotgate.EventPresence || e.Device != berlin.JID {
					t.Fatalf("live event = %s %s, want berlin's presence", e.Type, e.Device)
				}
				lat = append(lat, time.Since(start))
			}
		}
	}
	slices.Sort(lat)
	t.Logf("commit-to-subscriber over NOTIFY: median %v, max %v (%d events)", lat[len(lat)/2], lat[len(lat)-1], len(lat))

	// Resumed from the start: the same 41 events of berlin, in order.
	after := int64(0)
	resumed, err := hub.Subscribe(ctx, "tok", scope, &after)
	if err != nil {
		t.Fatal(err)
	}
	defer resumed.Close()
	got := collectEvents(ctx, t, resumed, 41)
	for i, e := range got {
		if e.Device != berlin.JID || (i > 0 && e.ID <= got[i-1].ID) {
			t.Fatalf("resumed event %d = %d %s %s", i, e.ID, e.Type, e.Device)
		}
	}
}

// TestIdleHubOverPostgres: a hub without subscribers, woken by NOTIFY at
// every commit of another instance (and polled every 10 ms), queries the
// log not once; its first subscriber then gets exactly the events written
// after it subscribed.
func TestIdleHubOverPostgres(t *testing.T) {
	ctx := context.Background()
	reader, writer := instances(t)
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	log := &memstore.CountingEventLog{EventLog: reader}
	hub := events.NewHub(log, events.Config{Wake: reader.EventWakeups(wctx), Poll: 10 * time.Millisecond})
	if err := hub.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer hub.Close()

	reg := schemas.NewRegistry(writer, schemas.Config{})
	if _, err := reg.Register(ctx, "thermostat", string(examples.Thermostat()), ""); err != nil {
		t.Fatal(err)
	}
	d := &iotgate.Device{JID: "idle@example.com", Schema: "thermostat", SchemaVersion: 1, Labels: map[string]string{}, CreatedAt: time.Now(), UpdatedAt: time.Now()}
	if err := writer.CreateDevice(ctx, d); err != nil {
		t.Fatal(err)
	}
	presence := func(n int) {
		t.Helper()
		for i := range n {
			if err := writer.InsertPresenceEvents(ctx, []iotgate.PresenceEvent{{DeviceID: d.ID, DeviceJID: d.JID, At: time.Now(), Online: i%2 == 0}}); err != nil {
				t.Fatal(err)
			}
		}
	}
	calls := func() int { r, b := log.Calls(); return r + b }
	start := calls()
	presence(20)
	time.Sleep(300 * time.Millisecond) // the wake-ups and 30 polls
	if n := calls() - start; n != 0 {
		t.Fatalf("idle hub queried the log %d times over 20 commits, want 0", n)
	}
	before, err := reader.EventBounds(ctx)
	if err != nil {
		t.Fatal(err)
	}

	live, err := hub.Subscribe(ctx, "tok", iotgate.EventFilter{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	presence(3)
	got := collectEvents(ctx, t, live, 3)
	after, err := reader.EventBounds(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// The 3 written after subscribing, none of the 20 before.
	for i, e := range got {
		if e.ID <= before.Last || (i > 0 && e.ID <= got[i-1].ID) || e.Type != iotgate.EventPresence {
			t.Errorf("event %d = %d %s, want presence after %d, in order", i, e.ID, e.Type, before.Last)
		}
	}
	if len(got) != 3 || got[len(got)-1].ID != after.Last {
		t.Errorf("got %d events, the last %d; want 3, the last %d", len(got), got[len(got)-1].ID, after.Last)
	}
}

// collectEvents reads s until it has at least n events, each read within
// 10 s.
func collectEvents(ctx context.Context, t *testing.T, s *events.Subscription, n int) []*iotgate.Event {
	t.Helper()
	var got []*iotgate.Event
	for len(got) < n {
		nctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		evs, err := s.Next(nctx)
		cancel()
		if err != nil {
			t.Fatalf("after %d events: %v", len(got), err)
		}
		got = append(got, evs...)
	}
	return got
}
