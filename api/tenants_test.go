package api

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/labstack/echo/v4"

	"github.com/iotgate/iotgate"
	"github.com/iotgate/iotgate/auth"
	"github.com/iotgate/iotgate/internal/memstore"
)

// tenants is a server whose tokens are real (auth.Service over an
// in-memory store): an unlimited admin, admins limited to site=berlin and
// to site=paris, and a berlin lab token.
type tenants struct {
	srv                             *Server
	all, berlin, paris, lab         string // secrets
	allID, berlinID, parisID, labID string
	bootstrap                       string
}

func newTenants(t *testing.T) *tenants {
	t.Helper()
	ctx := context.Background()
	ts := &tenants{bootstrap: strings.Repeat("b", auth.MinBootstrapLen)}
	svc, err := auth.NewService(memstore.NewTokenStore(), auth.Config{Bootstrap: ts.bootstrap})
	if err != nil {
		t.Fatal(err)
	}
	admin := []iotgate.Scope{iotgate.ScopeAdmin}
	for _, tk := range []struct {
		secret, id *string
		sel        iotgate.Selector
		scopes     []iotgate.Scope
	}{
		{&ts.all, &ts.allID, nil, admin},
		{&ts.berlin, &ts.berlinID, iotgate.Selector{"site": "berlin"}, admin},
		{&ts.paris, &ts.parisID, iotgate.Selector{"site": "paris"}, admin},
		{&ts.lab, &ts.labID, iotgate.Selector{"site": "berlin", "room": "lab"}, []iotgate.Scope{iotgate.ScopeDevicesRead}},
	} {
		tok, secret, err := svc.Create(ctx, auth.CreateRequest{Name: "t", Scopes: tk.scopes, Devices: tk.sel})
		if err != nil {
			t.Fatal(err)
		}
		*tk.secret, *tk.id = secret, tok.ID
	}
	ts.srv = New(Config{}, Deps{
		Auth: svc, Tokens: svc, Devices: newDeviceFixture(),
		Metrics: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("iotgate_up 1\n")) }),
	})
	return ts
}

func (ts *tenants) do(t *testing.T, secret, method, path, body string) *httptest.ResponseRecorder {
	t.Helper()
	header := []string{echo.HeaderAuthorization, "Bearer " + secret}
	if body != "" {
		header = append(header, echo.HeaderContentType, echo.MIMEApplicationJSON)
	}
	return do(t, ts.srv, method, path, strings.NewReader(body), header...)
}

