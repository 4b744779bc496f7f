package postgres

import (
	"context"
	"log/slog"

	"github.com/iotgate/iotgate/migrations"
)

// Open connects to the database at dsn (see Connect) and brings its schema
// up to date with the migrations embedded in package migrations. Several
// instances opening the same database at once apply each migration once:
// migrations.Up takes PostgreSQL's advisory lock.
//
// Errors: those of Connect, and those of Migrate.
func Open(ctx context.Context, dsn string, log *slog.Logger) (*DB, error) {
	db, err := Connect(ctx, dsn, log)
	if err != nil {
		return nil, err
	}
	if err := db.Migrate(ctx); err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

// Migrate applies every migration not yet applied (migrations.Up).
//
// Errors: EConflict (detail DetailMigrationDirty or DetailSchemaTooNew: the
// schema needs a human), EUnavailable (detail iotgate.DetailMigrationLocked),
// ETimeout (ctx deadline), EInternal.
func (db *DB) Migrate(ctx context.Context) error {
	return migrations.Up(ctx, db.db, db.log)
}

// MigrateDown rolls back the last n applied migrations (migrations.Down),
// for `iotgate migrate down N`.
//
// Errors: those of Migrate; EInvalid (n < 1, or fewer than n applied).
func (db *DB) MigrateDown(ctx context.Context, n int) error {
	return migrations.Down(ctx, db.db, db.log, n)
}

// ForceMigration records version v as applied and clean without running
// anything (migrations.Force), for repairing a dirty schema by hand.
//
// Errors: EInvalid (no such migration), EUnavailable (detail
// iotgate.DetailMigrationLocked), EInternal.
func (db *DB) ForceMigration(ctx context.Context, v uint) error {
	return migrations.Force(ctx, db.db, v)
}

// MigrationVersion returns the schema's applied version and whether a
// migration failed halfway (dirty); 0 before any (migrations.Version).
//
// Errors: EUnavailable (detail iotgate.DetailMigrationLocked), EInternal.
func (db *DB) MigrationVersion(ctx context.Context) (v uint, dirty bool, err error) {
	return migrations.Version(ctx, db.db)
}
