//go:build integration

package main

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/iotgate/iotgate/internal/servers"
)

// TestRun runs the runner with real servers and a fake iotgate, as make dev
// does, and stops it as Ctrl-C does.
func TestRun(t *testing.T) {
	for _, xmpp := range []string{"prosody", "ejabberd"} {
		t.Run(xmpp, func(t *testing.T) {
			testRun(t, xmpp)
		})
	}
}

func testRun(t *testing.T, xmpp string) {
	t.Setenv("IOTGATE_DEV_FAKE", "1")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	httpAddr := l.Addr().String()
	l.Close()
	// Not t.TempDir(): it is private to us, and the servers run as their
	// own users when we are root.
	base, err := os.MkdirTemp("", "iotgate-dev-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := config{
		dir:        filepath.Join(base, "dev"),
		xmpp:       xmpp,
		domain:     "localhost",
		component:  "iot.localhost",
		secret:     "test-secret",
		adminToken: "test-admin-token-0123456789abcdef0123",
		// Port 0: free ports, so that tests don't collide with make dev.
		httpAddr: httpAddr,
		devices:  []string{"thermo1"},
		sim:      []string{"thermo1", "sim2"},
		simRate:  5,
		logLevel: "debug",
		bin:      os.Args[0],
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out servers.LogBuffer
	done := make(chan error, 1)
	var code int
	go func() {
		var err error
		code, err = run(ctx, cfg, &out)
		done <- err
	}()

	deadline := time.After(2 * time.Minute)
	for !strings.Contains(out.String(), "iotgate is running") {
		select {
		case err := <-done:
			t.Fatalf("runner ended early (code %d, %v):\n%s", code, err, out.String())
		case <-deadline:
			t.Fatalf("no banner after 2 minutes:\n%s", out.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
	// The simulated devices: registered with (fake) iotgate, logged in.
	for !strings.Contains(out.String(), `msg="logged in" sim=devicesim device=sim2@localhost`) {
		select {
		case err := <-done:
			t.Fatalf("runner ended early (code %d, %v):\n%s", code, err, out.String())
		case <-deadline:
			t.Fatalf("simulated devices not logged in after 2 minutes:\n%s", out.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
	got := out.String()
	for _, want := range []string{
		"fake: registered schemas thermostat",
		"fake: registered devices thermo1@localhost",
		"fake: registered devices sim2@localhost",
		"Simulated thermostats",
		"POST /v1/devices/{jid}/commands with jid thermo1@localhost",
		`sim2@localhost (password "sim2")`,

		"fake: IOTGATE_DOMAIN=iot.localhost",
		"fake: IOTGATE_SECRET=test-secret",
		"fake: IOTGATE_ADMIN_TOKEN=test-admin-token-0123456789abcdef0123",
		`curl -H "Authorization: Bearer $TOKEN"`,
		"fake: IOTGATE_DATABASE_URL=postgres://iotgate@127.0.0.1:",
		"fake: IOTGATE_HTTP_ADDR=" + httpAddr,
		"fake: IOTGATE_LOG_LEVEL=debug",
		"http://" + httpAddr + "/swagger/index.html",
		"Web console:  http://" + httpAddr + "/console/",
		"http://" + httpAddr + "/console/#/devices/thermo1%40localhost",
		`thermo1@localhost (password "thermo1")`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}

	cancel() // Ctrl-C
	select {
	case err := <-done:
		if err != nil || code != 0 {
			t.Errorf("runner: code %d, %v", code, err)
		}
	case <-time.After(time.Minute):
		t.Fatalf("runner did not stop:\n%s", out.String())
	}
	if !strings.Contains(out.String(), "fake: stopped") {
		t.Errorf("iotgate was not stopped with SIGTERM:\n%s", out.String())
	}
	if _, err := os.Stat(cfg.dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("state dir %s not removed (%v)", cfg.dir, err)
	}
}
