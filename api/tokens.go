package api

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/iotgate/iotgate"
	"github.com/iotgate/iotgate/auth"
)

// TokenService is what the API needs to manage API tokens.
type TokenService interface {
	// Create creates a token and returns it with its secret.
	// Errors: invalid, forbidden (broader than req.By).
	Create(ctx context.Context, req auth.CreateRequest) (*iotgate.Token, string, error)
	// List returns every token, oldest first.
	List(ctx context.Context) ([]*iotgate.Token, error)
	// Get returns a token. Errors: not_found.
	Get(ctx context.Context, id string) (*iotgate.Token, error)
	// Revoke revokes a token at once. Errors: not_found, invalid.
	Revoke(ctx context.Context, id string) (*iotgate.Token, error)
}

var _ TokenService = (*auth.Service)(nil)

// CreateTokenRequest is the body of POST /v1/tokens.
type CreateTokenRequest struct {
	// Name says who or what uses the token.
	Name string `json:"name" validate:"required,max=200" example:"ops-berlin"`
	// Scopes are what the token may do; admin implies all.
	Scopes []string `json:"scopes" validate:"required,min=1,max=6,dive,oneof=schemas:read schemas:write devices:read devices:write commands:send admin" example:"devices:read,commands:send"`
	// Devices limits the token to the devices whose labels include all
	// these; absent or {} means every device.
	Devices map[string]string `json:"devices" validate:"max=64" example:"site:berlin"`
	// ExpiresIn is how long the token is valid, as a Go duration (720h);
	// absent means forever.
	ExpiresIn string `json:"expires_in" validate:"max=32" example:"720h"`
}

// Token is an API token, without its secret.
type Token struct {
	ID     string   `json:"id" example:"tok_q3bx7k2mzv4wd9hc"`
	Name   string   `json:"name" example:"ops-berlin"`
	Scopes []string `json:"scopes" example:"devices:read,commands:send"`
	// Devices is the token's device selector; {} means every device.
	Devices    map[string]string `json:"devices" example:"site:berlin"`
	CreatedAt  time.Time         `json:"created_at" format:"date-time" example:"2026-01-02T15:04:05Z"`
	ExpiresAt  *time.Time        `json:"expires_at" format:"date-time" extensions:"x-nullable" example:"2026-02-01T15:04:05Z"`
	RevokedAt  *time.Time        `json:"revoked_at" format:"date-time" extensions:"x-nullable"`
	LastUsedAt *time.Time        `json:"last_used_at" format:"date-time" extensions:"x-nullable" example:"2026-01-02T16:00:00Z"`
}

// CreatedToken is a new token with its secret, which is shown only here.
type CreatedToken struct {
	Token
	// Secret is the bearer token to send as Authorization: Bearer
	// <secret>. It is not stored and can't be shown again.
	Secret string `json:"token" example:"iotg_Zm9vYmFyYmF6cXV4cXV1eGZvb2JhcmJhenF1eHF1dXg"`
}

// TokenList is every token.
type TokenList struct {
	Items []Token `json:"items"`
}

func tokenOfDomain(t *iotgate.Token) Token {
	out := Token{ID: t.ID, Name: t.Name, Devices: map[string]string(t.Devices), CreatedAt: t.CreatedAt,
		ExpiresAt: t.ExpiresAt, RevokedAt: t.RevokedAt, LastUsedAt: t.LastUsedAt, Scopes: make([]string, len(t.Scopes))}
	for i, s := range t.Scopes {
		out.Scopes[i] = string(s)
	}
	if out.Devices == nil {
		out.Devices = map[string]string{}
	}
	return out
}

// tokenHandler serves /v1/tokens.
type tokenHandler struct {
	svc TokenService
}

