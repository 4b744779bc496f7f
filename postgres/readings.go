package postgres

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/lib/pq"

	"github.com/iotgate/iotgate"
)

// InsertReadings stores a batch of readings and advances each device's
// last_seen_at, in one transaction, and returns one error per reading: after
// it returns nil for a reading, that reading is durable (it is what lets an
// IQ be acknowledged). A reading PostgreSQL refuses (a value out of its
// range) fails only itself: the batch is then written apart (see apart),
// and the others are stored. When the database can't be reached, every
// reading gets that error (code unavailable).
//
// Readings of a device deleted since they were queued are skipped (the
// delete would have removed them), so that one such reading can't fail
// the whole batch.
//
// Each stored reading gets its ID set (a skipped one gets 0), so that the
// device service can keep the newest reading in memory without reading it
// back.
func (db *DB) InsertReadings(ctx context.Context, rs []*iotgate.Reading) []error {
	errs := make([]error, len(rs))
	apart(rs, errs, func(rs []*iotgate.Reading, _ []error) error { return db.insertReadings(ctx, rs) })
	return errs
}

// insertReadings stores readings and their events in one transaction.
// Arrays passed to unnest keep it at two statements whatever the batch
// size (readings with their devices' lock and last_seen_at, then events);
// see insertReadingRows and storedIDs for how the ids are handed out.
func (db *DB) insertReadings(ctx context.Context, rs []*iotgate.Reading) error {
	if len(rs) == 0 {
		return nil
	}
	if slices.ContainsFunc(rs, func(r *iotgate.Reading) bool { return r.MaybeStored }) {
		var err error
		if rs, err = db.skipStored(ctx, rs); err != nil {
			return translate(err, "store readings")
		}
		if len(rs) == 0 {
			return nil
		}
	}
	ids := make([]int64, len(rs))
	received := make([]string, len(rs))
	deviceTime := make([]sql.NullString, len(rs))
	// The XML and the JSON, most of the batch's bytes, go as textArray:
	// without the copies pq.Array makes of each.
	xmls := make(textArray[string], len(rs))
	data := make(textArray[json.RawMessage], len(rs))
	last := make(map[int64]time.Time, 8)
	for i, r := range rs {
		ids[i] = r.DeviceID
		received[i] = r.ReceivedAt.UTC().Format(time.RFC3339Nano)
		if r.DeviceTime != nil {
			deviceTime[i] = sql.NullString{String: r.DeviceTime.UTC().Format(time.RFC3339Nano), Valid: true}
		}
		xmls[i] = r.XML
		data[i] = r.Data
		if t, ok := last[r.DeviceID]; !ok || r.ReceivedAt.After(t) {
			last[r.DeviceID] = r.ReceivedAt
		}
	}
	seenIDs := make([]int64, 0, len(last))
	seenAt := make([]string, 0, len(last))
	for id, t := range last {
		seenIDs = append(seenIDs, id)
		seenAt = append(seenAt, t.UTC().Format(time.RFC3339Nano))
	}

	got := make([]int64, len(rs))
	err := db.writeTx(ctx, func(tx *sql.Tx) ([]iotgate.Event, error) {
		stored, err := db.insertReturningDevice(ctx, tx, insertReadingRows,
			pq.Array(ids), pq.Array(received), pq.Array(deviceTime), xmls, data, pq.Array(seenIDs), pq.Array(seenAt))
		if err != nil {
			return nil, err
		}
		if err := db.markLateReadings(ctx, tx, rs); err != nil {
			return nil, err
		}
		evs := make([]iotgate.Event, 0, len(rs))
		newest := make(map[int64]*iotgate.Reading, len(last))
		for i, r := range rs {
			got[i] = stored.next(r.DeviceID)
			if got[i] != 0 {
				c := *r
				c.ID = got[i]
				evs = append(evs, iotgate.ReadingEvent(&c))
				if n := newest[c.DeviceID]; n == nil || c.ReceivedAt.After(n.ReceivedAt) || c.ReceivedAt.Equal(n.ReceivedAt) && c.ID > n.ID {
					newest[c.DeviceID] = &c
				}
			}
		}
		// Other instances' caches learn each device's newest reading
		// (for /state and last_seen_at) without reading it.
		keys := make([]string, 0, len(newest))
		for _, r := range newest {
			keys = append(keys, iotgate.ReadingKey(r))
		}
		if err := db.notifyChangesPrepared(ctx, tx, ChangeReading, keys...); err != nil {
			return nil, err
		}
		return evs, nil
	})
	if err != nil {
		return translate(err, "store readings")
	}
	for i, r := range rs {
		r.ID = got[i]
	}
	return nil
}

