// Package postgres is iotgate's PostgreSQL adapter: it implements the
// store ports of the root package iotgate (DeviceStore, CommandStore,
// PresenceStore, TokenStore, EventLog) and schemas.Store on top of
// database/sql and lib/pq, with raw SQL, and owns the schema: Open runs the
// migrations of package migrations.
//
// Every store method that changes something writes the events describing
// the change in the same transaction (writeTx, events.go), so that nothing
// is announced that isn't stored and nothing stored goes unannounced;
// wakeups.go tells readers of every instance when to read the log again.
//
// Driver errors never leave this package as they are: they are translated
// at this boundary, in one table (classify), into *iotgate.Error values (a
// unique violation becomes EConflict, a lost connection EUnavailable, and
// so on), keeping the driver's error as the cause for the logs.
//
// It imports the root package iotgate, schemas (for the schema types it
// stores) and migrations; never a transport (api, component), devices or
// cmd.
package postgres

import (
	"context"
	"database/sql"
	"errors"
	"log/slog"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lib/pq"
	"github.com/lib/pq/pqerror"

	"github.com/iotgate/iotgate"
)

// Pool and timeout settings. A gateway's queries are short; a small pool
// keeps PostgreSQL's per-connection cost low, and recycling connections
// lets a failover or a pgbouncer restart be picked up.
const (
	maxOpenConns    = 20
	maxIdleConns    = maxOpenConns
	connMaxLifetime = 30 * time.Minute
	connMaxIdleTime = 5 * time.Minute

	// defaultConnectTimeout applies when the DSN sets no connect_timeout,
	// so that an unreachable server fails fast instead of hanging.
	defaultConnectTimeout = 5 * time.Second
	// healthTimeout bounds one health probe.
	healthTimeout = 2 * time.Second
)

// DB is a pool of connections to iotgate's database. Its methods are safe
// for concurrent use.
type DB struct {
	db  *sql.DB
	log *slog.Logger
	// dsn is what the event listener connects with (EventWakeups).
	dsn string

	// Now returns the current time; the stores take every timestamp from
	// it so that tests can fix the clock. Set it before use, if at all.
	Now func() time.Time

	mu    sync.Mutex // guards the health state below
	up    bool
	since time.Time

	stmtMu sync.Mutex
	stmts  map[string]*sql.Stmt // by query text

	eventsWritten atomic.Uint64
}

// Connect connects to the database at dsn, a postgres:// URL or a libpq
// key=value string, and checks that it answers; it does not migrate (Open
// does). Unless dsn sets them, connect_timeout is 5 seconds and
// application_name is "iotgate".
//
// Errors: EInvalid (dsn is malformed), EUnavailable (the server can't be
// reached, isn't accepting connections yet, refused the credentials or has
// no such database), ETimeout (ctx ended).
func Connect(ctx context.Context, dsn string, log *slog.Logger) (*DB, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cfg, err := pq.NewConfig(dsn)
	if err != nil {
		// url.Error repeats the URL, password included: keep only the
		// reason.
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err
		}
		return nil, &iotgate.Error{Code: iotgate.EInvalid, Message: "invalid database URL: " + err.Error()}
	}
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = defaultConnectTimeout
	}
	if cfg.ApplicationName == "" {
		cfg.ApplicationName = "iotgate"
	}
	connector, err := pq.NewConnectorConfig(cfg)
	if err != nil {
		return nil, &iotgate.Error{Code: iotgate.EInvalid, Message: "invalid database URL: " + err.Error()}
	}

	sqlDB := sql.OpenDB(connector)
	sqlDB.SetMaxOpenConns(maxOpenConns)
	sqlDB.SetMaxIdleConns(maxIdleConns)
	sqlDB.SetConnMaxLifetime(connMaxLifetime)
	sqlDB.SetConnMaxIdleTime(connMaxIdleTime)

	if err := sqlDB.PingContext(ctx); err != nil {
		sqlDB.Close()
		// A refused login or a missing database goes through the one
		// table like any driver error: unavailable (see classify).
		return nil, translate(err, "connect to database")
	}
	db := &DB{db: sqlDB, log: log, dsn: dsn, Now: time.Now}
	db.up, db.since = true, db.Now()
	return db, nil
}

// Close closes the pool, waiting for queries in progress to finish.
func (db *DB) Close() error {
	db.stmtMu.Lock()
	for _, st := range db.stmts {
		st.Close()
	}
	db.stmts = nil
	db.stmtMu.Unlock()
	if err := db.db.Close(); err != nil {
		return translate(err, "close database")
	}
	return nil
}

// prepared returns q prepared, preparing it on first use. lib/pq sends
// an unnamed query with parameters as two round trips (prepare, then
// execute) and PostgreSQL parses and plans it each time; a prepared
// statement is one round trip and is parsed once per connection. It is
// for the few hot queries whose text comes from a small fixed set (the
// history pages' shapes), so the map stays small.
func (db *DB) prepared(ctx context.Context, q string) (*sql.Stmt, error) {
	db.stmtMu.Lock()
	defer db.stmtMu.Unlock()
	if st, ok := db.stmts[q]; ok {
		return st, nil
	}
	st, err := db.db.PrepareContext(ctx, q)
	if err != nil {
		return nil, err
	}
	if db.stmts == nil {
		db.stmts = map[string]*sql.Stmt{}
	}
	db.stmts[q] = st
	return st, nil
}

