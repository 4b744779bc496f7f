package api

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/iotgate/iotgate"
	"github.com/iotgate/iotgate/webhooks"
)

// WebhookService is what the API needs to manage webhooks.
type WebhookService interface {
	// Create creates a webhook and returns it with its secret. Errors:
	// invalid (detail webhook_url_refused), forbidden, conflict (too
	// many webhooks).
	Create(ctx context.Context, req webhooks.CreateRequest) (*iotgate.Webhook, error)
	// List returns every webhook, oldest first.
	List(ctx context.Context) ([]*iotgate.Webhook, error)
	// Get returns a webhook. Errors: not_found.
	Get(ctx context.Context, id string) (*iotgate.Webhook, error)
	// Delete deletes a webhook. Errors: not_found.
	Delete(ctx context.Context, id string) error
	// SetPaused pauses or resumes a webhook. Errors: not_found.
	SetPaused(ctx context.Context, id string, paused bool) (*iotgate.Webhook, error)
	// Lag returns how far a webhook is behind the event log.
	Lag(ctx context.Context, w *iotgate.Webhook) (webhooks.Lag, error)
}

var _ WebhookService = (*webhooks.Service)(nil)

// CreateWebhookRequest is the body of POST /v1/webhooks.
type CreateWebhookRequest struct {
	// URL receives the deliveries: http or https, and not a loopback,
	// private or link-local address (unless the operator allows it).
	URL string `json:"url" validate:"required,max=2048" example:"https://app.example.com/iotgate/events"`
	// Types selects these event types; absent or [] selects all.
	Types []string `json:"types" validate:"max=5,dive,oneof=reading rejection presence command device" example:"reading,presence"`
	// Devices selects the devices whose labels include all of these;
	// absent or {} means every device the token may see.
	Devices map[string]string `json:"devices" validate:"max=64" example:"site:berlin"`
	// Secret signs the deliveries; absent generates one (shown once).
	Secret string `json:"secret" validate:"omitempty,min=16,max=200" example:"whsec_3kTq0c9nZb7yQm2xWv5rLp8sHd4fGj6a"`
}

// UpdateWebhookRequest is the body of PATCH /v1/webhooks/{id}.
type UpdateWebhookRequest struct {
	// Paused pauses (true) or resumes (false) the webhook. Resuming a
	// failing webhook retries it from its cursor.
	Paused *bool `json:"paused" validate:"required" example:"false"`
}

// Webhook is a webhook with its delivery state, without its secret.
type Webhook struct {
	ID      string            `json:"id" example:"wh_q3bx7k2mzv4wd9hc"`
	URL     string            `json:"url" example:"https://app.example.com/iotgate/events"`
	Types   []string          `json:"types" example:"reading,presence"`
	Devices map[string]string `json:"devices" example:"site:berlin"`
	// TokenID is the token that created the webhook.
	TokenID   string    `json:"token_id" example:"tok_q3bx7k2mzv4wd9hc"`
	CreatedAt time.Time `json:"created_at" format:"date-time"`
	UpdatedAt time.Time `json:"updated_at" format:"date-time"`
	// State is active, paused, retrying (a delivery failed; a retry is
	// due at next_attempt_at) or failing (retries exhausted: resume it
	// with PATCH paused=false).
	State  string `json:"state" enums:"active,paused,retrying,failing" example:"active"`
	Paused bool   `json:"paused" example:"false"`
	// Cursor is the last event id the receiver acknowledged.
	Cursor int64 `json:"cursor" example:"4711"`
	// LastError says why the current streak of failures failed.
	LastError     string     `json:"last_error" example:"HTTP 503 Service Unavailable"`
	Attempts      int        `json:"attempts" example:"0"`
	LastAttemptAt *time.Time `json:"last_attempt_at" format:"date-time" extensions:"x-nullable"`
	LastSuccessAt *time.Time `json:"last_success_at" format:"date-time" extensions:"x-nullable"`
	FailingSince  *time.Time `json:"failing_since" format:"date-time" extensions:"x-nullable"`
	NextAttemptAt *time.Time `json:"next_attempt_at" format:"date-time" extensions:"x-nullable"`
	// Lag is shown by GET /v1/webhooks/{id} only.
	Lag *WebhookLag `json:"lag,omitempty"`
}

