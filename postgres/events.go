package postgres

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/lib/pq"

	"github.com/iotgate/iotgate"
)

var _ iotgate.EventLog = (*DB)(nil)

// The event log: every store method that changes something writes its
// events in its own transaction (writeTx), and Events, EventBounds and
// TrimEvents read and trim them.
const (
	// eventsLockKey is the pg_advisory_xact_lock key that serializes the
	// transactions writing events from their insert to their commit, so
	// that ids become visible in id order (see migration 0007). It is
	// "iotgate1" in ASCII; nothing else in iotgate takes it (golang-migrate
	// locks a key of its own, derived from the database name).
	eventsLockKey int64 = 0x696f746761746531
	// eventsChannel is the NOTIFY channel every transaction writing
	// events signals, with an empty payload.
	eventsChannel = "iotgate_events"
	// eventScanWindow bounds the ids one filtered Events call looks at,
	// so that a filter that matches nothing can't scan the whole log.
	eventScanWindow = 10_000
	// maxEventBatch bounds Events' limit.
	maxEventBatch = 10_000
)

// appendEvents takes the events lock, inserts evs and sets their IDs, in
// one statement; it also queues the notification, which PostgreSQL sends
// at commit. It must be the last statement of its transaction, so that
// the lock is held only for it and the commit (writeTx sees to it).
//
// The lock sits in a materialized CTE that the insert's rows are joined
// with, below the sort on the ordinality, so it is taken before the first
// id is: ids follow evs' order and are taken under the lock.
func (db *DB) appendEvents(ctx context.Context, tx *sql.Tx, evs []iotgate.Event) error {
	if len(evs) == 0 {
		return nil
	}
	cols, err := eventArgs(evs)
	if err != nil {
		return err
	}
	st, err := db.txStmt(ctx, tx, insertEvents)
	if err != nil {
		return err
	}
	rows, err := st.QueryContext(ctx, append([]any{eventsLockKey}, cols...)...)
	if err != nil {
		return err
	}
	ids, err := scanAll(rows, scanInt64)
	if err != nil {
		return err
	}
	n := len(evs)
	if len(ids) != n {
		return fmt.Errorf("insert events: %d ids for %d events", len(ids), n)
	}
	// RETURNING promises no order; the ids were taken in evs' order.
	slices.Sort(ids)
	for i := range evs {
		evs[i].ID = ids[i]
	}
	return nil
}

// eventArgs are the arrays of an insert of evs into events: types, times,
// devices, data and labels, one element per event.
func eventArgs(evs []iotgate.Event) ([]any, error) {
	n := len(evs)
	types, at, device, data := make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	labels := make([]sql.NullString, n)
	for i, e := range evs {
		types[i], device[i], data[i] = string(e.Type), e.Device, string(e.Data)
		at[i] = e.Time.UTC().Format(time.RFC3339Nano)
		if e.Labels != nil || e.Type == iotgate.EventDevice {
			if e.Labels == nil {
				e.Labels = map[string]string{} // a device event always has its device's labels
			}
			b, err := json.Marshal(e.Labels)
			if err != nil {
				return nil, fmt.Errorf("encode event labels: %w", err)
			}
			labels[i] = nullString(string(b), true)
		}
	}
	return []any{pq.Array(types), pq.Array(at), pq.Array(device), pq.Array(data), pq.Array(labels)}, nil
}

// insertEvents is appendEvents' statement.
const insertEvents = `
	WITH serial AS MATERIALIZED (
		SELECT 1 AS one FROM (SELECT pg_advisory_xact_lock($1), pg_notify('` + eventsChannel + `', '')) AS l)
	INSERT INTO events (type, at, device, data, labels)
	SELECT u.type, u.at, u.device, u.data, u.labels
	FROM serial, unnest($2::text[], $3::timestamptz[], $4::text[], $5::json[], $6::jsonb[])
		WITH ORDINALITY AS u(type, at, device, data, labels, n)
	ORDER BY u.n
	RETURNING id`

// writeTx runs f in a transaction and commits it with the events f
// returns, appended last (appendEvents): a change and its events commit
// together or not at all. Its error is f's, or the database's untranslated.
func (db *DB) writeTx(ctx context.Context, f func(tx *sql.Tx) ([]iotgate.Event, error)) error {
	tx, err := db.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	evs, err := f(tx)
	if err != nil {
		return err
	}
	if err := db.appendEvents(ctx, tx, evs); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return err
	}
	db.eventsWritten.Add(uint64(len(evs)))
	return nil
}

// EventsWritten returns how many events this DB has committed, for the
// events-written metric.
func (db *DB) EventsWritten() uint64 { return db.eventsWritten.Load() }

// eventsLast is the newest id the log has had: its newest event, or the
// trim horizon when retention emptied it.
const eventsLast = `GREATEST(COALESCE((SELECT max(id) FROM events), 0), (SELECT last_id FROM events_trimmed))`

