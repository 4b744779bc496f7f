package postgres

import (
	"context"
	"database/sql"
	"strconv"
	"strings"
	"time"

	"github.com/lib/pq"

	"github.com/iotgate/iotgate"
)

// Changing stored commands: status updates (one statement per batch),
// the delivery queue, expiry and the failure of unfinished commands at start.

// updateCommands applies many status changes in one statement: each
// row's outcome columns are set, and its history entry (if any)
// appended, only where the stored status is one of the row's allowed
// ones (a comma-separated list). It returns the IDs it updated. The
// UPDATE is in a function (migration 0016) so that it can be prepared
// (txStmt) with its plan pinned to a lookup of each command by its key:
// prepared as it is, its generic plan, made while commands is small, is
// a hash join over a sequential scan that stays so as the table grows.
// Its arguments are in the order of outcomeColumns.
var updateCommands = updateCommandsFrom(1)

// updateCommandsFrom is updateCommands with its arguments numbered from
// $first.
func updateCommandsFrom(first int) string {
	return `SELECT id FROM iotgate_update_commands(` + params(first, 3+len(outcomeNames)) + `) AS id`
}

// params returns "$first, $first+1, ..." (n of them).
func params(first, n int) string {
	ps := make([]string, n)
	for i := range ps {
		ps[i] = "$" + strconv.Itoa(first+i)
	}
	return strings.Join(ps, ", ")
}

// UpdateCommand writes c's status, target, timestamps and outcome and
// appends ev (if not nil) to its history, provided the stored status is
// one of from: one statement, so the change and its history entry commit
// together. Errors: conflict (the status is not), not_found.
func (db *DB) UpdateCommand(ctx context.Context, c *iotgate.Command, from []iotgate.CommandStatus, ev *iotgate.CommandEvent) error {
	return db.UpdateCommands(ctx, []iotgate.CommandUpdate{{Command: c, From: from, Event: ev}})[0]
}

// UpdateCommands applies the updates in one statement (one transaction,
// one WAL flush) and returns one error per update, as UpdateCommand
// would: an update whose command is not in one of its From statuses is
// skipped with a conflict, without failing the others, and an update the
// database refuses (a value out of its range in the device's answer)
// fails only itself: the batch is then written apart (see apart). A
// command must not appear twice.
func (db *DB) UpdateCommands(ctx context.Context, us []iotgate.CommandUpdate) []error {
	errs := make([]error, len(us))
	apart(us, errs, func(us []iotgate.CommandUpdate, errs []error) error { return db.updateCommands(ctx, us, errs) })
	return errs
}

// updateCommands applies us in one statement and sets the error of each
// update it skipped in errs. It returns the statement's error.
func (db *DB) updateCommands(ctx context.Context, us []iotgate.CommandUpdate, errs []error) error {
	args, err := updateArgs(us)
	if err != nil {
		return err
	}
	done := make(map[string]bool, len(us))
	err = db.writeTx(ctx, func(tx *sql.Tx) ([]iotgate.Event, error) {
		return db.updateTx(ctx, tx, us, args, done)
	})
	if err != nil {
		return translate(err, "update commands")
	}
	db.explainSkipped(ctx, us, done, errs)
	return nil
}

// updateArgs are updateCommands' arguments for us.
func updateArgs(us []iotgate.CommandUpdate) ([]any, error) {
	n := len(us)
	ids, froms, evs := make([]string, n), make([]string, n), make([]sql.NullString, n)
	var out outcomeArrays
	for i, u := range us {
		fs := make([]string, len(u.From))
		for j, f := range u.From {
			fs[j] = string(f)
		}
		ids[i], froms[i] = u.Command.ID, strings.Join(fs, ",")
		if u.Event != nil {
			b, err := historyEntryJSON(*u.Event)
			if err != nil {
				return nil, &iotgate.Error{Code: iotgate.EInvalid, Message: "encode history entry of command " + u.Command.ID, Err: err}
			}
			evs[i] = nullString(string(b), true)
		}
		out.add(u.Command)
	}
	return append([]any{pq.Array(ids), pq.Array(froms), pq.Array(evs)}, out.args()...), nil
}

