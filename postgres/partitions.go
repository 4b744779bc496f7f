package postgres

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/lib/pq"

	"github.com/iotgate/iotgate"
)

// Readings are partitioned by day (UTC) of received_at (migration 0010):
// the table that existed before covers everything up to its bound, daily
// partitions named readings_pYYYYMMDD follow, created ahead by
// EnsurePartitions, and readings_default takes what no partition covers.

const (
	// partitionsLockKey is the pg_advisory_xact_lock key that serializes
	// the transactions creating and dropping reading partitions across
	// instances; "iotgate2" in ASCII (eventsLockKey is "iotgate1").
	partitionsLockKey int64 = 0x696f746761746532
	// partitionLockTimeout bounds the wait for the table locks ATTACH and
	// DROP need: inserts and history queries queue behind a waiting DDL,
	// so it gives up early and the next run tries again.
	partitionLockTimeout = "2s"
	// defaultPartition is the partition of the readings no other covers.
	defaultPartition = "readings_default"
	day              = 24 * time.Hour
)

// partition is a partition of readings: its name and range; From is nil
// for the first one (MINVALUE), both are nil for the default partition.
type partition struct {
	name     string
	from, to *time.Time
}

// readingPartitions lists the partitions of readings.
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
		ORDER BY 3 NULLS LAST`)
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

// EnsurePartitions creates the daily partitions of readings from the day
// of now (UTC) to days days after it that no partition covers yet, and
// returns their names. Readings the default partition holds for such a
// day move into the new partition. Several instances may call it at once:
// they take turns, and a partition is created once. Errors: unavailable,
// timeout (a table lock not had within 2 s).
func (db *DB) EnsurePartitions(ctx context.Context, now time.Time, days int) ([]string, error) {
	var created []string
	err := db.partitionTx(ctx, func(tx *sql.Tx) error {
		created = nil
		parts, err := readingPartitions(ctx, tx)
		if err != nil {
			return err
		}
		first := now.UTC().Truncate(day)
		for d := first; !d.After(first.Add(time.Duration(days) * day)); d = d.Add(day) {
			if covered(parts, d, d.Add(day)) {
				continue
			}
			name := "readings_p" + d.Format("20060102")
			if err := createPartition(ctx, tx, name, d, d.Add(day)); err != nil {
				return fmt.Errorf("partition %s: %w", name, err)
			}
			created = append(created, name)
		}
		return nil
	})
	return created, translate(err, "create reading partitions")
}

// covered reports whether a partition other than the default overlaps
// [from, to).
func covered(parts []partition, from, to time.Time) bool {
	for _, p := range parts {
		if p.to == nil {
			continue
		}
		if p.to.After(from) && (p.from == nil || p.from.Before(to)) {
			return true
		}
	}
	return false
}

// createPartition creates a table for [from, to), moves the default
// partition's rows of that range into it and attaches it. ATTACH, unlike
// CREATE TABLE ... PARTITION OF, takes only a SHARE UPDATE EXCLUSIVE lock
// on readings: inserts and queries go on meanwhile.
func createPartition(ctx context.Context, tx *sql.Tx, name string, from, to time.Time) error {
	lo, hi := pq.QuoteLiteral(from.Format(time.RFC3339)), pq.QuoteLiteral(to.Format(time.RFC3339))
	id := pq.QuoteIdentifier(name)
	for _, q := range []string{
		`CREATE TABLE ` + id + ` (LIKE readings INCLUDING DEFAULTS)`,
		`WITH moved AS (DELETE FROM ` + defaultPartition + ` WHERE received_at >= ` + lo + ` AND received_at < ` + hi + ` RETURNING *)
		INSERT INTO ` + id + ` SELECT * FROM moved`,
		`ALTER TABLE readings ATTACH PARTITION ` + id + ` FOR VALUES FROM (` + lo + `) TO (` + hi + `)`,
	} {
		if _, err := tx.ExecContext(ctx, q); err != nil {
			return err
		}
	}
	return nil
}

// DropReadingPartitions drops the partitions of readings whose every
// reading was received before before (their upper bound is at or before
// it), the default partition aside, and returns their names. DROP takes
// an ACCESS EXCLUSIVE lock on readings for a moment.
// Errors: unavailable, timeout.
func (db *DB) DropReadingPartitions(ctx context.Context, before time.Time) ([]string, error) {
	var dropped []string
	err := db.partitionTx(ctx, func(tx *sql.Tx) error {
		dropped = nil
		parts, err := readingPartitions(ctx, tx)
		if err != nil {
			return err
		}
		for _, p := range parts {
			if p.to == nil || p.to.After(before) {
				continue
			}
			if _, err := tx.ExecContext(ctx, `DROP TABLE `+pq.QuoteIdentifier(p.name)); err != nil {
				return err
			}
			dropped = append(dropped, p.name)
		}
		return nil
	})
	return dropped, translate(err, "drop reading partitions")
}

// TrimDefaultReadings deletes at most limit readings received before
// before from the default partition, and returns how many.
// Errors: unavailable, timeout.
func (db *DB) TrimDefaultReadings(ctx context.Context, before time.Time, limit int) (int, error) {
	return db.deleteCounted(ctx, "trim readings", `
		DELETE FROM `+defaultPartition+` WHERE ctid IN (
			SELECT ctid FROM `+defaultPartition+` WHERE received_at < $1 LIMIT $2)`, before, limit)
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