// create creates a token.
//
//	@Summary		Create an API token
//	@Description	Creates a token with the given scopes, optionally limited to the devices whose labels include all of devices, and optionally expiring. The answer's token field is the secret: it is shown this once and stored only as a hash. A token limited to some devices can only create tokens limited at least as much (every label pair of its selector in theirs), and a token that expires can only create tokens that expire no later (403).
//	@Tags			tokens
//	@Accept			json
//	@Produce		json
//	@Param			token	body		api.CreateTokenRequest	true	"The token to create"
//	@Success		201		{object}	api.CreatedToken
//	@Header			201		{string}	Location									"URL path of the token, /v1/tokens/{id}"
//	@Failure		400		{object}	api.ErrorResponse{details=[]api.FieldError}	"A missing name, an unknown scope, a bad label or expires_in, an unknown field, bad JSON"
//	@Failure		403		{object}	api.ErrorResponse							"The token lacks the route's scope, or the new token would be broader than it: a scope it lacks, devices not within its selector, or expiring later (code forbidden)"
//	@Failure		415		{object}	api.ErrorResponse	"Body is not JSON (Content-Type must be application/json)"
//	@Failure		500		{object}	api.ErrorResponse
//	@Failure		503		{object}	api.ErrorResponse
//	@Security		BearerAuth
//	@Failure		401	{object}	api.ErrorResponse	"Missing, unknown, expired or revoked token (code unauthorized; header WWW-Authenticate)"
//	@Failure		429	{object}	api.ErrorResponse	"The token's request rate is exceeded (code rate_limited)"
//	@Header			429	{integer}	Retry-After	"Seconds to wait before retrying"
//	@Router			/v1/tokens [post]
func (h *tokenHandler) create(c echo.Context) error {
	var req CreateTokenRequest
	if err := bind(c, &req); err != nil {
		return err
	}
	var expires time.Duration
	if req.ExpiresIn != "" {
		d, err := time.ParseDuration(req.ExpiresIn)
		if err != nil || d <= 0 {
			return iotgate.Errorf(iotgate.EInvalid, "expires_in must be a positive duration such as 720h, not %q", req.ExpiresIn)
		}
		expires = d
	}
	scopes := make([]iotgate.Scope, len(req.Scopes))
	for i, s := range req.Scopes {
		scopes[i] = iotgate.Scope(s)
	}
	// The service refuses (403) a token broader than the caller's.
	t, secret, err := h.svc.Create(c.Request().Context(), auth.CreateRequest{
		Name: req.Name, Scopes: scopes, Devices: iotgate.Selector(req.Devices), ExpiresIn: expires, By: tokenOf(c)})
	if err != nil {
		return fmt.Errorf("create token: %w", err)
	}
	c.Response().Header().Set(echo.HeaderLocation, "/v1/tokens/"+url.PathEscape(t.ID))
	return c.JSON(http.StatusCreated, CreatedToken{Token: tokenOfDomain(t), Secret: secret})
}

// list lists the tokens.
//
//	@Summary		List API tokens
//	@Description	Lists the tokens the caller manages, revoked and expired ones included, oldest first: every token for an admin token limited to no devices; for one limited by a selector, the tokens limited at least as much (every label pair of its selector in theirs). Secrets are never shown.
//	@Tags			tokens
//	@Produce		json
//	@Success		200	{object}	api.TokenList
//	@Failure		500	{object}	api.ErrorResponse
//	@Failure		503	{object}	api.ErrorResponse
//	@Security		BearerAuth
//	@Failure		401	{object}	api.ErrorResponse	"Missing, unknown, expired or revoked token (code unauthorized; header WWW-Authenticate)"
//	@Failure		403	{object}	api.ErrorResponse	"The token lacks the route's scope (code forbidden)"
//	@Failure		429	{object}	api.ErrorResponse	"The token's request rate is exceeded (code rate_limited)"
//	@Header			429	{integer}	Retry-After	"Seconds to wait before retrying"
//	@Router			/v1/tokens [get]
func (h *tokenHandler) list(c echo.Context) error {
	ts, err := h.svc.List(c.Request().Context())
	if err != nil {
		return fmt.Errorf("list tokens: %w", err)
	}
	by := tokenOf(c)
	ts = slices.DeleteFunc(ts, func(t *iotgate.Token) bool { return !auth.Manages(by, t) })
	return c.JSON(http.StatusOK, TokenList{Items: itemsOf(ts, tokenOfDomain)})
}

