package postgres

import (
	"context"
	"database/sql"
	"slices"
	"strings"
)

// Batches of rows that belong to devices (readings, rejections, presence
// history), written with one insert whatever their number.

// storedIDs are the ids an insert of a batch returned, by device, in
// ascending order. An insert ... SELECT ... ORDER BY takes ids in that
// order and its semi-join (the device still exists) keeps or skips all of
// a device's rows in one snapshot, so a device's ids, ascending, belong
// to its items in batch order, while RETURNING promises no order.
type storedIDs map[int64][]int64

// next returns the id of device dev's next item in batch order; 0 when
// its items were skipped.
func (s storedIDs) next(dev int64) int64 {
	got := s[dev]
	if len(got) == 0 {
		return 0
	}
	s[dev] = got[1:]
	return got[0]
}

// Inserts of a batch's rows for devices, skipping those of devices
// deleted meanwhile.
var (
	insertRejectionRows = insertOfDevices("rejections",
		[]string{"received_at", "via", "reason", "payload"}, []string{"timestamptz", "text", "text", "text"})
	insertPresenceRows = insertOfDevices("presence_events",
		[]string{"at", "online"}, []string{"timestamptz", "boolean"})
)

// insertOfDevices returns an insert into table of rows given as arrays
// (device_id, then cols of types), one statement whatever the batch size.
// Rows of devices that don't exist (deleted since they were queued) are
// skipped; the others are inserted in the arrays' order (ORDER BY the
// ordinality: the semi-join may reorder rows), which orders rows with the
// same time and gives each device's rows ascending ids. It returns
// (device_id, id) per row.
func insertOfDevices(table string, cols, types []string) string {
	return `INSERT INTO ` + table + ` (device_id, ` + strings.Join(cols, ", ") + `)
		SELECT u.device_id, u.` + strings.Join(cols, ", u.") + `
		FROM ` + unnestArgs(1, append([]string{"bigint"}, types...)) + `
			WITH ORDINALITY AS u(device_id, ` + strings.Join(cols, ", ") + `, n)
		WHERE EXISTS (SELECT 1 FROM devices d WHERE d.id = u.device_id)
		ORDER BY u.n
		RETURNING device_id, id`
}

// insertReturningDevice runs an insert returning (device_id, id) and
// collects its ids by device. The statement is prepared: its text is one
// of a few, and it runs on the hot path.
func (db *DB) insertReturningDevice(ctx context.Context, tx *sql.Tx, q string, args ...any) (storedIDs, error) {
	st, err := db.txStmt(ctx, tx, q)
	if err != nil {
		return nil, err
	}
	rs, err := st.QueryContext(ctx, args...)
	if err != nil {
		return nil, err
	}
	rows, err := scanAll(rs, func(r rowScanner) (idPair, error) {
		var p idPair
		return p, r.Scan(&p.dev, &p.id)
	})
	if err != nil {
		return nil, err
	}
	stored := storedIDs{}
	for _, p := range rows {
		stored[p.dev] = append(stored[p.dev], p.id)
	}
	for _, got := range stored {
		slices.Sort(got)
	}
	return stored, nil
}

// idPair is a row's device_id and id.
type idPair struct{ dev, id int64 }
