// Package migrations holds iotgate's PostgreSQL schema as numbered SQL files
// (NNNN_name.up.sql / NNNN_name.down.sql) embedded in the binary, and runs
// them with golang-migrate.
//
// Package postgres runs them: postgres.Open calls [Up], and the `iotgate
// migrate` subcommands reach [Up], [Down], [Force] and [Version] through
// postgres.DB. Every call takes golang-migrate's PostgreSQL advisory lock,
// so several instances starting at once apply each migration exactly once:
// the first runs them, the others wait for it and then find nothing to do.
// The wait is bounded by [LockTimeout].
//
// Errors are *iotgate.Error values: EConflict with detail [iotgate.DetailMigrationDirty] or
// [iotgate.DetailSchemaTooNew] when the recorded state forbids migrating, EUnavailable with
// detail [iotgate.DetailMigrationLocked] when the lock could not be had in time, EInvalid for a
// bad argument, and EInternal (with the driver error as cause) otherwise.
// These are migration states, not a second table of driver errors: the one
// table of PostgreSQL errors is in package postgres.
//
// It imports only the root package iotgate (for its errors).
package migrations

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"strings"
	"time"

	"github.com/golang-migrate/migrate/v4"
	"github.com/golang-migrate/migrate/v4/database"
	"github.com/golang-migrate/migrate/v4/database/postgres"
	"github.com/golang-migrate/migrate/v4/source"
	"github.com/golang-migrate/migrate/v4/source/iofs"
	"github.com/lib/pq"
	"github.com/lib/pq/pqerror"

	"github.com/iotgate/iotgate"
)

//go:embed *.sql
var files embed.FS

// LockTimeout bounds how long a call waits for another instance's migration
// lock, and for any table lock a migration needs. It is set as the
// PostgreSQL lock_timeout of the connection that runs the migrations, since
// golang-migrate's own timeout does not cover the lock its driver takes when
// it opens.
const LockTimeout = 15 * time.Second

// migrationsTable records the applied version; it is golang-migrate's default.
const migrationsTable = "schema_migrations"

// Up applies every migration not yet applied. A database already at the
// latest version is not an error. log receives one line per migration run
// and may be nil.
//
// When ctx ends, Up stops after the migration in progress (stopping one
// halfway is what leaves a schema dirty) and returns ctx's error.
//
// Errors: EConflict (iotgate.DetailMigrationDirty, iotgate.DetailSchemaTooNew), EUnavailable
// (iotgate.DetailMigrationLocked), ETimeout (ctx deadline), EInternal.
func Up(ctx context.Context, db *sql.DB, log *slog.Logger) error {
	return run(ctx, db, log, func(m *migrate.Migrate) error {
		// The state is checked by m.Up under the lock: read before it,
		// it may show another instance's migration in progress as dirty.
		err := m.Up()
		if errors.Is(err, migrate.ErrNoChange) {
			return nil
		}
		if err != nil {
			return translateState(m, err, "apply migrations")
		}
		if log != nil {
			v, _, err := version(m)
			if err != nil {
				return err
			}
			log.Info("database schema migrated", "version", v)
		}
		return nil
	})
}

// Down rolls back the last n applied migrations, n >= 1. log receives one
// line per migration run and may be nil.
//
// Errors: EInvalid (n < 1, or fewer than n migrations applied), EConflict
// (iotgate.DetailMigrationDirty, iotgate.DetailSchemaTooNew), EUnavailable (iotgate.DetailMigrationLocked), EInternal.
func Down(ctx context.Context, db *sql.DB, log *slog.Logger, n int) error {
	if n < 1 {
		return iotgate.Errorf(iotgate.EInvalid, "number of migrations to roll back must be at least 1, got %d", n)
	}
	return run(ctx, db, log, func(m *migrate.Migrate) error {
		// Checked again under the lock by m.Steps (ErrShortLimit), but
		// only after rolling back what there is: refuse up front.
		cur, _, err := version(m)
		if err != nil {
			return err
		}
		applied, err := appliedCount(cur)
		if err != nil {
			return err
		}
		if n > applied {
			return iotgate.Errorf(iotgate.EInvalid, "cannot roll back %d migrations: %d applied", n, applied)
		}
		if err := m.Steps(-n); err != nil {
			return translateState(m, err, "roll back migrations")
		}
		if log != nil {
			v, _, err := version(m)
			if err != nil {
				return err
			}
			log.Info("database schema rolled back", "version", v)
		}
		return nil
	})
}

