//go:build integration

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/iotgate/iotgate/internal/device"
	"github.com/iotgate/iotgate/internal/servers"
	"github.com/iotgate/iotgate/schemas/examples"
)

// The end-to-end tests run the real iotgate binary against real servers,
// and talk to it only the way users do: REST and XMPP clients.

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// iotgateBinary builds iotgate once per test run, with the race detector.
func iotgateBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "iotgate-e2e-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath, buildErr = servers.BuildIotgate(context.Background(), dir, true)
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// gate is a running iotgate process, as the tests talk to it.
type gate struct {
	t    *testing.T
	proc *servers.Iotgate
	base string
	logs *servers.LogBuffer
	done <-chan struct{}
	// token is the bootstrap admin token (IOTGATE_ADMIN_TOKEN) the
	// helpers send; client sends it.
	token  string
	client *http.Client
}

// bearerTransport adds an Authorization header to every request.
type bearerTransport struct {
	token string
	base  http.RoundTripper
}

func (b bearerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	base := b.base
	if base == nil {
		base = http.DefaultTransport
	}
	return base.RoundTrip(r)
}

// CloseIdleConnections passes on to the base transport (http.Client's
// method of that name looks for it).
func (b bearerTransport) CloseIdleConnections() {
	if c, ok := b.base.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	addr, err := servers.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

// startGate runs iotgate with env (added to a minimal environment, and
// winning over the defaults below) and returns at once.
func startGate(t *testing.T, env map[string]string) *gate {
	t.Helper()
	return startGateBin(t, iotgateBinary(t), env)
}

// gateIDs numbers the instances the tests start.
var gateIDs atomic.Int64

// startGateBin is startGate with the iotgate binary bin.
func startGateBin(t *testing.T, bin string, env map[string]string) *gate {
	t.Helper()
	// Every instance on this host needs an ID of its own (the default is
	// the host name). It is written into env, so that a restart with the
	// same env is the same instance, as a restarted process would be.
	if env["IOTGATE_INSTANCE_ID"] == "" {
		env["IOTGATE_INSTANCE_ID"] = fmt.Sprintf("gate-%d", gateIDs.Add(1))
	}
	all := map[string]string{
		// The race detector sleeps 1 s at exit by default: not ours to
		// measure.
		"GORACE":            "atexit_sleep_ms=0",
		"IOTGATE_LOG_LEVEL": "debug",
		// No rate limit unless a test sets one: the tests under load
		// would trip it.
		"IOTGATE_API_RATE": "0",
		// Likewise for schema writes (tests upload many schemas).
		"IOTGATE_SCHEMA_WRITE_RATE": "0",
	}
	maps.Copy(all, env)
	proc, err := servers.StartIotgate(servers.IotgateOptions{Bin: bin, Env: all})
	if err != nil {
		t.Fatal(err)
	}
	g := &gate{t: t, proc: proc, base: proc.URL(), logs: proc.Logs(), done: proc.Done(),
		token: proc.Token(), client: &http.Client{Transport: bearerTransport{token: proc.Token()}}}
	t.Cleanup(func() {
		g.stop()
		if t.Failed() {
			t.Logf("iotgate log:\n%s", g.logs.String())
		}
	})
	return g
}

func (g *gate) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := g.proc.Stop(ctx); err != nil {
		g.t.Logf("stop iotgate: %v", err)
	}
}

// do sends a JSON request with the gate's admin token and decodes the
// JSON answer into out (if not nil).
func (g *gate) do(method, path string, body any, out any) int {
	g.t.Helper()
	return g.doAs(g.token, method, path, body, out)
}

// doAs is do with another token; "" sends none.
func (g *gate) doAs(token, method, path string, body any, out any) int {
	g.t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			g.t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, g.base+path, rd)
	if err != nil {
		g.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		g.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil && len(b) > 0 {
		if err := json.Unmarshal(b, out); err != nil {
			g.t.Fatalf("%s %s: decode %q: %v", method, path, b, err)
		}
	}
	return resp.StatusCode
}

type readyBody struct {
	Status   string `json:"status"`
	Instance string `json:"instance"`
	Role     string `json:"role"`
	Checks   map[string]struct {
		OK    bool   `json:"ok"`
		Since string `json:"since"`
		Error string `json:"error"`
	} `json:"checks"`
}

// waitReady polls /readyz until its status is want (200 or 503) and cond
// holds, and returns how long that took.
func (g *gate) waitReady(want int, within time.Duration, cond func(readyBody) bool) time.Duration {
	g.t.Helper()
	start := time.Now()
	var last readyBody
	var code int
	for time.Since(start) < within {
		last = readyBody{}
		code = g.doQuiet("/readyz", &last)
		if code == want && (cond == nil || cond(last)) {
			return time.Since(start)
		}
		time.Sleep(25 * time.Millisecond)
	}
	g.t.Fatalf("/readyz = %d %+v after %s, want %d", code, last, within, want)
	return 0
}

