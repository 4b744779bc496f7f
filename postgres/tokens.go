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

var _ iotgate.TokenStore = (*DB)(nil)

const tokenColumns = `id, name, hash, scopes, devices, created_at, expires_at, revoked_at, last_used_at`

func scanToken(row rowScanner) (*iotgate.Token, error) {
	var t iotgate.Token
	var scopes []string
	var sel []byte
	var expires, revoked, used sql.NullTime
	if err := row.Scan(&t.ID, &t.Name, &t.Hash, pq.Array(&scopes), &sel, &t.CreatedAt, &expires, &revoked, &used); err != nil {
		return nil, err
	}
	for _, s := range scopes {
		t.Scopes = append(t.Scopes, iotgate.Scope(s))
	}
	if err := json.Unmarshal(sel, &t.Devices); err != nil {
		return nil, fmt.Errorf("decode device selector of token %s: %w", t.ID, err)
	}
	if t.Devices == nil {
		t.Devices = iotgate.Selector{}
	}
	t.CreatedAt = t.CreatedAt.UTC()
	t.ExpiresAt, t.RevokedAt, t.LastUsedAt = nullTime(expires), nullTime(revoked), nullTime(used)
	return &t, nil
}

func tokenNotFound(id string) error {
	return iotgate.Errorf(iotgate.ENotFound, "token %s not found", id)
}

// CreateToken inserts t. Errors: conflict (ID or hash taken), invalid.
func (db *DB) CreateToken(ctx context.Context, t *iotgate.Token) error {
	sel, err := json.Marshal(t.Devices)
	if err != nil {
		return fmt.Errorf("encode device selector: %w", err)
	}
	scopes := make([]string, len(t.Scopes))
	for i, s := range t.Scopes {
		scopes[i] = string(s)
	}
	err = db.writeTx(ctx, func(tx *sql.Tx) ([]iotgate.Event, error) {
		if _, err := tx.ExecContext(ctx, `
			INSERT INTO api_tokens (id, name, hash, scopes, devices, created_at, expires_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7)`,
			t.ID, t.Name, t.Hash, pq.Array(scopes), string(sel), t.CreatedAt.UTC(), timeArg(t.ExpiresAt)); err != nil {
			return nil, err
		}
		return nil, notifyChanges(ctx, tx, ChangeToken, t.ID)
	})
	return translate(err, "create token")
}

// Token returns a token by ID. Errors: not_found.
func (db *DB) Token(ctx context.Context, id string) (*iotgate.Token, error) {
	t, err := scanToken(db.db.QueryRowContext(ctx, `SELECT `+tokenColumns+` FROM api_tokens WHERE id = $1`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, tokenNotFound(id)
	}
	if err != nil {
		return nil, translate(err, "get token")
	}
	return t, nil
}

// TokenByHash returns the token with this secret hash. Errors: not_found.
func (db *DB) TokenByHash(ctx context.Context, hash []byte) (*iotgate.Token, error) {
	t, err := scanToken(db.db.QueryRowContext(ctx, `SELECT `+tokenColumns+` FROM api_tokens WHERE hash = $1`, hash))
	if errors.Is(err, sql.ErrNoRows) {
		// No ID to name: the caller only has a secret.
		return nil, iotgate.Errorf(iotgate.ENotFound, "token not found")
	}
	if err != nil {
		return nil, translate(err, "get token")
	}
	return t, nil
}

// Tokens lists every token, oldest first.
func (db *DB) Tokens(ctx context.Context) ([]*iotgate.Token, error) {
	return queryRows(ctx, db.db, "list tokens", scanToken,
		`SELECT `+tokenColumns+` FROM api_tokens ORDER BY created_at, id`)
}

// RevokeToken sets revoked_at unless it is set. Errors: not_found.
func (db *DB) RevokeToken(ctx context.Context, id string, at time.Time) (*iotgate.Token, error) {
	var t *iotgate.Token
	err := db.writeTx(ctx, func(tx *sql.Tx) ([]iotgate.Event, error) {
		var err error
		t, err = scanToken(tx.QueryRowContext(ctx, `
			UPDATE api_tokens SET revoked_at = COALESCE(revoked_at, $2)
			WHERE id = $1
			RETURNING `+tokenColumns, id, at.UTC()))
		if err != nil {
			return nil, err
		}
		// Every instance's cache forgets it: revocation takes effect
		// everywhere within a round trip.
		return nil, notifyChanges(ctx, tx, ChangeToken, id)
	})
	if errors.Is(err, sql.ErrNoRows) {
		return nil, tokenNotFound(id)
	}
	if err != nil {
		return nil, translate(err, "revoke token")
	}
	return t, nil
}

// TouchToken records a token's last use; an older time never overwrites
// a newer one (several processes may write). Errors: not_found.
func (db *DB) TouchToken(ctx context.Context, id string, at time.Time) error {
	res, err := db.db.ExecContext(ctx, `
		UPDATE api_tokens SET last_used_at = GREATEST(last_used_at, $2)
		WHERE id = $1`, id, at.UTC())
	if err != nil {
		return translate(err, "record token use")
	}
	if n, err := res.RowsAffected(); err == nil && n == 0 {
		return tokenNotFound(id)
	}
	return nil
}
