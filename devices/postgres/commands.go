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

	"github.com/iotgate/iotgate/devices"
)

var _ devices.CommandStore = (*DB)(nil)

// commandColumns are the columns scanCommand reads, the history last (as a
// JSON array, oldest first).
const commandColumns = `c.id, c.device_id, d.jid, c.type, c.payload, c.resource, c.target, c.mode, c.status,
	c.timeout_ms, c.expires_at, c.created_at, c.sent_at, c.completed_at, c.answered_at,
	c.response_xml, c.response_data, c.response_invalid,
	c.xmpp_error_type, c.xmpp_error_condition, c.xmpp_error_text,
	c.error_code, c.error, c.late_answer, c.idempotency_key, c.request_hash, c.token_id, c.sent_by,
	(SELECT coalesce(json_agg(json_build_object('status', e.status, 'at', e.at, 'reason', e.reason) ORDER BY e.id), '[]')
	 FROM command_events e WHERE e.command_id = c.id)`

const commandFrom = ` FROM commands c JOIN devices d ON d.id = c.device_id`

func scanCommand(row rowScanner) (*devices.Command, error) {
	var c devices.Command
	var timeoutMS int64
	var expires, sent, completed, answered sql.NullTime
	var respXML, respInvalid, errType, errCond, errText, key, tokenID sql.NullString
	var respData, history []byte
	var mode, status string
	if err := row.Scan(&c.ID, &c.DeviceID, &c.DeviceJID, &c.Type, &c.Payload, &c.Resource, &c.Target, &mode, &status,
		&timeoutMS, &expires, &c.CreatedAt, &sent, &completed, &answered,
		&respXML, &respData, &respInvalid, &errType, &errCond, &errText,
		&c.ErrorCode, &c.Error, &c.LateAnswer, &key, &c.RequestHash, &tokenID, &c.SentBy, &history); err != nil {
		return nil, err
	}
	c.Mode, c.Status = devices.CommandMode(mode), devices.CommandStatus(status)
	c.Timeout = time.Duration(timeoutMS) * time.Millisecond
	c.CreatedAt = c.CreatedAt.UTC()
	c.ExpiresAt, c.SentAt, c.CompletedAt, c.AnsweredAt = nullTime(expires), nullTime(sent), nullTime(completed), nullTime(answered)
	if respXML.Valid {
		c.Response = &devices.CommandResponse{XML: respXML.String, Invalid: respInvalid.String}
		if len(respData) > 0 {
			c.Response.Data = respData
		}
	}
	if errCond.Valid {
		c.XMPPError = &devices.XMPPError{Type: errType.String, Condition: errCond.String, Text: errText.String}
	}
	c.IdempotencyKey, c.TokenID = key.String, tokenID.String
	var evs []struct {
		Status string    `json:"status"`
		At     time.Time `json:"at"`
		Reason string    `json:"reason"`
	}
	if err := json.Unmarshal(history, &evs); err != nil {
		return nil, fmt.Errorf("decode history of command %s: %w", c.ID, err)
	}
	c.History = make([]devices.CommandEvent, len(evs))
	for i, e := range evs {
		c.History[i] = devices.CommandEvent{Status: devices.CommandStatus(e.Status), At: e.At.UTC(), Reason: e.Reason}
	}
	return &c, nil
}

func nullTime(t sql.NullTime) *time.Time {
	if !t.Valid {
		return nil
	}
	v := t.Time.UTC()
	return &v
}

func timeArg(t *time.Time) any {
	if t == nil {
		return nil
	}
	return t.UTC()
}

func nullString(s string, valid bool) sql.NullString { return sql.NullString{String: s, Valid: valid} }

