//go:build integration

package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// TestE2ETenants performs the attacks of issue #15 ("Tenants can't reach
// each other") on a real iotgate with its tokens in PostgreSQL, behind a
// "proxy" (this test, from 127.0.0.1, trusted by IOTGATE_TRUSTED_PROXIES):
// an admin limited to site=berlin revoking the unlimited admin, reading
// global metrics, learning of a paris device from a 409, and one client's
// bad tokens locking out everyone behind the proxy.
func TestE2ETenants(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	e := newCommandsEnv(t, ctx, "prosody", "IOTGATE_TRUSTED_PROXIES", "127.0.0.1/32")
	g := e.g
	berlin, paris := "berlin1@"+e.xs.Domain(), "paris1@"+e.xs.Domain()
	for jid, site := range map[string]string{berlin: "berlin", paris: "paris"} {
		if code := g.do("POST", "/v1/devices", map[string]any{"jid": jid, "schema": "thermostat", "labels": map[string]string{"site": site}}, nil); code != 201 {
			t.Fatalf("register %s: %d", jid, code)
		}
	}
	create := func(name string, devices map[string]string) tokenBody {
		t.Helper()
		var tb tokenBody
		if code := g.do("POST", "/v1/tokens", map[string]any{"name": name, "scopes": []string{"admin"}, "devices": devices}, &tb); code != 201 {
			t.Fatalf("create %s: %d", name, code)
		}
		return tb
	}
	all := create("all", nil)
	berlinAdmin := create("berlin", map[string]string{"site": "berlin"})
	parisAdmin := create("paris", map[string]string{"site": "paris"})

	t.Run("LimitedAdminTokens", func(t *testing.T) {
		tests := []struct {
			name, method, path string
			body               any
			want               int
		}{
			{"RevokeUnlimited", "DELETE", "/v1/tokens/" + all.ID, nil, 404},
			{"RevokeOtherSite", "DELETE", "/v1/tokens/" + parisAdmin.ID, nil, 404},
			{"RevokeBootstrap", "DELETE", "/v1/tokens/bootstrap", nil, 404},
			{"GetUnlimited", "GET", "/v1/tokens/" + all.ID, nil, 404},
			{"GetMissing", "GET", "/v1/tokens/tok_doesnotexist", nil, 404},
			{"GetItself", "GET", "/v1/tokens/" + berlinAdmin.ID, nil, 200},
			{"CreateUnlimited", "POST", "/v1/tokens", map[string]any{"name": "x", "scopes": []string{"admin"}}, 403},
			{"CreateOtherSite", "POST", "/v1/tokens", map[string]any{"name": "x", "scopes": []string{"admin"}, "devices": map[string]string{"site": "paris"}}, 403},
			{"GlobalMetrics", "GET", "/metrics", nil, 403},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				if code := g.doAs(berlinAdmin.Secret, tt.method, tt.path, tt.body, nil); code != tt.want {
					t.Errorf("= %d, want %d", code, tt.want)
				}
			})
		}
		var list struct{ Items []tokenBody }
		if code := g.doAs(berlinAdmin.Secret, "GET", "/v1/tokens", nil, &list); code != 200 || len(list.Items) != 1 || list.Items[0].ID != berlinAdmin.ID {
			t.Errorf("berlin's list = %d %+v, want itself only", code, list.Items)
		}
		// The targets of the attempts are untouched.
		for name, secret := range map[string]string{"all": all.Secret, "paris": parisAdmin.Secret} {
			if code := g.doAs(secret, "GET", "/v1/tokens", nil, nil); code != 200 {
				t.Errorf("%s after berlin's revocation attempt: %d, want 200", name, code)
			}
		}
		if code := g.doAs(all.Secret, "GET", "/metrics", nil, nil); code != 200 {
			t.Errorf("unlimited admin's /metrics: %d, want 200", code)
		}
		var narrower tokenBody
		if code := g.doAs(berlinAdmin.Secret, "POST", "/v1/tokens", map[string]any{"name": "lab", "scopes": []string{"devices:read"}, "devices": map[string]string{"site": "berlin", "room": "lab"}}, &narrower); code != 201 {
			t.Fatalf("create a narrower token: %d", code)
		}
		if code := g.doAs(berlinAdmin.Secret, "DELETE", "/v1/tokens/"+narrower.ID, nil, nil); code != 200 {
			t.Errorf("revoke the narrower token: %d, want 200", code)
		}
		if code := g.doAs(narrower.Secret, "GET", "/v1/devices", nil, nil); code != 401 {
			t.Errorf("the revoked narrower token: %d, want 401", code)
		}
	})

	t.Run("RegisterTakenJID", func(t *testing.T) {
		var body struct{ Code, Message string }
		code := g.doAs(berlinAdmin.Secret, "POST", "/v1/devices", map[string]any{"jid": paris, "schema": "thermostat", "labels": map[string]string{"site": "berlin"}}, &body)
		if code != 403 || body.Code != "forbidden" || strings.Contains(body.Message, "registered") {
			t.Errorf("berlin registers paris's JID: %d %+v, want 403 forbidden saying nothing of the device", code, body)
		}
		if code := g.doAs(berlinAdmin.Secret, "GET", "/v1/devices/"+url.PathEscape(paris), nil, nil); code != 404 {
			t.Errorf("berlin GETs paris's device: %d, want 404", code)
		}
		if code := g.doAs(berlinAdmin.Secret, "POST", "/v1/devices", map[string]any{"jid": berlin, "schema": "thermostat", "labels": map[string]string{"site": "berlin"}}, nil); code != 409 {
			t.Errorf("berlin registers its own device again: %d, want 409", code)
		}
		if code := g.doAs(all.Secret, "POST", "/v1/devices", map[string]any{"jid": paris, "schema": "thermostat"}, nil); code != 409 {
			t.Errorf("the unlimited admin registers paris's JID: %d, want 409", code)
		}
	})

	t.Run("FailuresBehindProxy", func(t *testing.T) {
		// via sends GET /v1/devices as the proxy would, for client (""
		// for the proxy itself).
		via := func(secret, client string) int {
			t.Helper()
			req, _ := http.NewRequestWithContext(ctx, "GET", g.base+"/v1/devices", nil)
			req.Header.Set("Authorization", "Bearer "+secret)
			if client != "" {
				req.Header.Set("X-Forwarded-For", client)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			return resp.StatusCode
		}
		// Well-formed unknown tokens: each one is looked up in PostgreSQL.
		guess := func() string {
			b := make([]byte, 32)
			rand.Read(b)
			return "iotg_" + base64.RawURLEncoding.EncodeToString(b)
		}
		const guesser, other = "198.51.100.1", "198.51.100.2"
		var codes []int
		for range 30 {
			codes = append(codes, via(guess(), guesser))
		}
		if codes[0] != 401 || codes[len(codes)-1] != 429 {
			t.Fatalf("the guesser's 30 bad tokens: %v, want 401 then 429", codes)
		}
		tests := []struct {
			name, secret, client string
			want                 int
		}{
			{"GuesserAgain", guess(), guesser, 429},
			{"GuesserValidToken", all.Secret, guesser, 200},
			{"OtherClientValidToken", berlinAdmin.Secret, other, 200},
			{"OtherClientBadToken", guess(), other, 401},
			{"ProxyItselfValidToken", all.Secret, "", 200},
			{"ProxyItselfBadToken", guess(), "", 401},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				if code := via(tt.secret, tt.client); code != tt.want {
					t.Errorf("= %d, want %d", code, tt.want)
				}
			})
		}
		if !strings.Contains(g.logs.String(), guesser) {
			t.Error("the access log does not name the client behind the proxy")
		}
	})
}
