package webhooks

import (
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/iotgate/iotgate"
)

// SecretPrefix starts every generated secret.
const SecretPrefix = "whsec_"

// DefaultMaxWebhooks bounds how many webhooks exist.
const DefaultMaxWebhooks = 100

// Config tunes the Service. The zero value is usable.
type Config struct {
	// MaxWebhooks bounds how many webhooks may exist (0: 100).
	MaxWebhooks int
	// AllowPrivate lets webhooks reach loopback, private and link-local
	// addresses (IOTGATE_WEBHOOK_ALLOW_PRIVATE=1; tests and closed
	// networks).
	AllowPrivate bool
	// Resolver resolves URL hosts at creation; nil: net.DefaultResolver.
	Resolver Resolver
	// Now returns the current time; nil: time.Now.
	Now func() time.Time
	// Logger; nil discards.
	Logger *slog.Logger
}

// Service manages webhooks. It is safe for concurrent use.
type Service struct {
	store iotgate.WebhookStore
	log   iotgate.EventLog
	cfg   Config
}

// NewService returns a Service over store; events is read for the lag
// shown by Get.
func NewService(store iotgate.WebhookStore, events iotgate.EventLog, cfg Config) *Service {
	if cfg.MaxWebhooks <= 0 {
		cfg.MaxWebhooks = DefaultMaxWebhooks
	}
	if cfg.Resolver == nil {
		cfg.Resolver = net.DefaultResolver
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Service{store: store, log: events, cfg: cfg}
}

// CreateRequest is a webhook to create.
type CreateRequest struct {
	URL     string
	Types   []iotgate.EventType
	Devices iotgate.Selector
	// Secret signs deliveries; "" generates one.
	Secret string
	// Token is the creating token: the webhook's devices must lie within
	// its selector, which stays the webhook's cap.
	Token *iotgate.Token
}

// NewSecret returns a random signing secret (256 bits).
func NewSecret() string { return SecretPrefix + strings.TrimRight(rand.Text()+rand.Text(), "=")[:43] }

func newID() string { return "wh_" + strings.ToLower(rand.Text()[:16]) }

// Create creates a webhook, delivering from the newest event on (events
// before its creation are not sent), and returns it with its secret.
// Errors: invalid (bad URL, type, selector or secret; detail
// webhook_url_refused for a refused address), forbidden (devices outside
// the token's selector), conflict (MaxWebhooks reached),
// unavailable.
func (s *Service) Create(ctx context.Context, req CreateRequest) (*iotgate.Webhook, error) {
	var outer iotgate.Selector
	tokenID := ""
	if req.Token != nil {
		outer, tokenID = req.Token.Devices, req.Token.ID
	}
	if req.Devices == nil {
		req.Devices = iotgate.Selector{}
	}
	if !req.Devices.Within(outer) {
		return nil, iotgate.Errorf(iotgate.EForbidden, "this token may only create webhooks limited to devices %s", outer)
	}
	if req.Secret == "" {
		req.Secret = NewSecret()
	}
	now := s.cfg.Now().UTC()
	w := &iotgate.Webhook{ID: newID(), URL: req.URL, Types: req.Types, Devices: req.Devices, Secret: req.Secret,
		TokenID: tokenID, Cap: outer, CreatedAt: now, UpdatedAt: now}
	if w.Cap == nil {
		w.Cap = iotgate.Selector{}
	}
	if err := w.Validate(); err != nil {
		return nil, err
	}
	if err := CheckURL(ctx, s.cfg.Resolver, w.URL, s.cfg.AllowPrivate); err != nil {
		return nil, err
	}
	all, err := s.store.Webhooks(ctx)
	if err != nil {
		return nil, fmt.Errorf("count webhooks: %w", err)
	}
	if len(all) >= s.cfg.MaxWebhooks {
		return nil, iotgate.Errorf(iotgate.EConflict, "at most %d webhooks may exist: delete one first", s.cfg.MaxWebhooks)
	}
	// Start at the newest event: a new webhook is not a replay of the
	// last 24 hours.
	b, err := s.log.EventBounds(ctx)
	if err != nil {
		return nil, fmt.Errorf("read event bounds: %w", err)
	}
	w.Cursor = b.Last
	if err := s.store.CreateWebhook(ctx, w); err != nil {
		return nil, fmt.Errorf("create webhook: %w", err)
	}
	s.cfg.Logger.Info("webhook created", "webhook", w.ID, "url", w.URL, "token", tokenID)
	return w, nil
}

// List returns every webhook, oldest first.
func (s *Service) List(ctx context.Context) ([]*iotgate.Webhook, error) { return s.store.Webhooks(ctx) }

// Get returns a webhook. Errors: not_found.
func (s *Service) Get(ctx context.Context, id string) (*iotgate.Webhook, error) {
	return s.store.Webhook(ctx, id)
}

// Delete deletes a webhook; a delivery in flight finishes. Errors:
// not_found.
func (s *Service) Delete(ctx context.Context, id string) error {
	return s.store.DeleteWebhook(ctx, id)
}

// SetPaused pauses or resumes a webhook. Resuming a failing webhook starts
// it over from its cursor with a fresh retry limit. Errors: not_found.
func (s *Service) SetPaused(ctx context.Context, id string, paused bool) (*iotgate.Webhook, error) {
	return s.store.PauseWebhook(ctx, id, paused, s.cfg.Now().UTC())
}

// Lag is how far a webhook is behind the log.
type Lag struct {
	// Events is how many event ids the log holds after the webhook's
	// cursor (an upper bound of the events it selects).
	Events int64
	// Seconds is the age of the oldest event the webhook selects and
	// hasn't delivered (0 when caught up).
	Seconds float64
}

// lagScans bounds the reads Lag makes to find the oldest pending event.
const lagScans = 10

// Lag returns w's lag. Errors: unavailable.
func (s *Service) Lag(ctx context.Context, w *iotgate.Webhook) (Lag, error) {
	b, err := s.log.EventBounds(ctx)
	if err != nil {
		return Lag{}, fmt.Errorf("read event bounds: %w", err)
	}
	lag := Lag{Events: max(0, b.Last-w.Cursor)}
	f := w.Filter()
	after := w.Cursor
	for range lagScans {
		batch, err := s.log.Events(ctx, iotgate.EventQuery{After: after, Limit: 1, Filter: f})
		if err != nil {
			return Lag{}, fmt.Errorf("read events: %w", err)
		}
		for _, e := range batch.Events {
			if f.Matches(e) {
				lag.Seconds = max(0, s.cfg.Now().Sub(e.Time).Seconds())
				return lag, nil
			}
		}
		if !batch.More || batch.Next <= after {
			break
		}
		after = batch.Next
	}
	return lag, nil
}
