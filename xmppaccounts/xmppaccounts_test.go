package xmppaccounts

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/iotgate/iotgate"
	"github.com/iotgate/iotgate/devices"
)

// The adapters are tested against the real servers in cmd/iotgate
// (TestE2EAccounts); these tests cover the answers a healthy test server
// does not give.

const secret = "s3cret-password-xyz"

func wantErr(t *testing.T, err error, code, detail string) {
	t.Helper()
	var e *iotgate.Error
	if code == "" {
		if err != nil {
			t.Fatalf("err = %v, want none", err)
		}
		return
	}
	if !errors.As(err, &e) || e.Code != code || e.Detail != detail {
		t.Fatalf("err = %#v, want code %q detail %q", err, code, detail)
	}
	if strings.Contains(err.Error(), secret) {
		t.Errorf("error %q shows the password", err)
	}
}

func TestEjabberdCreateAccount(t *testing.T) {
	tests := []struct {
		name             string
		status           int
		body             string
		delay            time.Duration
		cfg              EjabberdConfig
		wantCode, detail string
		wantAuth         string
	}{
		{name: "OK", status: 200, body: `0`},
		{name: "OKBasicAuth", status: 200, body: `0`, cfg: EjabberdConfig{User: "admin@example.com", Password: "adminpw"}, wantAuth: "Basic YWRtaW5AZXhhbXBsZS5jb206YWRtaW5wdw=="},
		{name: "OKBearer", status: 200, body: `0`, cfg: EjabberdConfig{Token: "tok"}, wantAuth: "Bearer tok"},
		{name: "ErrExists", status: 409, body: `{"status":"error","code":10090,"message":"User already exists"}`, wantCode: iotgate.EConflict, detail: devices.DetailAccountExists},
		{name: "ErrRefused", status: 400, body: `{"status":"error","code":10001,"message":"Unknown host"}`, wantCode: iotgate.EUnprocessable, detail: "account_refused"},
		{name: "ErrCredential", status: 401, body: `{"status":"error","code":32,"message":"AccessRules: Account does not have the right to perform the operation."}`, wantCode: iotgate.EUnavailable, detail: devices.DetailAccountServerUnavailable},
		{name: "ErrServer", status: 500, body: `oops`, wantCode: iotgate.EUnavailable, detail: devices.DetailAccountServerUnavailable},
		{name: "ErrTimeout", status: 200, body: `0`, delay: time.Second, cfg: EjabberdConfig{Timeout: 50 * time.Millisecond}, wantCode: iotgate.EUnavailable, detail: devices.DetailAccountServerUnavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got map[string]string
			var auth, path string
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				path, auth = r.URL.Path, r.Header.Get("Authorization")
				json.NewDecoder(r.Body).Decode(&got)
				select {
				case <-time.After(tt.delay):
				case <-r.Context().Done():
				}
				w.WriteHeader(tt.status)
				w.Write([]byte(tt.body))
			}))
			cfg := tt.cfg
			cfg.URL = srv.URL + "/api/"
			err := NewEjabberd(cfg).CreateAccount(context.Background(), "dev@example.com", secret)
			srv.Close() // waits for the handler (still running after a timeout) before its captures are read
			wantErr(t, err, tt.wantCode, tt.detail)
			if path != "/api/register" || got["user"] != "dev" || got["host"] != "example.com" || got["password"] != secret {
				t.Errorf("request %s %v", path, got)
			}
			if auth != tt.wantAuth {
				t.Errorf("Authorization = %q, want %q", auth, tt.wantAuth)
			}
		})
	}
}

func TestEjabberdUnreachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	e := NewEjabberd(EjabberdConfig{URL: "http://" + addr + "/api"})
	wantErr(t, e.CreateAccount(context.Background(), "dev@example.com", secret), iotgate.EUnavailable, devices.DetailAccountServerUnavailable)
	wantErr(t, e.DeleteAccount(context.Background(), "dev@example.com"), iotgate.EUnavailable, devices.DetailAccountServerUnavailable)
}

func TestProsody(t *testing.T) {
	tests := []struct {
		name string
		// script stands in for prosodyctl; its arguments and standard
		// input are written to files args and stdin beside it.
		script           string
		jid              string
		wantCode, detail string
	}{
		{name: "OK", script: "exit 0", jid: "dev@example.com"},
		{name: "ErrExists", script: "echo That user already exists; exit 1", jid: "dev@example.com", wantCode: iotgate.EConflict, detail: devices.DetailAccountExists},
		{name: "ErrFails", script: "echo lua error; exit 1", jid: "dev@example.com", wantCode: iotgate.EUnavailable, detail: devices.DetailAccountServerUnavailable},
		{name: "ErrTimeout", script: "sleep 5", jid: "dev@example.com", wantCode: iotgate.EUnavailable, detail: devices.DetailAccountServerUnavailable},
		{name: "ErrOptionLike", script: "exit 0", jid: "-x@example.com", wantCode: iotgate.EInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "prosodyctl")
			body := "#!/bin/sh\necho \"$@\" > " + dir + "/args\ncat > " + dir + "/stdin\n" + tt.script + "\n"
			if err := os.WriteFile(path, []byte(body), 0o755); err != nil {
				t.Fatal(err)
			}
			p := NewProsody(ProsodyConfig{Prosodyctl: path, Config: "/etc/p.cfg.lua", Timeout: 300 * time.Millisecond})
			start := time.Now()
			err := p.CreateAccount(context.Background(), tt.jid, secret)
			if d := time.Since(start); d > 3*time.Second {
				t.Errorf("took %s: the timeout did not stop it", d)
			}
			wantErr(t, err, tt.wantCode, tt.detail)
			if tt.wantCode == iotgate.EInvalid {
				return
			}
			args, _ := os.ReadFile(filepath.Join(dir, "args"))
			stdin, _ := os.ReadFile(filepath.Join(dir, "stdin"))
			if got := strings.TrimSpace(string(args)); got != "--config /etc/p.cfg.lua adduser "+tt.jid {
				t.Errorf("args = %q", got)
			}
			if string(stdin) != secret+"\n"+secret+"\n" {
				t.Errorf("stdin = %q, want the password twice", stdin)
			}
		})
	}
}

func TestProsodyMissing(t *testing.T) {
	p := NewProsody(ProsodyConfig{Prosodyctl: "/nonexistent/prosodyctl"})
	wantErr(t, p.CreateAccount(context.Background(), "dev@example.com", secret), iotgate.EUnavailable, devices.DetailAccountServerUnavailable)
	wantErr(t, p.DeleteAccount(context.Background(), "dev@example.com"), iotgate.EUnavailable, devices.DetailAccountServerUnavailable)
}
