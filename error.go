package iotgate

import (
	"errors"
	"fmt"
)

// Error codes. They are part of the public API (HTTP problem bodies carry
// them), so they never change meaning once released.
const (
	ENotFound     = "not_found"
	EConflict     = "conflict"
	EInvalid      = "invalid"
	EUnauthorized = "unauthorized"
	EForbidden    = "forbidden"
	EUnavailable  = "unavailable"
	ETimeout      = "timeout"
	ETooMany      = "too_many_requests"
	EInternal     = "internal"

	// EUnprocessable is for well-formed input whose content the schema
	// machinery refuses: an XSD that does not compile, a reading that
	// does not validate. EInvalid is for input of the wrong shape (a
	// missing field, a bad JID); clients need to tell the two apart.
	EUnprocessable = "unprocessable"

	// EBadGateway is for an answer from a device that refused or failed a
	// request iotgate relayed (a command answered with an IQ error): the
	// request reached the device, and the device said no.
	EBadGateway = "bad_gateway"
)

// Error is the domain error. Transports map Code to their own vocabulary in
// exactly one place each (HTTP status, XMPP stanza error condition).
//
// Detail is an optional, more specific machine-readable code (for example
// "device_offline" or "xmpp_unavailable") that clients may switch on; when
// set, transports show it instead of Code.
type Error struct {
	Code    string
	Detail  string
	Message string
	// Fields carries structured details safe to show to clients (for
	// example validation errors with line and path).
	Fields any
	// Err is the underlying cause; never shown to clients.
	Err error
}

func (e *Error) Error() string {
	msg := e.Message
	if msg == "" {
		msg = e.Code
	}
	if e.Err != nil {
		return msg + ": " + e.Err.Error()
	}
	return msg
}

func (e *Error) Unwrap() error { return e.Err }

// Errorf returns an *Error with the given code and a formatted message.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// ErrorCode returns the code of the first *Error in err's chain, EInternal for
// any other non-nil error, and "" for nil.
func ErrorCode(err error) string {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return EInternal
}

// ErrorMessage returns the client-safe message of err: the message of the
// first *Error in its chain, or "internal error" for anything else, so that
// driver or network details never reach clients.
func ErrorMessage(err error) string {
	var e *Error
	if errors.As(err, &e) && e.Code != EInternal {
		if e.Message != "" {
			return e.Message
		}
		return e.Code
	}
	return "internal error"
}
