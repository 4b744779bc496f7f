package postgres

import (
	"context"
	"database/sql"
	"slices"
	"time"

	"github.com/lib/pq"

	"github.com/iotgate/iotgate"
)

var _ iotgate.PresenceStore = (*DB)(nil)

// DeviceJIDs returns up to limit registered JIDs after after, in order,
// for presence probes after a (re)connection: a page at a time, so that a
// million devices are not all in memory at once.
func (db *DB) DeviceJIDs(ctx context.Context, after string, limit int) ([]string, error) {
	return queryRows(ctx, db.db, "list device JIDs", scanString,
		`SELECT jid FROM devices WHERE jid > $1 ORDER BY jid LIMIT $2`, after, limit)
}

// InsertPresenceEvents records online/offline transitions, each with its
// presence event, in one transaction. Transitions of devices deleted
// meanwhile are skipped, events included.
func (db *DB) InsertPresenceEvents(ctx context.Context, evs []iotgate.PresenceEvent) error {
	if len(evs) == 0 {
		return nil
	}
	err := db.writeTx(ctx, func(tx *sql.Tx) ([]iotgate.Event, error) {
		return db.insertPresenceEvents(ctx, tx, evs)
	})
	return translate(err, "store presence events")
}

// insertPresenceEvents inserts the history rows of evs and returns the
// presence events of those stored.
func (db *DB) insertPresenceEvents(ctx context.Context, tx *sql.Tx, evs []iotgate.PresenceEvent) ([]iotgate.Event, error) {
	if len(evs) == 0 {
		return nil, nil
	}
	ids := make([]int64, len(evs))
	at := make([]string, len(evs))
	online := make([]bool, len(evs))
	for i, e := range evs {
		ids[i], online[i] = e.DeviceID, e.Online
		at[i] = e.At.UTC().Format(time.RFC3339Nano)
	}
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
}

// lockPresence serializes the presence writes of these devices across
// instances until tx ends: a transaction-scoped advisory lock per device
// (not the devices row: readings update it), taken in one order so that
// two batches never deadlock. It returns those still registered, by id,
// with their JID; they stay registered until tx ends.
func lockPresence(ctx context.Context, tx *sql.Tx, ids []int64) (map[int64]string, error) {
	if _, err := tx.ExecContext(ctx, `
		SELECT pg_advisory_xact_lock(hashtext('iotgate.presence'), h)
		FROM (SELECT DISTINCT hashint8(id) AS h FROM unnest($1::bigint[]) AS id ORDER BY h) AS l`,
		pq.Array(ids)); err != nil {
		return nil, err
	}
	// KEY SHARE keeps a device from being deleted under the resources
	// about to be written, without holding up its readings.
	devs, err := queryTx(ctx, tx, func(r rowScanner) (presenceRes, error) {
		var p presenceRes
		return p, r.Scan(&p.dev, &p.JID)
	}, `SELECT id, jid FROM devices WHERE id = ANY($1) FOR KEY SHARE`, pq.Array(ids))
	out := make(map[int64]string, len(devs))
	for _, d := range devs {
		out[d.dev] = d.JID
	}
	return out, err
}

// presenceRes is a stored resource of a device.
type presenceRes struct {
	dev int64
	iotgate.Resource
}

const resourceColumns = `r.jid, r.show, r.status, r.priority, r.since`

func scanResource(r rowScanner, first any) (iotgate.Resource, error) {
	var res iotgate.Resource
	err := r.Scan(first, &res.JID, &res.Show, &res.Status, &res.Priority, &res.Since)
	res.Since = res.Since.UTC()
	return res, err
}