// TestLimitedAdminTokens performs the attack of issue #15: an admin token
// limited to site=berlin lists, reads and revokes tokens broader than
// itself (the unlimited admin's) or beside it (paris). It sees and
// manages only the tokens limited at least as much as itself; the others
// are 404 exactly as a token that does not exist, and stay valid.
func TestLimitedAdminTokens(t *testing.T) {
	ts := newTenants(t)
	missing := ts.do(t, ts.berlin, "GET", "/v1/tokens/tok_doesnotexist", "")
	if missing.Code != 404 {
		t.Fatalf("missing token = %d", missing.Code)
	}
	notFound := func(t *testing.T, rec *httptest.ResponseRecorder, id string) {
		t.Helper()
		er := decode[ErrorResponse](t, rec)
		want := decode[ErrorResponse](t, missing)
		if rec.Code != 404 || er.Code != want.Code || er.Message != strings.Replace(want.Message, "tok_doesnotexist", id, 1) {
			t.Errorf("= %d %+v, want the 404 of a token that does not exist (%+v)", rec.Code, er, want)
		}
	}

	t.Run("List", func(t *testing.T) {
		rec := ts.do(t, ts.berlin, "GET", "/v1/tokens", "")
		var ids []string
		for _, it := range decode[TokenList](t, rec).Items {
			ids = append(ids, it.ID)
		}
		if rec.Code != 200 || strings.Join(ids, ",") != ts.berlinID+","+ts.labID && strings.Join(ids, ",") != ts.labID+","+ts.berlinID {
			t.Errorf("berlin lists %v, want itself and the lab token only", ids)
		}
		if got := decode[TokenList](t, ts.do(t, ts.all, "GET", "/v1/tokens", "")).Items; len(got) != 4 {
			t.Errorf("the unlimited admin lists %d tokens, want 4", len(got))
		}
	})
	t.Run("GetBroader", func(t *testing.T) { notFound(t, ts.do(t, ts.berlin, "GET", "/v1/tokens/"+ts.allID, ""), ts.allID) })
	t.Run("GetBeside", func(t *testing.T) { notFound(t, ts.do(t, ts.berlin, "GET", "/v1/tokens/"+ts.parisID, ""), ts.parisID) })
	t.Run("GetNarrower", func(t *testing.T) {
		if rec := ts.do(t, ts.berlin, "GET", "/v1/tokens/"+ts.labID, ""); rec.Code != 200 {
			t.Errorf("= %d, want 200", rec.Code)
		}
	})
	t.Run("RevokeBroader", func(t *testing.T) {
		notFound(t, ts.do(t, ts.berlin, "DELETE", "/v1/tokens/"+ts.allID, ""), ts.allID)
		if rec := ts.do(t, ts.all, "GET", "/v1/tokens", ""); rec.Code != 200 {
			t.Errorf("the unlimited admin after the attempt: %d, want 200 (not revoked)", rec.Code)
		}
	})
	t.Run("RevokeBeside", func(t *testing.T) {
		notFound(t, ts.do(t, ts.berlin, "DELETE", "/v1/tokens/"+ts.parisID, ""), ts.parisID)
		if rec := ts.do(t, ts.paris, "GET", "/v1/tokens", ""); rec.Code != 200 {
			t.Errorf("paris after the attempt: %d, want 200", rec.Code)
		}
	})
	t.Run("RevokeBootstrap", func(t *testing.T) {
		notFound(t, ts.do(t, ts.berlin, "DELETE", "/v1/tokens/"+auth.BootstrapID, ""), auth.BootstrapID)
		// For the unlimited admin, unchanged: 400, it can't be revoked.
		if rec := ts.do(t, ts.all, "DELETE", "/v1/tokens/"+auth.BootstrapID, ""); rec.Code != 400 {
			t.Errorf("unlimited admin: %d, want 400", rec.Code)
		}
	})
	t.Run("Create", func(t *testing.T) {
		for body, want := range map[string]int{
			`{"name":"x","scopes":["admin"]}`:                                           403,
			`{"name":"x","scopes":["admin"],"devices":{"site":"paris"}}`:                403,
			`{"name":"x","scopes":["admin"],"devices":{"room":"lab"}}`:                  403,
			`{"name":"x","scopes":["admin"],"devices":{"site":"berlin"}}`:               201,
			`{"name":"x","scopes":["admin"],"devices":{"site":"berlin","room":"hall"}}`: 201,
		} {
			if rec := ts.do(t, ts.berlin, "POST", "/v1/tokens", body); rec.Code != want {
				t.Errorf("%s = %d, want %d (%s)", body, rec.Code, want, rec.Body.String())
			}
		}
	})
	t.Run("RevokeNarrower", func(t *testing.T) {
		if rec := ts.do(t, ts.berlin, "DELETE", "/v1/tokens/"+ts.labID, ""); rec.Code != 200 {
			t.Fatalf("= %d, want 200", rec.Code)
		}
		if rec := ts.do(t, ts.lab, "GET", "/v1/devices", ""); rec.Code != 401 {
			t.Errorf("the revoked lab token: %d, want 401", rec.Code)
		}
	})
	t.Run("UnlimitedRevokesAny", func(t *testing.T) {
		if rec := ts.do(t, ts.all, "DELETE", "/v1/tokens/"+ts.parisID, ""); rec.Code != 200 {
			t.Errorf("= %d, want 200", rec.Code)
		}
	})
}

