package api

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/iotgate/iotgate"
	"github.com/iotgate/iotgate/auth"
)

// scopeSecret is the secret of the test token that has only scope s.
func scopeSecret(s iotgate.Scope) string { return "secret-" + string(s) }

// berlinSecret is the secret of a token with every scope but admin,
// limited to the devices labelled site=berlin.
const berlinSecret = "secret-berlin"

// accessFixture is a server with every route, fake services, and a token
// per scope plus the berlin token.
func accessFixture(cfg Config, log *slog.Logger) (*Server, *fakeCommands) {
	more := map[string]*iotgate.Token{
		berlinSecret: {ID: "tok_berlin", Name: "berlin", Devices: iotgate.Selector{"site": "berlin"},
			Scopes: []iotgate.Scope{iotgate.ScopeSchemasRead, iotgate.ScopeDevicesRead, iotgate.ScopeDevicesWrite, iotgate.ScopeCommandsSend}},
	}
	for _, s := range iotgate.Scopes {
		more[scopeSecret(s)] = &iotgate.Token{ID: "tok_" + string(s), Name: string(s), Scopes: []iotgate.Scope{s}}
	}
	reg := newFakeSchemas()
	reg.add("thermostat", 1)
	cmds := &fakeCommands{cmds: map[string]*iotgate.Command{
		"c1": testCommand("c1", iotgate.CommandQueue, iotgate.CommandQueued, "", ""),
		"c2": testCommand("c2", iotgate.CommandQueue, iotgate.CommandQueued, "", ""),
	}, submit: func(req iotgate.CommandRequest) (*iotgate.Command, bool, error) {
		return testCommand("c3", iotgate.CommandAsync, iotgate.CommandSent, "", ""), false, nil
	}}
	cmds.cmds["c2"].DeviceJID = "thermo2@example.com" // site=paris
	return New(cfg, Deps{
		Log: log, Schemas: reg, Devices: newDeviceFixture(), Commands: cmds,
		Auth:    newFakeAuth(more),
		Tokens:  &fakeTokens{tokens: map[string]*iotgate.Token{"tok_a": {ID: "tok_a", Name: "a", Scopes: []iotgate.Scope{iotgate.ScopeAdmin}}}},
		Metrics: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("iotgate_up 1\n")) }),
	}), cmds
}