// insertReadingRows inserts a batch of readings given as arrays
// ($1..$5: device_id, received_at, device_time, xml, data) and advances
// their devices' last_seen_at to the newest of their readings ($6, $7:
// each device of the batch once, and that time), in one statement
// whatever the batch size. It returns (device_id, id) per reading
// stored, for insertReturningDevice.
//
// The device check is once per device, not once per reading (there is
// no foreign key, see migration 0017): the batch's devices are locked
// first, FOR NO KEY UPDATE (the lock the last_seen_at update needs
// anyway), and only the readings of the devices locked are inserted. A
// device deleted before the lock is not locked, and its readings are
// skipped (they would have been deleted with it); a delete after the
// lock waits for this transaction's commit, and its trigger then deletes
// the readings it sees committed.
//
// The rows are locked in id order: two instances committing batches of
// the same devices would otherwise lock them in the order of each plan
// and deadlock (measured with two instances: PostgreSQL broke it after
// its 1 s deadlock_timeout, failing a batch). The readings are inserted
// in the arrays' order (ORDER BY the ordinality: the join may reorder
// rows), which orders rows with the same time and gives each device's
// rows ascending ids.
const insertReadingRows = `
	WITH v AS MATERIALIZED (SELECT * FROM unnest($6::bigint[], $7::timestamptz[]) AS v(id, t)),
	locked AS MATERIALIZED (
		SELECT d.id FROM devices d JOIN v ON d.id = v.id
		ORDER BY d.id FOR NO KEY UPDATE OF d),
	seen AS (
		UPDATE devices d SET last_seen_at = v.t
		FROM v JOIN locked l ON l.id = v.id
		WHERE d.id = v.id AND (d.last_seen_at IS NULL OR d.last_seen_at < v.t))
	INSERT INTO readings (device_id, received_at, device_time, xml, data)
	SELECT u.device_id, u.received_at, u.device_time, u.xml, u.data
	FROM unnest($1::bigint[], $2::timestamptz[], $3::timestamptz[], $4::text[], $5::jsonb[])
		WITH ORDINALITY AS u(device_id, received_at, device_time, xml, data, n)
	JOIN locked l ON l.id = u.device_id
	ORDER BY u.n
	RETURNING device_id, id`

// InsertRejections records refused payloads and keeps only the newest
// keep of each device in the batch (0 keeps all), in one transaction: a
// device that floods bad payloads must not fill the disk. Rejections of
// devices deleted meanwhile are skipped.
func (db *DB) InsertRejections(ctx context.Context, rs []*iotgate.Rejection, keep int) error {
	if len(rs) == 0 {
		return nil
	}
	ids := make([]int64, len(rs))
	at := make([]string, len(rs))
	via := make([]string, len(rs))
	reason := make([]string, len(rs))
	payload := make([]string, len(rs))
	seen := make(map[int64]bool, 8)
	var devs []int64
	for i, r := range rs {
		ids[i] = r.DeviceID
		at[i] = r.ReceivedAt.UTC().Format(time.RFC3339Nano)
		via[i], reason[i] = r.Via, r.Reason
		payload[i] = strings.ToValidUTF8(r.Payload, "\uFFFD")
		if !seen[r.DeviceID] {
			seen[r.DeviceID] = true
			devs = append(devs, r.DeviceID)
		}
	}
	err := db.writeTx(ctx, func(tx *sql.Tx) ([]iotgate.Event, error) {
		stored, err := db.insertReturningDevice(ctx, tx, insertRejectionRows,
			pq.Array(ids), pq.Array(at), pq.Array(via), pq.Array(reason), pq.Array(payload))
		if err != nil {
			return nil, err
		}
		pruned := map[int64]bool{}
		if keep > 0 {
			// The newest row beyond keep, per device, walking the
			// (device_id, received_at, id) index backwards; it and
			// everything older go, without events if they were new.
			gone, err := queryTx(ctx, tx, scanInt64, `
				WITH cut AS (
					SELECT d.id AS device_id, c.received_at, c.id
					FROM unnest($1::bigint[]) AS d(id)
					CROSS JOIN LATERAL (
						SELECT x.received_at, x.id FROM rejections x
						WHERE x.device_id = d.id
						ORDER BY x.received_at DESC, x.id DESC
						OFFSET $2 LIMIT 1) AS c)
				DELETE FROM rejections r USING cut
				WHERE r.device_id = cut.device_id AND (r.received_at, r.id) <= (cut.received_at, cut.id)
				RETURNING r.id`,
				pq.Array(devs), keep)
			if err != nil {
				return nil, translate(err, "prune rejections")
			}
			for _, id := range gone {
				pruned[id] = true
			}
		}
		var evs []iotgate.Event
		for _, r := range rs {
			if id := stored.next(r.DeviceID); id != 0 && !pruned[id] {
				c := *r
				c.ID = id
				evs = append(evs, iotgate.RejectionEvent(&c))
			}
		}
		return evs, nil
	})
	return translate(err, "store rejections")
}