// updateTx runs updateCommands in tx with args (updateArgs of us), marks
// the commands it updated in done, notifies the other instances of those
// whose update asks it, and returns their command events.
func (db *DB) updateTx(ctx context.Context, tx *sql.Tx, us []iotgate.CommandUpdate, args []any, done map[string]bool) ([]iotgate.Event, error) {
	st, err := db.txStmt(ctx, tx, updateCommands)
	if err != nil {
		return nil, err
	}
	rows, err := st.QueryContext(ctx, args...)
	if err != nil {
		return nil, err
	}
	updated, err := scanAll(rows, scanString)
	if err != nil {
		return nil, err
	}
	for _, id := range updated {
		done[id] = true
	}
	// Every stored change is announced, a late answer (no history
	// entry) too: it changes what the command shows.
	var changed []*iotgate.Command
	var notify []string
	for _, u := range us {
		if done[u.Command.ID] {
			changed = append(changed, u.Command)
			if u.Notify {
				notify = append(notify, u.Command.ID)
			}
		}
	}
	if err := notifyChanges(ctx, tx, ChangeCommand, notify...); err != nil {
		return nil, err
	}
	return commandEvents(changed), nil
}

// explainSkipped sets errs[i] for each update of a committed batch that
// updateTx did not apply (not in done): not_found when its command is
// gone, conflict when it is in another status.
func (db *DB) explainSkipped(ctx context.Context, us []iotgate.CommandUpdate, done map[string]bool, errs []error) {
	var missed []string
	for _, u := range us {
		if !done[u.Command.ID] {
			missed = append(missed, u.Command.ID)
		}
	}
	if len(missed) == 0 {
		return
	}
	// Say why the others were not updated: gone, or in another status.
	type idStatus struct{ id, status string }
	found, err := queryRows(ctx, db.db, "update command", func(row rowScanner) (idStatus, error) {
		var s idStatus
		return s, row.Scan(&s.id, &s.status)
	}, `SELECT id, status FROM commands WHERE id = ANY($1::text[])`, pq.Array(missed))
	status := make(map[string]string, len(found))
	for _, f := range found {
		status[f.id] = f.status
	}
	for i, u := range us {
		id := u.Command.ID
		switch {
		case done[id]:
		case err != nil:
			errs[i] = err
		case status[id] == "":
			errs[i] = iotgate.Errorf(iotgate.ENotFound, "command %s not found", id)
		default:
			errs[i] = iotgate.Errorf(iotgate.EConflict, "command %s is %s", id, status[id])
		}
	}
}

// WriteCommands stores new commands (without an idempotency key, as
// CreateCommands) and status changes of others (as UpdateCommands) in
// one transaction: a command service under load writes the commands
// that arrive and the answers that come back at the same time, and one
// commit for both halves what PostgreSQL pays per transaction (its
// round trips, the events' lock and notification, the WAL flush). The
// transaction is one statement (writeCommands), in one round trip,
// unless an update asks for a change notification. It returns one error
// per command and per update, as CreateCommands and UpdateCommands
// would: when the transaction fails for a reason one of them may cause,
// they are written again the way those write them (each half on its
// own, split down to the culprit). No command may be in both.
func (db *DB) WriteCommands(ctx context.Context, cs []*iotgate.Command, us []iotgate.CommandUpdate) (createErrs, updateErrs []error) {
	if len(cs) == 0 && len(us) == 0 {
		return []error{}, []error{}
	}
	notify := false
	for _, u := range us {
		notify = notify || u.Notify
	}
	for _, c := range cs {
		if c.IdempotencyKey != "" {
			return db.CreateCommands(ctx, cs), db.UpdateCommands(ctx, us)
		}
	}
	cargs, err := insertArgs(cs)
	if err != nil {
		return db.CreateCommands(ctx, cs), db.UpdateCommands(ctx, us)
	}
	uargs, err := updateArgs(us)
	if err != nil {
		return db.CreateCommands(ctx, cs), db.UpdateCommands(ctx, us)
	}
	done := make(map[string]bool, len(us))
	if notify {
		err = db.writeTx(ctx, func(tx *sql.Tx) ([]iotgate.Event, error) {
			if err := db.execStmt(ctx, tx, insertCommands, cargs...); err != nil {
				return nil, err
			}
			evs, err := db.updateTx(ctx, tx, us, uargs, done)
			if err != nil {
				return nil, err
			}
			return append(commandEvents(cs), evs...), nil
		})
	} else {
		err = db.writeCommands(ctx, cs, us, cargs, uargs, done)
	}
	createErrs, updateErrs = make([]error, len(cs)), make([]error, len(us))
	if err != nil {
		if err := translate(err, "write commands"); !splittable(err) {
			for i := range createErrs {
				createErrs[i] = err
			}
			for i := range updateErrs {
				updateErrs[i] = err
			}
			return createErrs, updateErrs
		}
		return db.CreateCommands(ctx, cs), db.UpdateCommands(ctx, us)
	}
	db.explainSkipped(ctx, us, done, updateErrs)
	return createErrs, updateErrs
}

