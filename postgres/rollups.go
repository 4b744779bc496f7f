package postgres

import (
	"context"
	"database/sql"
	"log/slog"
	"strconv"
	"time"

	"github.com/lib/pq"

	"github.com/iotgate/iotgate"
)

// Hourly rollups of readings (migration 0015): per device, hour and path
// of a JSON number in the readings' data, how many readings hold a number
// there and their sum, min and max. AggregateReadings reads them for the
// whole hours of a query whose every is a multiple of an hour, and the
// raw readings for the rest, with the same results as the raw query.
//
// Correctness rests on reading_rollup_marks.rolled_until: hours before it
// are rolled, the others are read raw. The roller only rolls hours that
// ended RollupSettle ago; a reading committed more than LateReading after
// it was received (held while the database was away, or a slow commit)
// moves its device's mark back to its hour, in its own transaction, so
// that a rolled hour never misses a reading. Readings committed within
// LateReading of their receipt are seen by the roller as long as the
// clocks of iotgate's instances and the roller's differ by less than
// RollupSettle - LateReading - commitBound.
const (
	// RollupSettle is how long after an hour ends the roller waits
	// before rolling it.
	RollupSettle = 10 * time.Minute
	// LateReading is how long after its receipt a reading's commit
	// makes it late: its hour may be rolled, so it moves the mark.
	LateReading = time.Minute
	// DefaultRollEvery is how often the Roller runs by default.
	DefaultRollEvery = 5 * time.Minute
	// RollBudget bounds the time of one run of the Roller (it ends after
	// the transaction in progress): at most a tenth of the database's
	// time with the default interval, while months of history are rolled
	// for the first time.
	RollBudget = 30 * time.Second
	// rollChunk bounds the hours of one device one transaction rolls,
	// so that a first roll over months of history goes in short steps.
	rollChunk = 24 * time.Hour
	// rollBatchSize bounds the devices of one transaction in the steady
	// state (each with an hour or two to roll).
	rollBatchSize = 100
	// rollupDepth bounds the depth of the paths rolled: the aggregate
	// query's field paths have at most iotgate.MaxFieldPathDepth keys.
	rollupDepth = iotgate.MaxFieldPathDepth
)

// markLateReadings moves back the rollup marks of the devices of the late
// readings of rs (see LateReading) to the hour of each one's oldest, in
// tx, after the readings are inserted. Most batches have none and cost
// nothing here.
//
// The marks are locked first, in device order (as updateLastSeen locks
// devices), and only then read again and moved: a roller rolling one of
// these devices holds its mark, and its snapshot may lack these readings,
// so the mark must be moved after its commit, never judged before it. A
// device without a mark gets one (nothing rolled): a roller that would
// make it and roll meanwhile waits for this transaction instead.
func (db *DB) markLateReadings(ctx context.Context, tx *sql.Tx, rs []*iotgate.Reading) error {
	late := db.Now().Add(-LateReading)
	var ids []int64
	var at []string
	for _, r := range rs {
		if r.ReceivedAt.Before(late) {
			ids = append(ids, r.DeviceID)
			at = append(at, r.ReceivedAt.UTC().Format(time.RFC3339Nano))
		}
	}
	if len(ids) == 0 {
		return nil
	}
	for _, q := range []string{`
		INSERT INTO reading_rollup_marks (device_id)
		SELECT id FROM devices WHERE id = ANY($1::bigint[]) ORDER BY id
		ON CONFLICT DO NOTHING`, `
		SELECT device_id FROM reading_rollup_marks WHERE device_id = ANY($1::bigint[])
		ORDER BY device_id FOR NO KEY UPDATE`,
	} {
		if _, err := tx.ExecContext(ctx, q, pq.Array(ids)); err != nil {
			return err
		}
	}
	// A NULL mark (nothing rolled) stays NULL.
	_, err := tx.ExecContext(ctx, `
		UPDATE reading_rollup_marks m SET rolled_until = v.hour
		FROM (SELECT id, min(date_bin('1 hour', t, timestamptz 'epoch')) AS hour
			FROM unnest($1::bigint[], $2::timestamptz[]) AS v(id, t) GROUP BY id) v
		WHERE m.device_id = v.id AND m.rolled_until > v.hour`, pq.Array(ids), pq.Array(at))
	return err
}

// RollStats is what one RollReadings did.
type RollStats struct {
	Devices int // devices rolled (once per transaction that rolled them)
	Hours   int // device-hours rolled (with or without readings)
	Rows    int // rollup rows written
	Idle    int // devices without readings to roll whose marks moved to end
}

