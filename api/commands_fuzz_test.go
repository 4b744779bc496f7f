package api

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/iotgate/iotgate"
	"github.com/labstack/echo/v4"
)

// FuzzCreateCommandBody sends arbitrary bodies (and Idempotency-Keys) to
// POST /v1/devices/{jid}/commands: every answer is a known status with an
// error body, and whatever reaches the command service is in range.
func FuzzCreateCommandBody(f *testing.F) {
	for _, s := range []string{
		`{"payload":"<set xmlns='urn:example:thermostat'><target>21.5</target></set>"}`,
		`{"payload":"<x/>","type":"get","mode":"async","timeout_ms":1}`,
		`{"payload":"<x/>","mode":"queue","expires_in_ms":604800000,"resource":"kitchen"}`,
		`{"payload":"<x/>","timeout_ms":300001}`,
		`{"payload":"<x/>","timeout_ms":9223372036854775807}`,
		`{"payload":"<x/>","timeout_ms":-1,"expires_in_ms":1e30}`,
		`{"payload":"<x/>","mode":"sync","expires_in_ms":5}`,
		`{"payload":""}`, `{"payload":null}`, `{"payload":["<x/>"]}`, `{"type":"result","payload":"<x/>"}`,
		`[]`, `null`, `{`, ``, `{"payload":"\ud800"}`,
	} {
		f.Add([]byte(s), "")
	}
	f.Add([]byte(`{"payload":"<x/>"}`), strings.Repeat("k", 300))
	f.Fuzz(func(t *testing.T, body []byte, key string) {
		var got *iotgate.CommandRequest
		cmds := &fakeCommands{cmds: map[string]*iotgate.Command{}, submit: func(req iotgate.CommandRequest) (*iotgate.Command, bool, error) {
			got = &req
			return testCommand("c1", iotgate.CommandAsync, iotgate.CommandPending, "", ""), false, nil
		}}
		s := newServer(Config{BodyLimit: 4096}, Deps{Commands: cmds, Devices: newFakeDevices()})
		req := httptest.NewRequest(http.MethodPost, "/v1/devices/thermo1@example.com/commands", strings.NewReader(string(body)))
		req.Header.Set(echo.HeaderContentType, echo.MIMEApplicationJSON)
		req.Header.Set(echo.HeaderAuthorization, "Bearer "+testToken)
		if key != "" && !strings.ContainsAny(key, "\r\n\x00") {
			req.Header.Set(HeaderIdempotencyKey, key)
		}
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, req)
		switch rec.Code {
		case http.StatusAccepted:
			if got == nil {
				t.Fatal("202 without a submitted command")
			}
			switch {
			case got.Payload == "":
				t.Fatalf("submitted without a payload: %+v", got)
			case got.Type != "" && got.Type != "get" && got.Type != "set":
				t.Fatalf("submitted type %q", got.Type)
			case got.Timeout < 0 || got.Timeout > iotgate.MaxCommandTimeout:
				t.Fatalf("submitted timeout %s", got.Timeout)
			case got.ExpiresIn < 0 || got.ExpiresIn > iotgate.MaxCommandExpiry:
				t.Fatalf("submitted expiry %s", got.ExpiresIn)
			case got.Timeout%time.Millisecond != 0:
				t.Fatalf("timeout %s is not whole milliseconds", got.Timeout)
			}
		case http.StatusBadRequest, http.StatusRequestEntityTooLarge, http.StatusUnsupportedMediaType:
			if got != nil {
				t.Fatalf("%d, yet a command was submitted: %+v", rec.Code, got)
			}
			if er := decode[ErrorResponse](t, rec); er.Code == "" || er.Message == "" {
				t.Fatalf("error body %q", rec.Body.String())
			}
		default:
			t.Fatalf("POST %q = %d: %s", body, rec.Code, rec.Body.String())
		}
	})
}
