package postgres

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"

	"github.com/lib/pq"

	"github.com/iotgate/iotgate"
)

// Readings are partitioned by day (UTC) of received_at (migration 0010).
// The partitions are contiguous from MINVALUE to MAXVALUE, so that an
// insert never fails for want of one, and there is no DEFAULT partition,
// so that PostgreSQL reads them in order (a newest-first page stops in the
// newest). In order: the first (readings_before_YYYYMMDD: everything
// before that day), the daily ones (readings_pYYYYMMDD), and the last
// (readings_from_YYYYMMDD: that day and after), out of which
// EnsurePartitions carves the days ahead. A span iotgate was not running
// for stays one partition (readings_pYYYYMMDD_YYYYMMDD).

const (
	// partitionsLockKey is the pg_advisory_xact_lock key that serializes
	// the transactions changing reading partitions across instances;
	// "iotgate2" in ASCII (eventsLockKey is "iotgate1").
	partitionsLockKey int64 = 0x696f746761746532
	// partitionLockTimeout bounds the wait for the table locks DETACH and
	// DROP need: inserts and history queries queue behind a waiting DDL,
	// so it gives up early and the next run tries again.
	partitionLockTimeout = "2s"
	day                  = 24 * time.Hour
)

// partition is a partition of readings: its name and range; from is nil
// for MINVALUE, to for MAXVALUE.
type partition struct {
	name     string
	from, to *time.Time
}

// readingPartitions lists the partitions of readings in order.
func readingPartitions(ctx context.Context, tx *sql.Tx) ([]partition, error) {
	return queryTx(ctx, tx, func(r rowScanner) (partition, error) {
		var p partition
		var from, to sql.NullTime
		err := r.Scan(&p.name, &from, &to)
		if from.Valid {
			t := from.Time.UTC()
			p.from = &t
		}
		if to.Valid {
			t := to.Time.UTC()
			p.to = &t
		}
		return p, err
	}, `
		SELECT c.relname,
			substring(b.expr FROM 'FROM \(''([^'']+)''\)')::timestamptz,
			substring(b.expr FROM 'TO \(''([^'']+)''\)')::timestamptz
		FROM pg_inherits i
		JOIN pg_class c ON c.oid = i.inhrelid
		CROSS JOIN LATERAL (SELECT pg_get_expr(c.relpartbound, c.oid) AS expr) AS b
		WHERE i.inhparent = 'readings'::regclass
		ORDER BY 2 NULLS FIRST`)
}

// partitionTx runs f in a transaction that holds the partitions lock and
// waits at most partitionLockTimeout for any table lock.
func (db *DB) partitionTx(ctx context.Context, f func(tx *sql.Tx) error) error {
	return db.writeTx(ctx, func(tx *sql.Tx) ([]iotgate.Event, error) {
		if _, err := tx.ExecContext(ctx, `SELECT set_config('lock_timeout', $1, true), pg_advisory_xact_lock($2)`,
			partitionLockTimeout, partitionsLockKey); err != nil {
			return nil, err
		}
		return nil, f(tx)
	})
}

// EnsurePartitions makes sure that each day (UTC) from the day of now to
// days days after it has its own partition of readings, and returns the
// names of the partitions it created. The last partition is detached,
// the new days and a new last partition are made of it (moving whatever
// readings it had for them), and what is left of it, before the day of
// now, stays as one partition (or goes if that is nothing). This holds an
// ACCESS EXCLUSIVE lock on readings for as long as it takes to move the
// last partition's rows (normally none): once a day in practice.
//
// Several instances may call it at once: they take turns, and a
// partition is created once. Errors: unavailable, timeout (a table lock
// not had within 2 s).
func (db *DB) EnsurePartitions(ctx context.Context, now time.Time, days int) ([]string, error) {
	var created []string
	err := db.partitionTx(ctx, func(tx *sql.Tx) error {
		created = nil
		parts, err := readingPartitions(ctx, tx)
		if err != nil {
			return err
		}
		today := now.UTC().Truncate(day)
		end := today.Add(time.Duration(days+1) * day)
		if len(parts) == 0 || parts[len(parts)-1].to != nil {
			return iotgate.Errorf(iotgate.EInternal, "readings has no partition up to MAXVALUE")
		}
		last := parts[len(parts)-1]
		if last.from == nil || !last.from.Before(end) {
			return nil
		}
		if _, err := tx.ExecContext(ctx, `ALTER TABLE readings DETACH PARTITION `+pq.QuoteIdentifier(last.name)); err != nil {
			return err
		}
		first := *last.from
		if first.Before(today) {
			first = today
		}
		for d := first; d.Before(end); d = d.Add(day) {
			name := "readings_p" + d.Format("20060102")
			if err := createPartition(ctx, tx, name, &d, ptr(d.Add(day)), last.name); err != nil {
				return fmt.Errorf("partition %s: %w", name, err)
			}
			created = append(created, name)
		}
		tail := "readings_from_" + end.Format("20060102")
		if err := createPartition(ctx, tx, tail, &end, nil, last.name); err != nil {
			return fmt.Errorf("partition %s: %w", tail, err)
		}
		created = append(created, tail)
		if !last.from.Before(today) {
			// Every row it had is in the new partitions.
			_, err := tx.ExecContext(ctx, `DROP TABLE `+pq.QuoteIdentifier(last.name))
			return err
		}
		// The days before today iotgate did not run on.
		gap := "readings_p" + last.from.Format("20060102") + "_" + today.Format("20060102")
		if _, err := tx.ExecContext(ctx, `ALTER TABLE `+pq.QuoteIdentifier(last.name)+` RENAME TO `+pq.QuoteIdentifier(gap)); err != nil {
			return err
		}
		return attachPartition(ctx, tx, gap, last.from, &today)
	})
	return created, translate(err, "create reading partitions")
}

