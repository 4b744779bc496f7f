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

const schemaColumns = `name, version, description, xsd, target_namespace, global_elements, created_at, imports, created_by`

func scanSchema(row rowScanner) (*schemas.Schema, error) {
	var s schemas.Schema
	var imports []byte
	if err := row.Scan(&s.Name, &s.Version, &s.Description, &s.XSD, &s.TargetNamespace,
		(*pq.StringArray)(&s.GlobalElements), &s.CreatedAt, &imports, &s.CreatedBy); err != nil {
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
// versions, and records its imports in schema_imports, whose RESTRICT key
// keeps an imported version from being deleted. With a quota, it counts
// the versions under a global advisory lock first, so concurrent uploads
// can't overshoot it. Errors: conflict (q.Err's; an import deleted
// meanwhile), unavailable.
func (db *DB) CreateSchemaVersion(ctx context.Context, s *schemas.Schema, q schemas.Quota) error {
	imports, err := json.Marshal(s.Imports)
	if err != nil {
		return fmt.Errorf("encode imports: %w", err)
	}
	globals := pq.StringArray(s.GlobalElements)
	if globals == nil { // a schema of types only: '{}', not NULL
		globals = pq.StringArray{}
	}
	tx, err := db.db.BeginTx(ctx, nil)
	if err != nil {
		return translate(err, "create schema version")
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(hashtext('iotgate.schema:' || $1))`, s.Name); err != nil {
		return translate(err, "create schema version")
	}
	if q != (schemas.Quota{}) {
		// Taken after the per-name lock, always in this order.
		if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(hashtext('iotgate.schema-quota'))`); err != nil {
			return translate(err, "create schema version")
		}
		total, owned, err := countSchemaVersions(ctx, tx, s.CreatedBy)
		if err != nil {
			return err
		}
		if err := q.Err(total, owned); err != nil {
			return err
		}
	}
	err = tx.QueryRowContext(ctx, `
		INSERT INTO schema_versions (name, version, description, xsd, target_namespace, global_elements, created_at, imports, created_by)
		SELECT $1, COALESCE(MAX(version), 0) + 1, $2, $3, $4, $5, $6, $7, $8 FROM schema_versions WHERE name = $1
		RETURNING version`,
		s.Name, s.Description, s.XSD, s.TargetNamespace, globals, s.CreatedAt, imports, s.CreatedBy).Scan(&s.Version)
	if err != nil {
		return translate(err, "create schema version")
	}
	for ns, imp := range s.Imports {
		_, err := tx.ExecContext(ctx, `
			INSERT INTO schema_imports (name, version, namespace, import_name, import_version)
			VALUES ($1, $2, $3, $4, $5)`, s.Name, s.Version, ns, imp.Name, imp.Version)
		if e := pq.As(err); e != nil && e.Constraint == "schema_imports_import_fkey" {
			return &iotgate.Error{Code: iotgate.EConflict, Err: err,
				Message: fmt.Sprintf("imported schema %s version %d was deleted meanwhile; register again", imp.Name, imp.Version)}
		}
		if err != nil {
			return translate(err, "record schema imports")
		}
	}
	// A version deleted and numbered again may be cached elsewhere under
	// its old content; and the other instances learn its namespace.
	if err := notifyChanges(ctx, tx, ChangeSchema, schemas.Ref{Name: s.Name, Version: s.Version}.String()); err != nil {
		return translate(err, "create schema version")
	}
	return translate(tx.Commit(), "create schema version")
}

// CountSchemaVersions returns how many versions are stored, of every
// schema, and how many of them owner ("": none) created.
// Errors: unavailable.
func (db *DB) CountSchemaVersions(ctx context.Context, owner string) (total, owned int, err error) {
	return countSchemaVersions(ctx, db.db, owner)
}

// rowQuerier is a *sql.DB or a *sql.Tx: the quota is checked in the
// transaction that stores a version, and before compiling one.
type rowQuerier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

func countSchemaVersions(ctx context.Context, q rowQuerier, owner string) (total, owned int, err error) {
	err = q.QueryRowContext(ctx, `
		SELECT count(*), count(*) FILTER (WHERE created_by = $1 AND $1 <> '') FROM schema_versions`, owner).Scan(&total, &owned)
	if err != nil {
		return 0, 0, translate(err, "count schema versions")
	}
	return total, owned, nil
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
// with DetailSchemaInUse (devices use it, or another version imports it:
// the message names one).
func (db *DB) DeleteSchemaVersion(ctx context.Context, name string, version int) error {
	err := db.writeTx(ctx, func(tx *sql.Tx) ([]iotgate.Event, error) {
		// Named before the delete, for the message: the RESTRICT key
		// alone would only say that some version imports it.
		var by schemas.Ref
		err := tx.QueryRowContext(ctx, `
			SELECT name, version FROM schema_imports WHERE import_name = $1 AND import_version = $2
			ORDER BY name, version LIMIT 1`, name, version).Scan(&by.Name, &by.Version)
		if err == nil {
			return nil, &iotgate.Error{Code: iotgate.EConflict, Detail: iotgate.DetailSchemaInUse,
				Message: fmt.Sprintf("schema %s version %d is imported by schema %s version %d", name, version, by.Name, by.Version)}
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return nil, err
		}
		res, err := tx.ExecContext(ctx, `DELETE FROM schema_versions WHERE name = $1 AND version = $2`, name, version)
		if err != nil {
			return nil, err
		}
		if n, err := res.RowsAffected(); err == nil && n == 0 {
			return nil, iotgate.Errorf(iotgate.ENotFound, "schema %q has no version %d", name, version)
		}
		return nil, notifyChanges(ctx, tx, ChangeSchema, schemas.Ref{Name: name, Version: version}.String())
	})
	if e := pq.As(err); e != nil {
		switch e.Constraint {
		case "devices_schema_fkey":
			return &iotgate.Error{Code: iotgate.EConflict, Detail: iotgate.DetailSchemaInUse, Message: fmt.Sprintf("schema %s version %d is used by devices", name, version), Err: err}
		case "schema_imports_import_fkey": // imported meanwhile
			return &iotgate.Error{Code: iotgate.EConflict, Detail: iotgate.DetailSchemaInUse, Message: fmt.Sprintf("schema %s version %d is imported by another schema version", name, version), Err: err}
		}
	}
	return translate(err, "delete schema version")
}