// outcomeArgs are the mutable columns of a command, in the order of
// UpdateCommand's SET list ($2...).
func outcomeArgs(c *devices.Command) []any {
	var respXML, respInvalid, errType, errCond, errText sql.NullString
	var respData any
	if r := c.Response; r != nil {
		respXML, respInvalid = nullString(r.XML, true), nullString(r.Invalid, r.Invalid != "")
		if len(r.Data) > 0 {
			respData = string(r.Data)
		}
	}
	if e := c.XMPPError; e != nil {
		errType, errCond, errText = nullString(e.Type, true), nullString(e.Condition, true), nullString(e.Text, true)
	}
	return []any{string(c.Status), c.Target, timeArg(c.SentAt), timeArg(c.CompletedAt), timeArg(c.AnsweredAt),
		respXML, respData, respInvalid, errType, errCond, errText, c.ErrorCode, c.Error, c.LateAnswer}
}

// eventArrays are history entries as the arrays of an unnest.
func eventArrays(evs []devices.CommandEvent) (st, at, reason any) {
	sts := make([]string, len(evs))
	ats := make([]string, len(evs))
	reasons := make([]string, len(evs))
	for i, e := range evs {
		sts[i], reasons[i] = string(e.Status), e.Reason
		ats[i] = e.At.UTC().Format(time.RFC3339Nano)
	}
	return pq.Array(sts), pq.Array(ats), pq.Array(reasons)
}

// insertCommand inserts a command and its history in one statement: one
// round trip on the hot path of every command.
const insertCommand = `
	WITH c AS (
		INSERT INTO commands (id, device_id, type, payload, resource, mode,
			timeout_ms, expires_at, created_at, idempotency_key, request_hash,
			status, target, sent_at, completed_at, answered_at,
			response_xml, response_data, response_invalid,
			xmpp_error_type, xmpp_error_condition, xmpp_error_text,
			error_code, error, late_answer, token_id, sent_by)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11,
			$12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $29, $30)
		RETURNING id
	)
	INSERT INTO command_events (command_id, status, at, reason)
	SELECT c.id, v.status, v.at, v.reason
	FROM c, unnest($26::text[], $27::timestamptz[], $28::text[]) WITH ORDINALITY AS v(status, at, reason, n)
	ORDER BY v.n`

// CreateCommand inserts c with its history. An idempotency key held by a
// command created before reuseBefore is released first. Errors: conflict
// (detail idempotency_key_taken) when a newer command holds the key,
// not_found when the device was deleted meanwhile.
func (db *DB) CreateCommand(ctx context.Context, c *devices.Command, reuseBefore time.Time) error {
	var key sql.NullString
	if c.IdempotencyKey != "" {
		key = nullString(c.IdempotencyKey, true)
	}
	st, at, reason := eventArrays(c.History)
	args := append([]any{c.ID, c.DeviceID, c.Type, c.Payload, c.Resource, string(c.Mode),
		c.Timeout.Milliseconds(), timeArg(c.ExpiresAt), c.CreatedAt.UTC(), key, c.RequestHash}, outcomeArgs(c)...)
	args = append(args, st, at, reason, nullString(c.TokenID, c.TokenID != ""), c.SentBy)
	err := db.inTx(ctx, c.IdempotencyKey != "", func(q querier) error {
		if c.IdempotencyKey != "" {
			if _, err := q.ExecContext(ctx, `
				UPDATE commands SET idempotency_key = NULL
				WHERE idempotency_key = $1 AND created_at < $2`, c.IdempotencyKey, reuseBefore.UTC()); err != nil {
				return err
			}
		}
		_, err := q.ExecContext(ctx, insertCommand, args...)
		return err
	})
	if e := pq.As(err); e != nil && e.Constraint == "commands_idempotency_key_key" {
		return &devices.Error{Code: devices.EConflict, Detail: "idempotency_key_taken", Message: "the Idempotency-Key is held by another command", Err: err}
	}
	if e := pq.As(err); e != nil && e.Constraint == "commands_device_fkey" {
		return &devices.Error{Code: devices.ENotFound, Message: "device " + c.DeviceJID + " is not registered", Err: err}
	}
	return translate(err, "store command")
}

