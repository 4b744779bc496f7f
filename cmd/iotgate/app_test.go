package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/iotgate/iotgate/internal/servers"
)

// testConfig is a Config whose HTTP address is httpAddr ("" for a free
// one) and whose database address has no server.
func testConfig(t *testing.T, httpAddr string) Config {
	t.Helper()
	dbAddr, err := servers.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	if httpAddr == "" {
		if httpAddr, err = servers.FreeAddr(); err != nil {
			t.Fatal(err)
		}
	}
	env := map[string]string{
		"IOTGATE_DOMAIN":       "iot.example.com",
		"IOTGATE_SECRET":       "s3cret",
		"IOTGATE_DATABASE_URL": "postgres://u@" + dbAddr + "/db?sslmode=disable&connect_timeout=1",
		"IOTGATE_HTTP_ADDR":    httpAddr,
	}
	var cfg Config
	cfg, _, err = parseConfig(nil, func(k string) string { return env[k] }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestNewWaitsForDatabase: New takes the HTTP address before it waits for
// the database, answers /readyz 503 saying why meanwhile, and frees the
// address when it gives up.
func TestNewWaitsForDatabase(t *testing.T) {
	cfg := testConfig(t, "")
	httpAddr := cfg.HTTPAddr
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		app, err := New(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
		if app != nil {
			app.Shutdown()
		}
		done <- err
	}()

	var body string
	for deadline := time.Now().Add(10 * time.Second); ; {
		resp, err := http.Get("http://" + httpAddr + "/readyz")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			body = string(b)
			if resp.StatusCode != http.StatusServiceUnavailable {
				t.Fatalf("/readyz = %d %s, want 503", resp.StatusCode, body)
			}
			// The first attempt's error is told once it has failed.
			if strings.Contains(body, "waiting for the database (") {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz never said why iotgate waits: last %q, err %v", body, err)
		}
		time.Sleep(50 * time.Millisecond)
	}

	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("New = %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("New did not return after its context ended")
	}
	ln, err := net.Listen("tcp", httpAddr)
	if err != nil {
		t.Fatalf("the HTTP address is still taken after New gave up: %v", err)
	}
	ln.Close()
}

// TestNewAddressTaken: a taken HTTP address stops the start at once,
// before the database is awaited.
func TestNewAddressTaken(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cfg := testConfig(t, ln.Addr().String())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = New(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err == nil || !strings.Contains(err.Error(), "listen on "+ln.Addr().String()) {
		t.Fatalf("New = %v, want a listen error", err)
	}
	if ctx.Err() != nil {
		t.Fatal("New waited for the database although the address was taken")
	}
}