// TestRouteScopes sends a request to every protected route with no token,
// an unknown one, and a token of each scope: 401 for the first two, 403
// unless the token has the route's scope or admin.
func TestRouteScopes(t *testing.T) {
	routes := []struct {
		method, path string
		scope        iotgate.Scope
	}{
		{"POST", "/v1/schemas", iotgate.ScopeSchemasWrite},
		{"GET", "/v1/schemas", iotgate.ScopeSchemasRead},
		{"GET", "/v1/schemas/thermostat", iotgate.ScopeSchemasRead},
		{"GET", "/v1/schemas/thermostat/versions", iotgate.ScopeSchemasRead},
		{"GET", "/v1/schemas/thermostat/versions/1", iotgate.ScopeSchemasRead},
		{"DELETE", "/v1/schemas/thermostat/versions/1", iotgate.ScopeSchemasWrite},
		{"GET", "/v1/schemas/thermostat/versions/1/xsd", iotgate.ScopeSchemasRead},
		{"GET", "/v1/schemas/thermostat/versions/1/json-schema", iotgate.ScopeSchemasRead},
		{"POST", "/v1/devices", iotgate.ScopeDevicesWrite},
		{"GET", "/v1/devices", iotgate.ScopeDevicesRead},
		{"POST", "/v1/devices/states", iotgate.ScopeDevicesRead},
		{"GET", "/v1/devices/thermo1%40example.com", iotgate.ScopeDevicesRead},
		{"PATCH", "/v1/devices/thermo1%40example.com", iotgate.ScopeDevicesWrite},
		{"DELETE", "/v1/devices/thermo1%40example.com", iotgate.ScopeDevicesWrite},
		{"GET", "/v1/devices/thermo1%40example.com/state", iotgate.ScopeDevicesRead},
		{"GET", "/v1/devices/thermo1%40example.com/readings", iotgate.ScopeDevicesRead},
		{"GET", "/v1/devices/thermo1%40example.com/rejections", iotgate.ScopeDevicesRead},
		{"GET", "/v1/devices/thermo1%40example.com/readings/aggregate?fields=temperature", iotgate.ScopeDevicesRead},
		{"POST", "/v1/devices/thermo1%40example.com/commands", iotgate.ScopeCommandsSend},
		{"GET", "/v1/devices/thermo1%40example.com/commands", iotgate.ScopeDevicesRead},
		{"GET", "/v1/commands/c1", iotgate.ScopeDevicesRead},
		{"POST", "/v1/commands/c1/cancel", iotgate.ScopeCommandsSend},
		{"POST", "/v1/tokens", iotgate.ScopeAdmin},
		{"GET", "/v1/tokens", iotgate.ScopeAdmin},
		{"GET", "/v1/tokens/tok_a", iotgate.ScopeAdmin},
		{"DELETE", "/v1/tokens/tok_a", iotgate.ScopeAdmin},
		{"GET", "/metrics", iotgate.ScopeAdmin},
	}

	t.Run("EveryRouteListed", func(t *testing.T) {
		s, _ := accessFixture(Config{}, nil)
		for _, r := range s.echo.Routes() {
			if !strings.HasPrefix(r.Path, "/v1/") && r.Path != "/metrics" {
				continue
			}
			found := false
			for _, want := range routes {
				// Compare the shape: /v1/devices/:jid vs /v1/devices/x.
				if want.method == r.Method && samePath(r.Path, want.path) {
					found = true
				}
			}
			if !found {
				t.Errorf("route %s %s is not in this test's table", r.Method, r.Path)
			}
		}
	})

	for _, r := range routes {
		t.Run(r.method+" "+r.path, func(t *testing.T) {
			tests := []struct {
				name   string
				header string // the Authorization header
				want   int    // 0: neither 401 nor 403
			}{
				{"NoToken", "", http.StatusUnauthorized},
				{"NotBearer", "Basic " + testToken, http.StatusUnauthorized},
				{"UnknownToken", "Bearer iotg_nope", http.StatusUnauthorized},
			}
			for _, sc := range iotgate.Scopes {
				want := http.StatusForbidden
				if sc == r.scope || sc == iotgate.ScopeAdmin {
					want = 0
				}
				tests = append(tests, struct {
					name   string
					header string
					want   int
				}{"Scope_" + string(sc), "Bearer " + scopeSecret(sc), want})
			}
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					s, _ := accessFixture(Config{}, nil)
					rec := do(t, s, r.method, r.path, strings.NewReader(""), echo.HeaderAuthorization, tt.header)
					switch {
					case tt.want == 0 && (rec.Code == http.StatusUnauthorized || rec.Code == http.StatusForbidden):
						t.Fatalf("= %d, want access (body %s)", rec.Code, rec.Body.String())
					case tt.want == 0:
						return
					case rec.Code != tt.want:
						t.Fatalf("= %d, want %d (body %s)", rec.Code, tt.want, rec.Body.String())
					}
					er := decode[ErrorResponse](t, rec)
					wantCode := map[int]string{401: iotgate.EUnauthorized, 403: iotgate.EForbidden}[tt.want]
					if er.Code != wantCode || er.Message == "" {
						t.Errorf("body = %+v, want code %s", er, wantCode)
					}
					if ch := rec.Header().Get(echo.HeaderWWWAuthenticate); !strings.HasPrefix(ch, "Bearer") {
						t.Errorf("WWW-Authenticate = %q, want a Bearer challenge", ch)
					}
				})
			}
		})
	}

	t.Run("PublicRoutes", func(t *testing.T) {
		s, _ := accessFixture(Config{}, nil)
		for _, p := range []string{"/healthz", "/readyz", "/swagger/index.html"} {
			if rec := do(t, s, http.MethodGet, p, nil, echo.HeaderAuthorization, ""); rec.Code != http.StatusOK {
				t.Errorf("GET %s without a token = %d, want 200", p, rec.Code)
			}
		}
	})
	t.Run("NoAuthenticator", func(t *testing.T) {
		s := New(Config{}, Deps{Schemas: newFakeSchemas()})
		if rec := do(t, s, http.MethodGet, "/v1/schemas", nil); rec.Code != http.StatusUnauthorized {
			t.Errorf("= %d, want 401: without an Authenticator nothing is open", rec.Code)
		}
	})
}