// querier is what inTx's function runs statements on.
type querier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// inTx runs f in a transaction when tx is true, else on the pool (for a
// single statement, which is its own transaction).
func (db *DB) inTx(ctx context.Context, tx bool, f func(querier) error) error {
	if !tx {
		return f(db.db)
	}
	t, err := db.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer t.Rollback()
	if err := f(t); err != nil {
		return err
	}
	return t.Commit()
}

// CommandByIdempotencyKey returns the command created with key at or
// after since. Errors: not_found.
func (db *DB) CommandByIdempotencyKey(ctx context.Context, key string, since time.Time) (*devices.Command, error) {
	c, err := scanCommand(db.db.QueryRowContext(ctx, `SELECT `+commandColumns+commandFrom+`
		WHERE c.idempotency_key = $1 AND c.created_at >= $2`, key, since.UTC()))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, devices.Errorf(devices.ENotFound, "no command with that Idempotency-Key")
	}
	if err != nil {
		return nil, translate(err, "get command")
	}
	return c, nil
}

// Command returns a command with its history. Errors: not_found.
func (db *DB) Command(ctx context.Context, id string) (*devices.Command, error) {
	c, err := scanCommand(db.db.QueryRowContext(ctx, `SELECT `+commandColumns+commandFrom+` WHERE c.id = $1`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, devices.Errorf(devices.ENotFound, "command %s not found", id)
	}
	if err != nil {
		return nil, translate(err, "get command")
	}
	return c, nil
}

func commandCursor(c *devices.Command) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(c.CreatedAt.UnixNano(), 10) + "." + c.ID))
}

// Commands returns a page of a device's commands, newest first.
// Errors: invalid (cursor).
func (db *DB) Commands(ctx context.Context, deviceJID string, f devices.CommandFilter) (*devices.CommandPage, error) {
	args := []any{deviceJID, f.Limit + 1}
	where := `d.jid = $1`
	if f.Cursor != "" {
		b, err := base64.RawURLEncoding.DecodeString(f.Cursor)
		ns, id, ok := strings.Cut(string(b), ".")
		n, nerr := strconv.ParseInt(ns, 10, 64)
		if err != nil || !ok || nerr != nil || id == "" {
			return nil, devices.Errorf(devices.EInvalid, "cursor is not valid")
		}
		where += ` AND (c.created_at, c.id) < ($3, $4)`
		args = append(args, time.Unix(0, n).UTC(), id)
	}
	items, err := queryRows(ctx, db.db, "list commands", scanCommand, `SELECT `+commandColumns+commandFrom+` WHERE `+where+`
		ORDER BY c.created_at DESC, c.id DESC LIMIT $2`, args...)
	if err != nil {
		return nil, err
	}
	page := &devices.CommandPage{Items: items}
	if len(page.Items) > f.Limit {
		page.Items = page.Items[:f.Limit]
		page.NextCursor = commandCursor(page.Items[len(page.Items)-1])
	}
	return page, nil
}