// TestGlobalMetrics: the global metrics cover every device, so an admin
// token limited by a selector gets 403; an unlimited one (stored or
// bootstrap) gets them.
func TestGlobalMetrics(t *testing.T) {
	ts := newTenants(t)
	tests := []struct {
		name, secret string
		want         int
	}{
		{"LimitedAdmin", ts.berlin, 403},
		{"LimitedReader", ts.lab, 403},
		{"UnlimitedAdmin", ts.all, 200},
		{"Bootstrap", ts.bootstrap, 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := ts.do(t, tt.secret, "GET", "/metrics", "")
			if rec.Code != tt.want {
				t.Fatalf("= %d, want %d", rec.Code, tt.want)
			}
			if tt.want == 403 {
				if er := decode[ErrorResponse](t, rec); er.Code != iotgate.EForbidden || strings.Contains(rec.Body.String(), "iotgate_up") {
					t.Errorf("body %s", rec.Body.String())
				}
			}
		})
	}
}

// TestRegisterTakenJID: a token limited to site=berlin registers the JIDs
// of existing devices. One it sees is 409 as for anyone; one it can't see
// (paris) is the 403 of a JID it may not register, never a 409 nor
// anything that says the device exists, is registered, or where.
func TestRegisterTakenJID(t *testing.T) {
	s, _ := accessFixture(Config{}, nil)
	register := func(secret, jid string) *httptest.ResponseRecorder {
		return do(t, s, http.MethodPost, "/v1/devices", strings.NewReader(`{"jid":"`+jid+`","schema":"thermostat","labels":{"site":"berlin"}}`),
			echo.HeaderAuthorization, "Bearer "+secret, echo.HeaderContentType, echo.MIMEApplicationJSON)
	}
	tests := []struct {
		name, secret, jid string
		want              int
		code              string
	}{
		{"LimitedOutside", berlinSecret, "thermo2@example.com", 403, iotgate.EForbidden},
		{"LimitedOutsideOtherSpelling", berlinSecret, "Thermo2@Example.com", 403, iotgate.EForbidden},
		{"LimitedInside", berlinSecret, "thermo1@example.com", 409, iotgate.EConflict},
		{"UnlimitedOutside", testToken, "thermo2@example.com", 409, iotgate.EConflict},
		{"LimitedFree", berlinSecret, "free@example.com", 201, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := register(tt.secret, tt.jid)
			if rec.Code != tt.want {
				t.Fatalf("= %d, want %d (%s)", rec.Code, tt.want, rec.Body.String())
			}
			if tt.code == "" {
				return
			}
			er := decode[ErrorResponse](t, rec)
			if er.Code != tt.code {
				t.Errorf("code = %q, want %q", er.Code, tt.code)
			}
			if tt.want == 403 {
				for _, leak := range []string{"regist" + "ered", "exist", "paris", "already", "conflict"} {
					if strings.Contains(strings.ToLower(er.Message), leak) {
						t.Errorf("message %q says %q", er.Message, leak)
					}
				}
			}
		})
	}
}

// TestClientKey: failed authentications count per IPv4 address and per
// IPv6 /64 (a host picks addresses from its /64 at will).
func TestClientKey(t *testing.T) {
	tests := []struct {
		a, b string
		same bool
	}{
		{"192.0.2.1", "192.0.2.1", true},
		{"192.0.2.1", "192.0.2.2", false},
		{"::ffff:192.0.2.1", "192.0.2.1", true},
		{"2001:db8::1", "2001:db8::ffff:1", true},
		{"2001:db8::1", "2001:db8:0:1::1", false},
		{"", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.a+"_"+tt.b, func(t *testing.T) {
			if got := clientKey(tt.a) == clientKey(tt.b); got != tt.same {
				t.Errorf("clientKey(%q) = %q, clientKey(%q) = %q, same = %v, want %v", tt.a, clientKey(tt.a), tt.b, clientKey(tt.b), got, tt.same)
			}
		})
	}
}