// samePath reports whether an echo route pattern matches a concrete path.
func samePath(pattern, path string) bool {
	path, _, _ = strings.Cut(path, "?")
	ps, xs := strings.Split(pattern, "/"), strings.Split(path, "/")
	if len(ps) != len(xs) {
		return false
	}
	for i := range ps {
		if !strings.HasPrefix(ps[i], ":") && ps[i] != xs[i] {
			return false
		}
	}
	return true
}

// TestDeviceSelector: a token limited to site=berlin sees only berlin's
// devices; others are 404 as if they did not exist, and it can't create
// or relabel devices outside its selector (403).
func TestDeviceSelector(t *testing.T) {
	tests := []struct {
		name, method, path, body string
		want                     int
		check                    func(t *testing.T, body string)
	}{
		{name: "ListFiltered", method: "GET", path: "/v1/devices", want: 200, check: func(t *testing.T, body string) {
			if strings.Contains(body, "thermo2") || !strings.Contains(body, "thermo1") || !strings.Contains(body, "thermo3") {
				t.Errorf("list = %s, want berlin's devices only", body)
			}
		}},
		{name: "ListContradictoryFilter", method: "GET", path: "/v1/devices?label=site:paris", want: 200, check: func(t *testing.T, body string) {
			if strings.Contains(body, "thermo") {
				t.Errorf("list = %s, want none", body)
			}
		}},
		{name: "GetInside", method: "GET", path: "/v1/devices/thermo1%40example.com", want: 200},
		{name: "GetOutside", method: "GET", path: "/v1/devices/thermo2%40example.com", want: 404},
		{name: "GetMissing", method: "GET", path: "/v1/devices/nobody%40example.com", want: 404},
		{name: "StateOutside", method: "GET", path: "/v1/devices/thermo2%40example.com/state", want: 404},
		{name: "ReadingsOutside", method: "GET", path: "/v1/devices/thermo2%40example.com/readings", want: 404},
		{name: "RejectionsOutside", method: "GET", path: "/v1/devices/thermo2%40example.com/rejections", want: 404},
		{name: "AggregateOutside", method: "GET", path: "/v1/devices/thermo2%40example.com/readings/aggregate?fields=temperature", want: 404},
		{name: "StatesFiltered", method: "POST", path: "/v1/devices/states", body: `{"jids":["thermo1@example.com","thermo2@example.com","nobody@example.com"]}`, want: 200, check: func(t *testing.T, body string) {
			var got StatesResponse
			if err := json.Unmarshal([]byte(body), &got); err != nil {
				t.Fatal(err)
			}
			if len(got.Items) != 1 || got.Items[0].JID != "thermo1@example.com" || !slices.Equal(got.NotFound, []string{"thermo2@example.com", "nobody@example.com"}) {
				t.Errorf("states = %s, want thermo1's, and thermo2 as not found like nobody", body)
			}
		}},
		{name: "AggregateInside", method: "GET", path: "/v1/devices/thermo1%40example.com/readings/aggregate?fields=temperature", want: 200},
		{name: "PatchOutside", method: "PATCH", path: "/v1/devices/thermo2%40example.com", body: `{"name":"x"}`, want: 404},
		{name: "PatchOutOfReach", method: "PATCH", path: "/v1/devices/thermo1%40example.com", body: `{"labels":{"site":"paris"}}`, want: 403},
		{name: "PatchInside", method: "PATCH", path: "/v1/devices/thermo1%40example.com", body: `{"name":"x"}`, want: 200},
		{name: "DeleteOutside", method: "DELETE", path: "/v1/devices/thermo2%40example.com", want: 404},
		{name: "CreateOutside", method: "POST", path: "/v1/devices", body: `{"jid":"new@example.com","schema":"thermostat","labels":{"site":"paris"}}`, want: 403},
		{name: "CreateUnlabelled", method: "POST", path: "/v1/devices", body: `{"jid":"new@example.com","schema":"thermostat"}`, want: 403},
		{name: "CreateInside", method: "POST", path: "/v1/devices", body: `{"jid":"new@example.com","schema":"thermostat","labels":{"site":"berlin"}}`, want: 201},
		{name: "CreateOutsideWithAccount", method: "POST", path: "/v1/devices", body: `{"jid":"new@example.com","schema":"thermostat","labels":{"site":"paris"},"account":{"create":true}}`, want: 403},
		{name: "CreateTakenOutsideWithAccount", method: "POST", path: "/v1/devices", body: `{"jid":"thermo2@example.com","schema":"thermostat","labels":{"site":"berlin"},"account":{"create":true}}`, want: 403},
		{name: "CreateInsideWithAccount", method: "POST", path: "/v1/devices", body: `{"jid":"new@example.com","schema":"thermostat","labels":{"site":"berlin"},"account":{"create":true}}`, want: 201},
		{name: "DeleteOutsideWithAccount", method: "DELETE", path: "/v1/devices/thermo2%40example.com?account=delete", want: 404},
		{name: "CommandOutside", method: "POST", path: "/v1/devices/thermo2%40example.com/commands", body: `{"payload":"<x/>","mode":"async"}`, want: 404},
		{name: "CommandInside", method: "POST", path: "/v1/devices/thermo1%40example.com/commands", body: `{"payload":"<x/>","mode":"async"}`, want: 202},
		{name: "CommandsListOutside", method: "GET", path: "/v1/devices/thermo2%40example.com/commands", want: 404},
		{name: "GetCommandOutside", method: "GET", path: "/v1/commands/c2", want: 404},
		{name: "GetCommandInside", method: "GET", path: "/v1/commands/c1", want: 200},
		{name: "CancelOutside", method: "POST", path: "/v1/commands/c2/cancel", want: 404},
		{name: "CancelInside", method: "POST", path: "/v1/commands/c1/cancel", want: 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, cmds := accessFixture(Config{}, nil)
			header := []string{echo.HeaderAuthorization, "Bearer " + berlinSecret}
			if tt.body != "" {
				header = append(header, echo.HeaderContentType, echo.MIMEApplicationJSON)
			}
			rec := do(t, s, tt.method, tt.path, strings.NewReader(tt.body), header...)
			if rec.Code != tt.want {
				t.Fatalf("= %d, want %d (body %s)", rec.Code, tt.want, rec.Body.String())
			}
			if tt.want == 404 {
				// Indistinguishable from a device that does not exist.
				if er := decode[ErrorResponse](t, rec); er.Code != iotgate.ENotFound || strings.Contains(er.Message, "selector") {
					t.Errorf("body = %+v", er)
				}
			}
			if tt.name == "CommandInside" && (cmds.lastReq.TokenID != "tok_berlin" || cmds.lastReq.SentBy != "berlin") {
				t.Errorf("command sent by %q (%q), want berlin (tok_berlin)", cmds.lastReq.SentBy, cmds.lastReq.TokenID)
			}
			if tt.check != nil {
				tt.check(t, rec.Body.String())
			}
		})
	}
}

