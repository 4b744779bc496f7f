//go:build integration

package migrations_test

import (
	"testing"

	"github.com/lib/pq"

	"github.com/iotgate/iotgate/migrations"
)

// TestSchemaImportsBackfill: versions stored before schema_imports was
// written get their imports recorded from the jsonb column by 0014, so
// that an imported version can't be deleted under them; an import already
// deleted is skipped, not an error.
func TestSchemaImportsBackfill(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	db := openDB(t)
	log := testLogger(t)
	if err := migrations.Up(ctx, db, log); err != nil {
		t.Fatalf("Up: %v", err)
	}
	// Back to before 0014, whatever came after it.
	if err := migrations.Down(ctx, db, log, int(latest(t))-13); err != nil {
		t.Fatalf("Down to 13: %v", err)
	}
	exec := func(q string) error {
		t.Helper()
		_, err := db.ExecContext(ctx, q)
		return err
	}
	for _, q := range []string{
		`INSERT INTO schema_versions (name, version, xsd, target_namespace) VALUES ('units', 1, '<xs:schema/>', 'urn:units')`,
		`INSERT INTO schema_versions (name, version, xsd, imports) VALUES ('meter', 1, '<xs:schema/>', '{"urn:units": {"name": "units", "version": 1}}')`,
		`INSERT INTO schema_versions (name, version, xsd, imports) VALUES ('orphan', 1, '<xs:schema/>', '{"urn:gone": {"name": "gone", "version": 3}}')`,
	} {
		if err := exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	if err := migrations.Up(ctx, db, log); err != nil {
		t.Fatalf("Up: %v", err)
	}
	var got []string
	rows, err := db.QueryContext(ctx, `SELECT name || '/' || version || ' ' || namespace || ' ' || import_name || '/' || import_version FROM schema_imports ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		got = append(got, s)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if want := "meter/1 urn:units units/1"; len(got) != 1 || got[0] != want {
		t.Fatalf("schema_imports = %q, want [%q]", got, want)
	}
	err = exec(`DELETE FROM schema_versions WHERE name = 'units'`)
	if e := pq.As(err); e == nil || e.Constraint != "schema_imports_import_fkey" {
		t.Errorf("delete of an imported version: %v, want a violation of schema_imports_import_fkey", err)
	}
}