// RollReadings rolls every device's readings up to end (truncated to the
// hour): for each device whose mark is before it, in transactions of at
// most a day of hours each, it replaces the rollup rows of the hours from
// its mark, then advances the mark. It starts no transaction after the
// first once budget has passed (0: no bound), so that a first roll of months of
// history goes in slices, between which the hours not rolled are read
// raw. Several instances may run it at once: a device's mark is locked
// (SKIP LOCKED) by the transaction rolling it, and one that is taken is
// left to the other. Errors: unavailable, timeout.
func (db *DB) RollReadings(ctx context.Context, end time.Time, budget time.Duration) (RollStats, error) {
	var st RollStats
	t0 := time.Now()
	end = end.UTC().Truncate(time.Hour)
	// Devices without a mark yet get one (nothing rolled).
	if _, err := db.db.ExecContext(ctx, `
		INSERT INTO reading_rollup_marks (device_id)
		SELECT d.id FROM devices d
		WHERE NOT EXISTS (SELECT 1 FROM reading_rollup_marks m WHERE m.device_id = d.id)
		ON CONFLICT DO NOTHING`); err != nil {
		return st, translate(err, "roll readings")
	}
	idle, err := db.skipIdle(ctx, end)
	if err != nil {
		return st, translate(err, "roll readings")
	}
	st.Idle = idle
	// The steady state first: devices whose marks are within a chunk of
	// end, many per transaction.
	for {
		if err := ctx.Err(); err != nil {
			return st, err
		}
		devs, hours, rows, err := db.rollBatch(ctx, end)
		if err != nil {
			return st, translate(err, "roll readings")
		}
		if devs == 0 {
			break
		}
		st.Devices += devs
		st.Hours += hours
		st.Rows += rows
		if budget > 0 && time.Since(t0) >= budget {
			return st, nil
		}
	}
	// Then the others (a first roll, or a mark moved far back), one
	// device and a chunk at a time.
	var after int64 // devices are taken in id order, each once a pass
	for {
		if err := ctx.Err(); err != nil {
			return st, err
		}
		dev, hours, rows, err := db.rollOne(ctx, after, end)
		if err != nil {
			return st, translate(err, "roll readings")
		}
		if dev == 0 {
			if after == 0 {
				return st, nil
			}
			after = 0 // another pass for the devices with more to roll
			continue
		}
		after = dev
		st.Devices++
		st.Hours += hours
		st.Rows += rows
		if budget > 0 && time.Since(t0) >= budget {
			return st, nil // after one transaction at least: a run makes progress
		}
	}
}

// rollBatch rolls, in one transaction, up to rollBatchSize devices whose
// marks are within rollChunk of end and not locked (the steady state: the
// last hour or two), each from its mark to end, and returns how many
// devices, hours and rows. As in rollOne, the marks are locked before the
// readings are read. One transaction and statement for many devices: one
// transaction per device cost 4.4 ms per device-hour of 360 readings,
// against 1.6 ms in batches of 100 (BenchmarkRollReadings).
func (db *DB) rollBatch(ctx context.Context, end time.Time) (devs, hours, rows int, err error) {
	tx, err := db.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, 0, 0, err
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `SET LOCAL jit = off`); err != nil { // see rollOne
		return 0, 0, 0, err
	}
	type mark struct {
		dev  int64
		from time.Time
	}
	marks, err := queryTx(ctx, tx, func(row rowScanner) (mark, error) {
		var m mark
		err := row.Scan(&m.dev, &m.from)
		return m, err
	}, `
		SELECT device_id, rolled_until FROM reading_rollup_marks
		WHERE rolled_until < $1 AND rolled_until >= $1 - $2::interval
		ORDER BY device_id LIMIT $3 FOR UPDATE SKIP LOCKED`,
		end, strconv.Itoa(int(rollChunk/time.Second))+" seconds", rollBatchSize)
	if err != nil || len(marks) == 0 {
		return 0, 0, 0, err
	}
	ids := make([]int64, len(marks))
	froms := make([]string, len(marks))
	earliest := end
	for i, m := range marks {
		ids[i], froms[i] = m.dev, m.from.UTC().Format(time.RFC3339Nano)
		hours += int(end.Sub(m.from) / time.Hour)
		if m.from.Before(earliest) {
			earliest = m.from
		}
	}
	if _, err := tx.ExecContext(ctx, `
		DELETE FROM reading_rollups r USING unnest($1::bigint[], $2::timestamptz[]) AS w(dev, lo)
		WHERE r.device_id = w.dev AND r.hour >= w.lo AND r.hour < $3`, pq.Array(ids), pq.Array(froms), end); err != nil {
		return 0, 0, 0, err
	}
	res, err := tx.ExecContext(ctx, rollSQL, pq.Array(ids), pq.Array(froms), end, rollupDepth, earliest)
	if err != nil {
		return 0, 0, 0, err
	}
	n, _ := res.RowsAffected()
	if _, err := tx.ExecContext(ctx, `UPDATE reading_rollup_marks SET rolled_until = $2 WHERE device_id = ANY($1::bigint[])`, pq.Array(ids), end); err != nil {
		return 0, 0, 0, err
	}
	return len(marks), hours, int(n), tx.Commit()
}