// ApplyPresence applies presence changes in order in one transaction.
// Under each device's presence lock it reads the device's resources as
// they are now (whatever instance wrote them), replays the changes on
// them, writes the result and records each transition once: a second
// instance applying changes of the same device waits for the lock and
// then sees the first one's rows.
func (db *DB) ApplyPresence(ctx context.Context, cs []iotgate.PresenceChange) error {
	if len(cs) == 0 {
		return nil
	}
	ids := make([]int64, 0, len(cs))
	for _, c := range cs {
		ids = append(ids, c.DeviceID)
	}
	slices.Sort(ids)
	ids = slices.Compact(ids)
	err := db.writeTx(ctx, func(tx *sql.Tx) ([]iotgate.Event, error) {
		jids, err := lockPresence(ctx, tx, ids)
		if err != nil {
			return nil, err
		}
		cur := make(map[int64]map[string]iotgate.Resource, len(jids))
		for id := range jids {
			cur[id] = map[string]iotgate.Resource{}
		}
		rs, err := queryTx(ctx, tx, func(r rowScanner) (presenceRes, error) {
			var p presenceRes
			var err error
			p.Resource, err = scanResource(r, &p.dev)
			return p, err
		}, `SELECT r.device_id, `+resourceColumns+` FROM device_resources r WHERE r.device_id = ANY($1)`, pq.Array(ids))
		if err != nil {
			return nil, err
		}
		for _, r := range rs {
			if m := cur[r.dev]; m != nil {
				m[r.JID] = r.Resource
			}
		}
		// Replay in order: every transition is recorded, each resource
		// touched ends as its last change says, and those gone (left, or
		// all ended by the bare JID) are deleted.
		type key struct {
			dev int64
			jid string
		}
		touched := map[key]bool{}
		var trans []iotgate.PresenceEvent
		var changed []string
		for _, c := range cs {
			res, ok := cur[c.DeviceID]
			if !ok {
				continue // deleted
			}
			was := len(res) > 0
			iotgate.ApplyPresence(res, c.PresenceUpdate, c.At)
			touched[key{c.DeviceID, c.From}] = true
			if online := len(res) > 0; online != was {
				trans = append(trans, iotgate.PresenceEvent{DeviceID: c.DeviceID, DeviceJID: jids[c.DeviceID],
					At: c.At, Online: online, Resources: iotgate.SortedResources(res)})
			}
		}
		var up upsertResources
		var delDev []int64
		var delJID []string
		for k := range touched {
			if r, ok := cur[k.dev][k.jid]; ok {
				up.add(k.dev, r)
			}
		}
		for _, r := range rs {
			if _, ok := cur[r.dev][r.JID]; !ok {
				delDev, delJID = append(delDev, r.dev), append(delJID, r.JID)
			}
		}
		for id := range cur {
			changed = append(changed, jids[id])
		}
		if len(delDev) > 0 {
			if _, err := tx.ExecContext(ctx, `
				DELETE FROM device_resources r USING unnest($1::bigint[], $2::text[]) AS d(device_id, jid)
				WHERE r.device_id = d.device_id AND r.jid = d.jid`, pq.Array(delDev), pq.Array(delJID)); err != nil {
				return nil, err
			}
		}
		if err := up.exec(ctx, tx); err != nil {
			return nil, err
		}
		evs, err := db.insertPresenceEvents(ctx, tx, trans)
		if err != nil {
			return nil, err
		}
		return evs, notifyChanges(ctx, tx, ChangePresence, changed...)
	})
	return translate(err, "apply presence")
}

// upsertResources collects resources to write in one statement.
type upsertResources struct {
	dev               []int64
	jid, show, status []string
	prio              []int64
	since             []string
}

func (u *upsertResources) add(dev int64, r iotgate.Resource) {
	u.dev = append(u.dev, dev)
	u.jid, u.show, u.status = append(u.jid, r.JID), append(u.show, r.Show), append(u.status, r.Status)
	u.prio = append(u.prio, int64(r.Priority))
	u.since = append(u.since, r.Since.UTC().Format(time.RFC3339Nano))
}

func (u *upsertResources) exec(ctx context.Context, tx *sql.Tx) error {
	if len(u.dev) == 0 {
		return nil
	}
	_, err := tx.ExecContext(ctx, `
		INSERT INTO device_resources (device_id, jid, show, status, priority, since, updated_at)
		SELECT *, now() FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::integer[], $6::timestamptz[])
		ON CONFLICT (device_id, jid) DO UPDATE SET
			show = EXCLUDED.show, status = EXCLUDED.status, priority = EXCLUDED.priority,
			updated_at = EXCLUDED.updated_at`,
		pq.Array(u.dev), pq.Array(u.jid), pq.Array(u.show), pq.Array(u.status), pq.Array(u.prio),
		pq.Array(u.since))
	return err
}

