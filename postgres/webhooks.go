package postgres

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/lib/pq"

	"github.com/iotgate/iotgate"
)

var _ iotgate.WebhookStore = (*DB)(nil)

const webhookColumns = `id, url, types, devices, secret, paused, token_id, cap, created_at, updated_at,
	cursor_id, failing, last_error, last_attempt_at, last_success_at, failing_since, next_attempt_at, attempts`

func scanWebhook(row rowScanner) (*iotgate.Webhook, error) {
	var w iotgate.Webhook
	var types []string
	var devs, outer []byte
	var attempt, success, since, next sql.NullTime
	if err := row.Scan(&w.ID, &w.URL, pq.Array(&types), &devs, &w.Secret, &w.Paused, &w.TokenID, &outer,
		&w.CreatedAt, &w.UpdatedAt, &w.Cursor, &w.Failing, &w.LastError, &attempt, &success, &since, &next, &w.Attempts); err != nil {
		return nil, err
	}
	for _, t := range types {
		w.Types = append(w.Types, iotgate.EventType(t))
	}
	if err := json.Unmarshal(devs, &w.Devices); err != nil {
		return nil, fmt.Errorf("decode devices of webhook %s: %w", w.ID, err)
	}
	if err := json.Unmarshal(outer, &w.Cap); err != nil {
		return nil, fmt.Errorf("decode cap of webhook %s: %w", w.ID, err)
	}
	w.CreatedAt, w.UpdatedAt = w.CreatedAt.UTC(), w.UpdatedAt.UTC()
	w.LastAttemptAt, w.LastSuccessAt, w.FailingSince, w.NextAttemptAt = nullTime(attempt), nullTime(success), nullTime(since), nullTime(next)
	return &w, nil
}

func webhookNotFound(id string) error {
	return iotgate.Errorf(iotgate.ENotFound, "webhook %s not found", id)
}

// selectorArg encodes a selector as jsonb ({} for nil).
func selectorArg(s iotgate.Selector) (string, error) {
	if s == nil {
		s = iotgate.Selector{}
	}
	b, err := json.Marshal(s)
	return string(b), err
}

// CreateWebhook inserts w with its cursor. Errors: conflict (ID taken).
func (db *DB) CreateWebhook(ctx context.Context, w *iotgate.Webhook) error {
	devs, err := selectorArg(w.Devices)
	if err != nil {
		return fmt.Errorf("encode devices: %w", err)
	}
	outer, err := selectorArg(w.Cap)
	if err != nil {
		return fmt.Errorf("encode cap: %w", err)
	}
	types := make([]string, len(w.Types))
	for i, t := range w.Types {
		types[i] = string(t)
	}
	_, err = db.db.ExecContext(ctx, `
		INSERT INTO webhooks (id, url, types, devices, secret, paused, token_id, cap, created_at, updated_at, cursor_id)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`,
		w.ID, w.URL, pq.Array(types), devs, w.Secret, w.Paused, w.TokenID, outer, w.CreatedAt.UTC(), w.UpdatedAt.UTC(), w.Cursor)
	return translate(err, "create webhook")
}

// Webhook returns a webhook. Errors: not_found.
func (db *DB) Webhook(ctx context.Context, id string) (*iotgate.Webhook, error) {
	return oneRow(db.db.QueryRowContext(ctx, `SELECT `+webhookColumns+` FROM webhooks WHERE id = $1`, id),
		scanWebhook, webhookNotFound(id), "get webhook")
}

// oneRow scans the one row of a query: none is notFound.
func oneRow[T any](row *sql.Row, scan func(rowScanner) (T, error), notFound error, op string) (T, error) {
	v, err := scan(row)
	if errors.Is(err, sql.ErrNoRows) {
		var zero T
		return zero, notFound
	}
	if err != nil {
		var zero T
		return zero, translate(err, op)
	}
	return v, nil
}

// Webhooks lists every webhook, oldest first.
func (db *DB) Webhooks(ctx context.Context) ([]*iotgate.Webhook, error) {
	return queryRows(ctx, db.db, "list webhooks", scanWebhook,
		`SELECT `+webhookColumns+` FROM webhooks ORDER BY created_at, id`)
}

