package postgres

import (
	"context"
	"time"

	"github.com/lib/pq"

	"github.com/iotgate/iotgate/devices"
)

var _ devices.PresenceStore = (*DB)(nil)

// DeviceJIDs returns every registered JID, for presence probes after a
// (re)connection.
func (db *DB) DeviceJIDs(ctx context.Context) ([]string, error) {
	rows, err := db.db.QueryContext(ctx, `SELECT jid FROM devices ORDER BY jid`)
	if err != nil {
		return nil, translate(err, "list device JIDs")
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var j string
		if err := rows.Scan(&j); err != nil {
			return nil, translate(err, "list device JIDs")
		}
		out = append(out, j)
	}
	return out, translate(rows.Err(), "list device JIDs")
}

// InsertPresenceEvents records online/offline transitions. Events of
// devices deleted meanwhile are skipped.
func (db *DB) InsertPresenceEvents(ctx context.Context, evs []devices.PresenceEvent) error {
	if len(evs) == 0 {
		return nil
	}
	ids := make([]int64, len(evs))
	at := make([]string, len(evs))
	online := make([]bool, len(evs))
	for i, e := range evs {
		ids[i], online[i] = e.DeviceID, e.Online
		at[i] = e.At.UTC().Format(time.RFC3339Nano)
	}
	_, err := db.db.ExecContext(ctx, `
		INSERT INTO presence_events (device_id, at, online)
		SELECT v.id, v.at, v.online
		FROM unnest($1::bigint[], $2::timestamptz[], $3::boolean[]) AS v(id, at, online)
		WHERE EXISTS (SELECT 1 FROM devices d WHERE d.id = v.id)`,
		pq.Array(ids), pq.Array(at), pq.Array(online))
	return translate(err, "store presence events")
}