// ExpirePresence removes the resources no change confirmed within the
// last age, by PostgreSQL's clock (it dates them: the instances' clocks
// may differ), and records the devices this leaves offline, at at; every
// device touched is notified.
func (db *DB) ExpirePresence(ctx context.Context, age time.Duration, at time.Time) error {
	err := db.writeTx(ctx, func(tx *sql.Tx) ([]iotgate.Event, error) {
		var before time.Time
		if err := tx.QueryRowContext(ctx, `SELECT now() - $1 * interval '1 microsecond'`, age.Microseconds()).Scan(&before); err != nil {
			return nil, err
		}
		ids, err := queryTx(ctx, tx, func(r rowScanner) (int64, error) {
			var id int64
			return id, r.Scan(&id)
		}, `SELECT DISTINCT device_id FROM device_resources WHERE updated_at < $1`, before)
		if err != nil || len(ids) == 0 {
			return nil, err
		}
		jids, err := lockPresence(ctx, tx, ids)
		if err != nil {
			return nil, err
		}
		// After the lock, a fresh snapshot: rows confirmed meanwhile stay.
		type gone struct {
			dev     int64
			offline bool
		}
		gs, err := queryTx(ctx, tx, func(r rowScanner) (gone, error) {
			var g gone
			return g, r.Scan(&g.dev, &g.offline)
		}, `
			DELETE FROM device_resources r WHERE r.device_id = ANY($1) AND r.updated_at < $2
			RETURNING r.device_id, NOT EXISTS (SELECT 1 FROM device_resources o
				WHERE o.device_id = r.device_id AND o.updated_at >= $2)`, pq.Array(ids), before)
		if err != nil {
			return nil, err
		}
		var trans []iotgate.PresenceEvent
		var changed []string
		seen := map[int64]bool{}
		for _, g := range gs {
			jid, ok := jids[g.dev]
			if seen[g.dev] || !ok {
				continue
			}
			seen[g.dev] = true
			changed = append(changed, jid)
			if g.offline {
				trans = append(trans, iotgate.PresenceEvent{DeviceID: g.dev, DeviceJID: jid, At: at, Online: false})
			}
		}
		evs, err := db.insertPresenceEvents(ctx, tx, trans)
		if err != nil {
			return nil, err
		}
		return evs, notifyChanges(ctx, tx, ChangePresence, changed...)
	})
	return translate(err, "expire presence")
}

// DeviceResources returns the devices' stored resources by bare JID, of
// every device when jids is nil.
func (db *DB) DeviceResources(ctx context.Context, jids []string) (map[string][]iotgate.Resource, error) {
	type devRes struct {
		jid string
		iotgate.Resource
	}
	q := `SELECT d.jid, ` + resourceColumns + ` FROM device_resources r JOIN devices d ON d.id = r.device_id`
	var args []any
	if jids != nil {
		q += ` WHERE d.jid = ANY($1)`
		args = append(args, pq.Array(jids))
	}
	rs, err := queryRows(ctx, db.db, "read device resources", func(r rowScanner) (devRes, error) {
		var d devRes
		var err error
		d.Resource, err = scanResource(r, &d.jid)
		return d, err
	}, q, args...)
	if err != nil {
		return nil, err
	}
	by := map[string]map[string]iotgate.Resource{}
	for _, r := range rs {
		if by[r.jid] == nil {
			by[r.jid] = map[string]iotgate.Resource{}
		}
		by[r.jid][r.JID] = r.Resource
	}
	out := make(map[string][]iotgate.Resource, len(by))
	for jid, m := range by {
		out[jid] = iotgate.SortedResources(m)
	}
	return out, nil
}

// TrimPresenceEvents deletes at most limit of the oldest presence events
// older than before, and returns how many. Nothing reads them but the
// history, so any may go. Errors: unavailable, timeout.
func (db *DB) TrimPresenceEvents(ctx context.Context, before time.Time, limit int) (int, error) {
	// In id order, not at order: presence_events has no index on at, and
	// ids grow with at, so the primary key walks the oldest first.
	return db.deleteCounted(ctx, "trim presence events", `
		DELETE FROM presence_events WHERE id IN (
			SELECT id FROM presence_events WHERE at < $1 ORDER BY id LIMIT $2)`, before, limit)
}
