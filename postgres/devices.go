package postgres

import (
	"context"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/lib/pq"

	"github.com/iotgate/iotgate"
)

var _ iotgate.DeviceStore = (*DB)(nil)

const deviceColumns = `id, jid, name, labels, schema_name, schema_version, created_at, updated_at, last_seen_at`

func scanDevice(row rowScanner) (*iotgate.Device, error) {
	var d iotgate.Device
	var labels []byte
	var schema sql.NullString
	var version sql.NullInt64
	var seen sql.NullTime
	if err := row.Scan(&d.ID, &d.JID, &d.Name, &labels, &schema, &version, &d.CreatedAt, &d.UpdatedAt, &seen); err != nil {
		return nil, err
	}
	if err := json.Unmarshal(labels, &d.Labels); err != nil {
		return nil, fmt.Errorf("decode labels of %s: %w", d.JID, err)
	}
	d.Schema, d.SchemaVersion = schema.String, int(version.Int64)
	if seen.Valid {
		t := seen.Time.UTC()
		d.LastSeenAt = &t
	}
	d.CreatedAt, d.UpdatedAt = d.CreatedAt.UTC(), d.UpdatedAt.UTC()
	return &d, nil
}

// CreateDevice inserts d, sets its ID and writes its registered event.
// Errors: conflict (JID taken), invalid (unknown schema version),
// unavailable.
func (db *DB) CreateDevice(ctx context.Context, d *iotgate.Device) error {
	labels, err := json.Marshal(d.Labels)
	if err != nil {
		return fmt.Errorf("encode labels: %w", err)
	}
	err = db.writeTx(ctx, func(tx *sql.Tx) ([]iotgate.Event, error) {
		if err := tx.QueryRowContext(ctx, `
			INSERT INTO devices (jid, name, labels, schema_name, schema_version, created_at, updated_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7)
			RETURNING id`,
			d.JID, d.Name, labels, d.Schema, d.SchemaVersion, d.CreatedAt, d.UpdatedAt).Scan(&d.ID); err != nil {
			return nil, err
		}
		// Other instances may remember the JID as not registered.
		if err := notifyChanges(ctx, tx, ChangeDevice, d.JID); err != nil {
			return nil, err
		}
		return []iotgate.Event{iotgate.DeviceChangeEvent(iotgate.DeviceRegistered, d, d.CreatedAt)}, nil
	})
	if e := pq.As(err); e != nil && e.Constraint == "devices_schema_fkey" {
		return &iotgate.Error{Code: iotgate.EInvalid, Message: fmt.Sprintf("schema %s version %d does not exist", d.Schema, d.SchemaVersion), Err: err}
	}
	if e := pq.As(err); e != nil && e.Constraint == "devices_pkey" {
		return &iotgate.Error{Code: iotgate.EConflict, Message: fmt.Sprintf("device %s is already registered", d.JID), Err: err}
	}
	return translate(err, "create device")
}

// Device returns the device with the given bare JID. Errors: not_found.
func (db *DB) Device(ctx context.Context, jid string) (*iotgate.Device, error) {
	d, err := scanDevice(db.db.QueryRowContext(ctx, `SELECT `+deviceColumns+` FROM devices WHERE jid = $1`, jid))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, iotgate.Errorf(iotgate.ENotFound, "device %s is not registered", jid)
	}
	if err != nil {
		return nil, translate(err, "get device")
	}
	return d, nil
}

