//go:build integration

package component_test

import (
	"context"
	"crypto/tls"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"mellium.im/sasl"
	"mellium.im/xmpp"
	"mellium.im/xmpp/disco"
	"mellium.im/xmpp/jid"
	"mellium.im/xmpp/ping"

	"github.com/iotgate/iotgate/component"
	"github.com/iotgate/iotgate/internal/servers"
)

const (
	testDomain = "iot.localhost"
	testSecret = "component-secret"
)

type xmppServerCase struct {
	name  string
	start func(t testing.TB, opts servers.XMPPOptions) servers.XMPPServer
}

var xmppServers = []xmppServerCase{
	{"Prosody", func(t testing.TB, o servers.XMPPOptions) servers.XMPPServer { return servers.ProsodyForTest(t, o) }},
	{"Ejabberd", func(t testing.TB, o servers.XMPPOptions) servers.XMPPServer { return servers.EjabberdForTest(t, o) }},
}

// runConn starts a component connection and stops it at cleanup.
func runConn(t *testing.T, cfg component.Config) *component.Conn {
	t.Helper()
	if cfg.Domain == "" {
		cfg.Domain = testDomain
	}
	cfg.MinBackoff = 100 * time.Millisecond
	cfg.MaxBackoff = 2 * time.Second
	c, err := component.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("component did not stop within 10s")
		}
	})
	return c
}

