//go:build integration

package main

import (
	"context"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/iotgate/iotgate/internal/device"
	"github.com/iotgate/iotgate/internal/servers"
	"github.com/iotgate/iotgate/schemas/examples"
)

// accountsEnv returns the settings that make iotgate create accounts on
// xs: ejabberd's HTTP API (open to loopback in the harness), or
// prosodyctl on the harness's Prosody config.
func accountsEnv(t *testing.T, xs servers.XMPPServer) map[string]string {
	t.Helper()
	switch s := xs.(type) {
	case *servers.Ejabberd:
		return map[string]string{"IOTGATE_XMPP_ACCOUNTS": "ejabberd", "IOTGATE_EJABBERD_API_URL": "http://" + s.APIAddr() + "/api"}
	case *servers.Prosody:
		env := map[string]string{"IOTGATE_XMPP_ACCOUNTS": "prosody", "IOTGATE_PROSODY_CONFIG": s.ConfigPath()}
		if os.Geteuid() == 0 {
			// The harness runs Prosody as the prosody user (and with
			// run_as_root, so prosodyctl would not switch by itself):
			// accounts must be written as that user, as in production.
			env["IOTGATE_PROSODYCTL"] = "runuser -u prosody -- prosodyctl"
		}
		return env
	}
	t.Fatalf("no account settings for %T", xs)
	return nil
}

// problem is an error answer of the API.
type problem struct{ Code, Message string }

// createdDevice is the answer of POST /v1/devices with an account.
type createdDevice struct {
	JID     string `json:"jid"`
	Account *struct {
		JID      string `json:"jid"`
		Password string `json:"password"`
	} `json:"account"`
}

// TestE2EAccounts registers devices with their XMPP accounts on a real
// ejabberd and a real Prosody: the device logs in with the password
// returned, its reading is stored, and after DELETE ?account=delete it
// can log in no more.
func TestE2EAccounts(t *testing.T) {
	for _, name := range servers.XMPPServerNames {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			pg := servers.PostgresForTest(t)
			xs := servers.XMPPForTest(t, name, servers.XMPPOptions{Components: map[string]string{e2eDomain: e2eSecret}})
			env := map[string]string{
				"IOTGATE_XMPP_ADDR":    xs.ComponentAddr(),
				"IOTGATE_DOMAIN":       e2eDomain,
				"IOTGATE_SECRET":       e2eSecret,
				"IOTGATE_DATABASE_URL": pg.DSN(),
			}
			for k, v := range accountsEnv(t, xs) {
				env[k] = v
			}
			g := startGate(t, env)
			g.waitReady(200, 30*time.Second, nil)
			if code := g.do("POST", "/v1/schemas", map[string]string{"name": "thermostat", "xsd": string(examples.Thermostat())}, nil); code != 201 {
				t.Fatalf("register schema: %d", code)
			}

			tests := []struct {
				name     string
				local    string
				password string // "" : generated
			}{
				{"Generated", "acct1", ""},
				{"Given", "acct2", "a given password 2"},
			}
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					jid := tt.local + "@" + xs.Domain()
					acct := map[string]any{"create": true}
					if tt.password != "" {
						acct["password"] = tt.password
					}
					var got createdDevice
					if code := g.do("POST", "/v1/devices", map[string]any{"jid": jid, "schema": "thermostat", "account": acct}, &got); code != 201 {
						t.Fatalf("register device with account: %d %+v", code, got)
					}
					if got.Account == nil || got.Account.JID != jid {
						t.Fatalf("answer %+v lacks the account", got)
					}
					pw := got.Account.Password
					switch {
					case tt.password != "" && pw != tt.password:
						t.Errorf("password = %q, want the one given", pw)
					case tt.password == "" && len(pw) < 24:
						t.Errorf("generated password %q is shorter than 24 characters", pw)
					}
					if strings.Contains(g.logs.String(), pw) {
						t.Errorf("the account's password is in iotgate's log")
					}

					dev, err := device.Dial(ctx, device.Options{Addr: xs.C2SAddr(), JID: jid, Password: pw})
					if err != nil {
						t.Fatalf("log in with the password returned: %v", err)
					}
					rep, err := dev.SendIQ(ctx, "set", e2eDomain, `<reading xmlns="urn:example:thermostat"><temperature>21.5</temperature><mode>heat</mode></reading>`)
					if err != nil || rep.Type != "result" {
						t.Errorf("reading: %+v %v, want result", rep, err)
					}
					dev.Close()
					var page struct{ Items []struct{ ID int64 } }
					if code := g.do("GET", "/v1/devices/"+url.PathEscape(jid)+"/readings", nil, &page); code != 200 || len(page.Items) != 1 {
						t.Errorf("readings = %d %+v, want the one sent", code, page)
					}

					// The account exists now: a second device of that JID
					// is refused as registered, its account untouched.
					var p problem
					if code := g.do("POST", "/v1/devices", map[string]any{"jid": jid, "schema": "thermostat", "account": map[string]any{"create": true}}, &p); code != 409 || p.Code != "conflict" {
						t.Errorf("second registration = %d %+v, want 409 conflict", code, p)
					}

					if code := g.do("DELETE", "/v1/devices/"+url.PathEscape(jid)+"?account=delete", nil, &p); code != 204 {
						t.Fatalf("delete with account = %d %+v", code, p)
					}
					if code := g.do("GET", "/v1/devices/"+url.PathEscape(jid), nil, nil); code != 404 {
						t.Errorf("device after delete = %d, want 404", code)
					}
					if dev, err := device.Dial(ctx, device.Options{Addr: xs.C2SAddr(), JID: jid, Password: pw}); err == nil {
						dev.Close()
						t.Errorf("log in after ?account=delete succeeded, want it refused")
					}
				})
			}

			t.Run("AccountExists", func(t *testing.T) {
				servers.RegisterUserForTest(t, xs, "taken", "taken-password")
				jid := "taken@" + xs.Domain()
				var p problem
				if code := g.do("POST", "/v1/devices", map[string]any{"jid": jid, "schema": "thermostat", "account": map[string]any{"create": true}}, &p); code != 409 || p.Code != "account_exists" {
					t.Errorf("create with an existing account = %d %+v, want 409 account_exists", code, p)
				}
				if code := g.do("GET", "/v1/devices/"+url.PathEscape(jid), nil, nil); code != 404 {
					t.Errorf("device after a refused account = %d, want 404 (not registered)", code)
				}
				// The existing account keeps its password.
				dev, err := device.Dial(ctx, device.Options{Addr: xs.C2SAddr(), JID: jid, Password: "taken-password"})
				if err != nil {
					t.Fatalf("existing account no longer logs in: %v", err)
				}
				dev.Close()
			})

			t.Run("RefusedBeforeAccount", func(t *testing.T) {
				// An unknown schema is refused before any account is made.
				jid := "noschema@" + xs.Domain()
				var p problem
				if code := g.do("POST", "/v1/devices", map[string]any{"jid": jid, "schema": "nope", "account": map[string]any{"create": true, "password": "noschema-password"}}, &p); code != 400 {
					t.Errorf("create with an unknown schema = %d %+v, want 400", code, p)
				}
				if dev, err := device.Dial(ctx, device.Options{Addr: xs.C2SAddr(), JID: jid, Password: "noschema-password"}); err == nil {
					dev.Close()
					t.Errorf("an account was left for a device that was not registered")
				}
			})
		})
	}
}

