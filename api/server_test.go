package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/iotgate/iotgate"
)

func TestHealthz(t *testing.T) {
	s, _ := newTestServer(t, Config{}, nil)
	rec := do(t, s, http.MethodGet, "/healthz", nil)
	if rec.Code != http.StatusOK {
		t.Fatalf("status = %d, want 200", rec.Code)
	}
	if got, want := strings.TrimSpace(rec.Body.String()), `{"status":"ok"}`; got != want {
		t.Errorf("body = %s, want %s", got, want)
	}
	if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("Content-Type = %q", ct)
	}
}

func TestReadyz(t *testing.T) {
	since := time.Date(2026, 1, 2, 15, 4, 5, 0, time.UTC)
	up := HealthCheckFunc(func(context.Context) (bool, time.Time, error) { return true, since, nil })
	down := HealthCheckFunc(func(context.Context) (bool, time.Time, error) {
		return false, since, &iotgate.Error{Code: iotgate.EUnavailable, Message: "secret refused by server (not-authorized)",
			Err: errors.New("dial tcp xmpp.internal:5347")}
	})
	// What drivers say: hosts and users, which /readyz (no token) must not show.
	dbDown := HealthCheckFunc(func(context.Context) (bool, time.Time, error) {
		return false, since, &iotgate.Error{Code: iotgate.EUnavailable, Message: "database unreachable",
			Err: errors.New(`dial tcp 10.1.2.3:5432: connect: connection refused; pq: password authentication failed for user "iot_secret_role"`)}
	})
	rawDown := HealthCheckFunc(func(context.Context) (bool, time.Time, error) {
		return false, since, errors.New("dial tcp 10.1.2.3:5432: connect: connection refused")
	})
	hang := HealthCheckFunc(func(ctx context.Context) (bool, time.Time, error) {
		<-ctx.Done()
		time.Sleep(50 * time.Millisecond) // a check that is late to notice
		return true, since, nil
	})
	panics := HealthCheckFunc(func(context.Context) (bool, time.Time, error) { panic("boom") })

	tests := []struct {
		name   string
		checks map[string]HealthCheck
		status int
		want   map[string]CheckResult
	}{
		{"NoChecks", nil, http.StatusOK, map[string]CheckResult{}},
		{"AllUp", map[string]HealthCheck{"xmpp": up, "database": up}, http.StatusOK, map[string]CheckResult{
			"xmpp":     {OK: true, Since: &since},
			"database": {OK: true, Since: &since},
		}},
		{"XMPPDown", map[string]HealthCheck{"xmpp": down, "database": up}, http.StatusServiceUnavailable, map[string]CheckResult{
			"xmpp":     {OK: false, Since: &since, Error: "secret refused by server (not-authorized)"},
			"database": {OK: true, Since: &since},
		}},
		{"CheckHangs", map[string]HealthCheck{"database": hang}, http.StatusServiceUnavailable, map[string]CheckResult{
			"database": {OK: false, Error: "no answer within 100ms"},
		}},
		{"CheckPanics", map[string]HealthCheck{"database": panics}, http.StatusServiceUnavailable, map[string]CheckResult{
			"database": {OK: false, Error: "check panicked"},
		}},
		{"DatabaseDownHidesCause", map[string]HealthCheck{"database": dbDown}, http.StatusServiceUnavailable, map[string]CheckResult{
			"database": {OK: false, Since: &since, Error: "database unreachable"},
		}},
		{"RawErrorHidden", map[string]HealthCheck{"database": rawDown}, http.StatusServiceUnavailable, map[string]CheckResult{
			"database": {OK: false, Since: &since, Error: "down"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _ := newTestServer(t, Config{CheckTimeout: 100 * time.Millisecond}, tt.checks)
			rec := do(t, s, http.MethodGet, "/readyz", nil)
			if rec.Code != tt.status {
				t.Errorf("status = %d, want %d", rec.Code, tt.status)
			}
			for _, secret := range []string{"10.1.2.3", "5432", "iot_secret_role", "xmpp.internal", "dial", "boom"} {
				if strings.Contains(rec.Body.String(), secret) {
					t.Errorf("body shows %q: %s", secret, rec.Body)
				}
			}
			got := decode[ReadyResponse](t, rec)
			wantStatus := "ok"
			if tt.status != http.StatusOK {
				wantStatus = "unavailable"
			}
			if got.Status != wantStatus {
				t.Errorf("status field = %q, want %q", got.Status, wantStatus)
			}
			if len(got.Checks) != len(tt.want) {
				t.Errorf("checks = %v, want %v", got.Checks, tt.want)
			}
			for name, want := range tt.want {
				g, ok := got.Checks[name]
				if !ok {
					t.Errorf("check %q missing", name)
					continue
				}
				if g.OK != want.OK || g.Error != want.Error || (g.Since == nil) != (want.Since == nil) ||
					(g.Since != nil && !g.Since.Equal(*want.Since)) {
					t.Errorf("check %q = %+v, want %+v", name, g, want)
				}
			}
		})
	}

	t.Run("JSONShape", func(t *testing.T) {
		s, _ := newTestServer(t, Config{}, map[string]HealthCheck{"xmpp": down})
		rec := do(t, s, http.MethodGet, "/readyz", nil)
		want := `{"status":"unavailable","checks":{"xmpp":{"ok":false,"since":"2026-01-02T15:04:05Z","error":"secret refused by server (not-authorized)"}}}`
		if got := strings.TrimSpace(rec.Body.String()); got != want {
			t.Errorf("body =\n%s\nwant\n%s", got, want)
		}
	})
}

// testRequest is a request body with validation rules.
type testRequest struct {
	Name   string            `json:"name" validate:"required,max=8"`
	Kind   string            `json:"kind" validate:"omitempty,oneof=sensor actuator"`
	Labels map[string]string `json:"labels" validate:"omitempty,dive,max=4"`
}

func TestErrors(t *testing.T) {
	tests := []struct {
		name    string
		method  string
		target  string
		body    string
		ctype   string
		err     error // returned by the /fail route
		status  int
		code    string
		message string
		logged  bool // as a failed request
	}{
		{name: "NotFound", err: iotgate.Errorf(iotgate.ENotFound, "device not found"), status: 404, code: "not_found", message: "device not found"},
		{name: "Conflict", err: iotgate.Errorf(iotgate.EConflict, "device already registered"), status: 409, code: "conflict", message: "device already registered"},
		{name: "Invalid", err: iotgate.Errorf(iotgate.EInvalid, "bad jid"), status: 400, code: "invalid", message: "bad jid"},
		{name: "Unprocessable", err: &iotgate.Error{Code: iotgate.EUnprocessable, Message: "line 1: /reading/temperature: '999' is too large", Fields: []string{"line 1"}}, status: 422, code: "unprocessable", message: "line 1: /reading/temperature: '999' is too large"},
		{name: "Unauthorized", err: iotgate.Errorf(iotgate.EUnauthorized, "no token"), status: 401, code: "unauthorized", message: "no token"},
		{name: "Forbidden", err: iotgate.Errorf(iotgate.EForbidden, "not yours"), status: 403, code: "forbidden", message: "not yours"},
		{name: "TooMany", err: iotgate.Errorf(iotgate.ETooMany, "slow down"), status: 429, code: "too_many_requests", message: "slow down"},
		{name: "Unavailable", err: &iotgate.Error{Code: iotgate.EUnavailable, Detail: "device_offline", Message: "device is offline"}, status: 503, code: "device_offline", message: "device is offline", logged: true},
		{name: "Timeout", err: iotgate.Errorf(iotgate.ETimeout, "device did not answer"), status: 504, code: "timeout", message: "device did not answer", logged: true},
		{name: "WrappedDomain", err: fmt.Errorf("get device: %w", iotgate.Errorf(iotgate.ENotFound, "device not found")), status: 404, code: "not_found", message: "device not found"},
		{name: "DomainInternal", err: &iotgate.Error{Code: iotgate.EInternal, Message: "insert reading", Err: errors.New("pq: secret detail")}, status: 500, code: "internal", message: "internal error", logged: true},
		{name: "UnknownCode", err: &iotgate.Error{Code: "weird", Message: "what"}, status: 500, code: "internal", message: "internal error", logged: true},
		{name: "PlainError", err: errors.New("dial tcp 10.0.0.1:5432: refused"), status: 500, code: "internal", message: "internal error", logged: true},
		{name: "EchoError", err: echo.NewHTTPError(http.StatusConflict, "taken"), status: 409, code: "conflict", message: "taken"},
		{name: "EchoInternal", err: echo.NewHTTPError(http.StatusInternalServerError, "details"), status: 500, code: "internal", message: "internal error", logged: true},
		{name: "Panic", target: "/panic", status: 500, code: "internal", message: "internal error", logged: true},
		{name: "UnknownRoute", target: "/no/such/route", status: 404, code: "not_found", message: "not found"},
		{name: "MethodNotAllowed", method: http.MethodDelete, target: "/healthz", status: 405, code: "method_not_allowed", message: "method not allowed"},
		{name: "BadJSON", method: http.MethodPost, target: "/bind", body: `{"name":`, status: 400, code: "invalid"},
		{name: "WrongType", method: http.MethodPost, target: "/bind", body: `{"name":3}`, status: 400, code: "invalid"},
		{name: "UnsupportedMediaType", method: http.MethodPost, target: "/bind", body: `name=x`, ctype: "text/plain", status: 415, code: "unsupported_media_type"},
		{name: "ValidationRequired", method: http.MethodPost, target: "/bind", body: `{}`, status: 400, code: "invalid", message: "invalid request: name is required"},
		{name: "ValidOK", method: http.MethodPost, target: "/bind", body: `{"name":"t1","kind":"sensor"}`, status: 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, logs := newTestServer(t, Config{}, nil)
			s.echo.GET("/fail", func(echo.Context) error { return tt.err })
			s.echo.HEAD("/fail", func(echo.Context) error { return tt.err })
			s.echo.GET("/panic", func(echo.Context) error { panic("boom") })
			s.echo.POST("/bind", func(c echo.Context) error {
				var req testRequest
				if err := bind(c, &req); err != nil {
					return err
				}
				return c.JSON(http.StatusOK, req)
			})
			method, target := tt.method, tt.target
			if method == "" {
				method = http.MethodGet
			}
			if target == "" {
				target = "/fail"
			}
			ctype := tt.ctype
			if ctype == "" {
				ctype = echo.MIMEApplicationJSON
			}
			rec := do(t, s, method, target, strings.NewReader(tt.body), "Content-Type", ctype, echo.HeaderXRequestID, "req-"+tt.name)
			if rec.Code != tt.status {
				t.Fatalf("status = %d, want %d (body %s)", rec.Code, tt.status, rec.Body.String())
			}
			if tt.status == http.StatusOK {
				return
			}
			got := decode[ErrorResponse](t, rec)
			if got.Code != tt.code {
				t.Errorf("code = %q, want %q", got.Code, tt.code)
			}
			if tt.message != "" && got.Message != tt.message {
				t.Errorf("message = %q, want %q", got.Message, tt.message)
			}
			if strings.Contains(rec.Body.String(), "secret") || strings.Contains(rec.Body.String(), "10.0.0.1") {
				t.Errorf("body leaks the cause: %s", rec.Body.String())
			}

			failed := logs.records(t, "request failed")
			if !tt.logged {
				if len(failed) != 0 {
					t.Errorf("logged %v, want no error log", failed)
				}
				return
			}
			if len(failed) != 1 {
				t.Fatalf("logged %d failure records, want 1: %v", len(failed), failed)
			}
			if rid := failed[0]["request_id"]; rid != "req-"+tt.name {
				t.Errorf("logged request_id %v, want %q", rid, "req-"+tt.name)
			}
			if tt.name == "Panic" {
				if stack, _ := failed[0]["stack"].(string); !strings.Contains(stack, "goroutine") {
					t.Errorf("panic logged without its stack: %v", failed[0])
				}
			}
		})
	}

	t.Run("Head", func(t *testing.T) {
		s, _ := newTestServer(t, Config{}, nil)
		s.echo.HEAD("/fail", func(echo.Context) error { return iotgate.Errorf(iotgate.ENotFound, "gone") })
		rec := do(t, s, http.MethodHead, "/fail", nil)
		if rec.Code != http.StatusNotFound || rec.Body.Len() != 0 {
			t.Errorf("HEAD = %d with %d bytes, want 404 with none", rec.Code, rec.Body.Len())
		}
	})

	t.Run("ValidationDetails", func(t *testing.T) {
		s, _ := newTestServer(t, Config{}, nil)
		s.echo.POST("/bind", func(c echo.Context) error { return bind(c, &testRequest{}) })
		rec := do(t, s, http.MethodPost, "/bind", strings.NewReader(`{"name":"much too long","kind":"robot","labels":{"room":"kitchen"}}`),
			"Content-Type", echo.MIMEApplicationJSON)
		if rec.Code != http.StatusBadRequest {
			t.Fatalf("status = %d, want 400", rec.Code)
		}
		var got struct {
			Code    string       `json:"code"`
			Message string       `json:"message"`
			Details []FieldError `json:"details"`
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
			t.Fatal(err)
		}
		want := []FieldError{
			{Field: "name", Rule: "max", Param: "8", Message: "must be at most 8 characters long"},
			{Field: "kind", Rule: "oneof", Param: "sensor actuator", Message: "must be one of: sensor, actuator"},
			{Field: "labels.room", Rule: "max", Param: "4", Message: "must be at most 4 characters long"},
		}
		if got.Code != "invalid" || got.Message != "invalid request" {
			t.Errorf("code, message = %q, %q; want invalid, invalid request", got.Code, got.Message)
		}
		if fmt.Sprint(got.Details) != fmt.Sprint(want) {
			t.Errorf("details =\n%+v\nwant\n%+v", got.Details, want)
		}
	})
}