// get returns a token.
//
//	@Summary		Get an API token
//	@Description	Returns a token (never its secret), with when it was last used (recorded at most once a minute). A token the caller does not manage (broader than its device selector, or beside it) is 404, as if it did not exist.
//	@Tags			tokens
//	@Produce		json
//	@Param			id	path		string	true	"Token ID"	extensions(x-example=tok_q3bx7k2mzv4wd9hc)
//	@Success		200	{object}	api.Token
//	@Failure		404	{object}	api.ErrorResponse	"No such token, or one the caller does not manage"
//	@Failure		500	{object}	api.ErrorResponse
//	@Failure		503	{object}	api.ErrorResponse
//	@Security		BearerAuth
//	@Failure		401	{object}	api.ErrorResponse	"Missing, unknown, expired or revoked token (code unauthorized; header WWW-Authenticate)"
//	@Failure		403	{object}	api.ErrorResponse	"The token lacks the route's scope (code forbidden)"
//	@Failure		429	{object}	api.ErrorResponse	"The token's request rate is exceeded (code rate_limited)"
//	@Header			429	{integer}	Retry-After	"Seconds to wait before retrying"
//	@Router			/v1/tokens/{id} [get]
func (h *tokenHandler) get(c echo.Context) error {
	id, err := pathParam(c, "id")
	if err != nil {
		return err
	}
	t, err := h.lookup(c, id)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, tokenOfDomain(t))
}

// revoke revokes a token.
//
//	@Summary		Revoke an API token
//	@Description	Revokes a token: this iotgate refuses it at once, other instances within 10 seconds. The token stays listed, with revoked_at. Revoking a revoked token changes nothing. The bootstrap token (IOTGATE_ADMIN_TOKEN) can't be revoked here (400). An admin token limited by a device selector revokes only the tokens it manages (limited at least as much): others are 404, as if they did not exist.
//	@Tags			tokens
//	@Produce		json
//	@Param			id	path		string	true	"Token ID"	extensions(x-example=tok_q3bx7k2mzv4wd9hc)
//	@Success		200	{object}	api.Token	"Revoked"
//	@Failure		400	{object}	api.ErrorResponse	"The bootstrap token"
//	@Failure		404	{object}	api.ErrorResponse	"No such token, or one the caller does not manage"
//	@Failure		500	{object}	api.ErrorResponse
//	@Failure		503	{object}	api.ErrorResponse
//	@Security		BearerAuth
//	@Failure		401	{object}	api.ErrorResponse	"Missing, unknown, expired or revoked token (code unauthorized; header WWW-Authenticate)"
//	@Failure		403	{object}	api.ErrorResponse	"The token lacks the route's scope (code forbidden)"
//	@Failure		429	{object}	api.ErrorResponse	"The token's request rate is exceeded (code rate_limited)"
//	@Header			429	{integer}	Retry-After	"Seconds to wait before retrying"
//	@Router			/v1/tokens/{id} [delete]
func (h *tokenHandler) revoke(c echo.Context) error {
	id, err := pathParam(c, "id")
	if err != nil {
		return err
	}
	if len(selectorOf(c)) > 0 {
		// Unlimited admins manage every token: only the others need
		// the lookup (which also makes the bootstrap token 404 to them).
		if _, err := h.lookup(c, id); err != nil {
			return err
		}
	}
	t, err := h.svc.Revoke(c.Request().Context(), id)
	if err != nil {
		return fmt.Errorf("revoke token: %w", err)
	}
	return c.JSON(http.StatusOK, tokenOfDomain(t))
}

// lookup returns a token the request's token manages (auth.Manages);
// another is not found, with the message of a token that does not exist.
// Errors: not_found, unavailable.
func (h *tokenHandler) lookup(c echo.Context, id string) (*iotgate.Token, error) {
	t, err := h.svc.Get(c.Request().Context(), id)
	if iotgate.ErrorCode(err) == iotgate.ENotFound || err == nil && !auth.Manages(tokenOf(c), t) {
		return nil, iotgate.Errorf(iotgate.ENotFound, "token %s not found", id)
	}
	if err != nil {
		return nil, fmt.Errorf("get token: %w", err)
	}
	return t, nil
}