// TestRateLimit: beyond its burst a token gets 429 with Retry-After and
// code rate_limited; other tokens are not affected. The rate is so low
// that nothing refills during the test, however slow the machine.
func TestRateLimit(t *testing.T) {
	s, _ := accessFixture(Config{RateLimit: 0.01, RateBurst: 2}, nil)
	get := func(secret string) *httptest.ResponseRecorder {
		return do(t, s, http.MethodGet, "/v1/schemas", nil, echo.HeaderAuthorization, "Bearer "+secret)
	}
	tests := []struct {
		name   string
		secret string
		want   int
	}{
		{"First", testToken, 200},
		{"Second", testToken, 200},
		{"OverBurst", testToken, 429},
		{"StillOver", testToken, 429},
		{"OtherToken", scopeSecret(iotgate.ScopeSchemasRead), 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := get(tt.secret)
			if rec.Code != tt.want {
				t.Fatalf("= %d, want %d", rec.Code, tt.want)
			}
			if tt.want != 429 {
				return
			}
			if ra := rec.Header().Get("Retry-After"); ra == "" || ra == "0" || strings.ContainsAny(ra, ".-") {
				t.Errorf("Retry-After = %q, want whole seconds > 0", ra)
			}
			if er := decode[ErrorResponse](t, rec); er.Code != "rate_limited" {
				t.Errorf("code = %q, want rate_limited", er.Code)
			}
		})
	}
	t.Run("Disabled", func(t *testing.T) {
		s, _ := accessFixture(Config{}, nil)
		for i := range 200 {
			if rec := do(t, s, http.MethodGet, "/v1/schemas", nil); rec.Code != 200 {
				t.Fatalf("request %d = %d", i, rec.Code)
			}
		}
	})
}