func (g *gate) doQuiet(path string, out any) int {
	resp, err := g.client.Get(g.base + path)
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	json.NewDecoder(resp.Body).Decode(out)
	return resp.StatusCode
}

func TestE2EConfigErrors(t *testing.T) {
	bin := iotgateBinary(t)
	tests := []struct {
		name string
		env  []string
		want string
	}{
		{"MissingDomain", []string{"IOTGATE_SECRET=x", "IOTGATE_DATABASE_URL=postgres://x/y"}, "IOTGATE_DOMAIN"},
		{"MissingSecret", []string{"IOTGATE_DOMAIN=iot.localhost", "IOTGATE_DATABASE_URL=postgres://x/y"}, "IOTGATE_SECRET"},
		{"ShortAdminToken", []string{"IOTGATE_DOMAIN=iot.localhost", "IOTGATE_SECRET=x", "IOTGATE_DATABASE_URL=postgres://x/y", "IOTGATE_ADMIN_TOKEN=short"}, "IOTGATE_ADMIN_TOKEN"},
		{"BadAddr", []string{"IOTGATE_DOMAIN=iot.localhost", "IOTGATE_SECRET=x", "IOTGATE_DATABASE_URL=postgres://x/y", "IOTGATE_XMPP_ADDR=nope"}, "IOTGATE_XMPP_ADDR"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := exec.Command(bin)
			cmd.Env = tt.env
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			err := cmd.Run()
			ee, ok := err.(*exec.ExitError)
			if !ok || ee.ExitCode() != 2 {
				t.Fatalf("exit = %v, want status 2", err)
			}
			lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
			if len(lines) != 1 || !strings.Contains(lines[0], tt.want) {
				t.Errorf("stderr = %q, want one line naming %s", stderr.String(), tt.want)
			}
		})
	}
	t.Run("Help", func(t *testing.T) {
		out, err := exec.Command(bin, "--help").CombinedOutput()
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range settings {
			if !strings.Contains(string(out), s.env) {
				t.Errorf("--help lacks %s", s.env)
			}
		}
	})
}

const (
	e2eDomain = "iot.localhost"
	e2eSecret = "e2e-secret"
)