func mustCIDRs(t *testing.T, cidrs ...string) []*net.IPNet {
	t.Helper()
	var out []*net.IPNet
	for _, c := range cidrs {
		_, n, err := net.ParseCIDR(c)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, n)
	}
	return out
}

// TestIPExtractor: X-Forwarded-For names the client only when the peer is
// a trusted proxy, and then the nearest untrusted address in it; private
// and loopback peers are not trusted unless configured.
func TestIPExtractor(t *testing.T) {
	proxies := mustCIDRs(t, "10.0.0.0/24", "2001:db8:1::/48")
	tests := []struct {
		name    string
		trusted []*net.IPNet
		peer    string
		xff     []string
		want    string
	}{
		{"NoProxiesIgnoresXFF", nil, "10.0.0.1:1", []string{"198.51.100.1"}, "10.0.0.1"},
		{"TrustedPeer", proxies, "10.0.0.1:1", []string{"198.51.100.1"}, "198.51.100.1"},
		{"TrustedPeerNoXFF", proxies, "10.0.0.1:1", nil, "10.0.0.1"},
		{"UntrustedPeerSpoofs", proxies, "192.0.2.9:1", []string{"198.51.100.1"}, "192.0.2.9"},
		{"PrivateNotTrustedByDefault", proxies, "192.168.1.1:1", []string{"198.51.100.1"}, "192.168.1.1"},
		{"LoopbackNotTrustedByDefault", proxies, "127.0.0.1:1", []string{"198.51.100.1"}, "127.0.0.1"},
		{"ClientSpoofsBehindProxy", proxies, "10.0.0.1:1", []string{"203.0.113.66, 198.51.100.1"}, "198.51.100.1"},
		{"ChainOfProxies", proxies, "10.0.0.1:1", []string{"198.51.100.1, 10.0.0.2"}, "198.51.100.1"},
		{"TwoHeaders", proxies, "10.0.0.1:1", []string{"203.0.113.66", "198.51.100.1"}, "198.51.100.1"},
		{"IPv6Proxy", proxies, "[2001:db8:1::5]:1", []string{"2001:db8:9::1"}, "2001:db8:9::1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := httptest.NewRequest(http.MethodGet, "/", nil)
			req.RemoteAddr = tt.peer
			for _, x := range tt.xff {
				req.Header.Add(echo.HeaderXForwardedFor, x)
			}
			if got := ipExtractor(tt.trusted)(req); got != tt.want {
				t.Errorf("= %q, want %q", got, tt.want)
			}
		})
	}
}

