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

var _ iotgate.CommandStore = (*DB)(nil)

// commandColumns are the columns scanCommand reads, the history last (a
// JSON array, oldest first).
const commandColumns = `c.id, c.device_id, d.jid, c.type, c.payload, c.resource, c.target, c.mode, c.status,
	c.timeout_ms, c.expires_at, c.created_at, c.sent_at, c.completed_at, c.answered_at,
	c.response_xml, c.response_data, c.response_invalid,
	c.xmpp_error_type, c.xmpp_error_condition, c.xmpp_error_text,
	c.error_code, c.error, c.late_answer, c.idempotency_key, c.request_hash, c.token_id, c.sent_by,
	c.iq_id, c.instance, c.history`

const commandFrom = ` FROM commands c JOIN devices d ON d.id = c.device_id`

func scanCommand(row rowScanner) (*iotgate.Command, error) {
	var c iotgate.Command
	var timeoutMS int64
	var expires, sent, completed, answered sql.NullTime
	var respXML, respInvalid, errType, errCond, errText, key, tokenID, iqID sql.NullString
	var respData, history []byte
	var mode, status string
	if err := row.Scan(&c.ID, &c.DeviceID, &c.DeviceJID, &c.Type, &c.Payload, &c.Resource, &c.Target, &mode, &status,
		&timeoutMS, &expires, &c.CreatedAt, &sent, &completed, &answered,
		&respXML, &respData, &respInvalid, &errType, &errCond, &errText,
		&c.ErrorCode, &c.Error, &c.LateAnswer, &key, &c.RequestHash, &tokenID, &c.SentBy, &iqID, &c.Instance, &history); err != nil {
		return nil, err
	}
	c.Mode, c.Status = iotgate.CommandMode(mode), iotgate.CommandStatus(status)
	c.Timeout = time.Duration(timeoutMS) * time.Millisecond
	c.CreatedAt = c.CreatedAt.UTC()
	c.ExpiresAt, c.SentAt, c.CompletedAt, c.AnsweredAt = nullTime(expires), nullTime(sent), nullTime(completed), nullTime(answered)
	if respXML.Valid {
		c.Response = &iotgate.CommandResponse{XML: respXML.String, Invalid: respInvalid.String}
		if len(respData) > 0 {
			c.Response.Data = respData
		}
	}
	if errCond.Valid {
		c.XMPPError = &iotgate.XMPPError{Type: errType.String, Condition: errCond.String, Text: errText.String}
	}
	c.IdempotencyKey, c.TokenID, c.IQID = key.String, tokenID.String, iqID.String
	var evs []historyEntry
	if err := json.Unmarshal(history, &evs); err != nil {
		return nil, fmt.Errorf("decode history of command %s: %w", c.ID, err)
	}
	c.History = make([]iotgate.CommandEvent, len(evs))
	for i, e := range evs {
		c.History[i] = iotgate.CommandEvent{Status: iotgate.CommandStatus(e.Status), At: e.At.UTC(), Reason: e.Reason}
	}
	return &c, nil
}

// historyEntry is one element of commands.history.
type historyEntry struct {
	Status string    `json:"status"`
	At     time.Time `json:"at"`
	Reason string    `json:"reason"`
}

// historyEntryJSON renders ev as an element of commands.history. Times
// are rounded to microseconds, as PostgreSQL stores the other timestamps.
func historyEntryJSON(ev iotgate.CommandEvent) ([]byte, error) {
	return json.Marshal(historyEntry{Status: string(ev.Status), At: ev.At.UTC().Round(time.Microsecond), Reason: ev.Reason})
}