func TestE2E(t *testing.T) {
	for _, name := range servers.XMPPServerNames {
		t.Run(name, func(t *testing.T) {
			pg := servers.PostgresForTest(t)
			xs := servers.XMPPForTest(t, name, servers.XMPPOptions{Components: map[string]string{e2eDomain: e2eSecret}})
			metricsAddr := freeAddr(t)
			env := map[string]string{
				"IOTGATE_XMPP_ADDR":    xs.ComponentAddr(),
				"IOTGATE_DOMAIN":       e2eDomain,
				"IOTGATE_SECRET":       e2eSecret,
				"IOTGATE_DATABASE_URL": pg.DSN(),
				"IOTGATE_METRICS_ADDR": metricsAddr,
				"IOTGATE_INSTANCE_ID":  "e2e",
			}
			g := startGate(t, env)
			g.waitReady(200, 30*time.Second, nil)

			t.Run("Readings", func(t *testing.T) { testReadings(t, g, xs) })
			t.Run("Metrics", func(t *testing.T) {
				resp, err := http.Get("http://" + metricsAddr + "/metrics")
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				body, _ := io.ReadAll(resp.Body)
				for _, want := range []string{
					`iotgate_readings_accepted_total{instance="e2e"} 3`,
					`iotgate_readings_refused_total{instance="e2e",reason="invalid"} 3`,
					`iotgate_readings_refused_total{instance="e2e",reason="unregistered"} 1`,
					`iotgate_xmpp_up{instance="e2e"} 1`,
					`go_sql_open_connections{db_name="iotgate",instance="e2e"}`,
				} {
					if !strings.Contains(string(body), want) {
						t.Errorf("metrics lack %q", want)
					}
				}
				// Profiles are served there too (and only there).
				for addr, want := range map[string]int{metricsAddr: 200, strings.TrimPrefix(g.base, "http://"): 404} {
					resp, err := http.Get("http://" + addr + "/debug/pprof/heap?debug=1")
					if err != nil {
						t.Fatal(err)
					}
					body, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if resp.StatusCode != want || (want == 200 && !strings.Contains(string(body), "heap profile")) {
						t.Errorf("GET %s/debug/pprof/heap = %d, want %d", addr, resp.StatusCode, want)
					}
				}
			})
			t.Run("XMPPServerKilled", func(t *testing.T) {
				for round := 1; round <= 2; round++ {
					if err := xs.Kill(); err != nil {
						t.Fatal(err)
					}
					g.waitReady(503, 10*time.Second, func(b readyBody) bool { return !b.Checks["xmpp"].OK && b.Checks["xmpp"].Error != "" })
					ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
					err := xs.Start(ctx)
					cancel()
					if err != nil {
						t.Fatal(err)
					}
					back := g.waitReady(200, 10*time.Second, nil)
					t.Logf("%s kill -9, round %d: /readyz 200 again %s after the server accepted connections", name, round, back.Round(time.Millisecond))
				}
			})
			t.Run("DatabaseRestarted", func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				if err := pg.Stop(ctx); err != nil {
					t.Fatal(err)
				}
				g.waitReady(503, 10*time.Second, func(b readyBody) bool { return !b.Checks["database"].OK && b.Checks["xmpp"].OK })
				if err := pg.Start(ctx); err != nil {
					t.Fatal(err)
				}
				back := g.waitReady(200, 10*time.Second, nil)
				t.Logf("%s: /readyz 200 again %s after PostgreSQL accepted connections", name, back.Round(time.Millisecond))
				// And the API works again on fresh connections.
				if code := g.do("GET", "/v1/schemas", nil, nil); code != 200 {
					t.Errorf("GET /v1/schemas after restart = %d", code)
				}
			})
			t.Run("WrongSecret", func(t *testing.T) {
				env2 := map[string]string{}
				for k, v := range env {
					env2[k] = v
				}
				env2["IOTGATE_SECRET"] = "wrong"
				delete(env2, "IOTGATE_METRICS_ADDR")
				g2 := startGate(t, env2)
				g2.waitReady(503, 20*time.Second, func(b readyBody) bool {
					return strings.Contains(b.Checks["xmpp"].Error, "secret")
				})
				time.Sleep(time.Second)
				if n := strings.Count(g2.logs.String(), "refused the component secret"); n < 2 {
					t.Errorf("log mentions the refused secret %d times, want retries (>= 2)", n)
				}
			})
			// Last: it stops g, whose stream the new iotgate takes over.
			t.Run("DatabaseDownAtStart", func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				g.stop()
				if err := pg.Stop(ctx); err != nil {
					t.Fatal(err)
				}
				env2 := maps.Clone(env)
				delete(env2, "IOTGATE_METRICS_ADDR")
				g2 := startGate(t, env2)
				// The probes tell the truth while iotgate waits.
				g2.waitReady(503, 20*time.Second, func(b readyBody) bool {
					return !b.Checks["database"].OK && strings.Contains(b.Checks["database"].Error, "waiting for the database")
				})
				var health struct{ Status string }
				if code := g2.doQuiet("/healthz", &health); code != 200 || health.Status != "ok" {
					t.Errorf("/healthz while waiting for the database = %d %+v, want 200 ok", code, health)
				}
				var problem struct{ Code, Message string }
				if code := g2.do("GET", "/v1/schemas", nil, &problem); code != 503 || problem.Code != "unavailable" || problem.Message == "" {
					t.Errorf("GET /v1/schemas while waiting for the database = %d %+v, want 503 unavailable", code, problem)
				}
				if err := pg.Start(ctx); err != nil {
					t.Fatal(err)
				}
				back := g2.waitReady(200, 30*time.Second, nil)
				t.Logf("%s: /readyz 200 %s after PostgreSQL came up at start", name, back.Round(time.Millisecond))
				if code := g2.do("GET", "/v1/schemas", nil, nil); code != 200 {
					t.Errorf("GET /v1/schemas once started = %d, want 200", code)
				}
			})
		})
	}
}

