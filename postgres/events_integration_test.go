//go:build integration

package postgres_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/iotgate/iotgate"
	"github.com/iotgate/iotgate/postgres"
	"github.com/iotgate/iotgate/schemas"
	"github.com/iotgate/iotgate/schemas/examples"
)

// lastEventID returns the newest event id.
func lastEventID(t *testing.T, db *postgres.DB) int64 {
	t.Helper()
	b, err := db.EventBounds(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return b.Last
}

// eventsAfter reads every event after id, unfiltered.
func eventsAfter(t *testing.T, db *postgres.DB, after int64) []*iotgate.Event {
	t.Helper()
	var out []*iotgate.Event
	for {
		b, err := db.Events(context.Background(), iotgate.EventQuery{After: after, Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b.Events...)
		after = b.Next
		if !b.More {
			return out
		}
	}
}

// body decodes an event's data into a map.
func body(t *testing.T, e *iotgate.Event) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(e.Data, &m); err != nil {
		t.Fatalf("event %d data %s: %v", e.ID, e.Data, err)
	}
	return m
}

// want is what a test expects of one event: its type, device and some
// top-level fields of its body (compared as JSON would decode them).
type want struct {
	typ    iotgate.EventType
	device string
	fields map[string]any
}

func checkEvents(t *testing.T, got []*iotgate.Event, wants []want) {
	t.Helper()
	if len(got) != len(wants) {
		for _, e := range got {
			t.Logf("event %d %s %s %s", e.ID, e.Type, e.Device, e.Data)
		}
		t.Fatalf("%d events, want %d", len(got), len(wants))
	}
	for i, w := range wants {
		e := got[i]
		if e.Type != w.typ || e.Device != w.device {
			t.Errorf("event %d: %s of %s, want %s of %s", i, e.Type, e.Device, w.typ, w.device)
		}
		if i > 0 && e.ID <= got[i-1].ID {
			t.Errorf("event %d: id %d after %d", i, e.ID, got[i-1].ID)
		}
		b := body(t, e)
		for k, v := range w.fields {
			gb, _ := json.Marshal(b[k])
			wb, _ := json.Marshal(v)
			if string(gb) != string(wb) {
				t.Errorf("event %d (%s): %s = %s, want %s", i, e.Type, k, gb, wb)
			}
		}
	}
}

// TestStoreEvents checks the events each store method writes with its
// change, and that a change that fails writes none.
func TestStoreEvents(t *testing.T) {
	ctx := context.Background()
	db, reg, svc := newStack(t)
	devs := thermostats(t, reg, svc, "a@example.com", "gone@example.com")
	a := devs[0]
	if err := svc.Delete(ctx, "gone@example.com"); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC().Truncate(time.Millisecond)
	var rs []*iotgate.Reading // the readings of the reading case, for its ids

	tests := []struct {
		name   string
		change func(t *testing.T) error
		want   func() []want
	}{
		{"Readings", func(t *testing.T) error {
			rs = []*iotgate.Reading{
				{DeviceID: a.ID, DeviceJID: a.JID, ReceivedAt: now, XML: "<a/>", Data: []byte(`{"t":1}`)},
				{DeviceID: devs[1].ID, DeviceJID: devs[1].JID, ReceivedAt: now, XML: "<b/>", Data: []byte(`{}`)},
				{DeviceID: a.ID, DeviceJID: a.JID, ReceivedAt: now, XML: "<c/>", Data: []byte(`{"t":2}`)},
			}
			return errors.Join(db.InsertReadings(ctx, rs)...)
		}, func() []want {
			return []want{
				{iotgate.EventReading, a.JID, map[string]any{"id": rs[0].ID, "data": map[string]int{"t": 1}, "device_time": nil}},
				{iotgate.EventReading, a.JID, map[string]any{"id": rs[2].ID, "data": map[string]int{"t": 2}}},
			}
		}},
		{"RejectionsPruned", func(t *testing.T) error {
			return db.InsertRejections(ctx, []*iotgate.Rejection{
				{DeviceID: a.ID, DeviceJID: a.JID, ReceivedAt: now, Via: "iq", Reason: "one", Payload: "<x/>"},
				{DeviceID: a.ID, DeviceJID: a.JID, ReceivedAt: now.Add(time.Second), Via: "message", Reason: "two", Payload: "<x/>"},
				{DeviceID: devs[1].ID, DeviceJID: devs[1].JID, ReceivedAt: now, Via: "iq", Reason: "gone", Payload: "<x/>"},
			}, 1)
		}, func() []want {
			return []want{{iotgate.EventRejection, a.JID, map[string]any{"via": "message", "reason": "two"}}}
		}},
		{"Presence", func(t *testing.T) error {
			res := []iotgate.Resource{{JID: a.JID + "/r", Priority: 5, Since: now}}
			return db.InsertPresenceEvents(ctx, []iotgate.PresenceEvent{
				{DeviceID: a.ID, DeviceJID: a.JID, At: now, Online: true, Resources: res},
				{DeviceID: devs[1].ID, DeviceJID: devs[1].JID, At: now, Online: true},
				{DeviceID: a.ID, DeviceJID: a.JID, At: now.Add(time.Second), Online: false},
			})
		}, func() []want {
			return []want{
				{iotgate.EventPresence, a.JID, map[string]any{"online": true, "resources": []iotgate.Resource{{JID: a.JID + "/r", Priority: 5, Since: now}}}},
				{iotgate.EventPresence, a.JID, map[string]any{"online": false, "resources": []any{}}},
			}
		}},
		{"CreateCommand", func(t *testing.T) error {
			c := newCommand(a, "c1", now, iotgate.CommandQueued)
			exp := now.Add(-time.Second) // expires at the next sweep
			c.Mode, c.ExpiresAt, c.IdempotencyKey = iotgate.CommandQueue, &exp, "k1"
			return db.CreateCommand(ctx, c, now.Add(-time.Hour), 0)
		}, func() []want {
			return []want{{iotgate.EventCommand, a.JID, map[string]any{"id": "c1", "status": "queued", "idempotency_key": "k1"}}}
		}},
		{"CreateCommands", func(t *testing.T) error {
			return errors.Join(db.CreateCommands(ctx, []*iotgate.Command{
				newCommand(a, "c2", now, iotgate.CommandPending), newCommand(a, "c3", now, iotgate.CommandSent)})...)
		}, func() []want {
			return []want{
				{iotgate.EventCommand, a.JID, map[string]any{"id": "c2", "status": "pending"}},
				{iotgate.EventCommand, a.JID, map[string]any{"id": "c3", "status": "sent"}},
			}
		}},
		{"UpdateCommands", func(t *testing.T) error {
			c := newCommand(a, "c3", now, iotgate.CommandSucceeded)
			ev := iotgate.CommandEvent{Status: iotgate.CommandSucceeded, At: now.Add(time.Second)}
			c.History = append(c.History, ev)
			// c2 is not sent: its update is a conflict and writes no event.
			errs := db.UpdateCommands(ctx, []iotgate.CommandUpdate{
				{Command: c, From: []iotgate.CommandStatus{iotgate.CommandSent}, Event: &ev},
				{Command: newCommand(a, "c2", now, iotgate.CommandFailed), From: []iotgate.CommandStatus{iotgate.CommandSent}},
			})
			if iotgate.ErrorCode(errs[1]) != iotgate.EConflict {
				t.Errorf("update of c2: %v, want conflict", errs[1])
			}
			return errs[0]
		}, func() []want {
			return []want{{iotgate.EventCommand, a.JID, map[string]any{"id": "c3", "status": "succeeded"}}}
		}},
		{"ExpireCommands", func(t *testing.T) error {
			_, err := db.ExpireCommands(ctx, now, "expired in the queue")
			return err
		}, func() []want {
			return []want{{iotgate.EventCommand, a.JID, map[string]any{"id": "c1", "status": "expired", "error": "expired in the queue"}}}
		}},
		{"FailUnfinishedCommands", func(t *testing.T) error {
			_, err := db.FailUnfinishedCommands(ctx, "", now, iotgate.DetailRestarted, "restarted")
			return err
		}, func() []want {
			return []want{{iotgate.EventCommand, a.JID, map[string]any{"id": "c2", "status": "failed", "error_code": iotgate.DetailRestarted}}}
		}},
		{"Devices", func(t *testing.T) error {
			d := &iotgate.Device{JID: "b@example.com", Schema: "thermostat", SchemaVersion: 1, Labels: map[string]string{"site": "berlin"}, CreatedAt: now, UpdatedAt: now}
			if err := db.CreateDevice(ctx, d); err != nil {
				return err
			}
			if _, err := db.UpdateDevice(ctx, d.JID, iotgate.DeviceUpdate{Labels: &map[string]string{"site": "paris"}}, now); err != nil {
				return err
			}
			return db.DeleteDevice(ctx, d.JID)
		}, func() []want {
			return []want{
				{iotgate.EventDevice, "b@example.com", map[string]any{"action": "registered"}},
				{iotgate.EventDevice, "b@example.com", map[string]any{"action": "updated"}},
				{iotgate.EventDevice, "b@example.com", map[string]any{"action": "deleted"}},
			}
		}},
		// Changes that fail write no event.
		{"FailedChanges", func(t *testing.T) error {
			dup := &iotgate.Device{JID: a.JID, Schema: "thermostat", SchemaVersion: 1, Labels: map[string]string{}, CreatedAt: now, UpdatedAt: now}
			if err := db.CreateDevice(ctx, dup); iotgate.ErrorCode(err) != iotgate.EConflict {
				t.Errorf("duplicate device: %v", err)
			}
			if err := db.DeleteDevice(ctx, "nobody@example.com"); iotgate.ErrorCode(err) != iotgate.ENotFound {
				t.Errorf("delete unknown device: %v", err)
			}
			if err := db.CreateCommand(ctx, newCommand(a, "c1", now, iotgate.CommandPending), now, 0); iotgate.ErrorCode(err) != iotgate.EConflict {
				t.Errorf("duplicate command: %v", err)
			}
			// A batch whose second half fails is written apart: only
			// the stored command is announced.
			errs := db.CreateCommands(ctx, []*iotgate.Command{newCommand(a, "c4", now, iotgate.CommandPending), newCommand(devs[1], "c5", now, iotgate.CommandPending)})
			if errs[0] != nil || iotgate.ErrorCode(errs[1]) != iotgate.ENotFound {
				t.Errorf("batch with a deleted device's command: %v", errs)
			}
			return nil
		}, func() []want {
			return []want{{iotgate.EventCommand, a.JID, map[string]any{"id": "c4"}}}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := lastEventID(t, db)
			written := db.EventsWritten()
			if err := tt.change(t); err != nil {
				t.Fatal(err)
			}
			got := eventsAfter(t, db, before)
			ws := tt.want()
			checkEvents(t, got, ws)
			if n := db.EventsWritten() - written; n != uint64(len(ws)) {
				t.Errorf("EventsWritten grew by %d, want %d", n, len(ws))
			}
		})
	}

	t.Run("Labels", func(t *testing.T) {
		// Device events keep the labels they were written with; the
		// others take the device's current ones, nil once it is gone.
		var devEvents []map[string]string
		for _, e := range eventsAfter(t, db, 0) {
			switch {
			case e.Type == iotgate.EventDevice && e.Device == "b@example.com":
				devEvents = append(devEvents, e.Labels)
			case e.Device == a.JID && (e.Labels == nil || len(e.Labels) != 0):
				t.Errorf("event %d of %s: labels %v, want {}", e.ID, a.JID, e.Labels)
			case e.Device == "gone@example.com" && e.Type != iotgate.EventDevice && e.Labels != nil:
				t.Errorf("event %d of a deleted device: labels %v, want nil", e.ID, e.Labels)
			}
		}
		want := []map[string]string{{"site": "berlin"}, {"site": "paris"}, {"site": "paris"}}
		if !slices.EqualFunc(devEvents, want, maps.Equal) {
			t.Errorf("device event labels %v, want %v", devEvents, want)
		}
	})
}

// TestEventsFilter checks the filters applied in SQL and the bounded
// scan window.
func TestEventsFilter(t *testing.T) {
	ctx := context.Background()
	db, reg, svc := newStack(t)
	devs := thermostats(t, reg, svc, "a@example.com", "b@example.com")
	site := map[string]string{"site": "berlin"}
	if _, err := svc.Update(ctx, "a@example.com", iotgate.DeviceUpdate{Labels: &site}); err != nil {
		t.Fatal(err)
	}
	start := lastEventID(t, db)
	now := time.Now().UTC()
	var pres []iotgate.PresenceEvent
	for i := range 4 {
		d := devs[i%2]
		pres = append(pres, iotgate.PresenceEvent{DeviceID: d.ID, DeviceJID: d.JID, At: now, Online: i%4 < 2})
	}
	if err := db.InsertPresenceEvents(ctx, pres); err != nil {
		t.Fatal(err)
	}
	if err := db.InsertRejections(ctx, []*iotgate.Rejection{{DeviceID: devs[1].ID, DeviceJID: devs[1].JID, ReceivedAt: now, Via: "iq", Reason: "r"}}, 0); err != nil {
		t.Fatal(err)
	}
	last := lastEventID(t, db)

	tests := []struct {
		name   string
		filter iotgate.EventFilter
		want   []string // type:device of the events after start
	}{
		{"All", iotgate.EventFilter{}, []string{"presence:a", "presence:b", "presence:a", "presence:b", "rejection:b"}},
		{"Types", iotgate.EventFilter{Types: []iotgate.EventType{iotgate.EventRejection}}, []string{"rejection:b"}},
		{"Devices", iotgate.EventFilter{Devices: []string{"a@example.com"}}, []string{"presence:a", "presence:a"}},
		{"Labels", iotgate.EventFilter{Labels: iotgate.Selector{"site": "berlin"}}, []string{"presence:a", "presence:a"}},
		{"Scope", iotgate.EventFilter{Scope: iotgate.Selector{"site": "paris"}}, nil},
		{"And", iotgate.EventFilter{Types: []iotgate.EventType{iotgate.EventPresence}, Devices: []string{"b@example.com"}}, []string{"presence:b", "presence:b"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := db.Events(ctx, iotgate.EventQuery{After: start, Limit: 100, Filter: &tt.filter})
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, e := range b.Events {
				if !tt.filter.Matches(e) {
					t.Errorf("event %d doesn't match the filter", e.ID)
				}
				got = append(got, string(e.Type)+":"+e.Device[:1])
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("events %v, want %v", got, tt.want)
			}
			if b.Next != last || b.More {
				t.Errorf("Next %d More %v, want %d false", b.Next, b.More, last)
			}
		})
	}

	t.Run("Limit", func(t *testing.T) {
		b, err := db.Events(ctx, iotgate.EventQuery{After: start, Limit: 2, Filter: &iotgate.EventFilter{Devices: []string{"b@example.com"}}})
		if err != nil {
			t.Fatal(err)
		}
		if len(b.Events) != 2 || b.Next != b.Events[1].ID || !b.More {
			t.Errorf("%d events, Next %d, More %v; want 2, the second's id, true", len(b.Events), b.Next, b.More)
		}
	})

	t.Run("Window", func(t *testing.T) {
		// More than a window of events no filter selects.
		const n = 10_500
		from := lastEventID(t, db)
		for i := 0; i < n; i += 1000 {
			batch := make([]iotgate.PresenceEvent, min(1000, n-i))
			for j := range batch {
				batch[j] = iotgate.PresenceEvent{DeviceID: devs[1].ID, DeviceJID: devs[1].JID, At: now, Online: j%2 == 0}
			}
			if err := db.InsertPresenceEvents(ctx, batch); err != nil {
				t.Fatal(err)
			}
		}
		end := lastEventID(t, db)
		if end-from != n {
			t.Fatalf("%d ids for %d events", end-from, n)
		}
		f := &iotgate.EventFilter{Devices: []string{"a@example.com"}}
		b, err := db.Events(ctx, iotgate.EventQuery{After: from, Limit: 100, Filter: f})
		if err != nil {
			t.Fatal(err)
		}
		if len(b.Events) != 0 || b.Next != from+10_000 || !b.More {
			t.Errorf("first window: %d events, Next %d, More %v; want 0, %d, true", len(b.Events), b.Next, b.More, from+10_000)
		}
		b, err = db.Events(ctx, iotgate.EventQuery{After: b.Next, Limit: 100, Filter: f})
		if err != nil {
			t.Fatal(err)
		}
		if len(b.Events) != 0 || b.Next != end || b.More {
			t.Errorf("second window: %d events, Next %d, More %v; want 0, %d, false", len(b.Events), b.Next, b.More, end)
		}
		// Unfiltered reads are bounded by the limit only.
		b, err = db.Events(ctx, iotgate.EventQuery{After: from, Limit: 3})
		if err != nil {
			t.Fatal(err)
		}
		if len(b.Events) != 3 || b.Next != from+3 || !b.More {
			t.Errorf("unfiltered: %d events, Next %d, More %v; want 3, %d, true", len(b.Events), b.Next, b.More, from+3)
		}
	})
}

// TestTrimEvents checks that trimming deletes the oldest events, a bounded
// number at a time, and raises the trim horizon.
func TestTrimEvents(t *testing.T) {
	ctx := context.Background()
	db, reg, svc := newStack(t)
	d := thermostats(t, reg, svc, "a@example.com")[0]
	base := lastEventID(t, db) // the registration's event
	old := time.Now().Add(-48 * time.Hour).UTC()
	var pres []iotgate.PresenceEvent
	for i := range 5 {
		at := old
		if i >= 3 {
			at = time.Now().UTC()
		}
		pres = append(pres, iotgate.PresenceEvent{DeviceID: d.ID, DeviceJID: d.JID, At: at, Online: i%2 == 0})
	}
	if err := db.InsertPresenceEvents(ctx, pres); err != nil {
		t.Fatal(err)
	}
	cut := time.Now().Add(-24 * time.Hour)
	steps := []struct {
		limit, want int
		trimmed     int64
	}{
		{2, 2, base + 2},
		{2, 1, base + 3},
		{2, 0, base + 3},
	}
	for i, s := range steps {
		n, err := db.TrimEvents(ctx, cut, s.limit)
		if err != nil {
			t.Fatal(err)
		}
		b, err := db.EventBounds(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if n != s.want || b.Trimmed != s.trimmed || b.Last != base+5 {
			t.Errorf("step %d: trimmed %d, bounds %+v; want %d, {Last:%d Trimmed:%d}", i, n, b, s.want, base+5, s.trimmed)
		}
	}
	var ids []int64
	for _, e := range eventsAfter(t, db, 0) {
		ids = append(ids, e.ID)
	}
	if want := []int64{base, base + 4, base + 5}; !slices.Equal(ids, want) {
		t.Errorf("left %v, want %v", ids, want)
	}
}

// TestEventOrder checks that readers never see ids out of order: writers
// commit events concurrently while a reader polls after its last id; the
// reader sees every id once, ascending.
func TestEventOrder(t *testing.T) {
	ctx := context.Background()
	db, reg, svc := newStack(t)
	const writers, rounds, batch = 8, 40, 3
	jids := make([]string, writers)
	for i := range jids {
		jids[i] = fmt.Sprintf("w%d@example.com", i)
	}
	devs := thermostats(t, reg, svc, jids...)
	start := lastEventID(t, db)

	var wg sync.WaitGroup
	done := make(chan struct{})
	for _, d := range devs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := range rounds {
				evs := make([]iotgate.PresenceEvent, batch)
				for j := range evs {
					evs[j] = iotgate.PresenceEvent{DeviceID: d.ID, DeviceJID: d.JID, At: time.Now(), Online: (r+j)%2 == 0}
				}
				if err := db.InsertPresenceEvents(ctx, evs); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	go func() { wg.Wait(); close(done) }()

	var seen []int64
	after := start
	read := func() {
		b, err := db.Events(ctx, iotgate.EventQuery{After: after, Limit: 7})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range b.Events {
			seen = append(seen, e.ID)
		}
		after = b.Next
	}
	for finished := false; !finished; {
		select {
		case <-done:
			finished = true
		default:
		}
		read()
	}
	for last := lastEventID(t, db); after < last; {
		read()
	}

	var all []int64
	rows, err := db.SQL().QueryContext(ctx, `SELECT id FROM events WHERE id > $1 ORDER BY id`, start)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		all = append(all, id)
	}
	rows.Close()
	if len(all) != writers*rounds*batch {
		t.Fatalf("%d events stored, want %d", len(all), writers*rounds*batch)
	}
	if !slices.Equal(seen, all) {
		missed := 0
		for _, id := range all {
			if !slices.Contains(seen, id) {
				missed++
			}
		}
		t.Errorf("reader saw %d ids (%d missed, ascending: %v), want the %d stored", len(seen), missed, slices.IsSorted(seen), len(all))
	}
}

// TestEventWakeups checks that a commit on another connection (another
// instance) wakes a listener up, and that it wakes once at the start.
func TestEventWakeups(t *testing.T) {
	ctx := context.Background()
	listener, writer := instances(t)
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	wakeups := listener.EventWakeups(lctx)
	waitWake := func(what string) {
		t.Helper()
		select {
		case <-wakeups:
		case <-time.After(10 * time.Second):
			t.Fatalf("no wake-up %s", what)
		}
	}
	waitWake("when listening starts")

	reg := schemas.NewRegistry(writer, schemas.Config{})
	if _, err := reg.Register(ctx, "thermostat", string(examples.Thermostat()), ""); err != nil {
		t.Fatal(err)
	}
	select {
	case <-wakeups:
		t.Fatal("woken up by a change without events")
	case <-time.After(200 * time.Millisecond):
	}
	d := &iotgate.Device{JID: "a@example.com", Schema: "thermostat", SchemaVersion: 1, Labels: map[string]string{}, CreatedAt: time.Now(), UpdatedAt: time.Now()}
	if err := writer.CreateDevice(ctx, d); err != nil {
		t.Fatal(err)
	}
	waitWake("after another instance's commit")

	// A rolled-back change notifies nobody.
	if err := writer.CreateDevice(ctx, d); iotgate.ErrorCode(err) != iotgate.EConflict {
		t.Fatalf("duplicate: %v", err)
	}
	select {
	case <-wakeups:
		t.Fatal("woken up by a rolled-back change")
	case <-time.After(200 * time.Millisecond):
	}

	// A lost listener connection wakes it up once reconnected, since
	// notifications may have been missed meanwhile.
	var killed int
	if err := writer.SQL().QueryRowContext(ctx, `
		SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE datname = current_database() AND query LIKE 'LISTEN %'`).Scan(&killed); err != nil || killed != 1 {
		t.Fatalf("terminate the listener's connection: %d terminated, %v", killed, err)
	}
	waitWake("after reconnecting")
	if err := writer.InsertPresenceEvents(ctx, []iotgate.PresenceEvent{{DeviceID: d.ID, DeviceJID: d.JID, At: time.Now(), Online: true}}); err != nil {
		t.Fatal(err)
	}
	waitWake("after a commit, reconnected")

	// After ctx ends nothing more arrives.
	cancel()
	time.Sleep(100 * time.Millisecond)
	if _, err := writer.UpdateDevice(ctx, d.JID, iotgate.DeviceUpdate{}, time.Now()); err != nil {
		t.Fatal(err)
	}
	select {
	case <-wakeups:
		t.Fatal("woken up after ctx ended")
	case <-time.After(300 * time.Millisecond):
	}
}
