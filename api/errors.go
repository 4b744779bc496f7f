package api

import (
	"errors"
	"log/slog"
	"net/http"
	"strings"

	"github.com/go-playground/validator/v10"
	"github.com/labstack/echo/v4"

	"github.com/iotgate/iotgate"
)

// ErrorResponse is the body of every error response of the API.
type ErrorResponse struct {
	// Code is machine-readable: a devices error code (not_found,
	// conflict, invalid, unprocessable, unauthorized, forbidden,
	// unavailable, timeout, too_many_requests, internal), a more
	// specific one when the error has one (device_offline, xmpp_error,
	// xmpp_unavailable, idempotency_key_reused, rate_limited), or the HTTP
	// one for protocol errors (method_not_allowed, payload_too_large,
	// unsupported_media_type).
	Code string `json:"code" validate:"required" example:"not_found"`
	// Message is for humans; it never carries internal details.
	Message string `json:"message" validate:"required" example:"device not found"`
	// Details, when present, says more: for validation errors, a list of
	// FieldError; for an XSD that does not compile (422), the compiler's
	// issues, each with its line and message; for the outcome of a
	// command (409, 502, 503, 504), the stored Command. So it is a list
	// or an object, depending on the error.
	Details any `json:"details,omitempty"` // no swaggertype: a generated client must take a list here too

}

// codeStatus maps domain error codes to HTTP statuses: the one table of
// the HTTP transport. Unknown codes are internal errors.
var codeStatus = map[string]int{
	iotgate.EInvalid:      http.StatusBadRequest,
	iotgate.EUnauthorized: http.StatusUnauthorized,
	iotgate.EForbidden:    http.StatusForbidden,
	iotgate.ENotFound:     http.StatusNotFound,
	iotgate.EConflict:     http.StatusConflict,
	iotgate.ETooMany:      http.StatusTooManyRequests,
	iotgate.EInternal:     http.StatusInternalServerError,
	iotgate.EUnavailable:  http.StatusServiceUnavailable,
	iotgate.ETimeout:      http.StatusGatewayTimeout,
	iotgate.EBadGateway:   http.StatusBadGateway,

	// Well-formed, but its content (an XSD, a reading) is refused.
	iotgate.EUnprocessable: http.StatusUnprocessableEntity,
}

// statusCode gives the code of the errors echo itself returns (unknown
// route, wrong method, body too large, undecodable body), by status.
var statusCode = map[int]string{
	http.StatusBadRequest:            iotgate.EInvalid,
	http.StatusUnauthorized:          iotgate.EUnauthorized,
	http.StatusForbidden:             iotgate.EForbidden,
	http.StatusNotFound:              iotgate.ENotFound,
	http.StatusMethodNotAllowed:      "method_not_allowed",
	http.StatusConflict:              iotgate.EConflict,
	http.StatusRequestEntityTooLarge: "payload_too_large",
	http.StatusUnsupportedMediaType:  "unsupported_media_type",
	http.StatusUnprocessableEntity:   iotgate.EUnprocessable,
	http.StatusTooManyRequests:       iotgate.ETooMany,
	http.StatusBadGateway:            iotgate.EBadGateway,
	http.StatusServiceUnavailable:    iotgate.EUnavailable,
	http.StatusGatewayTimeout:        iotgate.ETimeout,
}

// internalMessage is all clients learn of an internal error.
const internalMessage = "internal error"

// handleError is echo's HTTPErrorHandler: it writes err as an
// ErrorResponse and logs internal errors (once: nothing else logs them)
// and unavailability (whose cause the client doesn't see).
func (s *Server) handleError(err error, c echo.Context) {
	status, body := errorResponse(err)
	if status >= http.StatusInternalServerError {
		level := slog.LevelWarn
		if status == http.StatusInternalServerError {
			level = slog.LevelError
		}
		attrs := []slog.Attr{
			slog.Any("err", err),
			slog.Int("status", status),
			slog.String("method", c.Request().Method),
			slog.String("path", c.Request().URL.Path),
			slog.String("request_id", requestIDOf(c)),
		}
		var p *panicError
		if errors.As(err, &p) {
			attrs = append(attrs, slog.String("stack", string(p.stack)))
		}
		s.log.LogAttrs(c.Request().Context(), level, "request failed", attrs...)
	}

	if c.Response().Committed {
		// Too late to change the status; the log above is all we can do.
		return
	}
	var werr error
	if c.Request().Method == http.MethodHead {
		werr = c.NoContent(status)
	} else {
		werr = c.JSON(status, body)
	}
	if werr != nil {
		s.log.Debug("write error response", "err", werr, "request_id", requestIDOf(c))
	}
}

// errorResponse returns the status and body for err.
func errorResponse(err error) (int, ErrorResponse) {
	var de *iotgate.Error
	if errors.As(err, &de) {
		status, ok := codeStatus[de.Code]
		if !ok || status == http.StatusInternalServerError {
			return http.StatusInternalServerError, ErrorResponse{Code: iotgate.EInternal, Message: internalMessage}
		}
		code := de.Code
		if de.Detail != "" {
			code = de.Detail
		}
		return status, ErrorResponse{Code: code, Message: iotgate.ErrorMessage(de), Details: de.Fields}
	}

	var ve validator.ValidationErrors
	if errors.As(err, &ve) {
		return http.StatusBadRequest, invalidRequest(ve)
	}

	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return http.StatusRequestEntityTooLarge, ErrorResponse{Code: statusCode[http.StatusRequestEntityTooLarge], Message: "request body too large"}
	}

	var he *echo.HTTPError
	if errors.As(err, &he) {
		var inner *echo.HTTPError
		if errors.As(he.Internal, &inner) {
			he = inner
		}
		status := he.Code
		if status < 400 || status > 599 {
			status = http.StatusInternalServerError
		}
		code, ok := statusCode[status]
		switch {
		case status == http.StatusInternalServerError:
			return status, ErrorResponse{Code: iotgate.EInternal, Message: internalMessage}
		case !ok && status >= 500:
			code = iotgate.EUnavailable
		case !ok:
			code = iotgate.EInvalid
		}
		msg, _ := he.Message.(string)
		if msg == "" || msg == http.StatusText(status) {
			msg = strings.ToLower(http.StatusText(status))
		}
		return status, ErrorResponse{Code: code, Message: msg}
	}

	return http.StatusInternalServerError, ErrorResponse{Code: iotgate.EInternal, Message: internalMessage}
}
