package iotgate

import (
	"context"
	"time"
)

// EventTicketTTL is how long an event-stream ticket may be redeemed.
const EventTicketTTL = 60 * time.Second

// EventTicket lets a browser's EventSource, which can't send an
// Authorization header, open one event stream with the permissions of the
// token that asked for it. It is single-use; only the hash of its secret
// is stored.
type EventTicket struct {
	// Hash is the SHA-256 of the ticket's secret.
	Hash []byte
	// TokenID is the token the stream runs as; it is read again when the
	// ticket is redeemed, so a revoked or expired token's tickets fail.
	TokenID   string
	CreatedAt time.Time
	ExpiresAt time.Time
}

// TicketStore keeps event-stream tickets.
type TicketStore interface {
	// CreateTicket stores t. Errors: conflict (hash taken), unavailable.
	CreateTicket(ctx context.Context, t *EventTicket) error
	// RedeemTicket deletes the ticket with this hash and returns it, in
	// one step, so that of several concurrent redeemers (on any
	// instance) one at most gets it; expired tickets are returned too
	// (the caller checks). Errors: not_found (unknown or used already),
	// unavailable.
	RedeemTicket(ctx context.Context, hash []byte) (*EventTicket, error)
	// SweepTickets deletes the tickets that expired before before and
	// returns how many. Errors: unavailable.
	SweepTickets(ctx context.Context, before time.Time) (int, error)
}