// writeCommands is WriteCommands' transaction in one statement, so in one
// round trip with its commit (no BEGIN, no COMMIT): the inserts
// (insertCommands), the status updates (iotgate_update_commands), and the
// command events of both, appended as appendEvents does (under the events
// lock, ids in order, the notification sent at commit): one per new
// command, then one per update that was applied (its command's ID in the
// events' last array), in us' order.
//
// Its parts take their locks in the order the transaction of statements
// took them, which each CTE's dependency on the one before forces: the new
// commands' devices are locked as their foreign keys' checks lock them
// (dev: FOR KEY SHARE), then the updates run (upd, lateral to dev), the
// inserts (ins), and only then is the events lock taken (serial's
// one-time filter waits for ins and upd). The foreign keys are checked at the statement's end,
// under the events lock, but on rows this transaction has locked already:
// they can't wait for a device's deletion, which takes the events lock
// for its own events (the two would deadlock).
var writeCommands = func() string {
	upd := 1 + len(insertTypes)         // the updates' arguments
	lock := upd + 3 + len(outcomeNames) // the events lock's key
	evs := lock + 1                     // the events' arrays
	devs := evs + 6                     // the new commands' devices
	uargs := strings.Split(params(upd, 3+len(outcomeNames)), ", ")
	uargs[0] = `CASE WHEN dev.n >= 0 THEN ` + uargs[0] + `::text[] END`
	return `
	WITH dev AS MATERIALIZED (
		SELECT count(*) AS n FROM (SELECT 1 FROM devices WHERE id = ANY($` + strconv.Itoa(devs) + `::bigint[]) FOR KEY SHARE) AS d),
	upd AS MATERIALIZED (
		SELECT u.id FROM dev, LATERAL iotgate_update_commands(` + strings.Join(uargs, ", ") + `) AS u(id)),
	ins AS (` + insertCommands + `
		RETURNING 1 AS one),
	serial AS MATERIALIZED (
		SELECT 1 AS one FROM (SELECT pg_advisory_xact_lock($` + strconv.Itoa(lock) + `), pg_notify('` + eventsChannel + `', '')
			WHERE (SELECT count(*) FROM upd) >= 0 AND (SELECT count(*) FROM ins) >= 0) AS l),
	ev AS (
		INSERT INTO events (type, at, device, data, labels)
		SELECT u.type, u.at, u.device, u.data, u.labels
		FROM serial, ` + unnestArgs(evs, []string{"text", "timestamptz", "text", "json", "jsonb", "text"}) + `
			WITH ORDINALITY AS u(type, at, device, data, labels, command, n)
		WHERE u.command IS NULL OR u.command IN (SELECT id FROM upd)
		ORDER BY u.n)
	SELECT id FROM upd`
}()