// DeleteWebhook deletes a webhook. Errors: not_found.
func (db *DB) DeleteWebhook(ctx context.Context, id string) error {
	res, err := db.db.ExecContext(ctx, `DELETE FROM webhooks WHERE id = $1`, id)
	if err != nil {
		return translate(err, "delete webhook")
	}
	if n, err := res.RowsAffected(); err == nil && n == 0 {
		return webhookNotFound(id)
	}
	return nil
}

// PauseWebhook pauses or resumes a webhook; resuming clears a failure
// streak. Errors: not_found.
func (db *DB) PauseWebhook(ctx context.Context, id string, paused bool, at time.Time) (*iotgate.Webhook, error) {
	return oneRow(db.db.QueryRowContext(ctx, `
		UPDATE webhooks SET paused = $2, updated_at = $3,
			failing = failing AND $2,
			failing_since = CASE WHEN $2 THEN failing_since END,
			next_attempt_at = CASE WHEN $2 THEN next_attempt_at END,
			attempts = CASE WHEN $2 THEN attempts ELSE 0 END
		WHERE id = $1
		RETURNING `+webhookColumns, id, paused, at.UTC()), scanWebhook, webhookNotFound(id), "pause webhook")
}

// ClaimWebhooks leases due webhooks to owner. SKIP LOCKED lets concurrent
// claims of several instances pass each other instead of waiting, and the
// lease (not the row lock, which ends with the statement) keeps them
// apart during delivery.
func (db *DB) ClaimWebhooks(ctx context.Context, owner string, now, until time.Time, limit int) ([]*iotgate.Webhook, error) {
	// Prepared: every commit of events wakes each instance's dispatcher
	// to run it, webhooks or none.
	st, err := db.prepared(ctx, claimWebhooks)
	if err != nil {
		return nil, translate(err, "claim webhooks")
	}
	return stmtRows(ctx, st, "claim webhooks", scanWebhook, owner, now.UTC(), until.UTC(), limit)
}

// claimWebhooks is ClaimWebhooks' statement.
var claimWebhooks = `
	UPDATE webhooks SET lease_owner = $1, lease_until = $3
	WHERE id IN (
		SELECT id FROM webhooks
		WHERE NOT paused AND NOT failing
		  AND (next_attempt_at IS NULL OR next_attempt_at <= $2)
		  AND (lease_until IS NULL OR lease_until <= $2)
		ORDER BY next_attempt_at NULLS FIRST, id
		LIMIT $4
		FOR UPDATE SKIP LOCKED)
	RETURNING ` + webhookColumns

// RecordDelivery writes a webhook's delivery state if owner holds its
// lease, and reports whether it was paused meanwhile. Errors: conflict
// (lease lost), not_found.
func (db *DB) RecordDelivery(ctx context.Context, owner, id string, st iotgate.WebhookState, now, until time.Time) (bool, error) {
	var paused bool
	err := db.db.QueryRowContext(ctx, `
		UPDATE webhooks SET cursor_id = GREATEST(cursor_id, $3), failing = $4, last_error = $5,
			last_attempt_at = $6, last_success_at = $7, failing_since = $8, next_attempt_at = $9,
			attempts = $10, lease_until = $12
		WHERE id = $1 AND lease_owner = $2 AND lease_until > $11
		RETURNING paused`,
		id, owner, st.Cursor, st.Failing, st.LastError, timeArg(st.LastAttemptAt), timeArg(st.LastSuccessAt),
		timeArg(st.FailingSince), timeArg(st.NextAttemptAt), st.Attempts, now.UTC(), until.UTC()).Scan(&paused)
	if err == nil {
		return paused, nil
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return false, translate(err, "record webhook delivery")
	}
	if _, err := db.Webhook(ctx, id); err != nil {
		return false, err
	}
	return false, iotgate.Errorf(iotgate.EConflict, "webhook %s is not leased to %s", id, owner)
}

// ReleaseWebhook ends owner's lease on a webhook.
func (db *DB) ReleaseWebhook(ctx context.Context, owner, id string) error {
	_, err := db.db.ExecContext(ctx, `
		UPDATE webhooks SET lease_owner = NULL, lease_until = NULL WHERE id = $1 AND lease_owner = $2`, id, owner)
	return translate(err, "release webhook")
}