// skipIdle moves the marks of the devices without a reading since their
// mark (last_seen_at is the newest reading's received_at) to end, in one
// transaction rather than one each, and returns how many. As in rollOne,
// the marks are locked (those not taken by a roller or a late reading's
// transaction) before last_seen_at is read, in a later statement: a late
// reading committed before the lock is seen, one committed after moves
// the mark back itself.
func (db *DB) skipIdle(ctx context.Context, end time.Time) (int, error) {
	tx, err := db.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback()
	locked, err := queryTx(ctx, tx, scanInt64, `
		SELECT m.device_id FROM reading_rollup_marks m
		JOIN devices d ON d.id = m.device_id
		WHERE (m.rolled_until IS NULL OR m.rolled_until < $1)
			AND (d.last_seen_at IS NULL OR d.last_seen_at < m.rolled_until)
		ORDER BY m.device_id FOR UPDATE OF m SKIP LOCKED`, end)
	if err != nil || len(locked) == 0 {
		return 0, err
	}
	res, err := tx.ExecContext(ctx, `
		UPDATE reading_rollup_marks m SET rolled_until = $1
		FROM devices d
		WHERE m.device_id = ANY($2::bigint[]) AND d.id = m.device_id
			AND (m.rolled_until IS NULL OR m.rolled_until < $1)
			AND (d.last_seen_at IS NULL OR d.last_seen_at < m.rolled_until)`, end, pq.Array(locked))
	if err != nil {
		return 0, err
	}
	n, _ := res.RowsAffected()
	return int(n), tx.Commit()
}

// rollOne rolls at most rollChunk of the first device after after whose
// mark is before end and not locked, in one transaction, and returns it
// (0: none), the hours it rolled and the rows it wrote. The mark is locked
// first and the readings read in later statements (fresh snapshots): a
// late reading committed before the lock is rolled, and the transaction
// of one committed after it waits for this one to move the mark back.
func (db *DB) rollOne(ctx context.Context, after int64, end time.Time) (dev int64, hours, rows int, err error) {
	tx, err := db.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, 0, 0, err
	}
	defer tx.Rollback()
	// rollSQL's recursive walk is estimated at a million rows, which
	// makes PostgreSQL compile it (JIT) for each device-day: 340 ms of
	// compiling for a walk of 50 ms, measured.
	if _, err := tx.ExecContext(ctx, `SET LOCAL jit = off`); err != nil {
		return 0, 0, 0, err
	}
	var mark sql.NullTime
	err = tx.QueryRowContext(ctx, `
		SELECT device_id, rolled_until FROM reading_rollup_marks
		WHERE device_id > $1 AND (rolled_until IS NULL OR rolled_until < $2)
		ORDER BY device_id LIMIT 1 FOR UPDATE SKIP LOCKED`, after, end).Scan(&dev, &mark)
	if err == sql.ErrNoRows {
		return 0, 0, 0, nil
	}
	if err != nil {
		return 0, 0, 0, err
	}
	// Start at the mark; when there is more than a chunk to roll (a
	// first roll, or a late reading's), skip the hours without readings:
	// start at the hour of the first reading from the mark on.
	first := sql.NullTime{Time: mark.Time, Valid: mark.Valid}
	if !mark.Valid || end.Sub(mark.Time) > rollChunk {
		from := time.Time{}
		if mark.Valid {
			from = mark.Time
		}
		if err := tx.QueryRowContext(ctx, `
			SELECT date_bin('1 hour', min(received_at), timestamptz 'epoch') FROM readings
			WHERE device_id = $1 AND received_at >= $2 AND received_at < $3`, dev, from, end).Scan(&first); err != nil {
			return 0, 0, 0, err
		}
	}
	stop := end
	if first.Valid {
		start := first.Time.UTC()
		if stop.Sub(start) > rollChunk {
			stop = start.Add(rollChunk)
		}
		if mark.Valid {
			// Stale rows of the hours from the mark (rolled before a late
			// reading moved it back) go; the chunk's are rewritten.
			if _, err := tx.ExecContext(ctx, `DELETE FROM reading_rollups WHERE device_id = $1 AND hour >= $2 AND hour < $3`, dev, mark.Time, stop); err != nil {
				return 0, 0, 0, err
			}
		}
		res, err := tx.ExecContext(ctx, rollSQL, pq.Array([]int64{dev}), pq.Array([]string{start.Format(time.RFC3339Nano)}), stop, rollupDepth, start)
		if err != nil {
			return 0, 0, 0, err
		}
		n, _ := res.RowsAffected()
		rows = int(n)
		hours = int(stop.Sub(start) / time.Hour)
	}
	if _, err := tx.ExecContext(ctx, `UPDATE reading_rollup_marks SET rolled_until = $2 WHERE device_id = $1`, dev, stop); err != nil {
		return 0, 0, 0, err
	}
	return dev, hours, rows, tx.Commit()
}

