package api

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/iotgate/iotgate"
)

// testCommand is a command in the given state, as the service returns it.
func testCommand(id string, mode iotgate.CommandMode, st iotgate.CommandStatus, code, msg string) *iotgate.Command {
	sent := testTime.Add(time.Millisecond)
	c := &iotgate.Command{
		ID: id, DeviceJID: "thermo1@example.com", Type: "set", Mode: mode, Status: st,
		Payload: `<set xmlns="urn:example:thermostat"><target>21.5</target></set>`,
		Target:  "thermo1@example.com/kitchen", Timeout: 10 * time.Second, CreatedAt: testTime, SentAt: &sent,
		ErrorCode: code, Error: msg,
		History: []iotgate.CommandEvent{{Status: iotgate.CommandPending, At: testTime}, {Status: iotgate.CommandSent, At: sent, Reason: "to thermo1@example.com/kitchen"}},
	}
	if st.Terminal() {
		c.CompletedAt = &sent
		c.History = append(c.History, iotgate.CommandEvent{Status: st, At: sent, Reason: msg})
	}
	return c
}

var commandKeys = []string{"id", "device", "type", "payload", "target", "mode", "status", "timeout_ms", "expires_at",
	"created_at", "sent_at", "completed_at", "answered_at", "response", "xmpp_error", "late_answer", "history"}

func newCommandServer(cmds *fakeCommands) *Server {
	if cmds.cmds == nil {
		cmds.cmds = map[string]*iotgate.Command{}
	}
	return newServer(Config{}, Deps{Commands: cmds})
}

func TestCommandOutcomes(t *testing.T) {
	succeeded := func(c *iotgate.Command) *iotgate.Command {
		out := *c
		out.Status = iotgate.CommandSucceeded
		out.Response = &iotgate.CommandResponse{XML: `<state xmlns="urn:example:thermostat"><mode>heat</mode></state>`, Data: json.RawMessage(`{"mode":"heat"}`)}
		return &out
	}
	deviceError := func(c *iotgate.Command) *iotgate.Command {
		out := *c
		out.Status, out.ErrorCode, out.Error = iotgate.CommandFailed, iotgate.DetailXMPPError, "the device answered with an error: not-acceptable: out of range"
		out.XMPPError = &iotgate.XMPPError{Type: "modify", Condition: "not-acceptable", Text: "out of range"}
		return &out
	}
	tests := []struct {
		name   string
		mode   iotgate.CommandMode
		st     iotgate.CommandStatus
		code   string // the command's error code
		settle func(*iotgate.Command) *iotgate.Command
		status int
		// want is the problem code (errors) and a check of the command
		// in the body (details for errors).
		want  string
		check func(t *testing.T, c iotgate.CommandView)
	}{
		{"Succeeded", iotgate.CommandSync, iotgate.CommandSent, "", succeeded, http.StatusOK, "",
			func(t *testing.T, c iotgate.CommandView) {
				if c.Response == nil || string(c.Response.Data) != `{"mode":"heat"}` || c.Status != "succeeded" {
					t.Errorf("command = %+v", c)
				}
			}},
		{"DeviceError", iotgate.CommandSync, iotgate.CommandSent, "", deviceError, http.StatusBadGateway, "xmpp_error",
			func(t *testing.T, c iotgate.CommandView) {
				if c.XMPPError == nil || c.XMPPError.Condition != "not-acceptable" || c.XMPPError.Type != "modify" || c.XMPPError.Text != "out of range" {
					t.Errorf("xmpp_error = %+v", c.XMPPError)
				}
			}},
		{"Offline", iotgate.CommandSync, iotgate.CommandFailed, iotgate.DetailDeviceOffline, nil, http.StatusConflict, "device_offline", nil},
		{"StreamDown", iotgate.CommandSync, iotgate.CommandFailed, iotgate.DetailXMPPUnavailable, nil, http.StatusServiceUnavailable, "xmpp_unavailable", nil},
		{"TimedOut", iotgate.CommandSync, iotgate.CommandTimedOut, iotgate.ETimeout, nil, http.StatusGatewayTimeout, "timeout", nil},
		{"AsyncSent", iotgate.CommandAsync, iotgate.CommandSent, "", nil, http.StatusAccepted, "", nil},
		{"AsyncOffline", iotgate.CommandAsync, iotgate.CommandFailed, iotgate.DetailDeviceOffline, nil, http.StatusConflict, "device_offline", nil},
		{"Queued", iotgate.CommandQueue, iotgate.CommandQueued, "", nil, http.StatusAccepted, "",
			func(t *testing.T, c iotgate.CommandView) {
				if c.Status != "queued" || c.Mode != "queue" {
					t.Errorf("command = %+v", c)
				}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmds := &fakeCommands{settle: tt.settle, submit: func(iotgate.CommandRequest) (*iotgate.Command, bool, error) {
				return testCommand("c1", tt.mode, tt.st, tt.code, "why"), false, nil
			}}
			s := newCommandServer(cmds)
			rec := do(t, s, http.MethodPost, "/v1/devices/thermo1%40example.com/commands", strings.NewReader(`{"payload":"<set xmlns='urn:example:thermostat'/>","mode":"`+string(tt.mode)+`"}`),
				echo.HeaderContentType, echo.MIMEApplicationJSON)
			if rec.Code != tt.status {
				t.Fatalf("status = %d, want %d: %s", rec.Code, tt.status, rec.Body.String())
			}
			if loc := rec.Header().Get(echo.HeaderLocation); loc != "/v1/commands/c1" {
				t.Errorf("Location = %q", loc)
			}
			var got iotgate.CommandView
			if tt.want != "" {
				var body struct {
					Code    string          `json:"code"`
					Message string          `json:"message"`
					Details json.RawMessage `json:"details"`
				}
				if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
					t.Fatal(err)
				}
				if body.Code != tt.want || body.Message == "" {
					t.Errorf("code, message = %q, %q; want %q", body.Code, body.Message, tt.want)
				}
				wantKeys(t, body.Details, append(commandKeys, "error_code", "error")...)
				if err := json.Unmarshal(body.Details, &got); err != nil {
					t.Fatal(err)
				}
			} else {
				got = decode[iotgate.CommandView](t, rec)
			}
			if got.ID != "c1" || got.Device != "thermo1@example.com" || len(got.History) < 2 {
				t.Errorf("command = %+v", got)
			}
			if tt.check != nil {
				tt.check(t, got)
			}
		})
	}
}