func TestBodyLimit(t *testing.T) {
	s, _ := newTestServer(t, Config{BodyLimit: 64}, nil)
	s.echo.POST("/bind", func(c echo.Context) error {
		var req testRequest
		if err := bind(c, &req); err != nil {
			return err
		}
		return c.NoContent(http.StatusNoContent)
	})
	big := `{"name":"` + strings.Repeat("x", 100) + `"}`
	tests := []struct {
		name    string
		body    io.Reader
		chunked bool
		status  int
	}{
		{"Small", strings.NewReader(`{"name":"t1"}`), false, http.StatusNoContent},
		{"ContentLength", strings.NewReader(big), false, http.StatusRequestEntityTooLarge},
		// No Content-Length: the limit applies while reading.
		{"Chunked", io.MultiReader(strings.NewReader(big)), true, http.StatusRequestEntityTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := httptest.NewRequest(http.MethodPost, "/bind", tt.body)
			req.Header.Set("Content-Type", echo.MIMEApplicationJSON)
			if tt.chunked {
				req.ContentLength = -1
			}
			rec := httptest.NewRecorder()
			s.ServeHTTP(rec, req)
			if rec.Code != tt.status {
				t.Fatalf("status = %d, want %d (body %s)", rec.Code, tt.status, rec.Body.String())
			}
			if tt.status == http.StatusRequestEntityTooLarge {
				if got := decode[ErrorResponse](t, rec); got.Code != "payload_too_large" {
					t.Errorf("code = %q, want payload_too_large", got.Code)
				}
			}
		})
	}
}

