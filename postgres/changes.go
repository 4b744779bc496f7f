package postgres

import (
	"context"
	"database/sql"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/lib/pq"
)

// changesChannel carries "kind:key" notifications, sent at the commit of
// the transaction that changed the thing, so that every instance's caches
// forget it within a round trip instead of a TTL.
const changesChannel = "iotgate_changes"

// ChangeKind names a kind of changed thing; a key identifies one of them.
type ChangeKind string

// The kinds of change notified, and their keys.
const (
	ChangeDevice   ChangeKind = "device"   // key: the device's bare JID
	ChangeSchema   ChangeKind = "schema"   // key: the schema's ID
	ChangeToken    ChangeKind = "token"    // key: the token's ID
	ChangeReading  ChangeKind = "reading"  // key: iotgate.ReadingKey of a device's newest reading in a commit
	ChangePresence ChangeKind = "presence" // key: the device's bare JID
	ChangeCommand  ChangeKind = "command"  // key: the command's ID
)

// notifyChanges queues a notification per key, sent when tx commits (and
// never if it rolls back). PostgreSQL folds identical notifications of
// one transaction into one.
func notifyChanges(ctx context.Context, tx *sql.Tx, kind ChangeKind, keys ...string) error {
	if len(keys) == 0 {
		return nil
	}
	_, err := tx.ExecContext(ctx, notifyChangesQuery, string(kind), pq.Array(keys))
	return err
}

// notifyChangesQuery is notifyChanges' statement.
const notifyChangesQuery = `SELECT pg_notify('` + changesChannel + `', $1 || ':' || k) FROM unnest($2::text[]) AS k`

// notifyChangesPrepared is notifyChanges as a prepared statement (see
// txStmt), for the hot path of readings, which notifies at every batch:
// one round trip instead of two, and no parse and plan each time.
func (db *DB) notifyChangesPrepared(ctx context.Context, tx *sql.Tx, kind ChangeKind, keys ...string) error {
	if len(keys) == 0 {
		return nil
	}
	st, err := db.txStmt(ctx, tx, notifyChangesQuery)
	if err != nil {
		return err
	}
	_, err = st.ExecContext(ctx, string(kind), pq.Array(keys))
	return err
}

// Changes hands the change notifications of every instance (this one's
// too) to the functions subscribed to their kind.
type Changes struct {
	mu   sync.Mutex
	subs map[ChangeKind][]func(key string)
	live atomic.Bool
}

// ListenChanges listens for change notifications on a connection of its
// own until ctx is done. Subscribers get each key of their kind, and ""
// (anything of the kind may have changed) once listening starts and after
// each reconnection, when notifications may have been lost.
func (db *DB) ListenChanges(ctx context.Context) *Changes {
	c := &Changes{subs: map[ChangeKind][]func(string){}}
	db.listen(ctx, changesChannel, "change listener", c.dispatch, c.live.Store)
	return c
}

// Live reports whether notifications are flowing: the listener is
// connected, and what may have been lost while it was not has been
// dispatched (as key ""). A cache that can't afford to miss a change
// meanwhile (the device service's reading ring) serves nothing while
// it is false.
func (c *Changes) Live() bool { return c.live.Load() }

// Subscribe calls f, from the listener's goroutine, for each change of
// kind. f must be quick: it holds up every other notification.
func (c *Changes) Subscribe(kind ChangeKind, f func(key string)) {
	c.mu.Lock()
	c.subs[kind] = append(c.subs[kind], f)
	c.mu.Unlock()
}

func (c *Changes) dispatch(payload string, lost bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if lost {
		for _, fs := range c.subs {
			for _, f := range fs {
				f("")
			}
		}
		return
	}
	kind, key, ok := strings.Cut(payload, ":")
	if !ok || key == "" {
		return
	}
	for _, f := range c.subs[ChangeKind(kind)] {
		f(key)
	}
}
