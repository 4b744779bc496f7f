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
		stored, err := db.insertReturningDevice(ctx, tx, insertPresenceRows,
			pq.Array(ids), pq.Array(at), pq.Array(online))
		if err != nil {
			return nil, err
		}
		out := make([]iotgate.Event, 0, len(evs))
		for _, e := range evs {
			if len(stored[e.DeviceID]) > 0 {
				out = append(out, iotgate.PresenceChangeEvent(e))
			}
		}
		return out, nil
	})
	return translate(err, "store presence events")
}