// historyJSON renders a whole history as commands.history.
func historyJSON(evs []iotgate.CommandEvent) (string, error) {
	out := make([]historyEntry, len(evs))
	for i, e := range evs {
		out[i] = historyEntry{Status: string(e.Status), At: e.At.UTC().Round(time.Microsecond), Reason: e.Reason}
	}
	b, err := json.Marshal(out)
	return string(b), err
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

// timeText renders an optional time for a timestamptz[] array.
func timeText(t *time.Time) sql.NullString {
	if t == nil {
		return sql.NullString{}
	}
	return nullString(t.UTC().Format(time.RFC3339Nano), true)
}

// outcomeArrays are the mutable columns of commands as the arrays of an
// unnest, one element per command, in the order of outcomeColumns.
type outcomeArrays struct {
	status, target                  []string
	sentAt, completedAt, answeredAt []sql.NullString
	respXML, respData, respInvalid  []sql.NullString
	errType, errCond, errText       []sql.NullString
	errorCode, errorText            []string
	lateAnswer                      []bool
	iqID                            []sql.NullString
	instance                        []string
}

// outcomeNames and outcomeTypes name and type outcomeArrays' columns.
var (
	outcomeNames = []string{"status", "target", "sent_at", "completed_at", "answered_at",
		"response_xml", "response_data", "response_invalid",
		"xmpp_error_type", "xmpp_error_condition", "xmpp_error_text", "error_code", "error", "late_answer",
		"iq_id", "instance"}
	outcomeTypes = []string{"text", "text", "timestamptz", "timestamptz", "timestamptz",
		"text", "jsonb", "text", "text", "text", "text", "text", "text", "boolean", "text", "text"}
	outcomeColumns = strings.Join(outcomeNames, ", ")
)

func (a *outcomeArrays) add(c *iotgate.Command) {
	var respXML, respData, respInvalid, errType, errCond, errText sql.NullString
	if r := c.Response; r != nil {
		respXML, respInvalid = nullString(r.XML, true), nullString(r.Invalid, r.Invalid != "")
		respData = nullString(string(r.Data), len(r.Data) > 0)
	}
	if e := c.XMPPError; e != nil {
		errType, errCond, errText = nullString(e.Type, true), nullString(e.Condition, true), nullString(e.Text, true)
	}
	a.status, a.target = append(a.status, string(c.Status)), append(a.target, c.Target)
	a.sentAt, a.completedAt, a.answeredAt = append(a.sentAt, timeText(c.SentAt)), append(a.completedAt, timeText(c.CompletedAt)), append(a.answeredAt, timeText(c.AnsweredAt))
	a.respXML, a.respData, a.respInvalid = append(a.respXML, respXML), append(a.respData, respData), append(a.respInvalid, respInvalid)
	a.errType, a.errCond, a.errText = append(a.errType, errType), append(a.errCond, errCond), append(a.errText, errText)
	a.errorCode, a.errorText = append(a.errorCode, c.ErrorCode), append(a.errorText, c.Error)
	a.lateAnswer = append(a.lateAnswer, c.LateAnswer)
	a.iqID, a.instance = append(a.iqID, nullString(c.IQID, c.IQID != "")), append(a.instance, c.Instance)
}

func (a *outcomeArrays) args() []any {
	return []any{pq.Array(a.status), pq.Array(a.target), pq.Array(a.sentAt), pq.Array(a.completedAt), pq.Array(a.answeredAt),
		pq.Array(a.respXML), pq.Array(a.respData), pq.Array(a.respInvalid),
		pq.Array(a.errType), pq.Array(a.errCond), pq.Array(a.errText),
		pq.Array(a.errorCode), pq.Array(a.errorText), pq.Array(a.lateAnswer), pq.Array(a.iqID), pq.Array(a.instance)}
}

// unnestArgs returns "unnest($first::t1[], $first+1::t2[], ...)".
func unnestArgs(first int, types []string) string {
	var b strings.Builder
	b.WriteString("unnest(")
	for i, t := range types {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "$%d::%s[]", first+i, t)
	}
	b.WriteString(")")
	return b.String()
}