// writeCommands runs the statement writeCommands with cargs (insertArgs
// of cs) and uargs (updateArgs of us), and marks the commands it updated
// in done. Its error is the database's, untranslated. It returns once
// the batch is committed: the rows are read to their end, which lib/pq
// reaches at ReadyForQuery, sent after the commit (an error of the
// statement's end, such as a foreign key's check, or of the commit
// comes instead).
func (db *DB) writeCommands(ctx context.Context, cs []*iotgate.Command, us []iotgate.CommandUpdate, cargs, uargs []any, done map[string]bool) error {
	evs := commandEvents(cs)
	owner := make([]sql.NullString, len(cs), len(cs)+len(us))
	for _, u := range us {
		evs = append(evs, iotgate.CommandChangeEvent(u.Command))
		owner = append(owner, nullString(u.Command.ID, true))
	}
	eargs, err := eventArgs(evs)
	if err != nil {
		return err
	}
	devs := make([]int64, 0, len(cs))
	for _, c := range cs {
		devs = append(devs, c.DeviceID)
	}
	args := append(append(append(append(cargs, uargs...), eventsLockKey), eargs...), pq.Array(owner), pq.Array(devs))
	st, err := db.prepared(ctx, writeCommands)
	if err != nil {
		return err
	}
	rows, err := st.QueryContext(ctx, args...)
	if err != nil {
		return err
	}
	updated, err := scanAll(rows, scanString)
	if err != nil {
		return err
	}
	for _, id := range updated {
		done[id] = true
	}
	db.eventsWritten.Add(uint64(len(cs) + len(updated)))
	return nil
}

// QueuedCommands returns up to limit queued commands of a device, oldest
// first.
func (db *DB) QueuedCommands(ctx context.Context, deviceJID string, limit int) ([]*iotgate.Command, error) {
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
// to expired, recording reason in their history, with one command event
// each, and returns their IDs.
func (db *DB) ExpireCommands(ctx context.Context, now time.Time, reason string) ([]string, error) {
	cs, err := db.changeCommands(ctx, `
		UPDATE commands c SET status = 'expired', completed_at = $1, error = $2,
			history = c.history || jsonb_build_array(jsonb_build_object('status', 'expired', 'at', $1::timestamptz, 'reason', $2::text))
		FROM devices d
		WHERE d.id = c.device_id AND c.status = 'queued' AND c.expires_at <= $1
		RETURNING `+commandColumns, now.UTC(), reason)
	if err != nil {
		return nil, translate(err, "expire commands")
	}
	ids := make([]string, len(cs))
	for i, c := range cs {
		ids[i] = c.ID
	}
	return ids, nil
}

// FailUnfinishedCommands moves every pending or sent command of instance
// (or of no instance) to failed with the given error code and reason,
// with one command event each, and returns how many.
func (db *DB) FailUnfinishedCommands(ctx context.Context, instance string, now time.Time, code, reason string) (int, error) {
	var n int
	err := db.writeTx(ctx, func(tx *sql.Tx) ([]iotgate.Event, error) {
		cs, err := failCommandsOf(ctx, tx, []string{instance, ""}, now, code, reason)
		n = len(cs)
		return commandEvents(cs), err
	})
	if err != nil {
		return 0, translate(err, "resolve unfinished commands")
	}
	return n, nil
}

// failCommandsOf fails the pending and sent commands of the instances,
// with a history entry each, and returns them as they now are.
func failCommandsOf(ctx context.Context, tx *sql.Tx, instances []string, now time.Time, code, reason string) ([]*iotgate.Command, error) {
	return queryTx(ctx, tx, scanCommand, `
		UPDATE commands c SET status = 'failed', completed_at = $1, error_code = $2, error = $3,
			history = c.history || jsonb_build_array(jsonb_build_object('status', 'failed', 'at', $1::timestamptz, 'reason', $3::text))
		FROM devices d
		WHERE d.id = c.device_id AND c.status IN ('pending', 'sent') AND c.instance = ANY($4::text[])
		RETURNING `+commandColumns, now.UTC(), code, reason, pq.Array(instances))
}

// changeCommands runs an update of many commands that returns
// commandColumns, and writes a command event for each, in one
// transaction. It returns the commands as they now are.
func (db *DB) changeCommands(ctx context.Context, q string, args ...any) ([]*iotgate.Command, error) {
	var cs []*iotgate.Command
	err := db.writeTx(ctx, func(tx *sql.Tx) ([]iotgate.Event, error) {
		var err error
		if cs, err = queryTx(ctx, tx, scanCommand, q, args...); err != nil {
			return nil, err
		}
		return commandEvents(cs), nil
	})
	return cs, err
}