// LatestReading returns the device's newest reading, with its DeviceID.
// The device is found by a subquery, not a join: a constant device id lets
// PostgreSQL read the partitions newest first and stop at the first row.
// Errors: not_found.
func (db *DB) LatestReading(ctx context.Context, jid string) (*iotgate.Reading, error) {
	var devID int64
	st, err := db.prepared(ctx, latestReading)
	if err != nil {
		return nil, translate(err, "get latest reading")
	}
	r, err := scanReadingAfter(st.QueryRowContext(ctx, jid), &devID)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, iotgate.Errorf(iotgate.ENotFound, "device %s has no readings", jid)
	}
	if err != nil {
		return nil, translate(err, "get latest reading")
	}
	r.DeviceID, r.DeviceJID = devID, jid
	return r, nil
}

// latestReading selects a device's newest reading. It is prepared: a plan
// over every partition costs more to make than to run.
const latestReading = `
	SELECT t.device_id, ` + readingColumns + `
	FROM readings t
	WHERE t.device_id = (SELECT id FROM devices WHERE jid = $1)
	ORDER BY t.received_at DESC, t.id DESC
	LIMIT 1`

// cursor is a position in a time-ordered list: received_at and id of the
// last item served.
type cursor = iotgate.TimeCursor

func parseCursor(s string) (cursor, error) { return iotgate.ParseTimeCursor(s) }

// pageQuery builds the keyset query shared by readings and rejections,
// bounded in rows and in bytes (see budgetQuery): size is the expression of
// a row's stored size.
func pageQuery(table, columns, size, jid string, f iotgate.ReadingFilter) (string, []any, error) {
	args := []any{jid}
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	where := []string{"t.device_id = (SELECT id FROM devices WHERE jid = $1)"}
	if f.Since != nil {
		where = append(where, "t.received_at >= "+arg(*f.Since))
	}
	if f.Until != nil {
		where = append(where, "t.received_at < "+arg(*f.Until))
	}
	dir, cmp := "ASC", ">"
	if f.Desc {
		dir, cmp = "DESC", "<"
	}
	if f.Cursor != "" {
		c, err := parseCursor(f.Cursor)
		if err != nil {
			return "", nil, err
		}
		// The plain comparison on received_at, implied by the row
		// comparison, lets PostgreSQL skip the partitions past the cursor.
		at := arg(c.At)
		where = append(where, fmt.Sprintf("t.received_at %s= %s", cmp, at),
			fmt.Sprintf("(t.received_at, t.id) %s (%s, %s)", cmp, at, arg(c.ID)))
	}
	budget := arg(iotgate.PageBytes(f.MaxBytes))
	q := budgetQuery(columns, size, table+" t", "t", strings.Join(where, " AND "),
		[]string{"received_at", "id"}, dir, limitBucket(f.Limit+1), budget)
	return q, args, nil
}

// limitBuckets are the LIMITs pageQuery writes.
var limitBuckets = []int{11, 21, 51, 101, 201, 501, 1001}

// limitBucket returns the smallest of limitBuckets at least n (n past them
// all: n). The LIMIT is written in the query, not passed as a parameter:
// with a parameter PostgreSQL's generic plan assumes a tenth of the rows,
// so it keeps making a custom plan at each call, and planning a query over
// every partition of readings costs milliseconds. A few buckets keep the
// prepared statements few; budgetPage cuts the extra rows.
func limitBucket(n int) int {
	for _, b := range limitBuckets {
		if n <= b {
			return b
		}
	}
	return n
}

// readingColumns are the columns scanReading reads, from alias t.
const readingColumns = "t.id, t.received_at, t.device_time, t.xml, t.data"

// readingSize is a reading's size in a page's byte budget: the XML's
// length (read from its TOAST header, not the value) and the JSON as
// stored (jsonb, compressed when large: rendering each row's JSON just to
// measure it would cost as much as sending it).
const readingSize = "octet_length(t.xml) + pg_column_size(t.data)"

// rejectionSize is a rejection's size in a page's byte budget.
const rejectionSize = "octet_length(t.reason) + octet_length(t.payload)"

func scanReading(row rowScanner) (*iotgate.Reading, error) { return scanReadingAfter(row) }

