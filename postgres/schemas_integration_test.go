//go:build integration

package postgres_test

import (
	"context"
	"database/sql"
	"errors"
	"strings"
	"testing"

	_ "github.com/lib/pq"

	"github.com/iotgate/iotgate"
	"github.com/iotgate/iotgate/devices"
	"github.com/iotgate/iotgate/internal/servers"
	"github.com/iotgate/iotgate/postgres"
	"github.com/iotgate/iotgate/schemas"
)

// A schema that defines a type, and one that imports it by namespace.
const (
	unitsXSD = `<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema" targetNamespace="urn:test:units" elementFormDefault="qualified">
<xs:simpleType name="celsius"><xs:restriction base="xs:decimal"/></xs:simpleType>
</xs:schema>`
	meterXSD = `<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema" xmlns:u="urn:test:units" targetNamespace="urn:test:meter" xmlns="urn:test:meter" elementFormDefault="qualified">
<xs:import namespace="urn:test:units"/>
<xs:element name="reading"><xs:complexType><xs:sequence><xs:element name="t" type="u:celsius"/></xs:sequence></xs:complexType></xs:element>
</xs:schema>`
	meterNS      = "urn:test:meter"
	meterReading = `<reading xmlns="urn:test:meter"><t>21.5</t></reading>`
)

