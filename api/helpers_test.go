package api

// Request helpers shared by the tests of this package: a server over the
// fakes (fakes_test.go), one request and its checks, JSON and log reading.

import (
	"encoding/json"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/labstack/echo/v4"

	"github.com/iotgate/iotgate/internal/servers"
)

// newServer is New with a fakeAuth that knows testToken, unless deps has
// an Authenticator.
func newServer(cfg Config, deps Deps) *Server {
	if deps.Auth == nil {
		deps.Auth = newFakeAuth(nil)
	}
	return New(cfg, deps)
}

// newAPI returns a server with the given registry and device service; nil
// interfaces leave their routes out.
func newAPI(t *testing.T, reg SchemaRegistry, svc DeviceService) *Server {
	t.Helper()
	return newServer(Config{}, Deps{Schemas: reg, Devices: svc})
}

// apiCase is one request to the API and what must come back.
type apiCase struct {
	name   string
	method string
	target string
	body   string
	ctype  string // default application/json when there is a body
	status int
	// code and message (a substring), for error responses.
	code, message string
	// check, if set, looks at the response further.
	check func(t *testing.T, rec *httptest.ResponseRecorder)
}

// run serves tt against h and checks the status and, for errors, the
// ErrorResponse.
func (tt apiCase) run(t *testing.T, h http.Handler) *httptest.ResponseRecorder {
	t.Helper()
	method := tt.method
	if method == "" {
		method = http.MethodGet
	}
	var header []string
	if tt.body != "" || tt.ctype != "" {
		ctype := tt.ctype
		if ctype == "" {
			ctype = echo.MIMEApplicationJSON
		}
		header = append(header, echo.HeaderContentType, ctype)
	}
	rec := do(t, h, method, tt.target, strings.NewReader(tt.body), header...)
	if rec.Code != tt.status {
		t.Fatalf("%s %s = %d, want %d (body %s)", method, tt.target, rec.Code, tt.status, rec.Body.String())
	}
	if tt.status >= 400 && method != http.MethodHead {
		got := decode[ErrorResponse](t, rec)
		if tt.code != "" && got.Code != tt.code {
			t.Errorf("code = %q, want %q", got.Code, tt.code)
		}
		if !strings.Contains(got.Message, tt.message) {
			t.Errorf("message = %q, want it to contain %q", got.Message, tt.message)
		}
	}
	if tt.check != nil {
		tt.check(t, rec)
	}
	return rec
}

// jsonKeys returns the sorted keys of a JSON object.
func jsonKeys(t *testing.T, raw []byte) []string {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("not a JSON object: %s: %v", raw, err)
	}
	return slices.Sorted(maps.Keys(m))
}

func wantKeys(t *testing.T, raw []byte, want ...string) {
	t.Helper()
	slices.Sort(want)
	if got := jsonKeys(t, raw); !slices.Equal(got, want) {
		t.Errorf("keys = %v, want %v in %s", got, want, raw)
	}
}

// logBuffer collects JSON log records, safe for concurrent use.
type logBuffer struct{ servers.LogBuffer }

// records returns the records whose msg is msg.
func (b *logBuffer) records(t *testing.T, msg string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for line := range strings.Lines(b.String()) {
		var r map[string]any
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if r["msg"] == msg {
			out = append(out, r)
		}
	}
	return out
}

func newTestServer(t testing.TB, cfg Config, checks map[string]HealthCheck) (*Server, *logBuffer) {
	t.Helper()
	logs := &logBuffer{}
	log := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	return newServer(cfg, Deps{Log: log, Checks: checks}), logs
}

// do serves one request and returns the response.
func do(t *testing.T, h http.Handler, method, target string, body io.Reader, header ...string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(method, target, body)
	// Every request is an admin's unless it says otherwise (an empty
	// Authorization sends none).
	req.Header.Set(echo.HeaderAuthorization, "Bearer "+testToken)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func decode[T any](t *testing.T, rec *httptest.ResponseRecorder) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(rec.Body.Bytes(), &v); err != nil {
		t.Fatalf("decode %q: %v", rec.Body.String(), err)
	}
	return v
}
