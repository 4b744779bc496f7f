package auth

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/iotgate/iotgate"
	"github.com/iotgate/iotgate/internal/memstore"
)

func TestParseScopes(t *testing.T) {
	tests := []struct {
		in      string
		want    string
		wantErr bool
	}{
		{in: "admin", want: "admin"},
		{in: " devices:read, commands:send ,devices:read", want: "devices:read,commands:send"},
		{in: "", wantErr: true},
		{in: ",", wantErr: true},
		{in: "root", wantErr: true},
		{in: "devices:read,Admin", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseScopes(tt.in)
			if tt.wantErr {
				if iotgate.ErrorCode(err) != iotgate.EInvalid {
					t.Fatalf("err = %v, want invalid", err)
				}
				return
			}
			if err != nil || scopeList(got) != tt.want {
				t.Fatalf("= %v, %v; want %s", got, err, tt.want)
			}
		})
	}
}

func TestSelector(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		labels  map[string]string
		match   bool
		wantErr bool
	}{
		{name: "Empty", in: "", labels: nil, match: true},
		{name: "One", in: "site=berlin", labels: map[string]string{"site": "berlin", "room": "x"}, match: true},
		{name: "OtherValue", in: "site=berlin", labels: map[string]string{"site": "paris"}},
		{name: "Missing", in: "site=berlin", labels: nil},
		{name: "All", in: "site=berlin, room=kitchen", labels: map[string]string{"site": "berlin", "room": "kitchen"}, match: true},
		{name: "AllNotAny", in: "site=berlin,room=kitchen", labels: map[string]string{"site": "berlin"}},
		{name: "EmptyValue", in: "site=", labels: map[string]string{"site": ""}, match: true},
		{name: "ErrNoEquals", in: "site", wantErr: true},
		{name: "ErrNoKey", in: "=berlin", wantErr: true},
		{name: "ErrTwice", in: "site=a,site=b", wantErr: true},
		{name: "ErrBadKey", in: "s ite=a", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sel, err := ParseSelector(tt.in)
			if tt.wantErr {
				if iotgate.ErrorCode(err) != iotgate.EInvalid {
					t.Fatalf("err = %v, want invalid", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := sel.Matches(tt.labels); got != tt.match {
				t.Errorf("Matches(%v) = %v, want %v", tt.labels, got, tt.match)
			}
			if again, _ := ParseSelector(sel.String()); again.String() != sel.String() {
				t.Errorf("String %q does not parse back", sel.String())
			}
		})
	}
	if !(iotgate.Selector{"site": "berlin", "room": "x"}).Within(iotgate.Selector{"site": "berlin"}) || (iotgate.Selector{}).Within(iotgate.Selector{"site": "berlin"}) {
		t.Error("Within is wrong")
	}
}

func TestAllows(t *testing.T) {
	admin := &iotgate.Token{Scopes: []iotgate.Scope{iotgate.ScopeAdmin}}
	reader := &iotgate.Token{Scopes: []iotgate.Scope{iotgate.ScopeDevicesRead}}
	for _, s := range iotgate.Scopes {
		if !admin.Allows(s) {
			t.Errorf("admin lacks %s", s)
		}
		if reader.Allows(s) != (s == iotgate.ScopeDevicesRead) {
			t.Errorf("devices:read token: Allows(%s) = %v", s, reader.Allows(s))
		}
	}
}

// clock is a settable clock.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func newTestService(t *testing.T, cfg Config) (*Service, *memstore.TokenStore, *clock) {
	t.Helper()
	clk := &clock{now: time.Date(2026, 1, 2, 15, 4, 5, 0, time.UTC)}
	cfg.Now = clk.Now
	st := memstore.NewTokenStore()
	s, err := NewService(st, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s, st, clk
}

func TestCreateAndAuthenticate(t *testing.T) {
	ctx := context.Background()
	s, st, clk := newTestService(t, Config{})
	tok, secret, err := s.Create(ctx, CreateRequest{Name: "ops", Scopes: []iotgate.Scope{iotgate.ScopeDevicesRead}, Devices: iotgate.Selector{"site": "berlin"}, ExpiresIn: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(secret, Prefix) || len(secret) != len(Prefix)+43 {
		t.Errorf("secret %q: want %s and 256 bits in base64url", secret, Prefix)
	}
	if h := Hash(secret); !bytes.Equal(tok.Hash, h[:]) || strings.Contains(string(tok.Hash), secret) {
		t.Error("the token does not keep (only) the secret's hash")
	}
	_, other, _ := s.Create(ctx, CreateRequest{Name: "ops", Scopes: []iotgate.Scope{iotgate.ScopeAdmin}})
	if other == secret {
		t.Error("two tokens with the same secret")
	}

	tests := []struct {
		name    string
		secret  string
		advance time.Duration
		wantErr string
	}{
		{name: "OK", secret: secret},
		{name: "Cached", secret: secret, advance: time.Second},
		{name: "Unknown", secret: Prefix + strings.Repeat("A", 43), wantErr: iotgate.EUnauthorized},
		// Malformed secrets are refused without a store lookup.
		{name: "MalformedShort", secret: Prefix + "nope", wantErr: iotgate.EUnauthorized},
		{name: "MalformedLong", secret: secret + "A", wantErr: iotgate.EUnauthorized},
		{name: "MalformedChar", secret: Prefix + strings.Repeat("A", 42) + "!", wantErr: iotgate.EUnauthorized},
		{name: "MalformedPrefix", secret: "iotx_" + secret[len(Prefix):], wantErr: iotgate.EUnauthorized},
		{name: "Empty", secret: "", wantErr: iotgate.EUnauthorized},
		{name: "Expired", secret: secret, advance: 2 * time.Hour, wantErr: iotgate.EUnauthorized},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk.Add(tt.advance)
			got, err := s.Authenticate(ctx, tt.secret)
			if tt.wantErr != "" {
				if iotgate.ErrorCode(err) != tt.wantErr {
					t.Fatalf("err = %v, want %s", err, tt.wantErr)
				}
				return
			}
			if err != nil || got.ID != tok.ID || got.Devices["site"] != "berlin" {
				t.Fatalf("= %+v, %v", got, err)
			}
		})
	}
	if st.Lookups() != 3 { // OK, Unknown, Expired (the cache entry had expired); never the malformed ones
		t.Errorf("%d store lookups, want 3 (the cache serves the rest)", st.Lookups())
	}
}

func TestRevokeIsImmediate(t *testing.T) {
	ctx := context.Background()
	s, _, _ := newTestService(t, Config{CacheTTL: time.Hour})
	tok, secret, err := s.Create(ctx, CreateRequest{Name: "x", Scopes: []iotgate.Scope{iotgate.ScopeAdmin}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Authenticate(ctx, secret); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Revoke(ctx, tok.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Authenticate(ctx, secret); iotgate.ErrorCode(err) != iotgate.EUnauthorized {
		t.Errorf("after revocation: err = %v, want unauthorized despite the cache", err)
	}
	if _, err := s.Revoke(ctx, "tok_nope"); iotgate.ErrorCode(err) != iotgate.ENotFound {
		t.Errorf("revoke unknown: %v", err)
	}
	if _, err := s.Revoke(ctx, BootstrapID); iotgate.ErrorCode(err) != iotgate.EInvalid {
		t.Errorf("revoke bootstrap: %v", err)
	}
}

func TestTouchAtMostOncePerMinute(t *testing.T) {
	ctx := context.Background()
	s, st, clk := newTestService(t, Config{CacheTTL: time.Hour})
	tok, secret, _ := s.Create(ctx, CreateRequest{Name: "x", Scopes: []iotgate.Scope{iotgate.ScopeAdmin}})
	for range 5 {
		if _, err := s.Authenticate(ctx, secret); err != nil {
			t.Fatal(err)
		}
		clk.Add(10 * time.Second)
	}
	if st.Touches() != 1 {
		t.Errorf("%d touches in 50s, want 1", st.Touches())
	}
	clk.Add(time.Minute)
	s.Authenticate(ctx, secret)
	if st.Touches() != 2 {
		t.Errorf("%d touches after a minute more, want 2", st.Touches())
	}
	got, _ := s.Get(ctx, tok.ID)
	if got.LastUsedAt == nil || !got.LastUsedAt.Equal(clk.Now()) {
		t.Errorf("last used %v, want %v", got.LastUsedAt, clk.Now())
	}
}

func TestBootstrap(t *testing.T) {
	ctx := context.Background()
	boot := strings.Repeat("b", MinBootstrapLen)
	if _, err := NewService(memstore.NewTokenStore(), Config{Bootstrap: boot[1:]}); iotgate.ErrorCode(err) != iotgate.EInvalid {
		t.Errorf("short bootstrap token: err = %v, want invalid", err)
	}
	var logs bytes.Buffer
	s, st, _ := newTestService(t, Config{Bootstrap: boot, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	tests := []struct {
		name   string
		secret string
		ok     bool
	}{
		{"Exact", boot, true},
		{"Prefix", boot[:MinBootstrapLen-1], false},
		{"Longer", boot + "b", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := s.Authenticate(ctx, tt.secret)
			if !tt.ok {
				if iotgate.ErrorCode(err) != iotgate.EUnauthorized {
					t.Errorf("err = %v, want unauthorized", err)
				}
				return
			}
			if err != nil || got.ID != BootstrapID || got.Name != BootstrapName || !got.Allows(iotgate.ScopeAdmin) || len(got.Devices) != 0 {
				t.Errorf("= %+v, %v; want the bootstrap admin", got, err)
			}
		})
	}
	if st.Touches() != 0 || st.Len() != 0 {
		t.Error("the bootstrap token reached the store")
	}
	if strings.Contains(logs.String(), boot) {
		t.Error("the bootstrap token was logged")
	}
}

func TestCreateInvalid(t *testing.T) {
	s, _, _ := newTestService(t, Config{})
	tests := []struct {
		name string
		req  CreateRequest
	}{
		{"NoName", CreateRequest{Scopes: []iotgate.Scope{iotgate.ScopeAdmin}}},
		{"NoScopes", CreateRequest{Name: "x"}},
		{"UnknownScope", CreateRequest{Name: "x", Scopes: []iotgate.Scope{"root"}}},
		{"BadSelector", CreateRequest{Name: "x", Scopes: []iotgate.Scope{iotgate.ScopeAdmin}, Devices: iotgate.Selector{"a b": "c"}}},
		{"NegativeExpiry", CreateRequest{Name: "x", Scopes: []iotgate.Scope{iotgate.ScopeAdmin}, ExpiresIn: -time.Second}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, _, err := s.Create(context.Background(), tt.req); iotgate.ErrorCode(err) != iotgate.EInvalid {
				t.Errorf("err = %v, want invalid", err)
			}
		})
	}
}

// TestCreateNoBroaderThanCreator: a token can't mint a token that could
// do more than itself: a scope it lacks, devices outside its selector, or
// a longer life. The operator (By nil) may create anything.
func TestCreateNoBroaderThanCreator(t *testing.T) {
	s, _, clk := newTestService(t, Config{})
	soon := clk.Now().Add(time.Hour)
	berlinAdmin := &iotgate.Token{ID: "b", Scopes: []iotgate.Scope{iotgate.ScopeAdmin}, Devices: iotgate.Selector{"site": "berlin"}}
	expiringAdmin := &iotgate.Token{ID: "e", Scopes: []iotgate.Scope{iotgate.ScopeAdmin}, Devices: iotgate.Selector{}, ExpiresAt: &soon}
	reader := &iotgate.Token{ID: "r", Scopes: []iotgate.Scope{iotgate.ScopeDevicesRead}, Devices: iotgate.Selector{}}
	admin := []iotgate.Scope{iotgate.ScopeAdmin}
	tests := []struct {
		name    string
		req     CreateRequest
		wantErr string
	}{
		{"Operator", CreateRequest{Scopes: admin}, ""},
		{"LimitedUnlimited", CreateRequest{Scopes: admin, By: berlinAdmin}, iotgate.EForbidden},
		{"LimitedOtherSite", CreateRequest{Scopes: admin, Devices: iotgate.Selector{"site": "paris"}, By: berlinAdmin}, iotgate.EForbidden},
		{"LimitedSame", CreateRequest{Scopes: admin, Devices: iotgate.Selector{"site": "berlin"}, By: berlinAdmin}, ""},
		{"LimitedNarrower", CreateRequest{Scopes: admin, Devices: iotgate.Selector{"site": "berlin", "room": "lab"}, By: berlinAdmin}, ""},
		{"ExpiringForever", CreateRequest{Scopes: admin, By: expiringAdmin}, iotgate.EForbidden},
		{"ExpiringLonger", CreateRequest{Scopes: admin, ExpiresIn: 2 * time.Hour, By: expiringAdmin}, iotgate.EForbidden},
		{"ExpiringShorter", CreateRequest{Scopes: admin, ExpiresIn: time.Hour, By: expiringAdmin}, ""},
		{"ScopeLacked", CreateRequest{Scopes: admin, By: reader}, iotgate.EForbidden},
		{"ScopeHeld", CreateRequest{Scopes: []iotgate.Scope{iotgate.ScopeDevicesRead}, By: reader}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.req.Name = tt.name
			tok, _, err := s.Create(context.Background(), tt.req)
			if got := iotgate.ErrorCode(err); err != nil && got != tt.wantErr || err == nil && tt.wantErr != "" {
				t.Fatalf("err = %v, want %q", err, tt.wantErr)
			}
			if err == nil && tt.req.By != nil && !Manages(tt.req.By, tok) {
				t.Errorf("the creator does not manage the token it created")
			}
		})
	}
}

// TestManages: a token manages the tokens limited at least as much as
// itself, nothing broader and nothing beside.
func TestManages(t *testing.T) {
	tok := func(sel iotgate.Selector) *iotgate.Token { return &iotgate.Token{Devices: sel} }
	all, berlin, paris := tok(iotgate.Selector{}), tok(iotgate.Selector{"site": "berlin"}), tok(iotgate.Selector{"site": "paris"})
	berlinLab := tok(iotgate.Selector{"site": "berlin", "room": "lab"})
	lab := tok(iotgate.Selector{"room": "lab"})
	tests := []struct {
		name  string
		by, t *iotgate.Token
		want  bool
	}{
		{"OperatorAll", nil, all, true},
		{"AllAll", all, all, true},
		{"AllLimited", all, berlin, true},
		{"LimitedAll", berlin, all, false},
		{"LimitedSame", berlin, berlin, true},
		{"LimitedNarrower", berlin, berlinLab, true},
		{"LimitedOther", berlin, paris, false},
		{"LimitedOverlapping", berlin, lab, false},
		{"NarrowerBroader", berlinLab, berlin, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Manages(tt.by, tt.t); got != tt.want {
				t.Errorf("= %v, want %v", got, tt.want)
			}
		})
	}
}