func TestCommandRequests(t *testing.T) {
	ok := func(req iotgate.CommandRequest) (*iotgate.Command, bool, error) {
		return testCommand("c1", iotgate.CommandAsync, iotgate.CommandSent, "", ""), false, nil
	}
	tests := []struct {
		apiCase
		header []string
		submit func(req iotgate.CommandRequest) (*iotgate.Command, bool, error)
		after  func(t *testing.T, rec *httptest.ResponseRecorder, f *fakeCommands)
	}{
		{apiCase: apiCase{name: "Fields", method: http.MethodPost, target: "/v1/devices/thermo1%40example.com/commands",
			body:   `{"payload":"<get xmlns='urn:example:thermostat'/>","type":"get","timeout_ms":2500,"resource":"kitchen","mode":"queue","expires_in_ms":60000}`,
			status: http.StatusAccepted}, header: []string{HeaderIdempotencyKey, "key-1"}, submit: ok,
			after: func(t *testing.T, _ *httptest.ResponseRecorder, f *fakeCommands) {
				want := iotgate.CommandRequest{DeviceJID: "thermo1@example.com", Type: "get", Payload: "<get xmlns='urn:example:thermostat'/>",
					Resource: "kitchen", Mode: iotgate.CommandQueue, Timeout: 2500 * time.Millisecond, ExpiresIn: time.Minute, IdempotencyKey: "key-1",
					TokenID: "tok_test", SentBy: "test"}
				if f.lastReq != want {
					t.Errorf("request = %+v, want %+v", f.lastReq, want)
				}
			}},
		{apiCase: apiCase{name: "Replayed", method: http.MethodPost, target: "/v1/devices/thermo1%40example.com/commands", body: `{"payload":"<x/>","mode":"async"}`, status: http.StatusAccepted},
			header: []string{HeaderIdempotencyKey, "key-1"},
			submit: func(iotgate.CommandRequest) (*iotgate.Command, bool, error) {
				return testCommand("c1", iotgate.CommandAsync, iotgate.CommandSent, "", ""), true, nil
			},
			after: func(t *testing.T, rec *httptest.ResponseRecorder, _ *fakeCommands) {
				if rec.Header().Get(HeaderIdempotentReplayed) != "true" {
					t.Errorf("no %s header", HeaderIdempotentReplayed)
				}
			}},
		{apiCase: apiCase{name: "SyncWaitsTimeoutPlusSlack", method: http.MethodPost, target: "/v1/devices/thermo1%40example.com/commands", body: `{"payload":"<x/>"}`, status: http.StatusAccepted},
			submit: func(iotgate.CommandRequest) (*iotgate.Command, bool, error) {
				return testCommand("c1", iotgate.CommandSync, iotgate.CommandSent, "", ""), false, nil
			},
			after: func(t *testing.T, _ *httptest.ResponseRecorder, f *fakeCommands) {
				if f.waited != 10*time.Second+waitSlack {
					t.Errorf("waited %s, want the timeout plus %s", f.waited, waitSlack)
				}
			}},
		{apiCase: apiCase{name: "TooMany", method: http.MethodPost, target: "/v1/devices/thermo1%40example.com/commands", body: `{"payload":"<x/>"}`, status: http.StatusTooManyRequests, code: "too_many_requests", message: "in flight"},
			submit: func(iotgate.CommandRequest) (*iotgate.Command, bool, error) {
				return nil, false, iotgate.Errorf(iotgate.ETooMany, "1000 commands are in flight, try again later")
			},
			after: func(t *testing.T, rec *httptest.ResponseRecorder, _ *fakeCommands) {
				if rec.Header().Get("Retry-After") == "" {
					t.Error("no Retry-After")
				}
			}},
		{apiCase: apiCase{name: "TokenQuota", method: http.MethodPost, target: "/v1/devices/thermo1%40example.com/commands", body: `{"payload":"<x/>"}`, status: http.StatusTooManyRequests, code: "token_commands_in_flight", message: "quota"},
			submit: func(iotgate.CommandRequest) (*iotgate.Command, bool, error) {
				return nil, false, &iotgate.Error{Code: iotgate.ETooMany, Detail: iotgate.DetailTokenCommandsInFlight, Message: "this token has 250 commands in flight, its quota; try again later"}
			},
			after: wantRetryAfter("1")},
		{apiCase: apiCase{name: "DeviceQuota", method: http.MethodPost, target: "/v1/devices/thermo1%40example.com/commands", body: `{"payload":"<x/>"}`, status: http.StatusTooManyRequests, code: "device_commands_in_flight", message: "quota"},
			submit: func(iotgate.CommandRequest) (*iotgate.Command, bool, error) {
				return nil, false, &iotgate.Error{Code: iotgate.ETooMany, Detail: iotgate.DetailDeviceCommandsInFlight, Message: "device thermo1@example.com has 32 commands in flight, its quota; try again later"}
			},
			after: wantRetryAfter("1")},
		{apiCase: apiCase{name: "QueueFull", method: http.MethodPost, target: "/v1/devices/thermo1%40example.com/commands", body: `{"payload":"<x/>","mode":"queue"}`, status: http.StatusTooManyRequests, code: "device_queue_full", message: "queued commands"},
			submit: func(iotgate.CommandRequest) (*iotgate.Command, bool, error) {
				return nil, false, &iotgate.Error{Code: iotgate.ETooMany, Detail: iotgate.DetailDeviceQueueFull, Message: "device thermo1@example.com already has 100 queued commands, try again once some are delivered"}
			},
			after: wantRetryAfter(retryAfterQueueFull)},
		{apiCase: apiCase{name: "InvalidPayload", method: http.MethodPost, target: "/v1/devices/thermo1%40example.com/commands", body: `{"payload":"<x/>"}`, status: http.StatusUnprocessableEntity, code: "unprocessable", message: "target"},
			submit: func(iotgate.CommandRequest) (*iotgate.Command, bool, error) {
				return nil, false, iotgate.Errorf(iotgate.EUnprocessable, "document does not match its schema; line 1: /set/target: '999' is greater than the maximum")
			}},
		{apiCase: apiCase{name: "KeyReused", method: http.MethodPost, target: "/v1/devices/thermo1%40example.com/commands", body: `{"payload":"<x/>"}`, status: http.StatusUnprocessableEntity, code: "idempotency_key_reused"},
			submit: func(iotgate.CommandRequest) (*iotgate.Command, bool, error) {
				return nil, false, &iotgate.Error{Code: iotgate.EUnprocessable, Detail: "idempotency_key_reused", Message: "used for another request"}
			}},
		{apiCase: apiCase{name: "UnknownDevice", method: http.MethodPost, target: "/v1/devices/nobody%40example.com/commands", body: `{"payload":"<x/>"}`, status: http.StatusNotFound, code: "not_found"},
			submit: func(req iotgate.CommandRequest) (*iotgate.Command, bool, error) {
				return nil, false, iotgate.Errorf(iotgate.ENotFound, "device %s is not registered", req.DeviceJID)
			}},
		{apiCase: apiCase{name: "MissingPayload", method: http.MethodPost, target: "/v1/devices/thermo1%40example.com/commands", body: `{"mode":"sync"}`, status: http.StatusBadRequest, code: "invalid", message: "payload is required"}, submit: ok},
		{apiCase: apiCase{name: "Data", method: http.MethodPost, target: "/v1/devices/thermo1%40example.com/commands",
			body: `{"data":{"target":21.5},"element":"set","mode":"async"}`, status: http.StatusAccepted}, submit: ok,
			after: func(t *testing.T, _ *httptest.ResponseRecorder, f *fakeCommands) {
				if f.lastReq.Data != `{"target":21.5}` || f.lastReq.Element != "set" || f.lastReq.Payload != "" {
					t.Errorf("request = %+v, want data and element passed on", f.lastReq)
				}
			}},
		{apiCase: apiCase{name: "PayloadAndData", method: http.MethodPost, target: "/v1/devices/thermo1%40example.com/commands", body: `{"payload":"<x/>","data":{}}`, status: http.StatusBadRequest, code: "invalid", message: "payload"}, submit: ok},
		{apiCase: apiCase{name: "ElementWithoutData", method: http.MethodPost, target: "/v1/devices/thermo1%40example.com/commands", body: `{"payload":"<x/>","element":"set"}`, status: http.StatusBadRequest, code: "invalid", message: "element"}, submit: ok},
		{apiCase: apiCase{name: "DataNotMappable", method: http.MethodPost, target: "/v1/devices/thermo1%40example.com/commands", body: `{"data":{"target":"hot"}}`, status: http.StatusUnprocessableEntity, code: "json_not_mappable", message: "data.target",
			check: func(t *testing.T, rec *httptest.ResponseRecorder) {
				var body struct {
					Details iotgate.MappingIssue `json:"details"`
				}
				if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || body.Details.Path != "data.target" || body.Details.Reason == "" {
					t.Errorf("details = %+v (%v), want the path and reason", body.Details, err)
				}
			}},
			submit: func(iotgate.CommandRequest) (*iotgate.Command, bool, error) {
				return nil, false, &iotgate.Error{Code: iotgate.EUnprocessable, Detail: iotgate.DetailJSONNotMappable,
					Message: "data has no XML form in the schema: data.target: expected number",
					Fields:  iotgate.MappingIssue{Path: "data.target", Reason: "expected number"}}
			}},
		{apiCase: apiCase{name: "BadMode", method: http.MethodPost, target: "/v1/devices/thermo1%40example.com/commands", body: `{"payload":"<x/>","mode":"later"}`, status: http.StatusBadRequest, code: "invalid", message: "mode"}, submit: ok},
		{apiCase: apiCase{name: "BadType", method: http.MethodPost, target: "/v1/devices/thermo1%40example.com/commands", body: `{"payload":"<x/>","type":"result"}`, status: http.StatusBadRequest, code: "invalid", message: "type"}, submit: ok},
		{apiCase: apiCase{name: "TimeoutTooLong", method: http.MethodPost, target: "/v1/devices/thermo1%40example.com/commands", body: `{"payload":"<x/>","timeout_ms":300001}`, status: http.StatusBadRequest, code: "invalid", message: "timeout_ms"}, submit: ok},
		{apiCase: apiCase{name: "NegativeTimeout", method: http.MethodPost, target: "/v1/devices/thermo1%40example.com/commands", body: `{"payload":"<x/>","timeout_ms":-1}`, status: http.StatusBadRequest, code: "invalid", message: "timeout_ms"}, submit: ok},

		{apiCase: apiCase{name: "Get", target: "/v1/commands/c1", status: http.StatusOK,
			check: func(t *testing.T, rec *httptest.ResponseRecorder) {
				wantKeys(t, rec.Body.Bytes(), commandKeys...)
			}}},
		{apiCase: apiCase{name: "GetUnknown", target: "/v1/commands/nope", status: http.StatusNotFound, code: "not_found"}},
		{apiCase: apiCase{name: "List", target: "/v1/devices/thermo1%40example.com/commands?limit=5&cursor=abc", status: http.StatusOK,
			check: func(t *testing.T, rec *httptest.ResponseRecorder) {
				got := decode[CommandList](t, rec)
				if len(got.Items) != 2 || got.NextCursor != "next" {
					t.Errorf("list = %+v", got)
				}
			}},
			after: func(t *testing.T, _ *httptest.ResponseRecorder, f *fakeCommands) {
				if f.lastFilter != (iotgate.CommandFilter{Limit: 5, Cursor: "abc", MaxBytes: iotgate.DefaultPageBytes}) {
					t.Errorf("filter = %+v", f.lastFilter)
				}
			}},
		{apiCase: apiCase{name: "ListBadLimit", target: "/v1/devices/thermo1%40example.com/commands?limit=5000", status: http.StatusBadRequest, code: "invalid", message: "limit"}},
		{apiCase: apiCase{name: "ListUnknownDevice", target: "/v1/devices/nobody%40example.com/commands", status: http.StatusNotFound, code: "not_found"}},
		{apiCase: apiCase{name: "CancelQueued", method: http.MethodPost, target: "/v1/commands/q1/cancel", status: http.StatusOK,
			check: func(t *testing.T, rec *httptest.ResponseRecorder) {
				if got := decode[iotgate.CommandView](t, rec); got.Status != "canceled" {
					t.Errorf("status = %s, want canceled", got.Status)
				}
			}}},
		{apiCase: apiCase{name: "CancelSent", method: http.MethodPost, target: "/v1/commands/c1/cancel", status: http.StatusConflict, code: "command_not_queued", message: "only queued"}},
		{apiCase: apiCase{name: "CancelUnknown", method: http.MethodPost, target: "/v1/commands/nope/cancel", status: http.StatusNotFound, code: "not_found"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeCommands{submit: tt.submit, cmds: map[string]*iotgate.Command{
				"c1": testCommand("c1", iotgate.CommandAsync, iotgate.CommandSent, "", ""),
				"q1": testCommand("q1", iotgate.CommandQueue, iotgate.CommandQueued, "", ""),
			}}
			s := newCommandServer(f)
			var rec *httptest.ResponseRecorder
			if len(tt.header) > 0 {
				rec = do(t, s, tt.method, tt.target, strings.NewReader(tt.body), append([]string{echo.HeaderContentType, echo.MIMEApplicationJSON}, tt.header...)...)
				if rec.Code != tt.status {
					t.Fatalf("status = %d, want %d: %s", rec.Code, tt.status, rec.Body.String())
				}
			} else {
				rec = tt.run(t, s)
			}
			if tt.after != nil {
				tt.after(t, rec, f)
			}
		})
	}
}