func waitHealth(t *testing.T, c *component.Conn, wantUp bool, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		ok, _, err := c.Health(context.Background())
		if ok == wantUp {
			return time.Since(start)
		}
		if time.Since(start) > within {
			t.Fatalf("component up=%v after %s, want %v (last error: %v)", ok, within, wantUp, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// clientSession logs an independent XMPP client (mellium's, not iotgate's
// code) in to the server over c2s with STARTTLS and SASL.
func clientSession(t *testing.T, srv servers.XMPPServer, user, pass string) *xmpp.Session {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	addr := jid.MustParse(user + "@" + srv.Domain())
	conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", srv.C2SAddr())
	if err != nil {
		t.Fatal(err)
	}
	s, err := xmpp.NewClientSession(ctx, addr, conn,
		xmpp.StartTLS(&tls.Config{ServerName: srv.Domain(), InsecureSkipVerify: true}), //nolint:gosec // throwaway test server
		xmpp.SASL("", pass, sasl.ScramSha256, sasl.ScramSha1, sasl.Plain),
		xmpp.BindResource(),
	)
	if err != nil {
		conn.Close()
		t.Fatalf("client login as %s: %v", addr, err)
	}
	go s.Serve(nil)
	t.Cleanup(func() { s.Close(); conn.Close() })
	return s
}

func TestRealServers(t *testing.T) {
	for _, sc := range xmppServers {
		t.Run(sc.name, func(t *testing.T) {
			srv := sc.start(t, servers.XMPPOptions{Components: map[string]string{testDomain: testSecret}})
			ctx := context.Background()
			if err := srv.RegisterUser(ctx, "alice", "alice-pass"); err != nil {
				t.Fatal(err)
			}
			goroutines := runtime.NumGoroutine()

			t.Run("AnswersIndependentClient", func(t *testing.T) {
				c := runConn(t, component.Config{Addr: srv.ComponentAddr(), Secret: testSecret, Version: "itest"})
				waitHealth(t, c, true, 10*time.Second)
				cs := clientSession(t, srv, "alice", "alice-pass")

				ictx, cancel := context.WithTimeout(ctx, 10*time.Second)
				defer cancel()
				info, err := disco.GetInfo(ictx, "", jid.MustParse(testDomain), cs)
				if err != nil {
					t.Fatalf("disco#info: %v", err)
				}
				if len(info.Identity) == 0 || info.Identity[0].Category != "component" {
					t.Errorf("identities = %+v, want a component", info.Identity)
				}
				var hasPing bool
				for _, f := range info.Features {
					hasPing = hasPing || f.Var == ping.NS
				}
				if !hasPing {
					t.Errorf("features = %+v, want %s", info.Features, ping.NS)
				}
				if err := ping.Send(ictx, cs, jid.MustParse(testDomain)); err != nil {
					t.Errorf("ping: %v", err)
				}
			})

			t.Run("WrongSecretRetriesAndSaysWhy", func(t *testing.T) {
				c := runConn(t, component.Config{Addr: srv.ComponentAddr(), Secret: "wrong"})
				deadline := time.Now().Add(10 * time.Second)
				for {
					ok, _, err := c.Health(ctx)
					if ok {
						t.Fatal("component connected with a wrong secret")
					}
					if err != nil && strings.Contains(err.Error(), "refused the component secret") {
						break
					}
					if time.Now().After(deadline) {
						t.Fatalf("health error = %v, want the secret refusal explained", err)
					}
					time.Sleep(50 * time.Millisecond)
				}
			})

			t.Run("SurvivesKill9", func(t *testing.T) {
				c := runConn(t, component.Config{Addr: srv.ComponentAddr(), Secret: testSecret,
					KeepAlive: 2 * time.Second, KeepAliveTimeout: 2 * time.Second})
				waitHealth(t, c, true, 10*time.Second)
				for round := 1; round <= 2; round++ {
					if err := srv.Kill(); err != nil {
						t.Fatal(err)
					}
					down := waitHealth(t, c, false, 5*time.Second)
					pending := make(chan error, 1)
					go func() {
						_, err := c.SendIQ(ctx, &component.Stanza{Kind: component.KindIQ, Type: component.TypeGet, To: srv.Domain(), Inner: []byte(`<ping xmlns="urn:xmpp:ping"/>`)})
						pending <- err
					}()
					if err := <-pending; err == nil {
						t.Error("SendIQ while the server is dead succeeded")
					}
					sctx, cancel := context.WithTimeout(ctx, 60*time.Second)
					err := srv.Start(sctx)
					cancel()
					if err != nil {
						t.Fatal(err)
					}
					back := waitHealth(t, c, true, 10*time.Second)
					t.Logf("%s kill -9 round %d: stream down noticed after %s; up again %s after the server accepted connections",
						sc.name, round, down.Round(time.Millisecond), back.Round(time.Millisecond))
				}
				// The stream works after the restarts.
				r, err := c.SendIQ(ctx, &component.Stanza{Kind: component.KindIQ, Type: component.TypeGet, To: srv.Domain(), Inner: []byte(`<ping xmlns="urn:xmpp:ping"/>`)})
				if err != nil {
					t.Fatalf("ping server after restart: %v", err)
				}
				if r.Type != component.TypeResult && r.Type != component.TypeError {
					t.Errorf("reply type %q", r.Type)
				}
				if c.Reconnects() < 2 {
					t.Errorf("reconnects = %d, want >= 2", c.Reconnects())
				}
			})

			t.Run("ConflictExplained", func(t *testing.T) {
				first := runConn(t, component.Config{Addr: srv.ComponentAddr(), Secret: testSecret})
				waitHealth(t, first, true, 10*time.Second)
				second := runConn(t, component.Config{Addr: srv.ComponentAddr(), Secret: testSecret})
				// Servers differ: Prosody refuses the newcomer, ejabberd may
				// accept both (it load-balances). Both outcomes are legal;
				// what matters is that a refusal is explained.
				time.Sleep(2 * time.Second)
				ok, _, err := second.Health(ctx)
				t.Logf("%s: second instance on the same domain: up=%v err=%v", sc.name, ok, err)
				if !ok && (err == nil || !strings.Contains(err.Error(), "already holds the component domain")) {
					t.Errorf("second instance down without the conflict explained: %v", err)
				}
			})

			// Everything started above has been cleaned up by the subtests.
			deadline := time.Now().Add(10 * time.Second)
			for runtime.NumGoroutine() > goroutines+2 {
				if time.Now().After(deadline) {
					buf := make([]byte, 1<<20)
					t.Fatalf("goroutines: %d before, %d after\n%s", goroutines, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
				}
				time.Sleep(50 * time.Millisecond)
			}
		})
	}
}
