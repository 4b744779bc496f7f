package postgres

import (
	"context"
	"database/sql"
	"errors"

	"time"

	"github.com/iotgate/iotgate"
)

var _ iotgate.TicketStore = (*DB)(nil)

// CreateTicket stores t. Errors: conflict (hash taken), unavailable.
func (db *DB) CreateTicket(ctx context.Context, t *iotgate.EventTicket) error {
	_, err := db.db.ExecContext(ctx, `
		INSERT INTO event_tickets (hash, token_id, created_at, expires_at)
		VALUES ($1, $2, $3, $4)`,
		t.Hash, t.TokenID, t.CreatedAt.UTC(), t.ExpiresAt.UTC())
	return translate(err, "create event ticket")
}

// RedeemTicket deletes the ticket with this hash and returns it: the
// DELETE takes the row's lock, so of two concurrent redeemers one gets
// the row and the other none. Errors: not_found, unavailable.
func (db *DB) RedeemTicket(ctx context.Context, hash []byte) (*iotgate.EventTicket, error) {
	t := iotgate.EventTicket{}
	err := db.db.QueryRowContext(ctx, `
		DELETE FROM event_tickets WHERE hash = $1
		RETURNING hash, token_id, created_at, expires_at`, hash).
		Scan(&t.Hash, &t.TokenID, &t.CreatedAt, &t.ExpiresAt)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, iotgate.Errorf(iotgate.ENotFound, "event ticket not found")
	}
	if err != nil {
		return nil, translate(err, "redeem event ticket")
	}
	t.CreatedAt, t.ExpiresAt = t.CreatedAt.UTC(), t.ExpiresAt.UTC()
	return &t, nil
}

// SweepTickets deletes the tickets that expired before before. Errors:
// unavailable.
func (db *DB) SweepTickets(ctx context.Context, before time.Time) (int, error) {
	res, err := db.db.ExecContext(ctx, `DELETE FROM event_tickets WHERE expires_at < $1`, before.UTC())
	if err != nil {
		return 0, translate(err, "sweep event tickets")
	}
	n, err := res.RowsAffected()
	return int(n), translate(err, "sweep event tickets")
}