// Force records v as the current version and clears the dirty flag, without
// running any migration. It is the way out of a dirty state once the schema
// has been repaired by hand: v is the last migration whose changes are all
// in place, 0 meaning none.
//
// Errors: EInvalid (v is not 0 nor a known migration), EUnavailable
// (iotgate.DetailMigrationLocked), EInternal.
func Force(ctx context.Context, db *sql.DB, v uint) error {
	target := -1 // golang-migrate's "no version"
	if v != 0 {
		ok, err := knownVersion(v)
		if err != nil {
			return err
		}
		if !ok {
			return iotgate.Errorf(iotgate.EInvalid, "no migration has version %d", v)
		}
		target = int(v)
	}
	return run(ctx, db, nil, func(m *migrate.Migrate) error {
		if err := m.Force(target); err != nil {
			return translate(err, "force migration version")
		}
		return nil
	})
}

// Version reports the last applied migration (0 when none is) and whether
// it failed halfway (dirty). Like every call here it creates the version
// table if missing, and so waits for a migration in progress.
//
// Errors: EUnavailable (iotgate.DetailMigrationLocked), EInternal.
func Version(ctx context.Context, db *sql.DB) (v uint, dirty bool, err error) {
	err = run(ctx, db, nil, func(m *migrate.Migrate) error {
		v, dirty, err = version(m)
		return err
	})
	return v, dirty, err
}

// Latest reports the version of the newest migration embedded in the binary.
//
// Errors: EInternal (the embedded files are unreadable, a build defect).
func Latest() (uint, error) { return latestVersion() }

// run gives fn a Migrate bound to a dedicated connection of db whose
// lock_timeout bounds every lock wait, and discards that connection after,
// so neither the setting nor a lock can leak into db's pool.
func run(ctx context.Context, db *sql.DB, log *slog.Logger, fn func(*migrate.Migrate) error) (err error) {
	conn, err := db.Conn(ctx)
	if err != nil {
		return translate(err, "connect to database")
	}
	defer func() {
		// ErrBadConn from Raw makes database/sql close the connection
		// instead of returning it to the pool.
		_ = conn.Raw(func(any) error { return driver.ErrBadConn })
		_ = conn.Close()
	}()

	if _, err := conn.ExecContext(ctx, fmt.Sprintf("SET lock_timeout = %d", LockTimeout.Milliseconds())); err != nil {
		return translate(err, "set lock timeout")
	}
	// WithConnection takes the advisory lock (to create the version table)
	// with no timeout of its own: lock_timeout above bounds it.
	drv, err := postgres.WithConnection(ctx, conn, &postgres.Config{MigrationsTable: migrationsTable})
	if err != nil {
		return translate(err, "open migration driver")
	}
	src, err := iofs.New(files, ".")
	if err != nil {
		return translate(err, "read embedded migrations")
	}
	defer src.Close()

	m, err := migrate.NewWithInstance("iofs", src, "postgres", drv)
	if err != nil {
		return translate(err, "init migrations")
	}
	// Let PostgreSQL's lock_timeout fire first: golang-migrate's timer
	// abandons the lock query instead of cancelling it.
	m.LockTimeout = LockTimeout + 5*time.Second
	if log != nil {
		m.Log = migrateLogger{log}
	}

	// The driver runs statements without our ctx; stop between migrations
	// when ctx ends. A migration already running is let finish, since
	// stopping it halfway is what leaves the schema dirty.
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-ctx.Done():
			m.GracefulStop <- true
		case <-done:
		}
	}()

	if err := fn(m); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return translate(err, "migrate")
	}
	return nil
}

// version returns m's current version, 0 for none.
func version(m *migrate.Migrate) (uint, bool, error) {
	v, dirty, err := m.Version()
	if errors.Is(err, migrate.ErrNilVersion) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, translate(err, "read migration version")
	}
	return v, dirty, nil
}