// UpdateCommand writes c's status, target, timestamps and outcome and
// appends ev (if not nil) to its history, provided the stored status is
// one of from: one statement, so the change and its history entry commit
// together. Errors: conflict (the status is not), not_found.
func (db *DB) UpdateCommand(ctx context.Context, c *devices.Command, from []devices.CommandStatus, ev *devices.CommandEvent) error {
	fromS := make([]string, len(from))
	for i, s := range from {
		fromS[i] = string(s)
	}
	var evStatus, evReason string
	evAt := time.Time{}
	if ev != nil {
		evStatus, evAt, evReason = string(ev.Status), ev.At.UTC(), ev.Reason
	}
	args := append([]any{c.ID, pq.Array(fromS)}, outcomeArgs(c)...)
	args = append(args, evStatus, evAt, evReason)
	var n int
	err := db.db.QueryRowContext(ctx, `
		WITH u AS (
			UPDATE commands SET status = $3, target = $4, sent_at = $5, completed_at = $6, answered_at = $7,
				response_xml = $8, response_data = $9, response_invalid = $10,
				xmpp_error_type = $11, xmpp_error_condition = $12, xmpp_error_text = $13,
				error_code = $14, error = $15, late_answer = $16
			WHERE id = $1 AND status = ANY($2::text[])
			RETURNING id
		), e AS (
			INSERT INTO command_events (command_id, status, at, reason)
			SELECT u.id, $17::text, $18::timestamptz, $19::text FROM u WHERE $17::text <> ''
		)
		SELECT count(*) FROM u`, args...).Scan(&n)
	if err != nil {
		return translate(err, "update command")
	}
	if n > 0 {
		return nil
	}
	var status string
	err = db.db.QueryRowContext(ctx, `SELECT status FROM commands WHERE id = $1`, c.ID).Scan(&status)
	if errors.Is(err, sql.ErrNoRows) {
		return devices.Errorf(devices.ENotFound, "command %s not found", c.ID)
	}
	if err != nil {
		return translate(err, "update command")
	}
	return devices.Errorf(devices.EConflict, "command %s is %s", c.ID, status)
}

// QueuedCommands returns up to limit queued commands of a device, oldest
// first.
func (db *DB) QueuedCommands(ctx context.Context, deviceJID string, limit int) ([]*devices.Command, error) {
	return queryRows(ctx, db.db, "list queued commands", scanCommand, `SELECT `+commandColumns+commandFrom+`
		WHERE d.jid = $1 AND c.status = 'queued'
		ORDER BY c.created_at, c.id LIMIT $2`, deviceJID, limit)
}

// QueuedDeviceJIDs returns the devices that have queued commands.
func (db *DB) QueuedDeviceJIDs(ctx context.Context) ([]string, error) {
	return queryRows(ctx, db.db, "list devices with queued commands", scanString, `
		SELECT d.jid FROM devices d
		WHERE EXISTS (SELECT 1 FROM commands c WHERE c.device_id = d.id AND c.status = 'queued')
		ORDER BY d.jid`)
}

// ExpireCommands moves queued commands whose expires_at is not after now
// to expired, recording reason, and returns their IDs. One statement: the
// update and the history entries commit together.
func (db *DB) ExpireCommands(ctx context.Context, now time.Time, reason string) ([]string, error) {
	rows, err := db.db.QueryContext(ctx, `
		WITH expired AS (
			UPDATE commands SET status = 'expired', completed_at = $1, error = $2
			WHERE status = 'queued' AND expires_at <= $1
			RETURNING id
		), events AS (
			INSERT INTO command_events (command_id, status, at, reason)
			SELECT id, 'expired', $1, $2 FROM expired
		)
		SELECT id FROM expired`, now.UTC(), reason)
	if err != nil {
		return nil, translate(err, "expire commands")
	}
	defer rows.Close()
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, translate(err, "expire commands")
		}
		ids = append(ids, id)
	}
	return ids, translate(rows.Err(), "expire commands")
}

// FailUnfinishedCommands moves every pending or sent command to failed
// with the given error code and reason, and returns how many.
func (db *DB) FailUnfinishedCommands(ctx context.Context, now time.Time, code, reason string) (int, error) {
	var n int
	err := db.db.QueryRowContext(ctx, `
		WITH failed AS (
			UPDATE commands SET status = 'failed', completed_at = $1, error_code = $2, error = $3
			WHERE status IN ('pending', 'sent')
			RETURNING id
		), events AS (
			INSERT INTO command_events (command_id, status, at, reason)
			SELECT id, 'failed', $1, $3 FROM failed
		)
		SELECT count(*) FROM failed`, now.UTC(), code, reason).Scan(&n)
	if err != nil {
		return 0, translate(err, "resolve unfinished commands")
	}
	return n, nil
}
