package iotgate

import (
	"context"
	"maps"
	"net/url"
	"slices"
	"strings"
	"time"
)

// Webhook limits.
const (
	// MaxWebhookURLLen bounds a webhook's URL.
	MaxWebhookURLLen = 2048
	// MinWebhookSecretLen and MaxWebhookSecretLen bound a secret given
	// at creation (a generated one has 43 characters after its prefix).
	MinWebhookSecretLen = 16
	MaxWebhookSecretLen = 200
)

// Webhook is a server's subscription to the event log: iotgate POSTs the
// events it selects to URL, in id order, signed with Secret.
type Webhook struct {
	// ID identifies the webhook ("wh_..."); it is not secret.
	ID  string
	URL string
	// Types selects these event types; empty selects all.
	Types []EventType
	// Devices selects the devices whose labels include all of these.
	Devices Selector
	// Secret signs every delivery. It is stored as is (signing needs it)
	// and shown once, at creation.
	Secret string
	// Paused webhooks are not delivered; they keep their cursor.
	Paused bool
	// TokenID is the token that created the webhook and Cap its device
	// selector then: the webhook never sees more than its creator could.
	TokenID string
	Cap     Selector

	CreatedAt, UpdatedAt time.Time

	// Delivery state, written by the dispatcher.
	WebhookState
}

// WebhookState is a webhook's delivery state.
type WebhookState struct {
	// Cursor is the last event id acknowledged by the receiver (or
	// skipped because the webhook doesn't select it). It only moves
	// forward.
	Cursor int64
	// Failing webhooks are no longer delivered: their retries lasted
	// longer than the retry limit. Resuming clears it.
	Failing bool
	// LastError says why the current streak of failures failed ("" when
	// the last attempt succeeded).
	LastError     string
	LastAttemptAt *time.Time
	LastSuccessAt *time.Time
	// FailingSince is the first failure of the current streak.
	FailingSince *time.Time
	// NextAttemptAt is when a retry is due (nil: as soon as there are
	// events).
	NextAttemptAt *time.Time
	// Attempts counts the failed attempts of the current streak.
	Attempts int
}

// Filter returns the event filter of the webhook: its types, and its
// devices within its creator's cap.
func (w *Webhook) Filter() *EventFilter {
	scope := maps.Clone(w.Cap)
	if scope == nil {
		scope = Selector{}
	}
	maps.Copy(scope, w.Devices)
	return &EventFilter{Types: w.Types, Scope: scope}
}

// Clone returns a deep copy of w.
func (w *Webhook) Clone() *Webhook {
	out := *w
	out.Types = slices.Clone(w.Types)
	out.Devices = maps.Clone(w.Devices)
	out.Cap = maps.Clone(w.Cap)
	out.LastAttemptAt, out.LastSuccessAt = cloneTime(w.LastAttemptAt), cloneTime(w.LastSuccessAt)
	out.FailingSince, out.NextAttemptAt = cloneTime(w.FailingSince), cloneTime(w.NextAttemptAt)
	return &out
}

// Validate checks the webhook's invariants (not where its URL leads:
// webhooks.CheckURL does). Errors: invalid.
func (w *Webhook) Validate() error {
	if len(w.URL) > MaxWebhookURLLen {
		return Errorf(EInvalid, "url is longer than %d bytes", MaxWebhookURLLen)
	}
	u, err := url.Parse(w.URL)
	if err != nil {
		return Errorf(EInvalid, "url is not a URL")
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return Errorf(EInvalid, "url must be http or https, not %q", u.Scheme)
	}
	if u.Hostname() == "" {
		return Errorf(EInvalid, "url has no host")
	}
	if u.User != nil {
		return Errorf(EInvalid, "url must not carry credentials")
	}
	for _, t := range w.Types {
		if !slices.Contains(EventTypes, t) {
			return Errorf(EInvalid, "unknown event type %q", t)
		}
	}
	if n := len(w.Secret); n < MinWebhookSecretLen || n > MaxWebhookSecretLen || strings.TrimSpace(w.Secret) != w.Secret {
		return Errorf(EInvalid, "secret must be %d to %d characters without surrounding spaces", MinWebhookSecretLen, MaxWebhookSecretLen)
	}
	if err := ValidateLabels(w.Devices); err != nil {
		return err
	}
	return nil
}

// WebhookStore keeps webhooks and their delivery state. Several iotgate
// instances may share it: a webhook is delivered by whichever instance
// holds its lease, one at a time.
type WebhookStore interface {
	// CreateWebhook inserts w. Errors: conflict (ID taken).
	CreateWebhook(ctx context.Context, w *Webhook) error
	// Webhook returns a webhook. Errors: not_found.
	Webhook(ctx context.Context, id string) (*Webhook, error)
	// Webhooks lists every webhook, oldest first.
	Webhooks(ctx context.Context) ([]*Webhook, error)
	// DeleteWebhook deletes a webhook. Errors: not_found.
	DeleteWebhook(ctx context.Context, id string) error
	// PauseWebhook pauses (paused) or resumes a webhook at at and returns
	// it. Resuming also clears a failing webhook's failure streak, so it
	// is due at once from its cursor: the dispatcher's next poll, within
	// a second, picks it up. Errors: not_found.
	PauseWebhook(ctx context.Context, id string, paused bool, at time.Time) (*Webhook, error)

	// ClaimWebhooks leases to owner, until until, at most limit webhooks
	// that are due at now: neither paused nor failing, with no retry
	// pending after now, and not leased to another owner past now.
	ClaimWebhooks(ctx context.Context, owner string, now, until time.Time, limit int) ([]*Webhook, error)
	// RecordDelivery writes a webhook's delivery state and extends the
	// lease to until, if owner still holds the lease at now, and reports
	// whether the webhook was paused meanwhile (the owner then stops).
	// The cursor never moves back. Errors: conflict (the lease was
	// lost), not_found.
	RecordDelivery(ctx context.Context, owner, id string, st WebhookState, now, until time.Time) (paused bool, err error)
	// ReleaseWebhook ends owner's lease on a webhook, if it holds it.
	ReleaseWebhook(ctx context.Context, owner, id string) error
}

// cloneTime returns a copy of *p, or nil.
func cloneTime(p *time.Time) *time.Time {
	if p == nil {
		return nil
	}
	v := *p
	return &v
}