// WebhookLag is how far a webhook is behind the event log.
type WebhookLag struct {
	// Events is how many event ids follow the cursor (an upper bound of
	// the events the webhook selects).
	Events int64 `json:"events" example:"12"`
	// Seconds is the age of the oldest event not yet delivered (0 when
	// caught up).
	Seconds float64 `json:"seconds" example:"3.5"`
}

// CreatedWebhook is a new webhook with its secret, which is shown only
// here.
type CreatedWebhook struct {
	Webhook
	// Secret signs each delivery: Iotgate-Signature: t=<unix>,v1=<hex
	// HMAC-SHA256(secret, "<t>.<body>")>.
	Secret string `json:"secret" example:"whsec_3kTq0c9nZb7yQm2xWv5rLp8sHd4fGj6a"`
}

// WebhookList is every webhook the token may see.
type WebhookList struct {
	Items []Webhook `json:"items"`
}

func webhookOfDomain(w *iotgate.Webhook) Webhook {
	out := Webhook{ID: w.ID, URL: w.URL, Types: make([]string, len(w.Types)), Devices: map[string]string(w.Devices),
		TokenID: w.TokenID, CreatedAt: w.CreatedAt, UpdatedAt: w.UpdatedAt, Paused: w.Paused, Cursor: w.Cursor,
		LastError: w.LastError, Attempts: w.Attempts, LastAttemptAt: w.LastAttemptAt, LastSuccessAt: w.LastSuccessAt,
		FailingSince: w.FailingSince, NextAttemptAt: w.NextAttemptAt}
	for i, t := range w.Types {
		out.Types[i] = string(t)
	}
	if out.Devices == nil {
		out.Devices = map[string]string{}
	}
	switch {
	case w.Paused:
		out.State = "paused"
	case w.Failing:
		out.State = "failing"
	case w.Attempts > 0:
		out.State = "retrying"
	default:
		out.State = "active"
	}
	return out
}

// webhookHandler serves /v1/webhooks.
type webhookHandler struct {
	svc WebhookService
}

// visible reports whether the request's token may see w: a token limited
// to some devices sees only webhooks limited at least as much.
func webhookVisible(c echo.Context, w *iotgate.Webhook) bool {
	return w.Filter().Scope.Within(selectorOf(c))
}

// lookup returns a webhook the token may see; another is not found.
func (h *webhookHandler) lookup(c echo.Context) (*iotgate.Webhook, error) {
	id, err := pathParam(c, "id")
	if err != nil {
		return nil, err
	}
	w, err := h.svc.Get(c.Request().Context(), id)
	if err != nil {
		return nil, fmt.Errorf("get webhook: %w", err)
	}
	if !webhookVisible(c, w) {
		return nil, iotgate.Errorf(iotgate.ENotFound, "webhook %s not found", id)
	}
	return w, nil
}

