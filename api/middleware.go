package api

import (
	"crypto/rand"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"
)

// requestIDKey is where requestID stores the id in the echo.Context.
const requestIDKey = "request_id"

// requestID gives every request an id: the client's X-Request-ID when it is
// a sane token (so ids can be followed across services), else a new random
// one. It is echoed in the response and logged with the request.
func requestID() echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			id := c.Request().Header.Get(echo.HeaderXRequestID)
			if !validRequestID(id) {
				id = rand.Text()
			}
			c.Response().Header().Set(echo.HeaderXRequestID, id)
			c.Set(requestIDKey, id)
			return next(c)
		}
	}
}

// validRequestID accepts 1 to 128 characters that are safe in logs and
// headers.
func validRequestID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	for _, r := range id {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
		case r == '-', r == '_', r == '.', r == ':', r == '/', r == '+', r == '=':
		default:
			return false
		}
	}
	return true
}

// requestIDOf returns the id requestID gave the request.
func requestIDOf(c echo.Context) string {
	id, _ := c.Get(requestIDKey).(string)
	return id
}

// accessLog logs one line per request. It hands a handler's error to the
// error handler itself, so that the line has the status actually sent.
// Probes (/healthz, /readyz) are logged at debug level to keep the log
// readable.
func accessLog(log *slog.Logger) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			start := time.Now()
			if err := next(c); err != nil {
				c.Error(err)
			}
			req, res := c.Request(), c.Response()
			level := slog.LevelInfo
			if p := req.URL.Path; p == "/healthz" || p == "/readyz" {
				level = slog.LevelDebug
			}
			// Building the line costs more than the rest of a request
			// served from memory: skip it when nobody reads it.
			if !log.Enabled(req.Context(), level) {
				return nil
			}
			// The path only: query strings may carry tokens.
			log.LogAttrs(req.Context(), level, "http request",
				slog.String("method", req.Method),
				slog.String("path", req.URL.Path),
				slog.String("route", c.Path()),
				slog.Int("status", res.Status),
				slog.Int64("bytes", res.Size),
				slog.Duration("duration", time.Since(start)),
				slog.String("remote", c.RealIP()),
				slog.String("request_id", requestIDOf(c)),
				// Who, never the secret.
				slog.String("token_id", tokenIDOf(c)),
			)
			return nil
		}
	}
}

// tokenIDOf returns the ID of the request's token, "" if none.
func tokenIDOf(c echo.Context) string {
	if t := tokenOf(c); t != nil {
		return t.ID
	}
	return ""
}

// bodyLimit caps request bodies at limit bytes. Unlike echo's BodyLimit,
// it never hands a handler more than limit bytes, even when the excess
// arrives in the same read; a body over the limit makes the decoding fail
// with *http.MaxBytesError, which the error handler answers with 413.
func bodyLimit(limit int64) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			req := c.Request()
			if req.Body == http.NoBody {
				// No body (net/http's answer for a request without
				// Content-Length or chunked encoding, such as most GETs):
				// nothing to limit, and no reader to allocate per request.
				return next(c)
			}
			if req.ContentLength > limit {
				return &http.MaxBytesError{Limit: limit}
			}
			req.Body = http.MaxBytesReader(c.Response().Writer, req.Body, limit)
			return next(c)
		}
	}
}

// panicError is a panic recovered from a handler.
type panicError struct {
	err   error
	stack []byte
}

func (e *panicError) Error() string { return fmt.Sprintf("panic: %v", e.err) }
func (e *panicError) Unwrap() error { return e.err }