func TestLimiterEvictsIdle(t *testing.T) {
	now := testTime
	l := newLimiter(1, 1, func() time.Time { return now })
	for i := range maxLimiters {
		l.allow(string(rune('a'+i%26)) + strings.Repeat("x", i/26))
	}
	now = now.Add(time.Hour)
	if ok, _ := l.allow("new"); !ok || len(l.buckets) != 1 {
		t.Errorf("allow = %v with %d buckets, want the idle ones evicted", ok, len(l.buckets))
	}
}

// TestTokenNeverLogged: neither a valid nor an unknown secret appears in
// the log, whatever the outcome; the token's ID does.
func TestTokenNeverLogged(t *testing.T) {
	logs := &logBuffer{}
	log := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s, _ := accessFixture(Config{RateLimit: 0.01, RateBurst: 1}, log)
	unknown := "iotg_unknown-secret-value"
	for _, h := range []string{"Bearer " + testToken, "Bearer " + testToken, "Bearer " + unknown, "bearer " + scopeSecret(iotgate.ScopeDevicesRead)} {
		do(t, s, http.MethodGet, "/v1/schemas", nil, echo.HeaderAuthorization, h)
	}
	out := logs.String()
	for _, secret := range []string{testToken, unknown, scopeSecret(iotgate.ScopeDevicesRead)} {
		if strings.Contains(out, secret) {
			t.Errorf("the log contains the secret %q:\n%s", secret, out)
		}
	}
	var ids []string
	for _, r := range logs.records(t, "http request") {
		id, _ := r["token_id"].(string)
		ids = append(ids, id)
	}
	if !slices.Equal(ids, []string{"tok_test", "tok_test", "", "tok_devices:read"}) {
		t.Errorf("logged token IDs %q", ids)
	}
}

