package postgres

import (
	"context"
	"time"

	"github.com/lib/pq"

	"github.com/iotgate/iotgate"
)

var _ iotgate.PresenceStore = (*DB)(nil)

// DeviceJIDs returns every registered JID, for presence probes after a
// (re)connection.
func (db *DB) DeviceJIDs(ctx context.Context) ([]string, error) {
	return queryRows(ctx, db.db, "list device JIDs", scanString, `SELECT jid FROM devices ORDER BY jid`)
}

// InsertPresenceEvents records online/offline transitions. Events of
// devices deleted meanwhile are skipped.
func (db *DB) InsertPresenceEvents(ctx context.Context, evs []iotgate.PresenceEvent) error {
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