func ptr[T any](v T) *T { return &v }

// bound returns a partition bound: t, or MINVALUE/MAXVALUE when nil.
func bound(t *time.Time, none string) string {
	if t == nil {
		return none
	}
	return pq.QuoteLiteral(t.Format(time.RFC3339Nano))
}

// createPartition creates a table for [from, to) (nil: MINVALUE,
// MAXVALUE), moves into it the rows of that range from the detached
// partition source ("": none) and attaches it.
func createPartition(ctx context.Context, tx *sql.Tx, name string, from, to *time.Time, source string) error {
	id := pq.QuoteIdentifier(name)
	if _, err := tx.ExecContext(ctx, `CREATE TABLE `+id+` (LIKE readings INCLUDING DEFAULTS)`); err != nil {
		return err
	}
	if source != "" {
		where := []string{"true"}
		if from != nil {
			where = append(where, "received_at >= "+bound(from, ""))
		}
		if to != nil {
			where = append(where, "received_at < "+bound(to, ""))
		}
		if _, err := tx.ExecContext(ctx, `WITH moved AS (DELETE FROM `+pq.QuoteIdentifier(source)+
			` WHERE `+strings.Join(where, " AND ")+` RETURNING *) INSERT INTO `+id+` SELECT * FROM moved`); err != nil {
			return err
		}
	}
	return attachPartition(ctx, tx, name, from, to)
}

// attachPartition attaches table name as the partition of [from, to).
// It takes a SHARE UPDATE EXCLUSIVE lock on readings and scans the table
// to check its rows (new tables are empty or nearly).
func attachPartition(ctx context.Context, tx *sql.Tx, name string, from, to *time.Time) error {
	_, err := tx.ExecContext(ctx, `ALTER TABLE readings ATTACH PARTITION `+pq.QuoteIdentifier(name)+
		` FOR VALUES FROM (`+bound(from, "MINVALUE")+`) TO (`+bound(to, "MAXVALUE")+`)`)
	return err
}

// DropReadingPartitions drops the partitions of readings whose every
// reading was received before before (their upper bound is at or before
// it), and returns their names. As the first partition must start at
// MINVALUE, a new empty one then takes the place of those dropped. DROP
// takes an ACCESS EXCLUSIVE lock on readings for a moment.
// Errors: unavailable, timeout.
func (db *DB) DropReadingPartitions(ctx context.Context, before time.Time) ([]string, error) {
	var dropped []string
	err := db.partitionTx(ctx, func(tx *sql.Tx) error {
		dropped = nil
		parts, err := readingPartitions(ctx, tx)
		if err != nil {
			return err
		}
		n := 0 // partitions to drop: the first n
		for n < len(parts) && parts[n].to != nil && !parts[n].to.After(before) {
			n++
		}
		if n == 0 || n == len(parts) {
			return nil
		}
		if n == 1 {
			// Only the first partition: keep it if it's empty, rather
			// than make it again at each call.
			var used bool
			if err := tx.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM `+pq.QuoteIdentifier(parts[0].name)+`)`).Scan(&used); err != nil || !used {
				return err
			}
		}
		for _, p := range parts[:n] {
			if _, err := tx.ExecContext(ctx, `DROP TABLE `+pq.QuoteIdentifier(p.name)); err != nil {
				return err
			}
			dropped = append(dropped, p.name)
		}
		next := parts[n].from
		// The rollups of the readings dropped go with them (hours are
		// whole within a day).
		if _, err := tx.ExecContext(ctx, `DELETE FROM reading_rollups WHERE hour < $1`, next); err != nil {
			return err
		}
		return createPartition(ctx, tx, "readings_before_"+next.Format("20060102"), nil, next, "")
	})
	return dropped, translate(err, "drop reading partitions")
}

// TrimRejections deletes at most limit of the oldest rejections received
// before before, and returns how many. Errors: unavailable, timeout.
func (db *DB) TrimRejections(ctx context.Context, before time.Time, limit int) (int, error) {
	return db.deleteCounted(ctx, "trim rejections", `
		DELETE FROM rejections WHERE id IN (
			SELECT id FROM rejections WHERE received_at < $1 ORDER BY received_at LIMIT $2)`, before, limit)
}

// TrimCommands deletes at most limit of the oldest finished commands
// (with their history) created before before, and returns how many.
// Errors: unavailable, timeout.
func (db *DB) TrimCommands(ctx context.Context, before time.Time, limit int) (int, error) {
	return db.deleteCounted(ctx, "trim commands", `
		DELETE FROM commands WHERE id IN (
			SELECT id FROM commands
			WHERE status IN ('succeeded', 'failed', 'timed_out', 'expired', 'canceled') AND created_at < $1
			ORDER BY created_at LIMIT $2)`, before, limit)
}

// deleteCounted runs a delete of at most limit rows older than before and
// returns how many rows it deleted.
func (db *DB) deleteCounted(ctx context.Context, op, q string, before time.Time, limit int) (int, error) {
	if limit <= 0 {
		return 0, nil
	}
	res, err := db.db.ExecContext(ctx, q, before, limit)
	if err != nil {
		return 0, translate(err, op)
	}
	n, err := res.RowsAffected()
	return int(n), translate(err, op)
}
