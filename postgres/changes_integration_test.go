//go:build integration

package postgres_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/iotgate/iotgate"
	"github.com/iotgate/iotgate/postgres"
	"github.com/iotgate/iotgate/schemas"
	"github.com/iotgate/iotgate/schemas/examples"
)

// changeKinds are the kinds the caches follow.
var changeKinds = []postgres.ChangeKind{postgres.ChangeDevice, postgres.ChangeSchema, postgres.ChangeToken}

// changeRecorder receives "kind:key" for every change of the kinds it
// subscribed to.
type changeRecorder chan string

func listenChanges(t *testing.T, c *postgres.Changes, kinds ...postgres.ChangeKind) changeRecorder {
	t.Helper()
	rec := make(changeRecorder, 100)
	for _, k := range kinds {
		c.Subscribe(k, func(key string) { rec <- string(k) + ":" + key })
	}
	return rec
}

// startListening listens for db's change notifications until t ends.
func startListening(t *testing.T, db *postgres.DB) *postgres.Changes {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	return db.ListenChanges(ctx)
}

// next returns the next change, or fails t after 10 s.
func (r changeRecorder) next(t *testing.T, what string) string {
	t.Helper()
	select {
	case c := <-r:
		return c
	case <-time.After(10 * time.Second):
		t.Fatalf("no change notified %s", what)
		return ""
	}
}

// none fails t if a change arrives within 300 ms.
func (r changeRecorder) none(t *testing.T, what string) {
	t.Helper()
	select {
	case c := <-r:
		t.Fatalf("%s notified %q", what, c)
	case <-time.After(300 * time.Millisecond):
	}
}

// flushed checks that every kind of kinds got "" (in any order).
func (r changeRecorder) flushed(t *testing.T, what string, kinds ...postgres.ChangeKind) {
	t.Helper()
	want := map[string]bool{}
	for _, k := range kinds {
		want[string(k)+":"] = true
	}
	for len(want) > 0 {
		c := r.next(t, what)
		if !want[c] {
			t.Fatalf("%s: got %q, want \"\" for each kind", what, c)
		}
		delete(want, c)
	}
}

