//go:build integration

package migrations_test

import (
	"testing"

	"github.com/lib/pq"
	"github.com/lib/pq/pqerror"

	"github.com/iotgate/iotgate/migrations"
)

// TestReadingsDeviceCheckMigration checks 0017: without the foreign key,
// deleting devices (one or several in a statement) still deletes their
// readings and only theirs; its down migration brings the foreign key
// back (and its cascade), after dropping any reading without a device.
func TestReadingsDeviceCheckMigration(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	db := openDB(t)
	log := testLogger(t)
	if err := migrations.Up(ctx, db, log); err != nil {
		t.Fatalf("Up: %v", err)
	}
	exec := func(q string) error {
		_, err := db.ExecContext(ctx, q)
		return err
	}
	mustExec := func(q string) {
		t.Helper()
		if err := exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	// readings counts the readings of each device jid (of the devices
	// a..d, in order), then those of no device.
	readings := func() [5]int {
		t.Helper()
		var got [5]int
		rows, err := db.QueryContext(ctx, `
			SELECT coalesce(d.jid, ''), count(*) FROM readings r LEFT JOIN devices d ON d.id = r.device_id
			GROUP BY 1`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		for rows.Next() {
			var jid string
			var n int
			if err := rows.Scan(&jid, &n); err != nil {
				t.Fatal(err)
			}
			i := map[string]int{"a@x": 0, "b@x": 1, "c@x": 2, "d@x": 3, "": 4}[jid]
			got[i] = n
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		return got
	}
	mustExec(`INSERT INTO devices (jid) VALUES ('a@x'), ('b@x'), ('c@x'), ('d@x')`)
	mustExec(`INSERT INTO readings (device_id, received_at, xml, data)
		SELECT d.id, now() - n * interval '1 day', '<r/>', '{}' FROM devices d, generate_series(0, 2) AS n`)
	// The foreign key is gone: the store's insert is what checks the
	// device now (postgres.TestInsertReadingsDeviceDeletedDuringBatch).
	mustExec(`INSERT INTO readings (device_id, received_at, xml, data) VALUES (-1, now(), '<orphan/>', '{}')`)

	steps := []struct {
		name string
		sql  string
		want [5]int
	}{
		{"DeleteOne", `DELETE FROM devices WHERE jid = 'a@x'`, [5]int{0, 3, 3, 3, 1}},
		{"DeleteTwo", `DELETE FROM devices WHERE jid IN ('b@x', 'c@x')`, [5]int{0, 0, 0, 3, 1}},
		{"DeleteNone", `DELETE FROM devices WHERE jid = 'nobody@x'`, [5]int{0, 0, 0, 3, 1}},
	}
	for _, s := range steps {
		mustExec(s.sql)
		if got := readings(); got != s.want {
			t.Errorf("%s: readings of a, b, c, d, none = %v, want %v", s.name, got, s.want)
		}
	}

	if err := migrations.Down(ctx, db, log, 1); err != nil {
		t.Fatalf("Down 1: %v", err)
	}
	if got, want := readings(), [5]int{0, 0, 0, 3, 0}; got != want {
		t.Errorf("after down: readings of a, b, c, d, none = %v, want %v", got, want)
	}
	err := exec(`INSERT INTO readings (device_id, received_at, xml, data) VALUES (-1, now(), '<orphan/>', '{}')`)
	if pq.As(err, pqerror.ForeignKeyViolation) == nil {
		t.Errorf("reading of no device after down: err = %v, want a foreign key violation", err)
	}
	mustExec(`DELETE FROM devices WHERE jid = 'd@x'`)
	if got, want := readings(), [5]int{}; got != want {
		t.Errorf("after down, delete d: readings = %v, want none (the cascade)", got)
	}
	if err := migrations.Up(ctx, db, log); err != nil {
		t.Fatalf("Up again: %v", err)
	}
}
