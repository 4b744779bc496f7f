package iotgate

import (
	"testing"
	"time"
)

func TestCommandRequestNormalize(t *testing.T) {
	tests := []struct {
		name string
		req  CommandRequest
		want CommandRequest // after Normalize; zero when it must fail
	}{
		{"Defaults", CommandRequest{Payload: "<x/>"},
			CommandRequest{Type: "set", Mode: CommandSync, Timeout: DefaultCommandTimeout, Payload: "<x/>"}},
		{"QueueExpiry", CommandRequest{Type: "get", Mode: CommandQueue, Payload: "<x/>"},
			CommandRequest{Type: "get", Mode: CommandQueue, Timeout: DefaultCommandTimeout, ExpiresIn: DefaultCommandExpiry, Payload: "<x/>"}},
		{"ErrType", CommandRequest{Type: "result", Payload: "<x/>"}, CommandRequest{}},
		{"ErrMode", CommandRequest{Mode: "later", Payload: "<x/>"}, CommandRequest{}},
		{"ErrTimeout", CommandRequest{Timeout: MaxCommandTimeout + time.Second, Payload: "<x/>"}, CommandRequest{}},
		{"ErrExpiryNotQueued", CommandRequest{ExpiresIn: time.Minute, Payload: "<x/>"}, CommandRequest{}},
		{"ErrNoPayload", CommandRequest{}, CommandRequest{}},
		{"Data", CommandRequest{Data: `{"target":20}`, Element: "set"},
			CommandRequest{Type: "set", Mode: CommandSync, Timeout: DefaultCommandTimeout, Data: `{"target":20}`, Element: "set"}},
		{"ErrPayloadAndData", CommandRequest{Payload: "<x/>", Data: `{}`}, CommandRequest{}},
		{"ErrElementWithoutData", CommandRequest{Payload: "<x/>", Element: "set"}, CommandRequest{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := tt.req
			err := req.Normalize()
			if tt.want == (CommandRequest{}) {
				if ErrorCode(err) != EInvalid {
					t.Fatalf("Normalize(%+v) = %v, want invalid", tt.req, err)
				}
				return
			}
			if err != nil || req != tt.want {
				t.Errorf("Normalize(%+v) = %+v, %v; want %+v", tt.req, req, err, tt.want)
			}
		})
	}
}

func TestCommandErr(t *testing.T) {
	tests := []struct {
		name         string
		status       CommandStatus
		code         string
		want, detail string
	}{
		{"Succeeded", CommandSucceeded, "", "", ""},
		{"Sent", CommandSent, "", "", ""},
		{"TimedOut", CommandTimedOut, ETimeout, ETimeout, ""},
		{"Expired", CommandExpired, "", ETimeout, "command_expired"},
		{"Canceled", CommandCanceled, "", EConflict, "command_canceled"},
		{"Offline", CommandFailed, DetailDeviceOffline, EConflict, DetailDeviceOffline},
		{"XMPPError", CommandFailed, DetailXMPPError, EBadGateway, DetailXMPPError},
		{"StreamDown", CommandFailed, DetailXMPPUnavailable, EUnavailable, DetailXMPPUnavailable},
		{"TooMany", CommandFailed, ETooMany, ETooMany, ""},
		{"Restarted", CommandFailed, DetailRestarted, EUnavailable, ""},
		{"Other", CommandFailed, EInternal, EInternal, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := (&Command{Status: tt.status, ErrorCode: tt.code, Error: "why"}).Err()
			if got := ErrorCode(err); got != tt.want {
				t.Fatalf("Err() = %v (code %q), want code %q", err, got, tt.want)
			}
			if e, ok := err.(*Error); ok && e.Detail != tt.detail {
				t.Errorf("detail = %q, want %q", e.Detail, tt.detail)
			}
		})
	}
}