// Devices lists devices by JID, a page at a time. Errors: invalid (cursor).
func (db *DB) Devices(ctx context.Context, f iotgate.DeviceFilter) (*iotgate.DevicePage, error) {
	var where []string
	var args []any
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	if f.Cursor != "" {
		after, err := base64.RawURLEncoding.DecodeString(f.Cursor)
		if err != nil || len(after) == 0 {
			return nil, iotgate.Errorf(iotgate.EInvalid, "cursor is not valid")
		}
		where = append(where, "jid > "+arg(string(after)))
	}
	if f.Schema != "" {
		where = append(where, "schema_name = "+arg(f.Schema))
	}
	if len(f.Labels) > 0 {
		b, err := json.Marshal(f.Labels)
		if err != nil {
			return nil, fmt.Errorf("encode label filter: %w", err)
		}
		where = append(where, "labels @> "+arg(string(b))+"::jsonb")
	}
	if f.Online != nil {
		// Presence lives in memory; the service passes who is online.
		cond := "jid = ANY(" + arg(pq.Array(f.OnlineJIDs)) + "::text[])"
		if !*f.Online {
			cond = "NOT " + cond
		}
		where = append(where, cond)
	}
	q := `SELECT ` + deviceColumns + ` FROM devices`
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY jid LIMIT " + arg(f.Limit+1)
	items, err := queryRows(ctx, db.db, "list devices", scanDevice, q, args...)
	if err != nil {
		return nil, err
	}
	page := &iotgate.DevicePage{}
	page.Items, page.NextCursor = pageOf(items, f.Limit, func(d *iotgate.Device) string {
		return base64.RawURLEncoding.EncodeToString([]byte(d.JID))
	})
	return page, nil
}

// UpdateDevice applies u. Errors: not_found, invalid (unknown version).
func (db *DB) UpdateDevice(ctx context.Context, jid string, u iotgate.DeviceUpdate, now time.Time) (*iotgate.Device, error) {
	var labels any
	if u.Labels != nil {
		b, err := json.Marshal(*u.Labels)
		if err != nil {
			return nil, fmt.Errorf("encode labels: %w", err)
		}
		labels = string(b)
	}
	var name, version any
	if u.Name != nil {
		name = *u.Name
	}
	if u.SchemaVersion != nil {
		version = *u.SchemaVersion
	}
	var d *iotgate.Device
	err := db.writeTx(ctx, func(tx *sql.Tx) ([]iotgate.Event, error) {
		var err error
		d, err = scanDevice(tx.QueryRowContext(ctx, `
			UPDATE devices SET
				name = COALESCE($2, name),
				labels = COALESCE($3::jsonb, labels),
				schema_version = COALESCE($4, schema_version),
				updated_at = $5
			WHERE jid = $1
			RETURNING `+deviceColumns, jid, name, labels, version, now))
		if err != nil {
			return nil, err
		}
		if err := notifyChanges(ctx, tx, ChangeDevice, jid); err != nil {
			return nil, err
		}
		return []iotgate.Event{iotgate.DeviceChangeEvent(iotgate.DeviceUpdated, d, now)}, nil
	})
	if errors.Is(err, sql.ErrNoRows) {
		return nil, iotgate.Errorf(iotgate.ENotFound, "device %s is not registered", jid)
	}
	if e := pq.As(err); e != nil && e.Constraint == "devices_schema_fkey" {
		return nil, &iotgate.Error{Code: iotgate.EInvalid, Message: "that schema version does not exist", Err: err}
	}
	if err != nil {
		return nil, translate(err, "update device")
	}
	return d, nil
}

// DeleteDevice deletes a device, its readings and rejections with it, and
// writes its deleted event (with the device as it was). Errors: not_found.
func (db *DB) DeleteDevice(ctx context.Context, jid string) error {
	err := db.writeTx(ctx, func(tx *sql.Tx) ([]iotgate.Event, error) {
		d, err := scanDevice(tx.QueryRowContext(ctx, `DELETE FROM devices WHERE jid = $1 RETURNING `+deviceColumns, jid))
		if err != nil {
			return nil, err
		}
		if err := notifyChanges(ctx, tx, ChangeDevice, jid); err != nil {
			return nil, err
		}
		// Its resources went with it: every instance forgets them.
		if err := notifyChanges(ctx, tx, ChangePresence, jid); err != nil {
			return nil, err
		}
		return []iotgate.Event{iotgate.DeviceChangeEvent(iotgate.DeviceDeleted, d, db.Now().UTC())}, nil
	})
	if errors.Is(err, sql.ErrNoRows) {
		return iotgate.Errorf(iotgate.ENotFound, "device %s is not registered", jid)
	}
	return translate(err, "delete device")
}