// Events returns the events after q.After in id order, at most q.Limit
// (clamped to 1..10,000), each with its Labels: a device event's as they
// were, the others' device's current ones (nil when the device is gone).
// q.Filter is applied in SQL, over the ids in (After, After+10,000] only:
// Next then moves on to the end of that window (or the newest id) even
// when no event matched. Errors: unavailable, timeout.
func (db *DB) Events(ctx context.Context, q iotgate.EventQuery) (*iotgate.EventBatch, error) {
	limit := min(max(q.Limit, 1), maxEventBatch)
	upper := int64(math.MaxInt64)
	if q.Filter != nil && q.After <= math.MaxInt64-eventScanWindow {
		upper = q.After + eventScanWindow
	}
	args := []any{q.After, upper, limit}
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	const labelsOf = `(CASE WHEN e.type = 'device' THEN e.labels ELSE d.labels END)`
	var where []string
	if f := q.Filter; f != nil {
		if len(f.Types) > 0 {
			ts := make([]string, len(f.Types))
			for i, t := range f.Types {
				ts[i] = string(t)
			}
			where = append(where, "e.type = ANY("+arg(pq.Array(ts))+"::text[])")
		}
		if len(f.Devices) > 0 {
			where = append(where, "e.device = ANY("+arg(pq.Array(f.Devices))+"::text[])")
		}
		for _, s := range []iotgate.Selector{f.Labels, f.Scope} {
			if len(s) == 0 {
				continue
			}
			b, err := json.Marshal(s)
			if err != nil {
				return nil, fmt.Errorf("encode label selector: %w", err)
			}
			where = append(where, labelsOf+" @> "+arg(string(b))+"::jsonb")
		}
	}
	cond := ""
	if len(where) > 0 {
		cond = " AND " + strings.Join(where, " AND ")
	}
	// One statement, one snapshot: every id up to l.last is committed or
	// never will be (the events lock), so the window can end there.
	//
	// Prepared: every instance's hub with streams open runs the
	// unfiltered one at every commit, and each webhook at each batch.
	// Filters are parameters, so there are at most 16 texts (each
	// condition there or not).
	st, err := db.prepared(ctx, `
		SELECT l.last, e.id, e.type, e.at, e.device, e.data, e.labels
		FROM (SELECT `+eventsLast+` AS last) AS l
		LEFT JOIN LATERAL (
			SELECT e.id, e.type, e.at, e.device, e.data, `+labelsOf+` AS labels
			FROM events e LEFT JOIN devices d ON e.type <> 'device' AND d.jid = e.device
			WHERE e.id > $1 AND e.id <= LEAST($2, l.last)`+cond+`
			ORDER BY e.id LIMIT $3) AS e ON true
		ORDER BY e.id`)
	if err != nil {
		return nil, translate(err, "read events")
	}
	rows, err := st.QueryContext(ctx, args...)
	if err != nil {
		return nil, translate(err, "read events")
	}
	defer rows.Close()
	out := &iotgate.EventBatch{Events: []*iotgate.Event{}}
	var last int64
	for rows.Next() {
		var id sql.NullInt64
		var typ, device sql.NullString
		var at sql.NullTime
		var data, labels []byte
		if err := rows.Scan(&last, &id, &typ, &at, &device, &data, &labels); err != nil {
			return nil, translate(err, "read events")
		}
		if !id.Valid {
			continue // no event: the row only carries last
		}
		e := &iotgate.Event{ID: id.Int64, Type: iotgate.EventType(typ.String), Time: at.Time.UTC(), Device: device.String, Data: data}
		if labels != nil {
			if err := json.Unmarshal(labels, &e.Labels); err != nil {
				return nil, fmt.Errorf("decode labels of event %d: %w", e.ID, err)
			}
			if e.Labels == nil {
				e.Labels = map[string]string{}
			}
		}
		out.Events = append(out.Events, e)
	}
	if err := rows.Err(); err != nil {
		return nil, translate(err, "read events")
	}
	if n := len(out.Events); n == limit {
		out.Next = out.Events[n-1].ID
	} else {
		// Every id up to the window's end (or the newest) was looked at.
		out.Next = max(q.After, min(upper, last))
	}
	out.More = out.Next < last
	return out, nil
}

// EventBounds returns the newest id the log has had (its newest event's,
// or the trim horizon when retention emptied it; 0: none yet) and the
// trim horizon. Read from the table, not the sequence: a sequence
// position may belong to a transaction that hasn't committed or never
// will. Errors: unavailable, timeout.
//
// Every commit that writes events wakes every instance's event hub, and
// a hub without subscribers answers with this query: it is prepared
// (parsed and planned once per connection, not at every commit).
func (db *DB) EventBounds(ctx context.Context) (iotgate.EventBounds, error) {
	var b iotgate.EventBounds
	st, err := db.prepared(ctx, eventBounds)
	if err == nil {
		err = st.QueryRowContext(ctx).Scan(&b.Last, &b.Trimmed)
	}
	if err != nil {
		return iotgate.EventBounds{}, translate(err, "read event bounds")
	}
	return b, nil
}

// eventBounds is EventBounds' query.
const eventBounds = `SELECT ` + eventsLast + `, (SELECT last_id FROM events_trimmed)`

// TrimEvents deletes at most limit of the oldest events (by time) older
// than before and raises the trim horizon to the highest id it deleted,
// in one statement (one transaction); it returns how many it deleted.
// Errors: unavailable, timeout.
func (db *DB) TrimEvents(ctx context.Context, before time.Time, limit int) (int, error) {
	if limit <= 0 {
		return 0, nil
	}
	var n int
	err := db.db.QueryRowContext(ctx, `
		WITH gone AS (
			DELETE FROM events WHERE id IN (
				SELECT id FROM events WHERE at < $1 ORDER BY at, id LIMIT $2)
			RETURNING id),
		horizon AS (
			UPDATE events_trimmed SET last_id = GREATEST(last_id, (SELECT max(id) FROM gone))
			WHERE EXISTS (SELECT 1 FROM gone))
		SELECT count(*) FROM gone`, before.UTC(), limit).Scan(&n)
	if err != nil {
		return 0, translate(err, "trim events")
	}
	return n, nil
}
