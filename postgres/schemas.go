package postgres

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/lib/pq"

	"github.com/iotgate/iotgate"
	"github.com/iotgate/iotgate/schemas"
)

// The schema registry lives in the same database and the same adapter as
// the device registry: devices reference schema versions by foreign key,
// and one adapter keeps that relation in one place.
var _ schemas.Store = (*DB)(nil)

const schemaColumns = `name, version, description, xsd, target_namespace, global_elements, created_at, imports`

func scanSchema(row rowScanner) (*schemas.Schema, error) {
	var s schemas.Schema
	var imports []byte
	if err := row.Scan(&s.Name, &s.Version, &s.Description, &s.XSD, &s.TargetNamespace,
		(*pq.StringArray)(&s.GlobalElements), &s.CreatedAt, &imports); err != nil {
		return nil, err
	}
	s.CreatedAt = s.CreatedAt.UTC()
	if err := json.Unmarshal(imports, &s.Imports); err != nil {
		return nil, fmt.Errorf("decode imports of %s/%d: %w", s.Name, s.Version, err)
	}
	if s.GlobalElements == nil {
		s.GlobalElements = []string{}
	}
	return &s, nil
}

// CreateSchemaVersion stores s as the next version of its name, numbering
// under a per-name advisory lock so concurrent uploads get distinct
// versions. Errors: unavailable.
func (db *DB) CreateSchemaVersion(ctx context.Context, s *schemas.Schema) error {
	imports, err := json.Marshal(s.Imports)
	if err != nil {
		return fmt.Errorf("encode imports: %w", err)
	}
	tx, err := db.db.BeginTx(ctx, nil)
	if err != nil {
		return translate(err, "create schema version")
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(hashtext('iotgate.schema:' || $1))`, s.Name); err != nil {
		return translate(err, "create schema version")
	}
	err = tx.QueryRowContext(ctx, `
		INSERT INTO schema_versions (name, version, description, xsd, target_namespace, global_elements, created_at, imports)
		SELECT $1, COALESCE(MAX(version), 0) + 1, $2, $3, $4, $5, $6, $7 FROM schema_versions WHERE name = $1
		RETURNING version`,
		s.Name, s.Description, s.XSD, s.TargetNamespace, pq.StringArray(s.GlobalElements), s.CreatedAt, imports).Scan(&s.Version)
	if err != nil {
		return translate(err, "create schema version")
	}
	// A version deleted and numbered again may be cached elsewhere under
	// its old content; and the other instances learn its namespace.
	if err := notifyChanges(ctx, tx, ChangeSchema, schemas.Ref{Name: s.Name, Version: s.Version}.String()); err != nil {
		return translate(err, "create schema version")
	}
	return translate(tx.Commit(), "create schema version")
}

// SchemaVersion returns one version (0: the latest). Errors: not_found.
func (db *DB) SchemaVersion(ctx context.Context, name string, version int) (*schemas.Schema, error) {
	var row *sql.Row
	if version == 0 {
		row = db.db.QueryRowContext(ctx, `SELECT `+schemaColumns+` FROM schema_versions WHERE name = $1 ORDER BY version DESC LIMIT 1`, name)
	} else {
		row = db.db.QueryRowContext(ctx, `SELECT `+schemaColumns+` FROM schema_versions WHERE name = $1 AND version = $2`, name, version)
	}
	s, err := scanSchema(row)
	if errors.Is(err, sql.ErrNoRows) {
		if version == 0 {
			return nil, iotgate.Errorf(iotgate.ENotFound, "schema %q does not exist", name)
		}
		return nil, iotgate.Errorf(iotgate.ENotFound, "schema %q has no version %d", name, version)
	}
	if err != nil {
		return nil, translate(err, "get schema")
	}
	return s, nil
}

// SchemaVersions lists every version of name, oldest first.
// Errors: not_found.
func (db *DB) SchemaVersions(ctx context.Context, name string) ([]*schemas.Schema, error) {
	out, err := db.querySchemas(ctx, `SELECT `+schemaColumns+` FROM schema_versions WHERE name = $1 ORDER BY version`, name)
	if err == nil && len(out) == 0 {
		return nil, iotgate.Errorf(iotgate.ENotFound, "schema %q does not exist", name)
	}
	return out, err
}

// Schemas lists the latest version of every schema, by name.
func (db *DB) Schemas(ctx context.Context) ([]*schemas.Schema, error) {
	return db.querySchemas(ctx, `SELECT DISTINCT ON (name) `+schemaColumns+` FROM schema_versions ORDER BY name, version DESC`)
}

func (db *DB) querySchemas(ctx context.Context, q string, args ...any) ([]*schemas.Schema, error) {
	return queryRows(ctx, db.db, "list schemas", scanSchema, q, args...)
}

// SchemaByNamespace returns the newest version with target namespace ns.
// Errors: not_found.
func (db *DB) SchemaByNamespace(ctx context.Context, ns string) (*schemas.Schema, error) {
	s, err := scanSchema(db.db.QueryRowContext(ctx, `
		SELECT `+schemaColumns+` FROM schema_versions WHERE target_namespace = $1
		ORDER BY created_at DESC, version DESC LIMIT 1`, ns))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, iotgate.Errorf(iotgate.ENotFound, "no registered schema has target namespace %q", ns)
	}
	if err != nil {
		return nil, translate(err, "find schema by namespace")
	}
	return s, nil
}

// DeleteSchemaVersion deletes one version. Errors: not_found, conflict
// (devices use it).
func (db *DB) DeleteSchemaVersion(ctx context.Context, name string, version int) error {
	err := db.writeTx(ctx, func(tx *sql.Tx) ([]iotgate.Event, error) {
		res, err := tx.ExecContext(ctx, `DELETE FROM schema_versions WHERE name = $1 AND version = $2`, name, version)
		if err != nil {
			return nil, err
		}
		if n, err := res.RowsAffected(); err == nil && n == 0 {
			return nil, iotgate.Errorf(iotgate.ENotFound, "schema %q has no version %d", name, version)
		}
		return nil, notifyChanges(ctx, tx, ChangeSchema, schemas.Ref{Name: name, Version: version}.String())
	})
	if e := pq.As(err); e != nil && e.Constraint == "devices_schema_fkey" {
		return &iotgate.Error{Code: iotgate.EConflict, Message: fmt.Sprintf("schema %s version %d is used by devices", name, version), Err: err}
	}
	return translate(err, "delete schema version")
}
