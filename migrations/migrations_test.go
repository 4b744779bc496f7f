//go:build integration

package migrations_test

import (
	"context"
	"database/sql"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-migrate/migrate/v4/database"
	"github.com/lib/pq"
	"github.com/lib/pq/pqerror"

	"github.com/iotgate/iotgate"
	"github.com/iotgate/iotgate/internal/servers"
	"github.com/iotgate/iotgate/migrations"
)

func TestMain(m *testing.M) { servers.Main(m) }

// openDB returns a pool on a new empty database, closed when the test ends.
func openDB(t *testing.T) *sql.DB {
	t.Helper()
	return openDSN(t, servers.DatabaseForTest(t))
}

func openDSN(t *testing.T, dsn string) *sql.DB {
	t.Helper()
	db, err := sql.Open("postgres", dsn)
	if err != nil {
		t.Fatalf("open %s: %v", dsn, err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// testLogger logs to the test's log.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func latest(t *testing.T) uint {
	t.Helper()
	v, err := migrations.Latest()
	if err != nil {
		t.Fatalf("Latest: %v", err)
	}
	return v
}

func checkVersion(t *testing.T, ctx context.Context, db *sql.DB, want uint, wantDirty bool) {
	t.Helper()
	got, dirty, err := migrations.Version(ctx, db)
	if err != nil {
		t.Fatalf("Version: %v", err)
	}
	if got != want || dirty != wantDirty {
		t.Fatalf("Version = %d, dirty %v; want %d, dirty %v", got, dirty, want, wantDirty)
	}
}

// checkError fails unless err is a *iotgate.Error with the given code and
// detail.
func checkError(t *testing.T, err error, code, detail string) *iotgate.Error {
	t.Helper()
	var e *iotgate.Error
	if !errors.As(err, &e) {
		t.Fatalf("error = %v (%T), want *iotgate.Error %s/%s", err, err, code, detail)
	}
	if e.Code != code || e.Detail != detail {
		t.Fatalf("error = %q, code %q detail %q; want code %q detail %q", err, e.Code, e.Detail, code, detail)
	}
	return e
}

func tableExists(t *testing.T, ctx context.Context, db *sql.DB, name string) bool {
	t.Helper()
	var ok bool
	if err := db.QueryRowContext(ctx, `SELECT to_regclass($1) IS NOT NULL`, name).Scan(&ok); err != nil {
		t.Fatalf("to_regclass(%s): %v", name, err)
	}
	return ok
}

func TestUpDownUp(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	db := openDB(t)
	last := latest(t)
	log := testLogger(t)

	checkVersion(t, ctx, db, 0, false)

	if err := migrations.Up(ctx, db, log); err != nil {
		t.Fatalf("Up: %v", err)
	}
	checkVersion(t, ctx, db, last, false)
	for _, table := range []string{"schema_versions", "schema_imports", "devices"} {
		if !tableExists(t, ctx, db, table) {
			t.Errorf("table %s missing after Up", table)
		}
	}

	// A second Up finds nothing to do.
	if err := migrations.Up(ctx, db, log); err != nil {
		t.Fatalf("second Up: %v", err)
	}
	checkVersion(t, ctx, db, last, false)

	if err := migrations.Down(ctx, db, log, int(last)); err != nil {
		t.Fatalf("Down(%d): %v", last, err)
	}
	checkVersion(t, ctx, db, 0, false)
	for _, table := range []string{"schema_versions", "schema_imports", "devices"} {
		if tableExists(t, ctx, db, table) {
			t.Errorf("table %s still there after Down", table)
		}
	}

	// Nothing left to roll back.
	checkError(t, migrations.Down(ctx, db, log, 1), iotgate.EInvalid, "")

	if err := migrations.Up(ctx, db, log); err != nil {
		t.Fatalf("Up again: %v", err)
	}
	checkVersion(t, ctx, db, last, false)
}

func TestInvalidArguments(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	db := openDB(t)

	t.Run("DownZero", func(t *testing.T) {
		checkError(t, migrations.Down(ctx, db, nil, 0), iotgate.EInvalid, "")
	})
	t.Run("ForceUnknown", func(t *testing.T) {
		checkError(t, migrations.Force(ctx, db, 9999), iotgate.EInvalid, "")
	})
}

// TestConcurrentUp starts two instances at once while a third party holds
// the migration lock: both wait for it, then both succeed, and the
// migrations ran once.
func TestConcurrentUp(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	dsn := servers.DatabaseForTest(t)
	db := openDSN(t, dsn)

	// Create the version table first, so that the lock below is the one
	// golang-migrate takes (its id is derived from the table's name).
	checkVersion(t, ctx, db, 0, false)
	holder, release := holdMigrationLock(t, ctx, db)
	defer holder.Close()

	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Separate pools, as two processes would have.
			errs[i] = migrations.Up(ctx, openDSN(t, dsn), testLogger(t))
		}()
	}
	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()

	select {
	case <-finished:
		t.Fatalf("Up returned while another session held the migration lock: %v", errs)
	case <-time.After(time.Second):
	}
	release()
	select {
	case <-finished:
	case <-time.After(time.Minute):
		t.Fatal("Up still waiting a minute after the lock was released")
	}
	for i, err := range errs {
		if err != nil {
			t.Errorf("Up #%d: %v", i, err)
		}
	}
	checkVersion(t, ctx, db, latest(t), false)
}