// TestFailuresBehindProxy performs the attack of issue #15: behind a
// reverse proxy, one client's bad tokens locked every client out. With the
// proxy trusted, failures count per client (X-Forwarded-For): the guesser
// gets 429, another client behind the same proxy still gets 401 for a bad
// token, and valid tokens pass from everyone, the guesser's address too.
// Without the setting, X-Forwarded-For can't be used to dodge the limit,
// and valid tokens still pass.
func TestFailuresBehindProxy(t *testing.T) {
	const proxy = "10.0.0.1:4000"
	xff := echo.HeaderXForwardedFor
	t.Run("Trusted", func(t *testing.T) {
		s, _ := accessFixture(Config{TrustedProxies: mustCIDRs(t, "10.0.0.0/24")}, nil)
		for i := range authFailureBurst {
			if rec := getFrom(t, s, "guess-"+strconv.Itoa(i), proxy, xff, "198.51.100.1"); rec.Code != 401 {
				t.Fatalf("guess %d = %d, want 401", i, rec.Code)
			}
		}
		tests := []struct {
			name, secret, client string
			want                 int
		}{
			{"GuesserOverBurst", "guess-x", "198.51.100.1", 429},
			{"GuesserSpoofsXFF", "guess-x", "203.0.113.5, 198.51.100.1", 429},
			{"OtherClientBadToken", "guess-y", "198.51.100.2", 401},
			{"OtherClientGoodToken", testToken, "198.51.100.2", 200},
			{"GuesserGoodToken", testToken, "198.51.100.1", 200},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				if rec := getFrom(t, s, tt.secret, proxy, xff, tt.client); rec.Code != tt.want {
					t.Fatalf("= %d, want %d", rec.Code, tt.want)
				}
			})
		}
	})
	t.Run("NotTrusted", func(t *testing.T) {
		s, _ := accessFixture(Config{}, nil)
		for i := range authFailureBurst {
			// A new X-Forwarded-For each time: ignored.
			if rec := getFrom(t, s, "guess-"+strconv.Itoa(i), proxy, xff, "198.51.100."+strconv.Itoa(i)); rec.Code != 401 {
				t.Fatalf("guess %d = %d, want 401", i, rec.Code)
			}
		}
		if rec := getFrom(t, s, "guess-x", proxy, xff, "198.51.100.250"); rec.Code != 429 {
			t.Errorf("guess over the burst with a fresh X-Forwarded-For = %d, want 429", rec.Code)
		}
		if rec := getFrom(t, s, testToken, proxy); rec.Code != 200 {
			t.Errorf("a valid token through the same proxy = %d, want 200", rec.Code)
		}
	})
	t.Run("IPv6Rotation", func(t *testing.T) {
		s, _ := accessFixture(Config{}, nil)
		for i := range authFailureBurst {
			if rec := getFrom(t, s, "guess", "[2001:db8::"+strconv.FormatInt(int64(i+1), 16)+"]:1"); rec.Code != 401 {
				t.Fatalf("guess %d = %d, want 401", i, rec.Code)
			}
		}
		if rec := getFrom(t, s, "guess", "[2001:db8::ffff]:1"); rec.Code != 429 {
			t.Errorf("another address of the same /64 = %d, want 429", rec.Code)
		}
		if rec := getFrom(t, s, "guess", "[2001:db8:0:1::1]:1"); rec.Code != 401 {
			t.Errorf("another /64 = %d, want 401", rec.Code)
		}
	})
}

// TestTicketFailures: bad event-stream tickets count as failed
// authentications like bad tokens (429 beyond the burst), and a valid
// ticket from the same client still opens its stream.
func TestTicketFailures(t *testing.T) {
	e := newEventsEnv(t, Config{})
	for i := range authFailureBurst {
		if res := e.open("/v1/events?ticket=iotgt_bad"+strconv.Itoa(i), ""); res.StatusCode != http.StatusUnauthorized {
			t.Fatalf("bad ticket %d = %d, want 401", i, res.StatusCode)
		}
	}
	if res := e.open("/v1/events?ticket=iotgt_bad", ""); res.StatusCode != http.StatusTooManyRequests || res.Header.Get("Retry-After") == "" {
		t.Errorf("bad ticket over the burst = %d (Retry-After %q), want 429", res.StatusCode, res.Header.Get("Retry-After"))
	}
	req, _ := http.NewRequest(http.MethodPost, e.base+"/v1/events/tickets", nil)
	req.Header.Set(echo.HeaderAuthorization, "Bearer "+e.berlin)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var tk EventTicket
	if err := json.NewDecoder(res.Body).Decode(&tk); err != nil || res.StatusCode != http.StatusCreated {
		t.Fatalf("POST tickets from the failing client: %d %v", res.StatusCode, err)
	}
	if res := e.open(tk.URL, ""); res.StatusCode != http.StatusOK {
		t.Errorf("a valid ticket from the failing client = %d, want 200", res.StatusCode)
	}
}