// openSchemaDB returns a migrated database and a raw connection to it,
// for rows the registry would not write.
func openSchemaDB(t *testing.T) (*postgres.DB, *sql.DB) {
	t.Helper()
	dsn := servers.DatabaseForTest(t)
	db, err := postgres.Open(context.Background(), dsn, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	raw, err := sql.Open("postgres", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	return db, raw
}

// TestDeleteImportedSchemaRefused performs the attack: deleting a version
// another version imports. It is refused (conflict, schema_in_use, naming
// the importer), and the importer still compiles after a restart (a new
// registry over the same database).
func TestDeleteImportedSchemaRefused(t *testing.T) {
	ctx := context.Background()
	db, _ := openSchemaDB(t)
	reg := schemas.NewRegistry(db, schemas.Config{})
	if _, err := reg.Register(ctx, "units", unitsXSD, ""); err != nil {
		t.Fatal(err)
	}
	meter, err := reg.Register(ctx, "meter", meterXSD, "")
	if err != nil {
		t.Fatal(err)
	}
	if got := meter.Imports["urn:test:units"]; got != (schemas.Ref{Name: "units", Version: 1}) {
		t.Fatalf("imports = %v", meter.Imports)
	}

	err = reg.Delete(ctx, "units", 1)
	var e *iotgate.Error
	if !errors.As(err, &e) || e.Code != iotgate.EConflict || e.Detail != iotgate.DetailSchemaInUse || !strings.Contains(e.Message, "meter version 1") {
		t.Fatalf("delete of an imported version = %v, want conflict/%s naming meter version 1", err, iotgate.DetailSchemaInUse)
	}

	restarted := schemas.NewRegistry(db, schemas.Config{})
	p, _, err := restarted.Compiled(ctx, "meter", 1)
	if err != nil {
		t.Fatalf("importer after a restart: %v", err)
	}
	if _, err := p.ValidateAndRender([]byte(meterReading)); err != nil {
		t.Fatalf("reading against the importer: %v", err)
	}

	// Once the importer is gone, the imported version can go too.
	if err := reg.Delete(ctx, "meter", 1); err != nil {
		t.Fatal(err)
	}
	if err := reg.Delete(ctx, "units", 1); err != nil {
		t.Fatalf("delete of a version nothing imports any more: %v", err)
	}
}

// TestBrokenSchemaCompiledOnce: the readings of a device whose schema
// version does not compile (stored before this check existed: an XSD that
// no longer compiles, or whose import was deleted) are refused at once,
// at the cost of one compilation, not one query and compile per reading.
func TestBrokenSchemaCompiledOnce(t *testing.T) {
	tests := []struct {
		name string
		// rows are the SQL that stores the broken version meter/1.
		rows []string
	}{
		{name: "DoesNotCompile", rows: []string{
			`INSERT INTO schema_versions (name, version, xsd, target_namespace) VALUES ('meter', 1,
				'<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema" targetNamespace="urn:test:meter"><xs:element name="reading" type="nope"/></xs:schema>', 'urn:test:meter')`,
		}},
		{name: "ImportDeleted", rows: []string{
			// As versions before schema_imports was written stored them.
			`INSERT INTO schema_versions (name, version, xsd, target_namespace) VALUES ('units', 1, '` + unitsXSD + `', 'urn:test:units')`,
			`INSERT INTO schema_versions (name, version, xsd, target_namespace, imports) VALUES ('meter', 1, '` + meterXSD + `', 'urn:test:meter',
				'{"urn:test:units": {"name": "units", "version": 1}}')`,
			`DELETE FROM schema_versions WHERE name = 'units'`,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			db, raw := openSchemaDB(t)
			for _, q := range tt.rows {
				if _, err := raw.ExecContext(ctx, q); err != nil {
					t.Fatalf("%s: %v", q, err)
				}
			}
			if _, err := raw.ExecContext(ctx, `INSERT INTO devices (jid, schema_name, schema_version) VALUES ('meter1@example.com', 'meter', 1)`); err != nil {
				t.Fatal(err)
			}
			store := &countingSchemaStore{DB: db}
			reg := schemas.NewRegistry(store, schemas.Config{})
			svc := devices.NewService(db, reg, devices.ServiceConfig{})
			rctx, cancel := context.WithCancel(ctx)
			done := make(chan struct{})
			go func() { svc.Run(rctx); close(done) }()
			defer func() { cancel(); <-done }()

			const readings = 50
			for i := range readings {
				err := ingest(t, svc, iotgate.IncomingReading{From: "meter1@example.com/r", Via: "iq",
					Payloads: []iotgate.Payload{{Namespace: meterNS, XML: []byte(meterReading)}}})
				if iotgate.ErrorCode(err) != iotgate.EUnavailable {
					t.Fatalf("reading %d: %v, want unavailable", i+1, err)
				}
			}
			// One compilation: meter/1 read, and units/1 for the import.
			if got := store.reads.Load(); got > 2 {
				t.Errorf("%d readings read schema versions %d times, want at most 2", readings, got)
			}
			t.Logf("%d readings refused, %d schema version reads", readings, store.reads.Load())
		})
	}
}

// TestSchemaVersionQuota fills the database to a quota, concurrently:
// exactly the quota is stored, the rest are refused with
// conflict/schema_quota_exceeded; a per-token quota leaves other tokens
// (and iotgate itself) their room.
func TestSchemaVersionQuota(t *testing.T) {
	const quota = 5
	tests := []struct {
		name string
		cfg  schemas.Config
		// others register after the quota is reached, and must succeed.
		others []string
	}{
		{name: "Total", cfg: schemas.Config{MaxVersions: quota}},
		{name: "PerToken", cfg: schemas.Config{MaxVersions: 100, MaxVersionsPerToken: quota}, others: []string{"tok_b", ""}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			db, _ := openSchemaDB(t)
			reg := schemas.NewRegistry(db, tt.cfg)
			errs := make(chan error, 2*quota)
			for range 2 * quota {
				go func() {
					_, err := reg.RegisterAs(ctx, "tok_a", "units", unitsXSD, "")
					errs <- err
				}()
			}
			stored := 0
			for range 2 * quota {
				err := <-errs
				var e *iotgate.Error
				switch {
				case err == nil:
					stored++
				case errors.As(err, &e) && e.Code == iotgate.EConflict && e.Detail == iotgate.DetailSchemaQuotaExceeded:
				default:
					t.Errorf("RegisterAs = %v, want nil or conflict/%s", err, iotgate.DetailSchemaQuotaExceeded)
				}
			}
			total, owned, err := db.CountSchemaVersions(ctx, "tok_a")
			if err != nil || total != quota || owned != quota || stored != quota {
				t.Fatalf("stored %d (count %d, owned %d, %v), want %d", stored, total, owned, err, quota)
			}
			for _, owner := range tt.others {
				s, err := reg.RegisterAs(ctx, owner, "units", unitsXSD, "")
				if err != nil {
					t.Fatalf("RegisterAs(%q) after tok_a's quota: %v", owner, err)
				}
				if got, err := db.SchemaVersion(ctx, "units", s.Version); err != nil || got.CreatedBy != owner {
					t.Errorf("stored created_by %q (%v), want %q", got.CreatedBy, err, owner)
				}
			}
		})
	}
}
