package api

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/iotgate/iotgate"
	"github.com/iotgate/iotgate/auth"
)

// Authenticator is what the API needs to check bearer tokens.
type Authenticator interface {
	// Authenticate returns the active token whose secret this is.
	// Errors: unauthorized, unavailable.
	Authenticate(ctx context.Context, secret string) (*iotgate.Token, error)
	// Current returns the token with this ID as it is now: open event
	// streams check that their token is still valid. Errors:
	// unauthorized (revoked, expired, gone), unavailable.
	Current(ctx context.Context, id string) (*iotgate.Token, error)
}

var _ Authenticator = (*auth.Service)(nil)

// tokenKey is where authenticate stores the request's *iotgate.Token.
const tokenKey = "auth_token"

// wwwAuthenticate is the challenge of a 401 (RFC 6750).
const wwwAuthenticate = `Bearer realm="iotgate"`

// authenticate requires an `Authorization: Bearer <token>` header with a
// token the Authenticator accepts. The secret goes no further than the
// Authenticator: it is never logged nor stored in the context.
func (s *Server) authenticate(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		secret, given := bearer(c.Request().Header.Get(echo.HeaderAuthorization))
		challenge := wwwAuthenticate
		if given {
			challenge += `, error="invalid_token"`
		}
		if !given || s.auth == nil {
			c.Response().Header().Set(echo.HeaderWWWAuthenticate, challenge)
			return iotgate.Errorf(iotgate.EUnauthorized, "this endpoint needs an Authorization: Bearer <token> header")
		}
		tok, err := s.auth.Authenticate(c.Request().Context(), secret)
		if err != nil {
			if iotgate.ErrorCode(err) == iotgate.EUnauthorized {
				c.Response().Header().Set(echo.HeaderWWWAuthenticate, challenge)
				return s.authFailed(c, fmt.Errorf("authenticate: %w", err))
			}
			return fmt.Errorf("authenticate: %w", err)
		}
		c.Set(tokenKey, tok)
		return next(c)
	}
}

// authFailed counts a failed authentication (err, unauthorized) against
// the client and returns err, or 429 once the client has failed too often.
// The credential is always checked first: a valid token is never refused
// for what others sent from the same address (a proxy, a NAT), and only
// clients that keep sending bad credentials are slowed down.
func (s *Server) authFailed(c echo.Context, err error) error {
	if ok, wait := s.failures.allow(clientKey(c.RealIP())); !ok {
		secs := max(int(wait.Seconds()+0.999), 1)
		c.Response().Header().Set("Retry-After", strconv.Itoa(secs))
		return &iotgate.Error{Code: iotgate.ETooMany, Detail: iotgate.DetailRateLimited,
			Message: fmt.Sprintf("too many failed authentications from this address, retry in %d s", secs)}
	}
	return err
}

// bearer returns the token of an Authorization header; the scheme is
// case-insensitive (RFC 7235).
func bearer(h string) (string, bool) {
	scheme, tok, ok := strings.Cut(strings.TrimSpace(h), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	tok = strings.TrimSpace(tok)
	return tok, tok != ""
}

// requireScope refuses tokens without scope with 403.
func requireScope(scope iotgate.Scope) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			if tok := tokenOf(c); tok == nil || !tok.Allows(scope) {
				c.Response().Header().Set(echo.HeaderWWWAuthenticate, wwwAuthenticate+`, error="insufficient_scope", scope="`+string(scope)+`"`)
				return iotgate.Errorf(iotgate.EForbidden, "this token lacks the scope %s", scope)
			}
			return next(c)
		}
	}
}

// rateLimit limits each token to the configured rate; excess requests
// get 429 with Retry-After (whole seconds).
func (s *Server) rateLimit(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		tok := tokenOf(c)
		if s.limits == nil || tok == nil {
			return next(c)
		}
		if ok, wait := s.limits.allow(tok.ID); !ok {
			secs := max(int(wait.Seconds()+0.999), 1)
			c.Response().Header().Set("Retry-After", strconv.Itoa(secs))
			return &iotgate.Error{Code: iotgate.ETooMany, Detail: iotgate.DetailRateLimited,
				Message: fmt.Sprintf("this token's request rate is exceeded, retry in %d s", secs)}
		}
		return next(c)
	}
}

// unlimitedOnly refuses (403) tokens limited to some devices: what next
// serves covers every device (the global metrics), so even an admin token
// limited by a selector may not see it.
func unlimitedOnly(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if sel := selectorOf(c); len(sel) > 0 {
			return iotgate.Errorf(iotgate.EForbidden, "this covers every device: it needs an admin token limited to no devices, not to %s", sel)
		}
		return next(c)
	}
}

// tokenOf returns the request's authenticated token, nil on public routes.
func tokenOf(c echo.Context) *iotgate.Token {
	t, _ := c.Get(tokenKey).(*iotgate.Token)
	return t
}

// selectorOf returns the device selector of the request's token; empty
// when it sees every device.
func selectorOf(c echo.Context) iotgate.Selector {
	if t := tokenOf(c); t != nil {
		return t.Devices
	}
	return nil
}

// deviceNotFound is the answer for a device the token may not see: the
// same as for a device that does not exist, so that its existence does
// not leak.
func deviceNotFound(jid string) error {
	return iotgate.Errorf(iotgate.ENotFound, "device %s is not registered", jid)
}

// visible checks that the request's token may see the device. It costs a
// lookup only for tokens limited to some devices. Errors: not_found (also
// for a device outside the token's selector), invalid.
func visible(c echo.Context, devs DeviceService, jid string) error {
	sel := selectorOf(c)
	if len(sel) == 0 {
		return nil
	}
	if devs == nil {
		return deviceNotFound(jid)
	}
	d, err := devs.Device(c.Request().Context(), jid)
	if err != nil {
		return fmt.Errorf("check device access: %w", err)
	}
	if !sel.Matches(d.Labels) {
		return deviceNotFound(d.JID)
	}
	return nil
}

// mayLabel refuses (403) labels that would put a device outside the
// request's token's selector: a limited token can't create devices it
// could not see, nor move them out of its reach.
func mayLabel(c echo.Context, labels map[string]string) error {
	if sel := selectorOf(c); !sel.Matches(labels) {
		return iotgate.Errorf(iotgate.EForbidden, "this token may only manage devices labelled %s", sel)
	}
	return nil
}