func TestRequestID(t *testing.T) {
	s, logs := newTestServer(t, Config{}, nil)
	tests := []struct {
		name, in string
		keep     bool
	}{
		{"Client", "7f3a-42.b_c", true},
		{"None", "", false},
		{"Unsafe", "evil\" injected=1", false},
		{"TooLong", strings.Repeat("a", 200), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := do(t, s, http.MethodGet, "/healthz", nil, echo.HeaderXRequestID, tt.in)
			got := rec.Header().Get(echo.HeaderXRequestID)
			if tt.keep && got != tt.in {
				t.Errorf("X-Request-ID = %q, want %q", got, tt.in)
			}
			if !tt.keep && (got == tt.in || !validRequestID(got)) {
				t.Errorf("X-Request-ID = %q, want a new id", got)
			}
		})
	}
	access := logs.records(t, "http request")
	if len(access) != len(tests) {
		t.Fatalf("%d access log records, want %d", len(access), len(tests))
	}
	if r := access[0]; r["request_id"] != tests[0].in || r["status"] != float64(200) || r["path"] != "/healthz" || r["level"] != "DEBUG" {
		t.Errorf("access log record = %v", r)
	}
}

func TestSwagger(t *testing.T) {
	s, _ := newTestServer(t, Config{}, nil)
	tests := []struct {
		target, contains string
		status           int
	}{
		{"/swagger/index.html", "swagger-ui", http.StatusOK},
		{"/swagger/doc.json", `"/readyz"`, http.StatusOK},
		{"/swagger/doc.json", `"api.ErrorResponse"`, http.StatusOK},
		{"/swagger", "", http.StatusMovedPermanently},
		{"/swagger/", "", http.StatusMovedPermanently},
	}
	for _, tt := range tests {
		t.Run(tt.target, func(t *testing.T) {
			rec := do(t, s, http.MethodGet, tt.target, nil)
			if rec.Code != tt.status {
				t.Fatalf("status = %d, want %d", rec.Code, tt.status)
			}
			if !strings.Contains(rec.Body.String(), tt.contains) {
				t.Errorf("body does not contain %s", tt.contains)
			}
			if tt.status == http.StatusMovedPermanently && rec.Header().Get("Location") != "/swagger/index.html" {
				t.Errorf("Location = %q", rec.Header().Get("Location"))
			}
		})
	}
}