// TestE2EAccountsUnavailable shows the answers when accounts are not
// configured, and when the server's admin interface can't be reached.
func TestE2EAccountsUnavailable(t *testing.T) {
	xs := servers.XMPPForTest(t, "prosody", servers.XMPPOptions{Components: map[string]string{e2eDomain: e2eSecret}})
	closed := "http://" + freeAddr(t) + "/api"
	tests := []struct {
		name       string
		env        map[string]string
		status     int
		code       string
		deleteCode int
	}{
		{"NotConfigured", nil, 422, "accounts_unavailable", 422},
		{"EjabberdUnreachable", map[string]string{"IOTGATE_XMPP_ACCOUNTS": "ejabberd", "IOTGATE_EJABBERD_API_URL": closed}, 503, "account_server_unavailable", 503},
		{"ProsodyctlMissing", map[string]string{"IOTGATE_XMPP_ACCOUNTS": "prosody", "IOTGATE_PROSODYCTL": "/nonexistent/prosodyctl"}, 503, "account_server_unavailable", 503},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := map[string]string{
				"IOTGATE_XMPP_ADDR":    xs.ComponentAddr(),
				"IOTGATE_DOMAIN":       e2eDomain,
				"IOTGATE_SECRET":       e2eSecret,
				"IOTGATE_DATABASE_URL": servers.DatabaseForTest(t),
			}
			for k, v := range tt.env {
				env[k] = v
			}
			g := startGate(t, env)
			g.waitReady(200, 30*time.Second, nil)
			if code := g.do("POST", "/v1/schemas", map[string]string{"name": "thermostat", "xsd": string(examples.Thermostat())}, nil); code != 201 {
				t.Fatalf("register schema: %d", code)
			}
			jid := "dev@" + xs.Domain()
			var p problem
			if code := g.do("POST", "/v1/devices", map[string]any{"jid": jid, "schema": "thermostat", "account": map[string]any{"create": true}}, &p); code != tt.status || p.Code != tt.code {
				t.Errorf("create = %d %+v, want %d %s", code, p, tt.status, tt.code)
			}
			if code := g.do("GET", "/v1/devices/"+url.PathEscape(jid), nil, nil); code != 404 {
				t.Errorf("device after a failed account = %d, want 404", code)
			}
			// Registered without an account, it can't be deleted with
			// one either, and stays.
			if code := g.do("POST", "/v1/devices", map[string]any{"jid": jid, "schema": "thermostat"}, nil); code != 201 {
				t.Fatalf("register without account: %d", code)
			}
			if code := g.do("DELETE", "/v1/devices/"+url.PathEscape(jid)+"?account=delete", nil, &p); code != tt.deleteCode || p.Code != tt.code {
				t.Errorf("delete with account = %d %+v, want %d %s", code, p, tt.deleteCode, tt.code)
			}
			if code := g.do("GET", "/v1/devices/"+url.PathEscape(jid), nil, nil); code != 200 {
				t.Errorf("device after a failed delete = %d, want 200 (kept)", code)
			}
		})
	}
}
