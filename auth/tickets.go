package auth

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/iotgate/iotgate"
)

// TicketPrefix starts every event-stream ticket secret.
const TicketPrefix = "iotgt_"

// sweepEvery is how often, at most, Issue deletes expired tickets.
const sweepEvery = time.Minute

// Tickets issues and redeems event-stream tickets: single-use secrets
// that stand for a token on GET /v1/events, for the browser's
// EventSource, which can't send an Authorization header. It is safe for
// concurrent use.
type Tickets struct {
	svc   *Service
	store iotgate.TicketStore
	log   *slog.Logger

	mu    sync.Mutex
	swept time.Time
}

// NewTickets returns the tickets of the tokens svc authenticates, kept in
// store. log receives failures to sweep expired tickets; nil discards
// them.
func NewTickets(svc *Service, store iotgate.TicketStore, log *slog.Logger) *Tickets {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Tickets{svc: svc, store: store, log: log}
}

// Issue returns a new ticket's secret for tok, valid for
// iotgate.EventTicketTTL, and when it expires. Errors: unavailable.
func (t *Tickets) Issue(ctx context.Context, tok *iotgate.Token) (string, time.Time, error) {
	now := t.svc.cfg.Now().UTC()
	t.sweep(ctx, now)
	b := make([]byte, secretBytes)
	rand.Read(b) // never fails (crypto/rand panics instead)
	secret := TicketPrefix + base64.RawURLEncoding.EncodeToString(b)
	h := Hash(secret)
	tk := &iotgate.EventTicket{Hash: h[:], TokenID: tok.ID, CreatedAt: now, ExpiresAt: now.Add(iotgate.EventTicketTTL)}
	if err := t.store.CreateTicket(ctx, tk); err != nil {
		return "", time.Time{}, fmt.Errorf("issue event ticket: %w", err)
	}
	return secret, tk.ExpiresAt, nil
}

// Redeem uses up the ticket whose secret this is and returns its token,
// read again: a ticket of a token revoked or expired since fails.
// Errors: unauthorized (unknown, used, expired ticket; inactive token),
// unavailable.
func (t *Tickets) Redeem(ctx context.Context, secret string) (*iotgate.Token, error) {
	h := Hash(secret)
	tk, err := t.store.RedeemTicket(ctx, h[:])
	if iotgate.ErrorCode(err) == iotgate.ENotFound {
		return nil, errTicket()
	}
	if err != nil {
		return nil, err
	}
	now := t.svc.cfg.Now()
	if !now.Before(tk.ExpiresAt) {
		return nil, errTicket()
	}
	tok, err := t.svc.Current(ctx, tk.TokenID)
	if iotgate.ErrorCode(err) == iotgate.EUnauthorized {
		return nil, errTicket()
	}
	return tok, err
}

// errTicket is the one answer to a bad ticket, whatever was wrong.
func errTicket() error {
	return iotgate.Errorf(iotgate.EUnauthorized, "unknown, used or expired event ticket, or its token is no longer valid")
}

// sweep deletes expired tickets, at most once per sweepEvery; a failure
// costs only some rows kept longer.
func (t *Tickets) sweep(ctx context.Context, now time.Time) {
	t.mu.Lock()
	due := now.Sub(t.swept) >= sweepEvery
	if due {
		t.swept = now
	}
	t.mu.Unlock()
	if !due {
		return
	}
	if _, err := t.store.SweepTickets(ctx, now); err != nil {
		t.log.Warn("sweep event tickets", "err", err)
	}
}