func TestListenServeShutdown(t *testing.T) {
	s, _ := newTestServer(t, Config{}, nil)
	if err := s.Listen("127.0.0.1:0"); err != nil {
		t.Fatalf("Listen: %v", err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve() }()

	resp, err := http.Get("http://" + s.Addr().String() + "/healthz")
	if err != nil {
		t.Fatalf("GET /healthz: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("status = %d, want 200", resp.StatusCode)
	}

	t.Run("ErrAddrInUse", func(t *testing.T) {
		other, _ := newTestServer(t, Config{}, nil)
		err := other.Listen(s.Addr().String())
		var opErr *net.OpError
		if !errors.As(err, &opErr) {
			t.Errorf("Listen on a busy address = %v, want a *net.OpError", err)
		}
	})

	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := <-served; err != nil {
		t.Errorf("Serve = %v, want nil after Shutdown", err)
	}
}

// TestReadyzFlood: /readyz needs no token, so a flood of probes must not
// become a flood of database queries: the checks run at most once per
// readyCacheTTL, whether the probes come one after another or at once.
func TestReadyzFlood(t *testing.T) {
	var calls atomic.Int64
	counting := HealthCheckFunc(func(context.Context) (bool, time.Time, error) {
		calls.Add(1)
		return true, time.Now(), nil
	})
	s, _ := newTestServer(t, Config{}, map[string]HealthCheck{"database": counting})

	const n = 500
	start := time.Now()
	var wg sync.WaitGroup
	for range 10 {
		wg.Go(func() {
			for range n / 10 {
				if rec := do(t, s, http.MethodGet, "/readyz", nil); rec.Code != http.StatusOK {
					t.Errorf("status = %d", rec.Code)
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	// One run per started second, plus the first.
	if got, max := calls.Load(), int64(elapsed/readyCacheTTL)+1; got > max {
		t.Errorf("%d probes in %s ran the check %d times, want at most %d", n, elapsed, got, max)
	}
	t.Logf("%d probes in %s: %d checks", n, elapsed, calls.Load())
}

// TestReadyzCacheExpires: the cached answer is reused within
// readyCacheTTL and refreshed after it, so a recovery shows within a
// second.
func TestReadyzCacheExpires(t *testing.T) {
	var up atomic.Bool
	var calls atomic.Int64
	check := HealthCheckFunc(func(context.Context) (bool, time.Time, error) {
		calls.Add(1)
		return up.Load(), time.Time{}, nil
	})
	now := time.Date(2026, 1, 2, 15, 4, 5, 0, time.UTC)
	h := &healthHandler{checks: map[string]HealthCheck{"database": check}, timeout: time.Second,
		log: slog.New(slog.DiscardHandler), now: func() time.Time { return now }}

	steps := []struct {
		name    string
		advance time.Duration
		up      bool
		want    string
		calls   int64
	}{
		{"First", 0, false, "unavailable", 1},
		{"Cached", readyCacheTTL / 2, true, "unavailable", 1},
		{"Expired", readyCacheTTL, true, "ok", 2},
		{"CachedAgain", readyCacheTTL - time.Millisecond, false, "ok", 2},
	}
	for _, st := range steps {
		now = now.Add(st.advance)
		up.Store(st.up)
		got := h.ready(context.Background())
		if got.Status != st.want || calls.Load() != st.calls {
			t.Errorf("%s: status %q after %d checks, want %q after %d", st.name, got.Status, calls.Load(), st.want, st.calls)
		}
	}
}

// TestBodyLimitNoBody: a request without a body passes untouched, and a
// body over the limit is refused whether its length is announced or not
// (chunked: it is never http.NoBody).
func TestBodyLimitNoBody(t *testing.T) {
	e := echo.New()
	e.HTTPErrorHandler = func(err error, c echo.Context) {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			_ = c.NoContent(http.StatusRequestEntityTooLarge)
			return
		}
		_ = c.NoContent(http.StatusInternalServerError)
	}
	e.Any("/", func(c echo.Context) error {
		n, err := io.Copy(io.Discard, c.Request().Body)
		if err != nil {
			return err
		}
		return c.String(http.StatusOK, strconv.FormatInt(n, 10))
	}, bodyLimit(10))
	for _, tt := range []struct {
		name       string
		body       io.Reader
		length     int64 // -1: unknown (chunked)
		wantStatus int
		wantBody   string
	}{
		{"NoBody", http.NoBody, 0, http.StatusOK, "0"},
		{"Small", strings.NewReader("12345"), 5, http.StatusOK, "5"},
		{"ErrAnnouncedTooLarge", strings.NewReader(strings.Repeat("x", 11)), 11, http.StatusRequestEntityTooLarge, ""},
		{"ErrChunkedTooLarge", strings.NewReader(strings.Repeat("x", 11)), -1, http.StatusRequestEntityTooLarge, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			req := httptest.NewRequest(http.MethodPost, "/", tt.body)
			req.ContentLength = tt.length
			if tt.body == http.NoBody {
				req.Body = http.NoBody
			}
			rec := httptest.NewRecorder()
			e.ServeHTTP(rec, req)
			if rec.Code != tt.wantStatus || (tt.wantBody != "" && rec.Body.String() != tt.wantBody) {
				t.Errorf("got %d %q, want %d %q", rec.Code, rec.Body.String(), tt.wantStatus, tt.wantBody)
			}
		})
	}
}
