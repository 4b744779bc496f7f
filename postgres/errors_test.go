package postgres

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"testing"

	"github.com/lib/pq"
	"github.com/lib/pq/pqerror"

	"github.com/iotgate/iotgate"
)

func TestTranslate(t *testing.T) {
	domain := iotgate.Errorf(iotgate.ENotFound, "device not found")
	tests := []struct {
		name string
		err  error
		code string
	}{
		{"NoRows", sql.ErrNoRows, iotgate.ENotFound},
		{"UniqueViolation", &pq.Error{Code: pqerror.UniqueViolation}, iotgate.EConflict},
		{"WrappedUniqueViolation", fmt.Errorf("insert: %w", &pq.Error{Code: pqerror.UniqueViolation}), iotgate.EConflict},
		{"ForeignKeyViolation", &pq.Error{Code: pqerror.ForeignKeyViolation}, iotgate.EConflict},
		{"RestrictViolation", &pq.Error{Code: pqerror.RestrictViolation}, iotgate.EConflict},
		{"CheckViolation", &pq.Error{Code: pqerror.CheckViolation}, iotgate.EInvalid},
		{"NotNullViolation", &pq.Error{Code: pqerror.NotNullViolation}, iotgate.EInvalid},
		{"StringTooLong", &pq.Error{Code: pqerror.StringDataRightTruncation}, iotgate.EInvalid},
		{"SerializationFailure", &pq.Error{Code: pqerror.TRSerializationFailure}, iotgate.EUnavailable},
		{"LockNotAvailable", &pq.Error{Code: pqerror.LockNotAvailable}, iotgate.EUnavailable},
		{"StatementTimeout", &pq.Error{Code: pqerror.QueryCanceled}, iotgate.ETimeout},
		{"AdminShutdown", &pq.Error{Code: pqerror.AdminShutdown}, iotgate.EUnavailable},
		{"ConnectionFailure", &pq.Error{Code: pqerror.ConnectionFailure}, iotgate.EUnavailable},
		{"BadPassword", &pq.Error{Code: pqerror.InvalidPassword}, iotgate.EUnavailable},
		{"NoDatabase", &pq.Error{Code: pqerror.InvalidCatalogName}, iotgate.EUnavailable},
		{"SyntaxError", &pq.Error{Code: pqerror.SyntaxError}, iotgate.EInternal},
		{"BadConn", driver.ErrBadConn, iotgate.EUnavailable},
		{"Deadline", context.DeadlineExceeded, iotgate.ETimeout},
		{"Canceled", context.Canceled, iotgate.ETimeout},
		{"Domain", domain, iotgate.ENotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := translate(tt.err, "op")
			var e *iotgate.Error
			if !errors.As(got, &e) {
				t.Fatalf("translate(%v) = %T, want *iotgate.Error", tt.err, got)
			}
			if e.Code != tt.code {
				t.Errorf("code = %q, want %q", e.Code, tt.code)
			}
			if !errors.Is(got, tt.err) {
				t.Errorf("translate(%v) lost its cause", tt.err)
			}
		})
	}
	t.Run("Nil", func(t *testing.T) {
		if err := translate(nil, "op"); err != nil {
			t.Errorf("translate(nil) = %v, want nil", err)
		}
	})
	t.Run("MessageHidesDriverText", func(t *testing.T) {
		err := translate(&pq.Error{Code: pqerror.UniqueViolation, Message: "duplicate key value violates unique constraint \"devices_pkey\""}, "register device")
		if got, want := iotgate.ErrorMessage(err), "register device: already exists"; got != want {
			t.Errorf("message = %q, want %q", got, want)
		}
	})
}
