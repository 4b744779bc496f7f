package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"testing"
)

// TestMain doubles as a fake iotgate: the runner test runs this test
// binary as "bin/iotgate" with IOTGATE_DEV_FAKE=1.
func TestMain(m *testing.M) {
	if os.Getenv("IOTGATE_DEV_FAKE") == "1" {
		fakeIotgate()
		return
	}
	os.Exit(m.Run())
}

// fakeIotgate prints its configuration, serves /readyz and the
// registration endpoints the runner uses on IOTGATE_HTTP_ADDR, and exits
// on SIGTERM, as iotgate does.
func fakeIotgate() {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM)
	for _, k := range []string{"IOTGATE_XMPP_ADDR", "IOTGATE_DOMAIN", "IOTGATE_SECRET", "IOTGATE_DATABASE_URL", "IOTGATE_HTTP_ADDR", "IOTGATE_LOG_LEVEL", "IOTGATE_ADMIN_TOKEN"} {
		fmt.Printf("fake: %s=%s\n", k, os.Getenv(k))
	}
	l, err := net.Listen("tcp", os.Getenv("IOTGATE_HTTP_ADDR"))
	if err != nil {
		fmt.Println("fake:", err)
		os.Exit(1)
	}
	defer l.Close()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte(`{"status":"ok"}`)) })
	mux.HandleFunc("GET /v1/schemas/{name}", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNotFound)
		w.Write([]byte(`{"code":"not_found","message":"no such schema"}`))
	})
	mux.HandleFunc("POST /v1/{what}", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+os.Getenv("IOTGATE_ADMIN_TOKEN") {
			w.WriteHeader(http.StatusUnauthorized)
			w.Write([]byte(`{"code":"unauthorized","message":"no token"}`))
			return
		}
		var body struct{ Name, JID string }
		json.NewDecoder(r.Body).Decode(&body)
		if body.JID != "" {
			body.Name = body.JID
		}
		fmt.Printf("fake: registered %s %s\n", r.PathValue("what"), body.Name)
		w.WriteHeader(http.StatusCreated)
	})
	go http.Serve(l, mux)
	<-sig
	fmt.Println("fake: stopped")
}

func TestParseConfig(t *testing.T) {
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	for _, tc := range []struct {
		name    string
		args    []string
		env     map[string]string
		check   func(t *testing.T, cfg config)
		wantErr bool
	}{
		{name: "Defaults", check: func(t *testing.T, cfg config) {
			if cfg.xmpp != "prosody" || cfg.c2sPort != 15222 || cfg.componentPort != 15347 || cfg.httpAddr != "127.0.0.1:8080" {
				t.Errorf("got %+v", cfg)
			}
			if cfg.secret != "dev-secret" || strings.Join(cfg.devices, ",") != "thermo1,thermo2,lamp1" || cfg.adminToken != DevAdminToken {
				t.Errorf("got secret %q devices %q admin token %q", cfg.secret, cfg.devices, cfg.adminToken)
			}
			if strings.Join(cfg.sim, ",") != "thermo1,thermo2,thermo3" || cfg.simRate != 0.2 {
				t.Errorf("got sim %q rate %v", cfg.sim, cfg.simRate)
			}
			if got := strings.Join(accounts(cfg), ","); got != "thermo1,thermo2,lamp1,thermo3" {
				t.Errorf("accounts = %s", got)
			}
		}},
		{name: "Flags", args: []string{"-xmpp", "ejabberd", "-devices", " a, ,b ", "-c2s-port", "1"},
			env: map[string]string{"IOTGATE_DEV_SECRET": "s"},
			check: func(t *testing.T, cfg config) {
				if cfg.xmpp != "ejabberd" || cfg.c2sPort != 1 || cfg.secret != "s" || strings.Join(cfg.devices, ",") != "a,b" {
					t.Errorf("got %+v", cfg)
				}
			}},
		{name: "NoSim", args: []string{"-sim", ""}, check: func(t *testing.T, cfg config) {
			if len(cfg.sim) != 0 {
				t.Errorf("got sim %q", cfg.sim)
			}
		}},
		{name: "ErrSimRate", args: []string{"-sim-rate", "0"}, wantErr: true},
		{name: "ErrXMPP", args: []string{"-xmpp", "openfire"}, wantErr: true},
		{name: "ErrHTTPAddr", args: []string{"-http-addr", "8080"}, wantErr: true},
		{name: "ErrArgs", args: []string{"extra"}, wantErr: true},
		{name: "ErrFlag", args: []string{"-nope"}, wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := parseConfig(tc.args, env(tc.env), io.Discard)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error: %v", err, tc.wantErr)
			}
			if tc.check != nil {
				tc.check(t, cfg)
			}
		})
	}
}