// create creates a webhook.
//
//	@Summary		Create a webhook
//	@Description	Creates a webhook: iotgate POSTs the events it selects (types, and devices by label, within the token's own device selector) to url in batches (`{"webhook": id, "events": [...]}`), in id order, at least once, signed with the secret: header Iotgate-Signature `t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`, plus Iotgate-Event-Ids (first-last) and Iotgate-Webhook-Id. A 2xx acknowledges a batch; anything else, a redirect or no answer within 10 s is retried with exponential backoff (1 s doubling to 10 min, jittered) for 24 h, after which the webhook is failing until resumed. Delivery starts with the events written after creation. The secret is shown this once. A url whose host is or resolves to a loopback, private, link-local (the cloud metadata address) or multicast address is refused (code webhook_url_refused) unless the operator set IOTGATE_WEBHOOK_ALLOW_PRIVATE=1.
//	@Tags			webhooks
//	@Accept			json
//	@Produce		json
//	@Param			webhook	body		api.CreateWebhookRequest	true	"The webhook to create"
//	@Success		201		{object}	api.CreatedWebhook
//	@Header			201		{string}	Location									"URL path of the webhook, /v1/webhooks/{id}"
//	@Failure		400		{object}	api.ErrorResponse{details=[]api.FieldError}	"A bad url, type, label or secret, an unknown field, bad JSON (code invalid), or a refused address (code webhook_url_refused)"
//	@Failure		415		{object}	api.ErrorResponse	"Body is not JSON (Content-Type must be application/json)"
//	@Failure		403		{object}	api.ErrorResponse							"The token lacks the route's scope, or devices is not within the token's own device selector (code forbidden)"
//	@Failure		409		{object}	api.ErrorResponse							"Too many webhooks (100 by default)"
//	@Failure		500		{object}	api.ErrorResponse
//	@Failure		503		{object}	api.ErrorResponse
//	@Security		BearerAuth
//	@Failure		401	{object}	api.ErrorResponse	"Missing, unknown, expired or revoked token (code unauthorized; header WWW-Authenticate)"
//	@Failure		429	{object}	api.ErrorResponse	"The token's request rate is exceeded (code rate_limited)"
//	@Header			429	{integer}	Retry-After	"Seconds to wait before retrying"
//	@Router			/v1/webhooks [post]
func (h *webhookHandler) create(c echo.Context) error {
	var req CreateWebhookRequest
	if err := bind(c, &req); err != nil {
		return err
	}
	types := make([]iotgate.EventType, len(req.Types))
	for i, t := range req.Types {
		types[i] = iotgate.EventType(t)
	}
	w, err := h.svc.Create(c.Request().Context(), webhooks.CreateRequest{URL: req.URL, Types: types,
		Devices: iotgate.Selector(req.Devices), Secret: req.Secret, Token: tokenOf(c)})
	if err != nil {
		return fmt.Errorf("create webhook: %w", err)
	}
	c.Response().Header().Set(echo.HeaderLocation, "/v1/webhooks/"+url.PathEscape(w.ID))
	return c.JSON(http.StatusCreated, CreatedWebhook{Webhook: webhookOfDomain(w), Secret: w.Secret})
}

// list lists the webhooks.
//
//	@Summary		List webhooks
//	@Description	Lists the webhooks the token may see (those limited at least as much as its device selector), oldest first, with their delivery state. Secrets are never shown; lag is shown by GET /v1/webhooks/{id}.
//	@Tags			webhooks
//	@Produce		json
//	@Success		200	{object}	api.WebhookList
//	@Failure		500	{object}	api.ErrorResponse
//	@Failure		503	{object}	api.ErrorResponse
//	@Security		BearerAuth
//	@Failure		401	{object}	api.ErrorResponse	"Missing, unknown, expired or revoked token (code unauthorized; header WWW-Authenticate)"
//	@Failure		403	{object}	api.ErrorResponse	"The token lacks the route's scope (code forbidden)"
//	@Failure		429	{object}	api.ErrorResponse	"The token's request rate is exceeded (code rate_limited)"
//	@Header			429	{integer}	Retry-After	"Seconds to wait before retrying"
//	@Router			/v1/webhooks [get]
func (h *webhookHandler) list(c echo.Context) error {
	ws, err := h.svc.List(c.Request().Context())
	if err != nil {
		return fmt.Errorf("list webhooks: %w", err)
	}
	out := WebhookList{Items: []Webhook{}}
	for _, w := range ws {
		if webhookVisible(c, w) {
			out.Items = append(out.Items, webhookOfDomain(w))
		}
	}
	return c.JSON(http.StatusOK, out)
}

// get returns a webhook with its lag.
//
//	@Summary		Get a webhook
//	@Description	Returns a webhook (never its secret) with its delivery state: state, the cursor (last acknowledged event id), the last error of the current failure streak, and its lag behind the event log.
//	@Tags			webhooks
//	@Produce		json
//	@Param			id	path		string	true	"Webhook ID"	extensions(x-example=wh_q3bx7k2mzv4wd9hc)
//	@Success		200	{object}	api.Webhook
//	@Failure		404	{object}	api.ErrorResponse	"No such webhook"
//	@Failure		500	{object}	api.ErrorResponse
//	@Failure		503	{object}	api.ErrorResponse
//	@Security		BearerAuth
//	@Failure		401	{object}	api.ErrorResponse	"Missing, unknown, expired or revoked token (code unauthorized; header WWW-Authenticate)"
//	@Failure		403	{object}	api.ErrorResponse	"The token lacks the route's scope (code forbidden)"
//	@Failure		429	{object}	api.ErrorResponse	"The token's request rate is exceeded (code rate_limited)"
//	@Header			429	{integer}	Retry-After	"Seconds to wait before retrying"
//	@Router			/v1/webhooks/{id} [get]
func (h *webhookHandler) get(c echo.Context) error {
	w, err := h.lookup(c)
	if err != nil {
		return err
	}
	lag, err := h.svc.Lag(c.Request().Context(), w)
	if err != nil {
		return fmt.Errorf("webhook lag: %w", err)
	}
	out := webhookOfDomain(w)
	out.Lag = &WebhookLag{Events: lag.Events, Seconds: lag.Seconds}
	return c.JSON(http.StatusOK, out)
}