// insertCommands inserts many commands, history included, in one
// statement: one array per column, whatever the number of commands.
var insertCommands = `
	INSERT INTO commands (id, device_id, type, payload, resource, mode,
		timeout_ms, expires_at, created_at, idempotency_key, request_hash, token_id, sent_by, history,
		` + outcomeColumns + `)
	SELECT * FROM ` + unnestArgs(1, insertTypes)

// insertTypes are the types of insertCommands' arrays.
var insertTypes = append([]string{"text", "bigint", "text", "text", "text", "text",
	"integer", "timestamptz", "timestamptz", "text", "text", "text", "text", "jsonb"}, outcomeTypes...)

// insertArgs are insertCommands' arguments for cs.
func insertArgs(cs []*iotgate.Command) ([]any, error) {
	n := len(cs)
	ids, types, payloads, resources, modes := make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	devIDs, timeouts := make([]int64, n), make([]int64, n)
	expires, created, keys, tokens := make([]sql.NullString, n), make([]sql.NullString, n), make([]sql.NullString, n), make([]sql.NullString, n)
	hashes, sentBy, history := make([]string, n), make([]string, n), make([]string, n)
	var out outcomeArrays
	for i, c := range cs {
		h, err := historyJSON(c.History)
		if err != nil {
			return nil, fmt.Errorf("encode history of command %s: %w", c.ID, err)
		}
		ids[i], devIDs[i], types[i], payloads[i], resources[i], modes[i] = c.ID, c.DeviceID, c.Type, c.Payload, c.Resource, string(c.Mode)
		timeouts[i], expires[i], created[i] = c.Timeout.Milliseconds(), timeText(c.ExpiresAt), timeText(&c.CreatedAt)
		keys[i], hashes[i], tokens[i], sentBy[i], history[i] = nullString(c.IdempotencyKey, c.IdempotencyKey != ""), c.RequestHash, nullString(c.TokenID, c.TokenID != ""), c.SentBy, h
		out.add(c)
	}
	return append([]any{pq.Array(ids), pq.Array(devIDs), pq.Array(types), pq.Array(payloads), pq.Array(resources), pq.Array(modes),
		pq.Array(timeouts), pq.Array(expires), pq.Array(created), pq.Array(keys), pq.Array(hashes), pq.Array(tokens), pq.Array(sentBy), pq.Array(history)},
		out.args()...), nil
}

// createError translates an insert's error for the command c.
func createError(c *iotgate.Command, err error) error {
	if e := pq.As(err); e != nil && e.Constraint == "commands_idempotency_key_key" {
		return &iotgate.Error{Code: iotgate.EConflict, Detail: iotgate.DetailIdempotencyKeyTaken, Message: "the Idempotency-Key is held by another command", Err: err}
	}
	if e := pq.As(err); e != nil && e.Constraint == "commands_device_fkey" {
		return &iotgate.Error{Code: iotgate.ENotFound, Message: "device " + c.DeviceJID + " is not registered", Err: err}
	}
	return translate(err, "store command")
}