func dirtyError(v uint) error {
	return &iotgate.Error{
		Code:   iotgate.EConflict,
		Detail: iotgate.DetailMigrationDirty,
		Message: fmt.Sprintf("database schema is dirty: migration %d failed halfway. "+
			"Repair the schema by hand, then run `iotgate migrate force %d` if all of migration %d's changes are in place, "+
			"or `iotgate migrate force %d` if none are; then migrate again", v, v, v, v-1),
	}
}

// sourceVersions lists the embedded migration versions in ascending order.
func sourceVersions() ([]uint, error) {
	src, err := iofs.New(files, ".")
	if err != nil {
		return nil, translate(err, "read embedded migrations")
	}
	defer src.Close()
	return walk(src)
}

func walk(src source.Driver) ([]uint, error) {
	v, err := src.First()
	if err != nil {
		return nil, translate(err, "read embedded migrations")
	}
	vs := []uint{v}
	for {
		v, err = src.Next(v)
		if errors.Is(err, fs.ErrNotExist) {
			return vs, nil
		}
		if err != nil {
			return nil, translate(err, "read embedded migrations")
		}
		vs = append(vs, v)
	}
}

func latestVersion() (uint, error) {
	vs, err := sourceVersions()
	if err != nil {
		return 0, err
	}
	return vs[len(vs)-1], nil
}

func knownVersion(v uint) (bool, error) {
	vs, err := sourceVersions()
	if err != nil {
		return false, err
	}
	for _, x := range vs {
		if x == v {
			return true, nil
		}
	}
	return false, nil
}

// appliedCount is the number of embedded migrations at or below cur.
func appliedCount(cur uint) (int, error) {
	vs, err := sourceVersions()
	if err != nil {
		return 0, err
	}
	n := 0
	for _, x := range vs {
		if x <= cur {
			n++
		}
	}
	return n, nil
}

// translateState is translate for errors of a migration run: a version in
// the database that no embedded migration has means a newer iotgate ran.
func translateState(m *migrate.Migrate, err error, op string) error {
	if errors.Is(err, fs.ErrNotExist) {
		latest, lerr := latestVersion()
		v, _, verr := version(m)
		if lerr == nil && verr == nil && v > latest {
			return &iotgate.Error{
				Code:   iotgate.EConflict,
				Detail: iotgate.DetailSchemaTooNew,
				Message: fmt.Sprintf("database schema is at version %d but this iotgate knows migrations up to %d only: "+
					"run a newer iotgate", v, latest),
				Err: err,
			}
		}
	}
	return translate(err, op)
}

// translate turns golang-migrate and driver errors into *iotgate.Error.
func translate(err error, op string) error {
	var de *iotgate.Error
	if errors.As(err, &de) {
		return err
	}
	// golang-migrate's driver errors don't unwrap to the driver's.
	var dbErr *database.Error
	if errors.As(err, &dbErr) && dbErr.OrigErr != nil {
		err = fmt.Errorf("%w (query %.60q)", dbErr.OrigErr, dbErr.Query)
	}
	var short migrate.ErrShortLimit
	if errors.As(err, &short) {
		return &iotgate.Error{Code: iotgate.EInvalid, Message: op + ": fewer migrations applied than asked for", Err: err}
	}
	var dirty migrate.ErrDirty
	if errors.As(err, &dirty) {
		return dirtyError(uint(dirty.Version))
	}
	if errors.Is(err, migrate.ErrLockTimeout) || pq.As(err, pqerror.LockNotAvailable) != nil {
		return &iotgate.Error{
			Code:   iotgate.EUnavailable,
			Detail: iotgate.DetailMigrationLocked,
			Message: fmt.Sprintf("%s: another iotgate instance is holding the migration lock (waited %s); "+
				"try again once it has finished", op, LockTimeout),
			Err: err,
		}
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return &iotgate.Error{Code: iotgate.ETimeout, Message: op + ": timed out", Err: err}
	}
	return &iotgate.Error{Code: iotgate.EInternal, Message: op, Err: err}
}

// migrateLogger adapts slog to golang-migrate's logger.
type migrateLogger struct{ log *slog.Logger }

func (l migrateLogger) Printf(format string, v ...any) {
	l.log.Info("migration: " + strings.TrimSpace(fmt.Sprintf(format, v...)))
}

func (l migrateLogger) Verbose() bool { return false }
