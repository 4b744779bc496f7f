//go:build integration

package servers

import (
	"strconv"
	"testing"
	"time"
)

func TestProsodyEncode(t *testing.T) {
	tests := []struct{ in, want string }{
		{"localhost", "localhost"},
		{"example.com", "example%2ecom"},
		{"thermo-1", "thermo%2d1"},
		{"Ab9", "Ab9"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			if got := prosodyEncode(tt.in); got != tt.want {
				t.Errorf("prosodyEncode(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

// TestRegisterUsers checks that accounts created in bulk can log in, and
// that a wrong password still can't.
func TestRegisterUsers(t *testing.T) {
	for _, name := range XMPPServerNames {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			srv := XMPPForTest(t, name, XMPPOptions{})
			ctx := testCtx(t)
			users := make([]string, 50)
			for i := range users {
				users[i] = "bulk" + strconv.Itoa(i)
			}
			start := time.Now()
			if err := RegisterUsers(ctx, srv, users, "bulk-pw"); err != nil {
				t.Fatal(err)
			}
			t.Logf("RegisterUsers of %d took %v", len(users), time.Since(start).Round(time.Millisecond))
			for _, u := range []string{users[0], users[1], users[49]} {
				if err := c2sLogin(srv.C2SAddr(), srv.Domain(), u, "bulk-pw", false); err != nil {
					t.Errorf("login %s: %v", u, err)
				}
			}
			if err := c2sLogin(srv.C2SAddr(), srv.Domain(), users[7], "wrong", false); err == nil {
				t.Errorf("login %s with a wrong password succeeded", users[7])
			}
		})
	}
}

// TestSeparateComponentListeners checks that each component can shake
// hands at its own address, and that ComponentAddrOf is ComponentAddr
// without the option.
func TestSeparateComponentListeners(t *testing.T) {
	comps := map[string]string{"iot.localhost": "s1", "sink.localhost": "s2"}
	for _, name := range XMPPServerNames {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			srv := XMPPForTest(t, name, XMPPOptions{Components: comps, SeparateComponentListeners: true})
			addrs := map[string]bool{}
			for d, secret := range comps {
				a := srv.ComponentAddrOf(d)
				addrs[a] = true
				c, err := componentHandshake(a, d, secret)
				if err != nil {
					t.Errorf("component %s at %s: %v", d, a, err)
					continue
				}
				c.Close()
			}
			if want := map[string]int{"prosody": 1, "ejabberd": 2}[name]; len(addrs) != want {
				t.Errorf("component addresses %v, want %d", addrs, want)
			}
		})
	}
	t.Run("Shared", func(t *testing.T) {
		srv := ProsodyForTest(t, XMPPOptions{Components: comps})
		for d := range comps {
			if got := srv.ComponentAddrOf(d); got != srv.ComponentAddr() {
				t.Errorf("ComponentAddrOf(%s) = %s, want %s", d, got, srv.ComponentAddr())
			}
		}
	})
}

// TestIotgateHarness builds iotgate, runs it against real servers, and
// checks readiness, RSS, the bearer token and a clean stop.
func TestIotgateHarness(t *testing.T) {
	ctx := testCtx(t)
	bin, err := BuildIotgate(ctx, t.TempDir(), false)
	if err != nil {
		t.Fatal(err)
	}
	xs := ProsodyForTest(t, XMPPOptions{})
	domain := xs.Components()[0]
	g, err := StartIotgate(IotgateOptions{Bin: bin, Env: map[string]string{
		"IOTGATE_XMPP_ADDR":    xs.ComponentAddrOf(domain),
		"IOTGATE_DOMAIN":       domain,
		"IOTGATE_SECRET":       xs.ComponentSecret(domain),
		"IOTGATE_DATABASE_URL": DatabaseForTest(t),
	}})
	if err != nil {
		t.Fatal(err)
	}
	took, err := g.WaitReady(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("ready after %v", took)
	if len(g.Token()) < 43 {
		t.Errorf("token %q: want at least 43 characters", g.Token())
	}
	rss, err := g.RSS()
	if err != nil || rss <= 0 {
		t.Errorf("RSS = %d, %v; want > 0", rss, err)
	}
	if cpu := TreeCPU(g.PID()); len(cpu) != 1 {
		t.Errorf("TreeCPU = %v, want the one process", cpu)
	}
	if err := g.Stop(ctx); err != nil {
		t.Errorf("Stop: %v\n%s", err, g.Logs().String())
	}
	select {
	case <-g.Done():
	default:
		t.Error("not done after Stop")
	}
}