// CreateCommand inserts c with its history, and its command event. An
// idempotency key held in c's scope (token and device) by a command
// created before reuseBefore is released first. A queued c is refused
// when its device already has maxQueued queued commands (0: no bound):
// the device's row is locked meanwhile, so that concurrent requests, of
// any instance, can't all squeeze under the bound. Errors: conflict
// (detail idempotency_key_taken) when a newer command holds the key,
// too_many_requests (detail device_queue_full), not_found when the device
// was deleted meanwhile.
func (db *DB) CreateCommand(ctx context.Context, c *iotgate.Command, reuseBefore time.Time, maxQueued int) error {
	args, err := insertArgs([]*iotgate.Command{c})
	if err != nil {
		return err
	}
	err = db.writeTx(ctx, func(tx *sql.Tx) ([]iotgate.Event, error) {
		if c.Status == iotgate.CommandQueued && maxQueued > 0 {
			// NO KEY UPDATE: it serializes queue inserts of the device
			// without blocking the foreign-key checks of its other
			// commands' inserts (FOR KEY SHARE). The count is a statement
			// of its own: one taken after the lock sees the inserts
			// committed while it waited (READ COMMITTED).
			var n int
			err := tx.QueryRowContext(ctx, `SELECT id FROM devices WHERE id = $1 FOR NO KEY UPDATE`, c.DeviceID).Scan(new(int64))
			if errors.Is(err, sql.ErrNoRows) {
				return nil, &iotgate.Error{Code: iotgate.ENotFound, Message: "device " + c.DeviceJID + " is not registered"}
			}
			if err == nil {
				err = tx.QueryRowContext(ctx, `SELECT count(*) FROM (SELECT 1 FROM commands
					WHERE device_id = $1 AND status = 'queued' LIMIT $2) q`, c.DeviceID, maxQueued).Scan(&n)
			}
			if err != nil {
				return nil, err
			}
			if n >= maxQueued {
				return nil, &iotgate.Error{Code: iotgate.ETooMany, Detail: iotgate.DetailDeviceQueueFull,
					Message: fmt.Sprintf("device %s already has %d queued commands, try again once some are delivered", c.DeviceJID, maxQueued)}
			}
		}
		if c.IdempotencyKey != "" {
			if _, err := tx.ExecContext(ctx, `
				UPDATE commands SET idempotency_key = NULL
				WHERE COALESCE(token_id, '') = $1 AND device_id = $2 AND idempotency_key = $3 AND created_at < $4`,
				c.TokenID, c.DeviceID, c.IdempotencyKey, reuseBefore.UTC()); err != nil {
				return nil, err
			}
		}
		if err := db.execStmt(ctx, tx, insertCommands, args...); err != nil {
			return nil, err
		}
		return []iotgate.Event{iotgate.CommandChangeEvent(c)}, nil
	})
	return createError(c, err)
}

// CreateCommands inserts commands without an idempotency key, with their
// history and one command event each, in one transaction (one WAL flush
// for all), and returns one error per command, as CreateCommand would. A
// command the database refuses (its device was deleted meanwhile) fails
// the statement; then the batch is written apart (see apart), so that the
// others are stored and only the culprit gets the error.
func (db *DB) CreateCommands(ctx context.Context, cs []*iotgate.Command) []error {
	errs := make([]error, len(cs))
	for i, c := range cs {
		if c.IdempotencyKey != "" {
			errs[i] = iotgate.Errorf(iotgate.EInvalid, "command %s has an Idempotency-Key: use CreateCommand", c.ID)
			return errs
		}
	}
	apart(cs, errs, func(cs []*iotgate.Command, _ []error) error {
		args, err := insertArgs(cs)
		if err == nil {
			err = db.writeTx(ctx, func(tx *sql.Tx) ([]iotgate.Event, error) {
				if err := db.execStmt(ctx, tx, insertCommands, args...); err != nil {
					return nil, err
				}
				return commandEvents(cs), nil
			})
		}
		if err != nil {
			// Named after the first command: a batch's error that is
			// one command's is split down to that command.
			return createError(cs[0], err)
		}
		return nil
	})
	return errs
}

// execStmt runs q, a statement every command runs (its insert), prepared
// (see txStmt): one round trip instead of two, and PostgreSQL parses it
// once per connection instead of at every batch. Its text is fixed,
// whatever the batch's size (one array per column), so one prepared
// statement serves every batch. (The status update is prepared too, as
// a function whose plan can't turn into a scan: see updateCommands.)
func (db *DB) execStmt(ctx context.Context, tx *sql.Tx, q string, args ...any) error {
	st, err := db.txStmt(ctx, tx, q)
	if err != nil {
		return err
	}
	_, err = st.ExecContext(ctx, args...)
	return err
}

// commandEvents returns one command event per command, as it now is.
func commandEvents(cs []*iotgate.Command) []iotgate.Event {
	evs := make([]iotgate.Event, len(cs))
	for i, c := range cs {
		evs[i] = iotgate.CommandChangeEvent(c)
	}
	return evs
}