// A sync command may wait longer than the server's write timeout: the
// handler extends the deadline for its own response.
func TestCommandSyncOutlivesWriteTimeout(t *testing.T) {
	f := &fakeCommands{cmds: map[string]*iotgate.Command{},
		submit: func(iotgate.CommandRequest) (*iotgate.Command, bool, error) {
			return testCommand("c1", iotgate.CommandSync, iotgate.CommandSent, "", ""), false, nil
		},
		settle: func(c *iotgate.Command) *iotgate.Command {
			time.Sleep(600 * time.Millisecond)
			out := *c
			out.Status = iotgate.CommandSucceeded
			return &out
		}}
	s := newServer(Config{WriteTimeout: 200 * time.Millisecond}, Deps{Commands: f})
	if err := s.Listen("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	go s.Serve()
	t.Cleanup(func() { s.Shutdown(context.Background()) })
	req, err := http.NewRequest(http.MethodPost, "http://"+s.Addr().String()+"/v1/devices/thermo1%40example.com/commands", strings.NewReader(`{"payload":"<x/>"}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+testToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST: %v (the write timeout cut the response)", err)
	}
	defer resp.Body.Close()
	var got iotgate.CommandView
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil || resp.StatusCode != http.StatusOK || got.Status != "succeeded" {
		t.Errorf("answer %d %+v %v, want 200 succeeded", resp.StatusCode, got, err)
	}
}

// wantRetryAfter checks the Retry-After of a 429.
func wantRetryAfter(want string) func(t *testing.T, rec *httptest.ResponseRecorder, _ *fakeCommands) {
	return func(t *testing.T, rec *httptest.ResponseRecorder, _ *fakeCommands) {
		t.Helper()
		if got := rec.Header().Get("Retry-After"); got != want {
			t.Errorf("Retry-After = %q, want %q", got, want)
		}
	}
}