// txStmt returns q prepared (see prepared) for use in tx: prepared once
// per connection, run in one round trip. It is for the statements every
// writing transaction runs (the events insert) and the readings' hot path.
func (db *DB) txStmt(ctx context.Context, tx *sql.Tx, q string) (*sql.Stmt, error) {
	st, err := db.prepared(ctx, q)
	if err != nil {
		return nil, err
	}
	return tx.StmtContext(ctx, st), nil
}

// SQL returns the underlying pool, for its statistics (metrics) and for
// tests. Stores don't hand it out further.
func (db *DB) SQL() *sql.DB { return db.db }

// Health probes the database with a round trip, bounded by 2 seconds and
// ctx. It reports whether the database answers, since when it has been in
// that state (up or down), and why it is down. Changes of state are logged,
// once each. It has the shape of api.HealthCheck.
//
// Errors: EUnavailable (the probe failed), ETimeout (it timed out).
func (db *DB) Health(ctx context.Context) (ok bool, since time.Time, err error) {
	ctx, cancel := context.WithTimeout(ctx, healthTimeout)
	defer cancel()
	// A query, not PingContext: lib/pq's Ping turns every failure into
	// driver.ErrBadConn, and the real cause is what an operator needs.
	perr := db.db.QueryRowContext(ctx, `SELECT 1`).Scan(new(int))
	if perr != nil {
		code := iotgate.EUnavailable
		if errors.Is(perr, context.DeadlineExceeded) {
			code = iotgate.ETimeout
		}
		err = &iotgate.Error{Code: code, Message: "database unreachable", Err: perr}
	}

	db.mu.Lock()
	defer db.mu.Unlock()
	ok = perr == nil
	if ok != db.up {
		db.up, db.since = ok, db.Now()
		if ok {
			db.log.Info("database reachable again")
		} else {
			db.log.Warn("database unreachable", "err", perr)
		}
	}
	return ok, db.since, err
}

// translate converts an error from database/sql or lib/pq into a
// *iotgate.Error whose message starts with op and whose cause is err. It
// is the one place where driver errors get their meaning; stores that know
// better (which constraint stands for what) check first and call it for
// the rest. A nil err stays nil; a *iotgate.Error is returned as is.
//
// The messages name the kind of failure, never the driver's text, since
// they may reach clients; the cause carries the detail for the logs.
func translate(err error, op string) error {
	if err == nil {
		return nil
	}
	var de *iotgate.Error
	if errors.As(err, &de) {
		return err
	}
	code, reason := classify(err)
	return &iotgate.Error{Code: code, Message: op + ": " + reason, Err: err}
}

// classify maps err to a domain code and a client-safe reason.
func classify(err error) (code, reason string) {
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return iotgate.ENotFound, "not found"
	case errors.Is(err, context.DeadlineExceeded):
		return iotgate.ETimeout, "timed out"
	case errors.Is(err, context.Canceled):
		return iotgate.ETimeout, "canceled"
	case errors.Is(err, sql.ErrConnDone):
		return iotgate.EUnavailable, "database connection closed"
	}
	pqErr := pq.As(err)
	if pqErr == nil {
		// Dial errors, broken connections (driver.ErrBadConn), closed
		// pools: the database can't be talked to.
		return iotgate.EUnavailable, "database unavailable"
	}
	switch pqErr.Code {
	case pqerror.UniqueViolation:
		return iotgate.EConflict, "already exists"
	case pqerror.ForeignKeyViolation:
		return iotgate.EConflict, "conflicts with related records"
	case pqerror.RestrictViolation: // a trigger forbidding the change
		return iotgate.EConflict, "not allowed to change"
	case pqerror.NotNullViolation, pqerror.CheckViolation:
		return iotgate.EInvalid, "invalid value"
	case pqerror.TRSerializationFailure, pqerror.TRDeadlockDetected:
		return iotgate.EUnavailable, "concurrent update, try again"
	case pqerror.LockNotAvailable:
		return iotgate.EUnavailable, "resource busy, try again"
	case pqerror.QueryCanceled: // statement_timeout
		return iotgate.ETimeout, "timed out"
	case pqerror.TooManyConnections, pqerror.AdminShutdown, pqerror.CrashShutdown, pqerror.CannotConnectNow:
		return iotgate.EUnavailable, "database unavailable"
	}
	switch pqErr.Code.Class() {
	case pqerror.ClassDataException: // too long, out of range, bad encoding
		return iotgate.EInvalid, "invalid value"
	case pqerror.ClassConnectionException:
		return iotgate.EUnavailable, "database unavailable"
	// A server that refuses a login or lacks the database is an
	// operational fault, not a client's invalid input: the operator fixes
	// the role, the password (pg_hba.conf) or the database while iotgate
	// waits and retries, as for any outage, and the reason is logged at
	// each retry.
	case pqerror.ClassInvalidAuthorizationSpecification:
		return iotgate.EUnavailable, "database refused the credentials"
	case pqerror.ClassInvalidCatalogName:
		return iotgate.EUnavailable, "database does not exist"
	}
	return iotgate.EInternal, "database error"
}