// scanReadingAfter scans readingColumns after the columns a query selects
// before them, into first.
func scanReadingAfter(row rowScanner, first ...any) (*iotgate.Reading, error) {
	r := &iotgate.Reading{}
	var dt sql.NullTime
	var data []byte
	if err := row.Scan(append(first, &r.ID, &r.ReceivedAt, &dt, &r.XML, &data)...); err != nil {
		return nil, err
	}
	r.ReceivedAt = r.ReceivedAt.UTC()
	if dt.Valid {
		t := dt.Time.UTC()
		r.DeviceTime = &t
	}
	r.Data = data
	return r, nil
}

func scanRejection(row rowScanner) (*iotgate.Rejection, error) {
	r := &iotgate.Rejection{}
	if err := row.Scan(&r.ID, &r.ReceivedAt, &r.Via, &r.Reason, &r.Payload); err != nil {
		return nil, err
	}
	r.ReceivedAt = r.ReceivedAt.UTC()
	return r, nil
}

// Readings returns a page of a device's readings, bounded in rows and in
// bytes (f.MaxBytes, see iotgate.PageBytes). Errors: invalid (cursor).
func (db *DB) Readings(ctx context.Context, jid string, f iotgate.ReadingFilter) (*iotgate.ReadingPage, error) {
	q, args, err := pageQuery("readings", readingColumns, readingSize, jid, f)
	if err != nil {
		return nil, err
	}
	st, err := db.prepared(ctx, q)
	if err != nil {
		return nil, translate(err, "list readings")
	}
	rows, err := stmtRows(ctx, st, "list readings", scanBudgeted(scanReading), args...)
	if err != nil {
		return nil, err
	}
	page := &iotgate.ReadingPage{}
	page.Items, page.NextCursor = budgetPage(rows, f.Limit, func(r *iotgate.Reading) string { return cursor{At: r.ReceivedAt, ID: r.ID}.String() })
	return page, nil
}

// Rejections returns a page of a device's refused payloads, bounded in
// rows and in bytes like Readings. Errors: invalid (cursor).
func (db *DB) Rejections(ctx context.Context, jid string, f iotgate.ReadingFilter) (*iotgate.RejectionPage, error) {
	q, args, err := pageQuery("rejections", "t.id, t.received_at, t.via, t.reason, t.payload", rejectionSize, jid, f)
	if err != nil {
		return nil, err
	}
	rows, err := queryRows(ctx, db.db, "list rejections", scanBudgeted(scanRejection), q, args...)
	if err != nil {
		return nil, err
	}
	page := &iotgate.RejectionPage{}
	page.Items, page.NextCursor = budgetPage(rows, f.Limit, func(r *iotgate.Rejection) string { return cursor{At: r.ReceivedAt, ID: r.ID}.String() })
	return page, nil
}

// skipStored returns rs without the readings an earlier attempt stored
// after all (its commit reached the database, its answer didn't: a
// connection or server that died during the commit), giving those their
// ids. Only readings marked MaybeStored are looked for: by device,
// receipt time and XML, which no two readings of a device share (a
// device's stanzas are received one after another). The earlier attempt
// is over when a reading is tried again, so the lookup needs no lock.
func (db *DB) skipStored(ctx context.Context, rs []*iotgate.Reading) ([]*iotgate.Reading, error) {
	var at []int
	var devs []int64
	var received []string
	var xmls textArray[string]
	for i, r := range rs {
		if r.MaybeStored {
			at = append(at, i)
			devs = append(devs, r.DeviceID)
			received = append(received, r.ReceivedAt.UTC().Format(time.RFC3339Nano))
			xmls = append(xmls, r.XML)
		}
	}
	rows, err := db.db.QueryContext(ctx, `
		SELECT u.n, min(r.id) FROM unnest($1::bigint[], $2::timestamptz[], $3::text[]) WITH ORDINALITY AS u(device_id, received_at, xml, n)
		JOIN readings r ON r.device_id = u.device_id AND r.received_at = u.received_at AND r.xml = u.xml
		GROUP BY u.n`, pq.Array(devs), pq.Array(received), xmls)
	if err != nil {
		return nil, err
	}
	found, err := scanAll(rows, func(r rowScanner) (idPair, error) {
		var p idPair
		return p, r.Scan(&p.dev, &p.id) // dev: the ordinality here
	})
	if err != nil {
		return nil, err
	}
	if len(found) == 0 {
		return rs, nil
	}
	stored := make(map[int]int64, len(found))
	for _, f := range found {
		stored[at[f.dev-1]] = f.id
	}
	rest := make([]*iotgate.Reading, 0, len(rs)-len(found))
	for i, r := range rs {
		if id, ok := stored[i]; ok {
			r.ID, r.MaybeStored = id, false
			continue
		}
		rest = append(rest, r)
	}
	return rest, nil
}