// TestLockTimeout checks that the wait for another instance's lock is
// bounded, with an error that says what happened.
func TestLockTimeout(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	db := openDB(t)
	checkVersion(t, ctx, db, 0, false)
	holder, release := holdMigrationLock(t, ctx, db)
	defer holder.Close()
	defer release()

	start := time.Now()
	err := migrations.Up(ctx, db, nil)
	elapsed := time.Since(start)
	e := checkError(t, err, iotgate.EUnavailable, iotgate.DetailMigrationLocked)
	if !strings.Contains(e.Message, "lock") {
		t.Errorf("message %q does not mention the lock", e.Message)
	}
	if elapsed < migrations.LockTimeout-time.Second || elapsed > migrations.LockTimeout+5*time.Second {
		t.Errorf("Up gave up after %v, want about %v", elapsed, migrations.LockTimeout)
	}
	// The connection that waited was discarded, not pooled with its
	// lock_timeout: a pooled connection has the default setting.
	var setting string
	if err := db.QueryRowContext(ctx, `SHOW lock_timeout`).Scan(&setting); err != nil {
		t.Fatalf("show lock_timeout: %v", err)
	}
	if setting != "0" {
		t.Errorf("pooled connection has lock_timeout %q, want 0", setting)
	}
}

// holdMigrationLock takes golang-migrate's advisory lock on a connection of
// db until release is called.
func holdMigrationLock(t *testing.T, ctx context.Context, db *sql.DB) (*sql.Conn, func()) {
	t.Helper()
	var name string
	if err := db.QueryRowContext(ctx, `SELECT current_database()`).Scan(&name); err != nil {
		t.Fatalf("current_database: %v", err)
	}
	id, err := database.GenerateAdvisoryLockId(name, "public", "schema_migrations")
	if err != nil {
		t.Fatalf("lock id: %v", err)
	}
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatalf("conn: %v", err)
	}
	if _, err := conn.ExecContext(ctx, `SELECT pg_advisory_lock($1)`, id); err != nil {
		t.Fatalf("pg_advisory_lock: %v", err)
	}
	var once sync.Once
	return conn, func() {
		once.Do(func() {
			if _, err := conn.ExecContext(context.Background(), `SELECT pg_advisory_unlock($1)`, id); err != nil {
				t.Errorf("pg_advisory_unlock: %v", err)
			}
		})
	}
}

func TestDirty(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	db := openDB(t)
	last := latest(t)
	if err := migrations.Up(ctx, db, nil); err != nil {
		t.Fatalf("Up: %v", err)
	}
	// What a migration failing halfway leaves behind.
	if _, err := db.ExecContext(ctx, `UPDATE schema_migrations SET dirty = true`); err != nil {
		t.Fatalf("mark dirty: %v", err)
	}
	checkVersion(t, ctx, db, last, true)

	for name, call := range map[string]func() error{
		"Up":   func() error { return migrations.Up(ctx, db, nil) },
		"Down": func() error { return migrations.Down(ctx, db, nil, 1) },
	} {
		t.Run(name, func(t *testing.T) {
			e := checkError(t, call(), iotgate.EConflict, iotgate.DetailMigrationDirty)
			if !strings.Contains(e.Message, "iotgate migrate force") {
				t.Errorf("message %q does not name the fix", e.Message)
			}
		})
	}

	if err := migrations.Force(ctx, db, last); err != nil {
		t.Fatalf("Force(%d): %v", last, err)
	}
	checkVersion(t, ctx, db, last, false)
	if err := migrations.Up(ctx, db, nil); err != nil {
		t.Fatalf("Up after Force: %v", err)
	}

	// Force 0 means "no migration applied".
	if err := migrations.Force(ctx, db, 0); err != nil {
		t.Fatalf("Force(0): %v", err)
	}
	checkVersion(t, ctx, db, 0, false)
}

