package postgres

import (
	"context"
	"database/sql"
	"time"

	"github.com/iotgate/iotgate"
)

var (
	_ iotgate.InstanceStore  = (*DB)(nil)
	_ iotgate.DeliveryClaims = (*DB)(nil)
)

// millis renders d for a "$n * interval '1 millisecond'" parameter.
func millis(d time.Duration) int64 { return d.Milliseconds() }

// Heartbeat upserts the instance's row, stamped with PostgreSQL's clock.
func (db *DB) Heartbeat(ctx context.Context, in iotgate.Instance) error {
	_, err := db.db.ExecContext(ctx, `
		INSERT INTO instances (id, started_at, seen_at, streaming, role)
		VALUES ($1, $2, statement_timestamp(), $3, $4)
		ON CONFLICT (id) DO UPDATE SET seen_at = statement_timestamp(), streaming = $3, role = $4`,
		in.ID, in.StartedAt.UTC(), in.Streaming, string(in.Role))
	return translate(err, "heartbeat")
}

// Instances returns the instances seen within the last `within`, by ID.
func (db *DB) Instances(ctx context.Context, within time.Duration) ([]iotgate.Instance, error) {
	return queryRows(ctx, db.db, "list instances", func(row rowScanner) (iotgate.Instance, error) {
		var in iotgate.Instance
		var role string
		err := row.Scan(&in.ID, &in.StartedAt, &in.SeenAt, &in.Streaming, &role)
		in.Role, in.StartedAt, in.SeenAt = iotgate.Role(role), in.StartedAt.UTC(), in.SeenAt.UTC()
		return in, err
	}, `SELECT id, started_at, seen_at, streaming, role FROM instances
		WHERE seen_at >= statement_timestamp() - $1 * interval '1 millisecond' ORDER BY id`, millis(within))
}

// ReapInstances deletes the instances not seen within `within` and fails
// their unfinished commands, in one transaction: two survivors reaping at
// once each get a disjoint set (the DELETE locks the rows).
func (db *DB) ReapInstances(ctx context.Context, within time.Duration, now time.Time, code, reason string) ([]string, int, error) {
	var ids []string
	var failed int
	err := db.writeTx(ctx, func(tx *sql.Tx) ([]iotgate.Event, error) {
		var err error
		ids, err = queryTx(ctx, tx, scanString, `DELETE FROM instances
			WHERE seen_at < statement_timestamp() - $1 * interval '1 millisecond' RETURNING id`, millis(within))
		if err != nil || len(ids) == 0 {
			return nil, err
		}
		cs, err := failCommandsOf(ctx, tx, ids, now, code, reason)
		failed = len(cs)
		return commandEvents(cs), err
	})
	if err != nil {
		return nil, 0, translate(err, "reap instances")
	}
	return ids, failed, nil
}

// Leave deletes the instance's row.
func (db *DB) Leave(ctx context.Context, id string) error {
	_, err := db.db.ExecContext(ctx, `DELETE FROM instances WHERE id = $1`, id)
	return translate(err, "leave")
}

// ClaimDelivery takes the device's delivery lease if it is free, run out
// or already the instance's, in one statement.
func (db *DB) ClaimDelivery(ctx context.Context, deviceJID, instance string, ttl time.Duration) (bool, error) {
	got, err := queryRows(ctx, db.db, "claim delivery", scanString, `
		INSERT INTO delivery_claims (device_id, instance, expires_at)
		SELECT d.id, $2, statement_timestamp() + $3 * interval '1 millisecond' FROM devices d WHERE d.jid = $1
		ON CONFLICT (device_id) DO UPDATE SET instance = EXCLUDED.instance, expires_at = EXCLUDED.expires_at
			WHERE delivery_claims.instance = EXCLUDED.instance OR delivery_claims.expires_at < statement_timestamp()
		RETURNING instance`, deviceJID, instance, millis(ttl))
	if err != nil {
		return false, err
	}
	return len(got) == 1, nil
}

// ReleaseDelivery deletes the device's lease if the instance holds it.
func (db *DB) ReleaseDelivery(ctx context.Context, deviceJID, instance string) error {
	_, err := db.db.ExecContext(ctx, `DELETE FROM delivery_claims c USING devices d
		WHERE d.id = c.device_id AND d.jid = $1 AND c.instance = $2`, deviceJID, instance)
	return translate(err, "release delivery")
}