// rollSQL writes the rollup rows of the readings of devices $1 from $2
// (one time each) to $3; $5 is the earliest of $2, a constant that lets
// PostgreSQL prune the partitions before it when it plans (3 ms of
// planning otherwise, with a month of daily partitions):
// the numbers of each reading's data are found by walking its objects
// (not arrays: no field path can address an array's item) to depth $4.
// Rows already there (stale, past the mark) are replaced.
//
// Three scans of the hour's readings (their pages are cached after the
// first) cost less than one walk: the top level with one jsonb_each per
// reading; then the nested objects, recursively, of the readings that
// have one (most have none: jsonb_path_exists tells without a row per
// key); then the readings' count. One recursive walk of every reading
// measured 2.6 times the time of these three together (17 µs a reading
// instead of 6.5).
const rollSQL = `
	WITH RECURSIVE w (dev, lo) AS MATERIALIZED (
		SELECT * FROM unnest($1::bigint[], $2::timestamptz[])
	), r (dev, hour, path, v) AS (
		SELECT t.device_id, date_bin('1 hour', t.received_at, timestamptz 'epoch'), ARRAY[e.key], e.value
		FROM w JOIN readings t ON t.device_id = w.dev AND t.received_at >= w.lo AND t.received_at >= $5 AND t.received_at < $3
			CROSS JOIN LATERAL jsonb_each(t.data) e
		WHERE jsonb_path_exists(t.data, 'strict $.* ? (@.type() == "object")', '{}', true)
			AND jsonb_typeof(e.value) = 'object'
		UNION ALL
		SELECT r.dev, r.hour, r.path || e.key, e.value
		FROM r CROSS JOIN LATERAL jsonb_each(CASE WHEN jsonb_typeof(r.v) = 'object' THEN r.v ELSE '{}' END) e
		WHERE cardinality(r.path) < $4
	)
	INSERT INTO reading_rollups (device_id, hour, path, n, sum, min, max)
	SELECT t.device_id, date_bin('1 hour', t.received_at, timestamptz 'epoch'), ARRAY[e.key], count(*), sum(e.value::numeric), min(e.value::numeric), max(e.value::numeric)
	FROM w JOIN readings t ON t.device_id = w.dev AND t.received_at >= w.lo AND t.received_at >= $5 AND t.received_at < $3
		CROSS JOIN LATERAL jsonb_each(CASE WHEN jsonb_typeof(t.data) = 'object' THEN t.data ELSE '{}' END) e
	WHERE jsonb_typeof(e.value) = 'number'
	GROUP BY 1, 2, 3
	UNION ALL
	SELECT dev, hour, path, count(*), sum(v::numeric), min(v::numeric), max(v::numeric)
	FROM r WHERE jsonb_typeof(v) = 'number' AND cardinality(path) > 1
	GROUP BY dev, hour, path
	UNION ALL
	SELECT t.device_id, date_bin('1 hour', t.received_at, timestamptz 'epoch'), '{}', count(*), NULL, NULL, NULL
	FROM w JOIN readings t ON t.device_id = w.dev AND t.received_at >= w.lo AND t.received_at >= $5 AND t.received_at < $3
	GROUP BY 1, 2
	ON CONFLICT (device_id, hour, path) DO UPDATE
		SET n = excluded.n, sum = excluded.sum, min = excluded.min, max = excluded.max`

// Roller keeps the hourly rollups of readings up to date: at start and
// every Every, it rolls the hours that ended RollupSettle ago. Every
// instance may run one (see RollReadings).
type Roller struct {
	DB *DB
	// Every is how often it runs (IOTGATE_ROLLUP_INTERVAL; 0:
	// DefaultRollEvery).
	Every time.Duration
	// Logger receives what was done and failures; nil discards them.
	Logger *slog.Logger
}

// Run rolls at once and then every Every until ctx ends.
func (r *Roller) Run(ctx context.Context) {
	every := r.Every
	if every <= 0 {
		every = DefaultRollEvery
	}
	log := r.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	iotgate.Every(ctx, every, func(ctx context.Context) {
		t0 := time.Now()
		st, err := r.DB.RollReadings(ctx, r.DB.Now().Add(-RollupSettle), RollBudget)
		if err != nil && ctx.Err() == nil {
			log.Warn("roll readings", "err", err)
		}
		if st.Hours > 0 {
			log.Info("rolled readings", "devices", st.Devices, "hours", st.Hours, "rows", st.Rows, "took", time.Since(t0))
		}
	})
}