func TestTooNew(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	db := openDB(t)
	if err := migrations.Up(ctx, db, nil); err != nil {
		t.Fatalf("Up: %v", err)
	}
	// As a newer iotgate would leave it.
	if _, err := db.ExecContext(ctx, `UPDATE schema_migrations SET version = 9999`); err != nil {
		t.Fatalf("set version: %v", err)
	}
	checkError(t, migrations.Up(ctx, db, nil), iotgate.EConflict, iotgate.DetailSchemaTooNew)
}

// TestSchema checks the constraints that the stores rely on.
func TestSchema(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	db := openDB(t)
	if err := migrations.Up(ctx, db, nil); err != nil {
		t.Fatalf("Up: %v", err)
	}
	exec := func(q string, args ...any) error {
		_, err := db.ExecContext(ctx, q, args...)
		return err
	}
	if err := exec(`INSERT INTO schema_versions (name, version, xsd, global_elements) VALUES ('temp', 1, '<xs:schema/>', '{reading}')`); err != nil {
		t.Fatalf("insert schema version: %v", err)
	}
	if err := exec(`INSERT INTO schema_versions (name, version, xsd, target_namespace) VALUES ('common', 1, '<xs:schema/>', 'urn:common'), ('common', 2, '<xs:schema/>', 'urn:common')`); err != nil {
		t.Fatalf("insert imported schema: %v", err)
	}
	if err := exec(`INSERT INTO schema_imports (name, version, namespace, import_name, import_version) VALUES ('temp', 1, 'urn:common', 'common', 1)`); err != nil {
		t.Fatalf("insert import: %v", err)
	}
	if err := exec(`INSERT INTO devices (jid, name, labels, schema_name, schema_version) VALUES ('t1@iot.example.com', 'T1', '{"room":"lab"}', 'temp', 1)`); err != nil {
		t.Fatalf("insert device: %v", err)
	}

	tests := []struct {
		name string
		sql  string
		code pqerror.Code
	}{
		{"DuplicateVersion", `INSERT INTO schema_versions (name, version, xsd) VALUES ('temp', 1, '<x/>')`, pqerror.UniqueViolation},
		{"VersionZero", `INSERT INTO schema_versions (name, version, xsd) VALUES ('temp', 0, '<x/>')`, pqerror.CheckViolation},
		{"ImmutableXSD", `UPDATE schema_versions SET xsd = '<changed/>'`, pqerror.RestrictViolation},
		{"DeleteUsedVersion", `DELETE FROM schema_versions WHERE name = 'temp'`, pqerror.ForeignKeyViolation},
		{"DuplicateDevice", `INSERT INTO devices (jid) VALUES ('t1@iot.example.com')`, pqerror.UniqueViolation},
		{"UnknownSchemaVersion", `INSERT INTO devices (jid, schema_name, schema_version) VALUES ('t2@iot.example.com', 'temp', 2)`, pqerror.ForeignKeyViolation},
		{"HalfSchemaReference", `INSERT INTO devices (jid, schema_name) VALUES ('t2@iot.example.com', 'temp')`, pqerror.ForeignKeyViolation},
		{"LabelsNotObject", `INSERT INTO devices (jid, labels) VALUES ('t2@iot.example.com', '[]')`, pqerror.CheckViolation},
		{"DeleteImportedVersion", `DELETE FROM schema_versions WHERE name = 'common'`, pqerror.ForeignKeyViolation},
		{"ImmutableImports", `UPDATE schema_imports SET import_version = 2`, pqerror.RestrictViolation},
		{"FullJID", `INSERT INTO devices (jid) VALUES ('t2@iot.example.com/res')`, pqerror.CheckViolation},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := exec(tt.sql)
			if pq.As(err, tt.code) == nil {
				t.Errorf("error = %v, want SQLSTATE %s", err, tt.code)
			}
		})
	}

	t.Run("DescriptionMutable", func(t *testing.T) {
		if err := exec(`UPDATE schema_versions SET description = 'temperature'`); err != nil {
			t.Errorf("update description: %v", err)
		}
	})
	t.Run("LabelQuery", func(t *testing.T) {
		var n int
		err := db.QueryRowContext(ctx, `SELECT count(*) FROM devices WHERE labels @> '{"room":"lab"}' AND labels ? 'room'`).Scan(&n)
		if err != nil || n != 1 {
			t.Errorf("label query = %d, %v; want 1", n, err)
		}
	})
}