// CommandByIdempotencyKey returns the command that token tokenID ("":
// none) sent to device deviceID with key, created at or after since.
// Errors: not_found.
func (db *DB) CommandByIdempotencyKey(ctx context.Context, tokenID string, deviceID int64, key string, since time.Time) (*iotgate.Command, error) {
	c, err := scanCommand(db.db.QueryRowContext(ctx, `SELECT `+commandColumns+commandFrom+`
		WHERE COALESCE(c.token_id, '') = $1 AND c.device_id = $2 AND c.idempotency_key = $3 AND c.created_at >= $4`,
		tokenID, deviceID, key, since.UTC()))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, iotgate.Errorf(iotgate.ENotFound, "no command with that Idempotency-Key")
	}
	if err != nil {
		return nil, translate(err, "get command")
	}
	return c, nil
}

// CommandByIQ returns the command last sent in the IQ iqID. Errors:
// not_found.
func (db *DB) CommandByIQ(ctx context.Context, iqID string) (*iotgate.Command, error) {
	c, err := scanCommand(db.db.QueryRowContext(ctx, `SELECT `+commandColumns+commandFrom+` WHERE c.iq_id = $1`, iqID))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, iotgate.Errorf(iotgate.ENotFound, "no command was sent in IQ %s", iqID)
	}
	if err != nil {
		return nil, translate(err, "get command")
	}
	return c, nil
}

// Command returns a command with its history. Errors: not_found.
func (db *DB) Command(ctx context.Context, id string) (*iotgate.Command, error) {
	c, err := scanCommand(db.db.QueryRowContext(ctx, `SELECT `+commandColumns+commandFrom+` WHERE c.id = $1`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, iotgate.Errorf(iotgate.ENotFound, "command %s not found", id)
	}
	if err != nil {
		return nil, translate(err, "get command")
	}
	return c, nil
}

func commandCursor(c *iotgate.Command) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(c.CreatedAt.UnixNano(), 10) + "." + c.ID))
}

// Commands returns a page of a device's commands, newest first, bounded in
// rows and in bytes (f.MaxBytes, see iotgate.PageBytes: payload, answer
// and history count). Errors: invalid (cursor).
func (db *DB) Commands(ctx context.Context, deviceJID string, f iotgate.CommandFilter) (*iotgate.CommandPage, error) {
	args := []any{deviceJID, iotgate.PageBytes(f.MaxBytes)}
	where := `d.jid = $1`
	if f.Cursor != "" {
		b, err := base64.RawURLEncoding.DecodeString(f.Cursor)
		ns, id, ok := strings.Cut(string(b), ".")
		n, nerr := strconv.ParseInt(ns, 10, 64)
		if err != nil || !ok || nerr != nil || id == "" {
			return nil, iotgate.Errorf(iotgate.EInvalid, "cursor is not valid")
		}
		where += ` AND (c.created_at, c.id) < ($3, $4)`
		args = append(args, time.Unix(0, n).UTC(), id)
	}
	q := budgetQuery(commandColumns, commandSize, `commands c JOIN devices d ON d.id = c.device_id`, "c", where,
		[]string{"created_at", "id"}, "DESC", f.Limit+1, "$2")
	rows, err := queryRows(ctx, db.db, "list commands", scanBudgeted(scanCommand), q, args...)
	if err != nil {
		return nil, err
	}
	page := &iotgate.CommandPage{}
	page.Items, page.NextCursor = budgetPage(rows, f.Limit, commandCursor)
	return page, nil
}

// commandSize is a command's size in a page's byte budget: payload and
// answer (XML as its length, JSON as stored) and history.
const commandSize = `octet_length(c.payload) + coalesce(octet_length(c.response_xml), 0) +
	coalesce(pg_column_size(c.response_data), 0) + coalesce(octet_length(c.response_invalid), 0) +
	octet_length(c.error) + pg_column_size(c.history)`