// TestChanges checks the primitive: a notification arrives after commit
// and never after rollback, goes to its kind's subscribers only, and ""
// reaches every kind when listening starts and after a reconnection.
func TestChanges(t *testing.T) {
	ctx := context.Background()
	listener, writer := instances(t)
	changes := startListening(t, listener)
	devs := listenChanges(t, changes, postgres.ChangeDevice)
	all := listenChanges(t, changes, changeKinds...)
	devs.flushed(t, "when listening starts", postgres.ChangeDevice)
	all.flushed(t, "when listening starts", changeKinds...)

	notify := func(t *testing.T, kind postgres.ChangeKind, key string, commit bool) {
		t.Helper()
		tx, err := writer.SQL().BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback()
		if err := postgres.NotifyChanges(ctx, tx, kind, key); err != nil {
			t.Fatal(err)
		}
		all.none(t, "an open transaction")
		if commit {
			if err := tx.Commit(); err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Run("AfterCommit", func(t *testing.T) {
		notify(t, postgres.ChangeDevice, "a@example.com", true)
		if got := devs.next(t, "after commit"); got != "device:a@example.com" {
			t.Errorf("device subscriber got %q", got)
		}
		if got := all.next(t, "after commit"); got != "device:a@example.com" {
			t.Errorf("subscriber of all kinds got %q", got)
		}
	})
	t.Run("NeverAfterRollback", func(t *testing.T) {
		notify(t, postgres.ChangeDevice, "b@example.com", false)
		all.none(t, "a rolled-back transaction")
		devs.none(t, "a rolled-back transaction")
	})
	t.Run("KindsToTheirSubscribers", func(t *testing.T) {
		notify(t, postgres.ChangeToken, "tok_1", true)
		if got := all.next(t, "after commit"); got != "token:tok_1" {
			t.Errorf("subscriber of all kinds got %q", got)
		}
		devs.none(t, "a token change to the device subscriber")
	})
	t.Run("FlushAfterReconnect", func(t *testing.T) {
		if !changes.Live() {
			t.Fatal("not live once listening")
		}
		var killed int
		if err := writer.SQL().QueryRowContext(ctx, `
			SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
			WHERE datname = current_database() AND query LIKE 'LISTEN %'`).Scan(&killed); err != nil || killed != 1 {
			t.Fatalf("terminate the listener's connection: %d terminated, %v", killed, err)
		}
		// Not live while disconnected (at least the 100 ms before the
		// first reconnection attempt), live again after the flush.
		waitLive := func(want bool) {
			t.Helper()
			for start := time.Now(); changes.Live() != want; time.Sleep(time.Millisecond) {
				if time.Since(start) > 5*time.Second {
					t.Fatalf("Live() is not %v within 5s", want)
				}
			}
		}
		waitLive(false)
		all.flushed(t, "after reconnecting", changeKinds...)
		devs.flushed(t, "after reconnecting", postgres.ChangeDevice)
		waitLive(true)
		notify(t, postgres.ChangeSchema, "s/1", true)
		if got := all.next(t, "after commit, reconnected"); got != "schema:s/1" {
			t.Errorf("got %q", got)
		}
	})
}

// TestChangesOfWrites checks that every store write the caches hold the
// result of notifies its key at its commit, and that a failed write
// notifies nothing.
func TestChangesOfWrites(t *testing.T) {
	ctx := context.Background()
	listener, writer := instances(t)
	all := listenChanges(t, startListening(t, listener), changeKinds...)
	all.flushed(t, "when listening starts", changeKinds...)

	now := time.Now().UTC()
	dev := &iotgate.Device{JID: "a@example.com", Schema: "thermostat", SchemaVersion: 1, Labels: map[string]string{}, CreatedAt: now, UpdatedAt: now}
	tok := &iotgate.Token{ID: "tok_a", Name: "a", Scopes: []iotgate.Scope{iotgate.ScopeAdmin}, Devices: iotgate.Selector{}, Hash: []byte("0123456789abcdef0123456789abcdef"), CreatedAt: now}
	labels := map[string]string{"room": "kitchen"}
	schema := func() *schemas.Schema {
		return &schemas.Schema{Name: "thermostat", XSD: string(examples.Thermostat()), TargetNamespace: examples.ThermostatNS, GlobalElements: []string{"reading"}, CreatedAt: time.Now().UTC()}
	}
	tests := []struct {
		name    string
		write   func() error
		want    string // "": nothing
		wantErr string
	}{
		{name: "CreateSchemaVersion", write: func() error { return writer.CreateSchemaVersion(ctx, schema(), schemas.Quota{}) }, want: "schema:thermostat/1"},
		{name: "CreateSchemaVersionAgain", write: func() error { return writer.CreateSchemaVersion(ctx, schema(), schemas.Quota{}) }, want: "schema:thermostat/2"},
		{name: "CreateDevice", write: func() error { return writer.CreateDevice(ctx, dev) }, want: "device:a@example.com"},
		{name: "CreateDeviceConflict", write: func() error { return writer.CreateDevice(ctx, dev) }, wantErr: iotgate.EConflict},
		{name: "UpdateDevice", write: func() error {
			_, err := writer.UpdateDevice(ctx, dev.JID, iotgate.DeviceUpdate{Labels: &labels}, time.Now())
			return err
		}, want: "device:a@example.com"},
		{name: "UpdateDeviceUnknown", write: func() error {
			_, err := writer.UpdateDevice(ctx, "nobody@example.com", iotgate.DeviceUpdate{Labels: &labels}, time.Now())
			return err
		}, wantErr: iotgate.ENotFound},
		{name: "DeleteSchemaVersionInUse", write: func() error { return writer.DeleteSchemaVersion(ctx, "thermostat", 1) }, wantErr: iotgate.EConflict},
		{name: "DeleteSchemaVersion", write: func() error { return writer.DeleteSchemaVersion(ctx, "thermostat", 2) }, want: "schema:thermostat/2"},
		{name: "DeleteSchemaVersionUnknown", write: func() error { return writer.DeleteSchemaVersion(ctx, "thermostat", 2) }, wantErr: iotgate.ENotFound},
		{name: "DeleteDevice", write: func() error { return writer.DeleteDevice(ctx, dev.JID) }, want: "device:a@example.com"},
		{name: "DeleteDeviceUnknown", write: func() error { return writer.DeleteDevice(ctx, dev.JID) }, wantErr: iotgate.ENotFound},
		{name: "CreateToken", write: func() error { return writer.CreateToken(ctx, tok) }, want: "token:tok_a"},
		{name: "CreateTokenConflict", write: func() error { return writer.CreateToken(ctx, tok) }, wantErr: iotgate.EConflict},
		{name: "RevokeToken", write: func() error {
			_, err := writer.RevokeToken(ctx, tok.ID, time.Now())
			return err
		}, want: "token:tok_a"},
		{name: "RevokeTokenUnknown", write: func() error {
			_, err := writer.RevokeToken(ctx, "tok_nope", time.Now())
			return err
		}, wantErr: iotgate.ENotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.write()
			if iotgate.ErrorCode(err) != tt.wantErr {
				t.Fatalf("err = %v, want %q", err, tt.wantErr)
			}
			if tt.want == "" {
				all.none(t, "a failed write")
				return
			}
			if got := all.next(t, "after the write"); got != tt.want {
				t.Errorf("notified %q, want %q", got, tt.want)
			}
			all.none(t, "a second notification of one write")
		})
	}
}

// countingSchemaStore counts the reads of one schema version.
type countingSchemaStore struct {
	*postgres.DB
	reads atomic.Int64
}

func (c *countingSchemaStore) SchemaVersion(ctx context.Context, name string, version int) (*schemas.Schema, error) {
	c.reads.Add(1)
	return c.DB.SchemaVersion(ctx, name, version)
}

// TestSchemaForgetKeepsSameRow checks, against PostgreSQL's timestamps
// (microseconds), that the notification of a schema version this
// registry registered itself leaves its compiled schema cached: the row
// read again is recognised as the one compiled.
func TestSchemaForgetKeepsSameRow(t *testing.T) {
	ctx := context.Background()
	db, _ := instances(t)
	store := &countingSchemaStore{DB: db}
	reg := schemas.NewRegistry(store, schemas.Config{})
	fctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go reg.FollowChanges(fctx)
	for i := range 20 { // a rounding mismatch would show in some of them
		s, err := reg.Register(ctx, "thermostat", string(examples.Thermostat()), "")
		if err != nil {
			t.Fatal(err)
		}
		before := store.reads.Load()
		reg.Forget(schemas.Ref{Name: s.Name, Version: s.Version}.String())
		deadline := time.Now().Add(5 * time.Second)
		for store.reads.Load() == before {
			if time.Now().After(deadline) {
				t.Fatal("the version was not read again")
			}
			time.Sleep(5 * time.Millisecond)
		}
		time.Sleep(20 * time.Millisecond) // let the check finish
		checked := store.reads.Load()
		if _, _, err := reg.Compiled(ctx, s.Name, s.Version); err != nil {
			t.Fatal(err)
		}
		if n := store.reads.Load() - checked; n != 0 {
			t.Fatalf("version %d: compiled again after its own notification (%d reads)", i+1, n)
		}
	}
}

// TestChangesOfReadings checks that a batch of readings notifies, per
// device, its newest stored reading, and nothing for a deleted device's.
func TestChangesOfReadings(t *testing.T) {
	ctx := context.Background()
	listener, writer := instances(t)
	reg := schemas.NewRegistry(writer, schemas.Config{})
	if _, err := reg.Register(ctx, "thermostat", string(examples.Thermostat()), ""); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC().Round(time.Microsecond)
	var devs []*iotgate.Device
	for _, j := range []string{"a@example.com", "b@example.com", "gone@example.com"} {
		d := &iotgate.Device{JID: j, Schema: "thermostat", SchemaVersion: 1, Labels: map[string]string{}, CreatedAt: now, UpdatedAt: now}
		if err := writer.CreateDevice(ctx, d); err != nil {
			t.Fatal(err)
		}
		devs = append(devs, d)
	}
	if err := writer.DeleteDevice(ctx, "gone@example.com"); err != nil {
		t.Fatal(err)
	}
	readings := listenChanges(t, startListening(t, listener), postgres.ChangeReading)
	readings.flushed(t, "when listening starts", postgres.ChangeReading)

	// a: two readings, the second newer; b: two at the same time (the
	// later id wins); gone: skipped.
	var rs []*iotgate.Reading
	for i, tc := range []struct {
		dev int
		at  time.Duration
	}{{0, 0}, {1, time.Millisecond}, {0, 2 * time.Millisecond}, {2, 0}, {1, time.Millisecond}} {
		rs = append(rs, &iotgate.Reading{DeviceID: devs[tc.dev].ID, DeviceJID: devs[tc.dev].JID, ReceivedAt: now.Add(tc.at),
			XML: "<r/>", Data: []byte(`{"n":` + string(rune('0'+i)) + `}`)})
	}
	if err := errors.Join(writer.InsertReadings(ctx, rs)...); err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{
		"reading:" + iotgate.ReadingKey(rs[2]): true,
		"reading:" + iotgate.ReadingKey(rs[4]): true,
	}
	for range want {
		if got := readings.next(t, "after the batch"); !want[got] {
			t.Errorf("notified %q, want one of %v", got, want)
		}
	}
	readings.none(t, "a third notification of the batch")
}