func testReadings(t *testing.T, g *gate, xs servers.XMPPServer) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if code := g.do("POST", "/v1/schemas", map[string]string{"name": "thermostat", "xsd": string(examples.Thermostat())}, nil); code != 201 {
		t.Fatalf("register schema: %d", code)
	}
	var broken struct {
		Code    string `json:"code"`
		Details []struct {
			Line    int    `json:"line"`
			Message string `json:"message"`
		} `json:"details"`
	}
	if code := g.do("POST", "/v1/schemas", map[string]string{"name": "broken", "xsd": "<xs:schema xmlns:xs='http://www.w3.org/2001/XMLSchema'>\n<xs:element name='a' type='xs:nope'/></xs:schema>"}, &broken); code != 422 || len(broken.Details) == 0 || broken.Details[0].Message == "" {
		t.Errorf("broken XSD: %d %+v, want 422 with the compiler's issues", code, broken)
	}
	jid := "thermo1@" + xs.Domain()
	if code := g.do("POST", "/v1/devices", map[string]any{"jid": jid, "schema": "thermostat", "name": "Kitchen"}, nil); code != 201 {
		t.Fatalf("register device: %d", code)
	}
	servers.RegisterUserForTest(t, xs, "thermo1", "pw1")
	servers.RegisterUserForTest(t, xs, "stranger", "pw2")

	dev, err := device.Dial(ctx, device.Options{Addr: xs.C2SAddr(), JID: jid, Password: "pw1"})
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	reading := func(temp string) string {
		return `<reading xmlns="urn:example:thermostat"><temperature>` + temp + `</temperature><mode>heat</mode></reading>`
	}

	// By IQ: valid ones are acknowledged after commit, invalid ones get
	// bad-request with the validator's reason.
	for _, tc := range []struct {
		temp, wantType, wantText string
	}{
		{"20.5", "result", ""},
		{"21.5", "result", ""},
		{"999", "error", "temperature"},
		{"warm", "error", "temperature"},
	} {
		rep, err := dev.SendIQ(ctx, "set", e2eDomain, reading(tc.temp))
		if err != nil {
			t.Fatal(err)
		}
		if rep.Type != tc.wantType || !strings.Contains(rep.Text, tc.wantText) {
			t.Errorf("IQ reading %s: %+v, want %s with text about %q", tc.temp, rep, tc.wantType, tc.wantText)
		}
		if rep.Type == "error" && (rep.Condition != "bad-request" || rep.ErrorType != "modify") {
			t.Errorf("IQ reading %s: condition %s/%s, want modify/bad-request", tc.temp, rep.ErrorType, rep.Condition)
		}
	}
	// By message: the valid one is stored, the invalid one is answered with
	// an error message.
	if err := dev.SendMessage(ctx, e2eDomain, "m1", reading("22.5")); err != nil {
		t.Fatal(err)
	}
	if err := dev.SendMessage(ctx, e2eDomain, "m2", reading("-99")); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-dev.Messages():
		if m.Type != "error" || m.ID != "m2" || m.Error == nil || m.Error.Condition != "bad-request" {
			t.Errorf("message back = %+v, want an error for m2", m)
		}
	case <-time.After(10 * time.Second):
		t.Error("no error message for the invalid message reading")
	}

	// An unregistered JID: IQ gets registration-required.
	stranger, err := device.Dial(ctx, device.Options{Addr: xs.C2SAddr(), JID: "stranger@" + xs.Domain(), Password: "pw2"})
	if err != nil {
		t.Fatal(err)
	}
	defer stranger.Close()
	rep, err := stranger.SendIQ(ctx, "set", e2eDomain, reading("20"))
	if err != nil || rep.Condition != "registration-required" || rep.ErrorType != "auth" {
		t.Errorf("unregistered IQ: %+v %v, want auth/registration-required", rep, err)
	}

	// REST shows exactly the valid ones.
	path := "/v1/devices/" + url.PathEscape(jid)
	var history struct {
		Items []struct {
			XML  string         `json:"xml"`
			Data map[string]any `json:"data"`
		} `json:"items"`
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if code := g.do("GET", path+"/readings?order=asc", nil, &history); code != 200 {
			t.Fatalf("readings: %d", code)
		}
		if len(history.Items) >= 3 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	var temps []any
	for _, it := range history.Items {
		temps = append(temps, it.Data["temperature"])
	}
	if fmt.Sprint(temps) != "[20.5 21.5 22.5]" {
		t.Errorf("stored temperatures = %v, want [20.5 21.5 22.5]", temps)
	}
	var state struct {
		JID     string `json:"jid"`
		Reading *struct {
			Data map[string]any `json:"data"`
		} `json:"reading"`
		LastSeenAt *string `json:"last_seen_at"`
	}
	if code := g.do("GET", path+"/state", nil, &state); code != 200 || state.Reading == nil || state.Reading.Data["temperature"] != 22.5 || state.LastSeenAt == nil {
		t.Errorf("state = %d %+v", code, state)
	}
	var rej struct {
		Items []struct {
			Via    string `json:"via"`
			Reason string `json:"reason"`
		} `json:"items"`
	}
	deadline = time.Now().Add(10 * time.Second)
	for {
		g.do("GET", path+"/rejections?order=asc", nil, &rej)
		if len(rej.Items) >= 3 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if len(rej.Items) != 3 {
		t.Fatalf("rejections = %+v, want 3", rej.Items)
	}
	for _, r := range rej.Items {
		if !strings.Contains(r.Reason, "temperature") {
			t.Errorf("rejection reason %q does not name the element", r.Reason)
		}
	}
	if rej.Items[2].Via != "message" {
		t.Errorf("last rejection via %q, want message", rej.Items[2].Via)
	}
}