// TestCommandHistoryMigration checks that 0006 carries command histories
// from command_events into commands.history, and its down migration back.
func TestCommandHistoryMigration(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	db := openDB(t)
	log := testLogger(t)
	if err := migrations.Up(ctx, db, log); err != nil {
		t.Fatalf("Up: %v", err)
	}
	if err := migrations.Down(ctx, db, log, int(latest(t))-5); err != nil {
		t.Fatalf("Down to 5: %v", err)
	}
	exec := func(q string) {
		t.Helper()
		if _, err := db.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	exec(`INSERT INTO schema_versions (name, version, xsd) VALUES ('temp', 1, '<xs:schema/>')`)
	exec(`INSERT INTO devices (jid, schema_name, schema_version) VALUES ('t1@iot.example.com', 'temp', 1)`)
	exec(`INSERT INTO commands (id, device_id, type, payload, mode, status, timeout_ms, created_at, idempotency_key)
		SELECT c, id, 'set', '<x/>', 'sync', 'succeeded', 1000, '2026-01-02T15:04:05Z', k
		FROM devices, (VALUES ('c1', 'k1'), ('c2', NULL), ('c3', NULL)) AS v(c, k)`)
	exec(`INSERT INTO command_events (command_id, status, at, reason) VALUES
		('c1', 'pending', '2026-01-02T15:04:05.000001Z', ''),
		('c2', 'pending', '2026-01-02T15:04:06Z', ''),
		('c1', 'sent', '2026-01-02T15:04:05.5Z', 'to t1@iot.example.com/r'),
		('c1', 'succeeded', '2026-01-02T15:04:06Z', '')`)

	// events lists every command's history as "id status at reason", in order.
	events := func(q string) []string {
		t.Helper()
		rows, err := db.QueryContext(ctx, q)
		if err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		defer rows.Close()
		var out []string
		for rows.Next() {
			var id, st, reason string
			var at time.Time
			if err := rows.Scan(&id, &st, &at, &reason); err != nil {
				t.Fatal(err)
			}
			out = append(out, id+" "+st+" "+at.UTC().Format(time.RFC3339Nano)+" "+reason)
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		return out
	}
	const fromTable = `SELECT command_id, status, at, reason FROM command_events ORDER BY command_id, id`
	const fromColumn = `SELECT c.id, e->>'status', (e->>'at')::timestamptz, e->>'reason'
		FROM commands c, jsonb_array_elements(c.history) WITH ORDINALITY AS h(e, n) ORDER BY c.id, h.n`
	want := events(fromTable)

	if err := migrations.Up(ctx, db, log); err != nil {
		t.Fatalf("Up: %v", err)
	}
	if tableExists(t, ctx, db, "command_events") {
		t.Error("command_events still exists after 0006")
	}
	if got := events(fromColumn); !slices.Equal(got, want) {
		t.Errorf("history after up:\n%q\nwant\n%q", got, want)
	}
	// The key is still unique, and keyless commands are not indexed.
	_, err := db.ExecContext(ctx, `INSERT INTO commands (id, device_id, type, payload, mode, status, timeout_ms, created_at, idempotency_key)
		SELECT 'c4', id, 'set', '<x/>', 'sync', 'sent', 1000, now(), 'k1' FROM devices`)
	if e := pq.As(err); e == nil || e.Constraint != "commands_idempotency_key_key" {
		t.Errorf("duplicate key: err = %v, want a violation of commands_idempotency_key_key", err)
	}

	if err := migrations.Down(ctx, db, log, int(latest(t))-5); err != nil {
		t.Fatalf("Down to 5: %v", err)
	}
	if got := events(fromTable); !slices.Equal(got, want) {
		t.Errorf("events after down:\n%q\nwant\n%q", got, want)
	}
}