// update pauses or resumes a webhook.
//
//	@Summary		Pause or resume a webhook
//	@Description	Pauses (paused=true) or resumes (paused=false) a webhook. A paused webhook keeps its cursor and gets what it missed when resumed (within the event retention). Resuming a failing webhook retries it at once from its cursor, with a fresh retry limit. A delivery in flight finishes.
//	@Tags			webhooks
//	@Accept			json
//	@Produce		json
//	@Param			id		path		string						true	"Webhook ID"	extensions(x-example=wh_q3bx7k2mzv4wd9hc)
//	@Param			webhook	body		api.UpdateWebhookRequest	true	"The change"
//	@Success		200		{object}	api.Webhook
//	@Failure		400		{object}	api.ErrorResponse{details=[]api.FieldError}	"paused missing, an unknown field, bad JSON"
//	@Failure		415		{object}	api.ErrorResponse	"Body is not JSON (Content-Type must be application/json)"
//	@Failure		404		{object}	api.ErrorResponse							"No such webhook"
//	@Failure		500		{object}	api.ErrorResponse
//	@Failure		503		{object}	api.ErrorResponse
//	@Security		BearerAuth
//	@Failure		401	{object}	api.ErrorResponse	"Missing, unknown, expired or revoked token (code unauthorized; header WWW-Authenticate)"
//	@Failure		403	{object}	api.ErrorResponse	"The token lacks the route's scope (code forbidden)"
//	@Failure		429	{object}	api.ErrorResponse	"The token's request rate is exceeded (code rate_limited)"
//	@Header			429	{integer}	Retry-After	"Seconds to wait before retrying"
//	@Router			/v1/webhooks/{id} [patch]
func (h *webhookHandler) update(c echo.Context) error {
	var req UpdateWebhookRequest
	if err := bind(c, &req); err != nil {
		return err
	}
	w, err := h.lookup(c)
	if err != nil {
		return err
	}
	w, err = h.svc.SetPaused(c.Request().Context(), w.ID, *req.Paused)
	if err != nil {
		return fmt.Errorf("pause webhook: %w", err)
	}
	return c.JSON(http.StatusOK, webhookOfDomain(w))
}

// delete deletes a webhook.
//
//	@Summary		Delete a webhook
//	@Description	Deletes a webhook; a delivery in flight finishes.
//	@Tags			webhooks
//	@Produce		json
//	@Param			id	path	string	true	"Webhook ID"	extensions(x-example=wh_q3bx7k2mzv4wd9hc)
//	@Success		204
//	@Failure		404	{object}	api.ErrorResponse	"No such webhook"
//	@Failure		500	{object}	api.ErrorResponse
//	@Failure		503	{object}	api.ErrorResponse
//	@Security		BearerAuth
//	@Failure		401	{object}	api.ErrorResponse	"Missing, unknown, expired or revoked token (code unauthorized; header WWW-Authenticate)"
//	@Failure		403	{object}	api.ErrorResponse	"The token lacks the route's scope (code forbidden)"
//	@Failure		429	{object}	api.ErrorResponse	"The token's request rate is exceeded (code rate_limited)"
//	@Header			429	{integer}	Retry-After	"Seconds to wait before retrying"
//	@Router			/v1/webhooks/{id} [delete]
func (h *webhookHandler) delete(c echo.Context) error {
	w, err := h.lookup(c)
	if err != nil {
		return err
	}
	if err := h.svc.Delete(c.Request().Context(), w.ID); err != nil {
		return fmt.Errorf("delete webhook: %w", err)
	}
	return c.NoContent(http.StatusNoContent)
}