func TestTokens(t *testing.T) {
	tests := []apiCase{
		{name: "Create", method: "POST", target: "/v1/tokens", body: `{"name":"ops","scopes":["devices:read","commands:send"],"devices":{"site":"berlin"},"expires_in":"720h"}`,
			status: 201, check: func(t *testing.T, rec *httptest.ResponseRecorder) {
				got := decode[CreatedToken](t, rec)
				if got.Secret != auth.Prefix+"secret" || got.ID != "tok_new" || got.Devices["site"] != "berlin" || rec.Header().Get("Location") != "/v1/tokens/tok_new" {
					t.Errorf("created %+v", got)
				}
			}},
		{name: "ErrUnknownScope", method: "POST", target: "/v1/tokens", body: `{"name":"ops","scopes":["root"]}`, status: 400, code: "invalid"},
		{name: "ErrNoName", method: "POST", target: "/v1/tokens", body: `{"scopes":["admin"]}`, status: 400, code: "invalid"},
		{name: "ErrExpiresIn", method: "POST", target: "/v1/tokens", body: `{"name":"x","scopes":["admin"],"expires_in":"soon"}`, status: 400, code: "invalid", message: "expires_in"},
		{name: "List", target: "/v1/tokens", status: 200, check: func(t *testing.T, rec *httptest.ResponseRecorder) {
			if got := decode[TokenList](t, rec); len(got.Items) != 1 || got.Items[0].ID != "tok_a" {
				t.Errorf("list %+v", got)
			}
			if strings.Contains(rec.Body.String(), `"token"`) {
				t.Errorf("list shows secrets: %s", rec.Body.String())
			}
		}},
		{name: "Get", target: "/v1/tokens/tok_a", status: 200},
		{name: "ErrGetMissing", target: "/v1/tokens/tok_x", status: 404, code: "not_found"},
		{name: "Revoke", method: "DELETE", target: "/v1/tokens/tok_a", status: 200, check: func(t *testing.T, rec *httptest.ResponseRecorder) {
			if got := decode[Token](t, rec); got.RevokedAt == nil {
				t.Errorf("revoked %+v", got)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _ := accessFixture(Config{}, nil)
			tt.run(t, s)
		})
	}
	// A limited admin's tokens: TestLimitedAdminTokens.
}

// FuzzAuthorizationHeader sends arbitrary Authorization headers: only the
// exact header of a known token gets through; everything else is a 401
// with an ErrorResponse, never a 5xx (or a panic).
func FuzzAuthorizationHeader(f *testing.F) {
	for _, s := range []string{"Bearer " + testToken, "bearer " + testToken, "Bearer  " + testToken + " ", "Bearer", "Bearer ", "Basic x",
		"", " ", "Bearer " + testToken + "x", "Bearer\t" + testToken, "Bearer " + strings.Repeat("a", 5000), "Bearer \x00"} {
		f.Add(s)
	}
	s, _ := accessFixture(Config{}, nil)
	var n atomic.Uint32
	f.Fuzz(func(t *testing.T, h string) {
		req := httptest.NewRequest(http.MethodGet, "/v1/schemas", nil)
		// An address per try: failed guesses from one address are
		// limited (TestAuthFailureLimit), which is not what this tests.
		i := n.Add(1)
		req.RemoteAddr = fmt.Sprintf("10.%d.%d.%d:1000", byte(i>>16), byte(i>>8), byte(i))
		req.Header[echo.HeaderAuthorization] = []string{h}
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, req)
		secret, ok := bearer(h)
		known := ok && (secret == testToken || secret == berlinSecret || slices.ContainsFunc(iotgate.Scopes, func(sc iotgate.Scope) bool { return secret == scopeSecret(sc) }))
		switch {
		case rec.Code == http.StatusOK || rec.Code == http.StatusForbidden:
			if !known {
				t.Fatalf("%q = %d, want 401", h, rec.Code)
			}
		case rec.Code == http.StatusUnauthorized:
			if known {
				t.Fatalf("%q = 401 for a known token", h)
			}
			if er := decode[ErrorResponse](t, rec); er.Code != iotgate.EUnauthorized {
				t.Fatalf("%q: body %s", h, rec.Body.String())
			}
		default:
			t.Fatalf("%q = %d: %s", h, rec.Code, rec.Body.String())
		}
	})
}

// TestAuthFailureLimit checks that a client address that keeps sending
// bad tokens gets 429 for them, that its valid tokens still pass (a token
// is checked before the client's failures), and that other addresses are
// not affected.
func TestAuthFailureLimit(t *testing.T) {
	s, _ := accessFixture(Config{}, nil)
	for i := range authFailureBurst {
		if rec := getFrom(t, s, "guess-"+strconv.Itoa(i), "192.0.2.7:1000"); rec.Code != 401 {
			t.Fatalf("guess %d = %d, want 401", i, rec.Code)
		}
	}
	tests := []struct {
		name, secret, addr string
		want               int
	}{
		{"GuessOverBurst", "guess-x", "192.0.2.7:1001", 429},
		{"SameAddressGoodToken", testToken, "192.0.2.7:1002", 200},
		{"SameAddressGuessAgain", "guess-z", "192.0.2.7:1003", 429},
		{"OtherAddress", "guess-y", "192.0.2.8:1000", 401},
		{"OtherAddressGoodToken", testToken, "192.0.2.8:1001", 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := getFrom(t, s, tt.secret, tt.addr)
			if rec.Code != tt.want {
				t.Fatalf("= %d, want %d", rec.Code, tt.want)
			}
			if tt.want == 429 {
				if ra := rec.Header().Get("Retry-After"); ra == "" || ra == "0" {
					t.Errorf("Retry-After = %q", ra)
				}
				if er := decode[ErrorResponse](t, rec); er.Code != "rate_limited" {
					t.Errorf("code = %q, want rate_limited", er.Code)
				}
			}
		})
	}
}

// getFrom sends GET /v1/schemas with secret from the peer addr, with
// header pairs added.
func getFrom(t *testing.T, h http.Handler, secret, addr string, header ...string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, "/v1/schemas", nil)
	req.RemoteAddr = addr
	req.Header.Set(echo.HeaderAuthorization, "Bearer "+secret)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Add(header[i], header[i+1])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}
