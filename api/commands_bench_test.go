package api

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/iotgate/iotgate"
)

// BenchmarkCreateCommand measures the API's own cost of a sync command
// (routing, authentication, binding and validating the body, the answer's
// JSON) over a command service that answers at once; go test -bench
// CreateCommand -benchmem ./api/ gives its allocations per command.
func BenchmarkCreateCommand(b *testing.B) {
	at := time.Date(2026, 12, 7, 3, 0, 0, 0, time.UTC)
	cmds := &fakeCommands{
		submit: func(req iotgate.CommandRequest) (*iotgate.Command, bool, error) {
			return &iotgate.Command{ID: "Q6NP2VXHMXQ6MOJFLX5B5ZRYCA", DeviceID: 1, DeviceJID: req.DeviceJID,
				Type: "set", Payload: req.Payload, Mode: iotgate.CommandSync, Status: iotgate.CommandSent,
				Timeout: 10 * time.Second, CreatedAt: at, SentAt: &at, Target: "thermo1@example.com/kitchen",
				History: []iotgate.CommandEvent{{Status: iotgate.CommandPending, At: at},
					{Status: iotgate.CommandSent, At: at, Reason: "to thermo1@example.com/kitchen"}}}, false, nil
		},
		settle: func(c *iotgate.Command) *iotgate.Command {
			out := *c
			out.Status, out.CompletedAt, out.AnsweredAt = iotgate.CommandSucceeded, &at, &at
			out.Response = &iotgate.CommandResponse{XML: `<state xmlns="urn:example:thermostat"><target>21.5</target></state>`,
				Data: json.RawMessage(`{"target":21.5}`)}
			out.History = append(out.History, iotgate.CommandEvent{Status: iotgate.CommandSucceeded, At: at})
			return &out
		},
	}
	h := newCommandServer(cmds)
	const body = `{"payload":"<set xmlns='urn:example:thermostat'><target>21.5</target></set>","timeout_ms":10000}`
	b.ReportAllocs()
	for b.Loop() {
		req := httptest.NewRequest(http.MethodPost, "/v1/devices/thermo1@example.com/commands", strings.NewReader(body))
		req.Header.Set(echo.HeaderAuthorization, "Bearer "+testToken)
		req.Header.Set(echo.HeaderContentType, echo.MIMEApplicationJSON)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			b.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
	}
}
