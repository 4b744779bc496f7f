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

	"github.com/iotgate/iotgate/devices"
)

func TestTranslate(t *testing.T) {
	domain := devices.Errorf(devices.ENotFound, "device not found")
	tests := []struct {
		name string
		err  error
		code string
	}{
		{"NoRows", sql.ErrNoRows, devices.ENotFound},
		{"UniqueViolation", &pq.Error{Code: pqerror.UniqueViolation}, devices.EConflict},
		{"WrappedUniqueViolation", fmt.Errorf("insert: %w", &pq.Error{Code: pqerror.UniqueViolation}), devices.EConflict},
		{"ForeignKeyViolation", &pq.Error{Code: pqerror.ForeignKeyViolation}, devices.EConflict},
		{"RestrictViolation", &pq.Error{Code: pqerror.RestrictViolation}, devices.EConflict},
		{"CheckViolation", &pq.Error{Code: pqerror.CheckViolation}, devices.EInvalid},
		{"NotNullViolation", &pq.Error{Code: pqerror.NotNullViolation}, devices.EInvalid},
		{"StringTooLong", &pq.Error{Code: pqerror.StringDataRightTruncation}, devices.EInvalid},
		{"SerializationFailure", &pq.Error{Code: pqerror.TRSerializationFailure}, devices.EUnavailable},
		{"LockNotAvailable", &pq.Error{Code: pqerror.LockNotAvailable}, devices.EUnavailable},
		{"StatementTimeout", &pq.Error{Code: pqerror.QueryCanceled}, devices.ETimeout},
		{"AdminShutdown", &pq.Error{Code: pqerror.AdminShutdown}, devices.EUnavailable},
		{"ConnectionFailure", &pq.Error{Code: pqerror.ConnectionFailure}, devices.EUnavailable},
		{"BadPassword", &pq.Error{Code: pqerror.InvalidPassword}, devices.EUnavailable},
		{"NoDatabase", &pq.Error{Code: pqerror.InvalidCatalogName}, devices.EUnavailable},
		{"SyntaxError", &pq.Error{Code: pqerror.SyntaxError}, devices.EInternal},
		{"BadConn", driver.ErrBadConn, devices.EUnavailable},
		{"Deadline", context.DeadlineExceeded, devices.ETimeout},
		{"Canceled", context.Canceled, devices.ETimeout},
		{"Domain", domain, devices.ENotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := translate(tt.err, "op")
			var e *devices.Error
			if !errors.As(got, &e) {
				t.Fatalf("translate(%v) = %T, want *devices.Error", tt.err, got)
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
		if got, want := devices.ErrorMessage(err), "register device: already exists"; got != want {
			t.Errorf("message = %q, want %q", got, want)
		}
	})
}
