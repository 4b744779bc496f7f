package postgres

import (
	"context"
	"database/sql"
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

// InsertPresenceEvents records online/offline transitions, each with its
// presence event, in one transaction. Transitions of devices deleted
// meanwhile are skipped, events included.
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
	err := db.writeTx(ctx, func(tx *sql.Tx) ([]iotgate.Event, error) {
		// One snapshot: a device's transitions are all stored or all
		// skipped, so the devices returned say which.
		stored, err := queryTx(ctx, tx, scanInt64, `
			INSERT INTO presence_events (device_id, at, online)
			SELECT v.id, v.at, v.online
			FROM unnest($1::bigint[], $2::timestamptz[], $3::boolean[]) WITH ORDINALITY AS v(id, at, online, n)
			WHERE EXISTS (SELECT 1 FROM devices d WHERE d.id = v.id)
			ORDER BY v.n
			RETURNING device_id`,
			pq.Array(ids), pq.Array(at), pq.Array(online))
		if err != nil {
			return nil, err
		}
		kept := make(map[int64]bool, len(stored))
		for _, id := range stored {
			kept[id] = true
		}
		out := make([]iotgate.Event, 0, len(stored))
		for _, e := range evs {
			if kept[e.DeviceID] {
				out = append(out, iotgate.PresenceChangeEvent(e))
			}
		}
		return out, nil
	})
	return translate(err, "store presence events")
}
