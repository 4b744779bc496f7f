package iotgate

import (
	"errors"
	"fmt"
	"testing"
)

func TestErrorCodeAndMessage(t *testing.T) {
	tests := []struct {
		name          string
		err           error
		code, message string
	}{
		{"Nil", nil, "", "internal error"},
		{"Domain", Errorf(ENotFound, "device %q not found", "a@b"), ENotFound, `device "a@b" not found`},
		{"Wrapped", fmt.Errorf("lookup: %w", Errorf(EInvalid, "bad JID")), EInvalid, "bad JID"},
		{"NoMessage", &Error{Code: EConflict}, EConflict, EConflict},
		{"InternalHidden", &Error{Code: EInternal, Message: "pq: secret detail"}, EInternal, "internal error"},
		{"Foreign", errors.New("dial tcp: refused"), EInternal, "internal error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ErrorCode(tt.err); got != tt.code {
				t.Errorf("ErrorCode = %q, want %q", got, tt.code)
			}
			if got := ErrorMessage(tt.err); got != tt.message {
				t.Errorf("ErrorMessage = %q, want %q", got, tt.message)
			}
		})
	}
	t.Run("CauseKept", func(t *testing.T) {
		cause := errors.New("connection reset")
		err := &Error{Code: EUnavailable, Message: "store", Err: cause}
		if !errors.Is(err, cause) || err.Error() != "store: connection reset" {
			t.Errorf("err = %q, Is(cause) = %v; want the cause kept", err, errors.Is(err, cause))
		}
	})
}
