//go:build integration

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"mellium.im/xmpp/stanza"

	"github.com/iotgate/iotgate/internal/device"
	"github.com/iotgate/iotgate/internal/servers"
	"github.com/iotgate/iotgate/schemas/examples"
)

// commandBody is a command as the API shows it (alone, or as the details
// of an error).
type commandBody struct {
	ID        string `json:"id"`
	Device    string `json:"device"`
	Status    string `json:"status"`
	Target    string `json:"target"`
	ErrorCode string `json:"error_code"`
	Error     string `json:"error"`
	Response  *struct {
		XML  string         `json:"xml"`
		Data map[string]any `json:"data"`
	} `json:"response"`
	XMPPError *struct {
		Type, Condition, Text string
	} `json:"xmpp_error"`
	LateAnswer bool `json:"late_answer"`
	History    []struct {
		Status string `json:"status"`
		Reason string `json:"reason"`
	} `json:"history"`
}

func (c commandBody) statuses() string {
	var s []string
	for _, h := range c.History {
		s = append(s, h.Status)
	}
	return strings.Join(s, ",")
}

// commandAnswer is an answer to POST .../commands: the status, the error
// code (for errors), the command, and the headers.
type commandAnswer struct {
	status int
	code   string
	cmd    commandBody
	header http.Header
	took   time.Duration
}

// command sends a command and decodes the answer, whichever shape it has.
func (g *gate) command(jid string, body map[string]any, header ...string) commandAnswer {
	g.t.Helper()
	b, _ := json.Marshal(body)
	req, err := http.NewRequest("POST", g.base+"/v1/devices/"+url.PathEscape(jid)+"/commands", bytes.NewReader(b))
	if err != nil {
		g.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	start := time.Now()
	resp, err := g.client.Do(req)
	if err != nil {
		// Not Fatal: this may run in a goroutine of the test's own.
		g.t.Errorf("POST command: %v", err)
		return commandAnswer{took: time.Since(start)}
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	a := commandAnswer{status: resp.StatusCode, header: resp.Header, took: time.Since(start)}
	if resp.StatusCode >= 400 {
		var e struct {
			Code    string          `json:"code"`
			Details json.RawMessage `json:"details"`
		}
		if err := json.Unmarshal(raw, &e); err != nil {
			g.t.Errorf("decode %s: %v", raw, err)
		}
		a.code = e.Code
		if len(e.Details) > 0 && e.Details[0] == '{' {
			json.Unmarshal(e.Details, &a.cmd)
		}
		return a
	}
	if err := json.Unmarshal(raw, &a.cmd); err != nil {
		g.t.Errorf("decode %s: %v", raw, err)
	}
	return a
}

// waitCommand polls a command until cond holds.
func (g *gate) waitCommand(id string, within time.Duration, what string, cond func(commandBody) bool) commandBody {
	g.t.Helper()
	deadline := time.Now().Add(within)
	for {
		var c commandBody
		code := g.doQuiet("/v1/commands/"+url.PathEscape(id), &c)
		if code == 200 && cond(c) {
			return c
		}
		if time.Now().After(deadline) {
			g.t.Fatalf("command %s: %s not reached within %s (last %d %+v)", id, what, within, code, c)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

var targetRE = regexp.MustCompile(`<target[^>]*>([^<]*)</target>`)

// thermostat answers commands like the example thermostat, except for a
// few target temperatures that misbehave on purpose.
func thermostat(iq device.IQ) device.Reply {
	target := "20"
	if m := targetRE.FindStringSubmatch(iq.Payload); m != nil {
		target = m[1]
	}
	switch target {
	case "99":
		return device.Reply{Type: "error", ErrorType: stanza.Modify, Condition: stanza.NotAcceptable, Text: "target out of range for this room"}
	case "42":
		return device.Reply{Type: device.NoReply}
	case "43":
		time.Sleep(1500 * time.Millisecond)
	}
	return device.Reply{Type: "result", Payload: `<state xmlns="urn:example:thermostat"><temperature>19.75</temperature><target>` + target +
		`</target><mode>heat</mode><heating>1</heating></state>`}
}

func setTarget(t string) string {
	return `<set xmlns='urn:example:thermostat'><target>` + t + `</target></set>`
}

// commandsEnv is iotgate, its servers, and devices registered with both.
type commandsEnv struct {
	t   *testing.T
	ctx context.Context
	xs  servers.XMPPServer
	pg  *servers.Postgres
	env map[string]string
	g   *gate
}

// newCommandsEnv starts the servers and iotgate, with extra settings given
// as name, value pairs.
func newCommandsEnv(t *testing.T, ctx context.Context, name string, settings ...string) *commandsEnv {
	t.Helper()
	return newCommandsEnvWith(t, ctx, name, servers.XMPPOptions{}, settings...)
}

// newCommandsEnvWith is newCommandsEnv with XMPP server options (the
// component is set here).
func newCommandsEnvWith(t *testing.T, ctx context.Context, name string, opts servers.XMPPOptions, settings ...string) *commandsEnv {
	t.Helper()
	e := &commandsEnv{t: t, ctx: ctx}
	e.pg = servers.PostgresForTest(t)
	opts.Components = map[string]string{e2eDomain: e2eSecret}
	e.xs = servers.XMPPForTest(t, name, opts)
	e.env = map[string]string{
		"IOTGATE_XMPP_ADDR": e.xs.ComponentAddr(), "IOTGATE_DOMAIN": e2eDomain,
		"IOTGATE_SECRET": e2eSecret, "IOTGATE_DATABASE_URL": e.pg.DSN(),
	}
	for i := 0; i+1 < len(settings); i += 2 {
		e.env[settings[i]] = settings[i+1]
	}
	e.g = startGate(t, e.env)
	e.g.waitReady(200, 30*time.Second, nil)
	if code := e.g.do("POST", "/v1/schemas", map[string]string{"name": "thermostat", "xsd": string(examples.Thermostat())}, nil); code != 201 {
		t.Fatalf("register schema: %d", code)
	}
	return e
}

// register registers a device with iotgate and its account with the XMPP
// server, and returns its bare JID.
func (e *commandsEnv) register(user string) string {
	e.t.Helper()
	jid := user + "@" + e.xs.Domain()
	if code := e.g.do("POST", "/v1/devices", map[string]any{"jid": jid, "schema": "thermostat"}, nil); code != 201 {
		e.t.Fatalf("register device %s: %d", jid, code)
	}
	servers.RegisterUserForTest(e.t, e.xs, user, "pw-"+user)
	return jid
}

// online logs a device in, subscribes it to iotgate and makes it
// available, and waits until iotgate sees it online.
func (e *commandsEnv) online(user string, handler func(device.IQ) device.Reply) *device.Client {
	e.t.Helper()
	jid := user + "@" + e.xs.Domain()
	c, err := device.Dial(e.ctx, device.Options{Addr: e.xs.C2SAddr(), JID: jid, Password: "pw-" + user, IQHandler: handler})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { c.Close() })
	if err := c.Subscribe(e.ctx, e2eDomain); err != nil {
		e.t.Fatal(err)
	}
	if err := c.SendAvailable(e.ctx, 0, ""); err != nil {
		e.t.Fatal(err)
	}
	e.g.waitState(jid, 10*time.Second, "online", func(s stateBody) bool { return s.Online })
	return c
}

func TestE2ECommands(t *testing.T) {
	for _, name := range servers.XMPPServerNames {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
			defer cancel()
			e := newCommandsEnv(t, ctx, name)
			g, parent := e.g, t
			thermo := e.register("thermo1")
			sleeper := e.register("sleeper") // registered, never logs in
			late := e.register("late")       // logs in once a command waits for it
			dev := e.online("thermo1", thermostat)
			_, resource, _ := strings.Cut(dev.JID(), "/")
			syncSet := func(target string, extra ...any) map[string]any {
				m := map[string]any{"payload": setTarget(target)}
				for i := 0; i+1 < len(extra); i += 2 {
					m[extra[i].(string)] = extra[i+1]
				}
				return m
			}

			t.Run("Succeeds", func(t *testing.T) {
				a := g.command(thermo, syncSet("21.5"))
				if a.status != 200 || a.cmd.Status != "succeeded" || a.cmd.Target != dev.JID() {
					t.Fatalf("answer %d %+v", a.status, a.cmd)
				}
				if a.cmd.Response == nil || a.cmd.Response.Data["target"] != 21.5 || a.cmd.Response.Data["heating"] != true || !strings.Contains(a.cmd.Response.XML, "<state") {
					t.Errorf("response = %+v, want the rendered state", a.cmd.Response)
				}
				if a.header.Get("Location") != "/v1/commands/"+a.cmd.ID {
					t.Errorf("Location = %q", a.header.Get("Location"))
				}
				got := g.waitCommand(a.cmd.ID, 5*time.Second, "stored as succeeded", func(c commandBody) bool { return c.Status == "succeeded" })
				if got.statuses() != "pending,sent,succeeded" {
					t.Errorf("history = %s", got.statuses())
				}
				// A get, and a resource named explicitly.
				a = g.command(thermo, map[string]any{"payload": "<get xmlns='urn:example:thermostat'/>", "type": "get", "resource": resource})
				if a.status != 200 || a.cmd.Response == nil || a.cmd.Response.Data["mode"] != "heat" {
					t.Errorf("get: %d %+v", a.status, a.cmd)
				}
			})
			t.Run("DeviceError", func(t *testing.T) {
				a := g.command(thermo, syncSet("99"))
				if a.status != 502 || a.code != "xmpp_error" || a.cmd.Status != "failed" || a.cmd.XMPPError == nil {
					t.Fatalf("answer %d %s %+v", a.status, a.code, a.cmd)
				}
				if x := a.cmd.XMPPError; x.Condition != "not-acceptable" || x.Type != "modify" || x.Text != "target out of range for this room" {
					t.Errorf("xmpp_error = %+v", x)
				}
			})
			t.Run("SilentDeviceTimesOut", func(t *testing.T) {
				a := g.command(thermo, syncSet("42", "timeout_ms", 500))
				if a.status != 504 || a.code != "timeout" || a.cmd.Status != "timed_out" {
					t.Fatalf("answer %d %s %+v", a.status, a.code, a.cmd)
				}
				if a.took < 500*time.Millisecond || a.took > 3*time.Second {
					t.Errorf("504 after %s, want just after 500ms", a.took)
				}
			})
			t.Run("LateAnswerRecorded", func(t *testing.T) {
				a := g.command(thermo, syncSet("43", "timeout_ms", 500))
				if a.status != 504 || a.cmd.Status != "timed_out" || a.cmd.LateAnswer {
					t.Fatalf("answer %d %+v", a.status, a.cmd)
				}
				got := g.waitCommand(a.cmd.ID, 5*time.Second, "late answer recorded", func(c commandBody) bool { return c.LateAnswer })
				if got.Status != "timed_out" || got.Response == nil || got.Response.Data["target"] != 43.0 {
					t.Errorf("late answer: %+v", got)
				}
			})
			t.Run("OfflineIsFast409", func(t *testing.T) {
				for _, mode := range []string{"sync", "async"} {
					a := g.command(sleeper, syncSet("20", "mode", mode))
					if a.status != 409 || a.code != "device_offline" || a.cmd.Status != "failed" || a.cmd.ErrorCode != "device_offline" {
						t.Errorf("%s: answer %d %s %+v", mode, a.status, a.code, a.cmd)
					}
					if a.took > time.Second {
						t.Errorf("%s: 409 after %s, want at once", mode, a.took)
					}
				}
				// A resource the device doesn't have is offline too.
				if a := g.command(thermo, syncSet("20", "resource", "attic")); a.status != 409 || a.code != "device_offline" {
					t.Errorf("unknown resource: %d %s", a.status, a.code)
				}
			})
			t.Run("Async", func(t *testing.T) {
				a := g.command(thermo, syncSet("22", "mode", "async"))
				if a.status != 202 || a.cmd.ID == "" {
					t.Fatalf("answer %d %+v", a.status, a.cmd)
				}
				got := g.waitCommand(a.cmd.ID, 5*time.Second, "succeeded", func(c commandBody) bool { return c.Status == "succeeded" })
				if got.Response == nil || got.Response.Data["target"] != 22.0 {
					t.Errorf("response = %+v", got.Response)
				}
			})
			t.Run("QueueDeliveredAtLogin", func(t *testing.T) {
				var ids []string
				for _, temp := range []string{"18", "19"} {
					a := g.command(late, syncSet(temp, "mode", "queue", "expires_in_ms", 60000))
					if a.status != 202 || a.cmd.Status != "queued" {
						t.Fatalf("answer %d %+v", a.status, a.cmd)
					}
					ids = append(ids, a.cmd.ID)
				}
				got := make(chan string, 2)
				e.online("late", func(iq device.IQ) device.Reply {
					if m := targetRE.FindStringSubmatch(iq.Payload); m != nil {
						got <- m[1]
					} else {
						t.Errorf("device got %s", iq.Payload)
					}
					return thermostat(iq)
				})
				for _, id := range ids {
					c := g.waitCommand(id, 10*time.Second, "delivered", func(c commandBody) bool { return c.Status == "succeeded" })
					if c.statuses() != "pending,queued,sent,succeeded" {
						t.Errorf("history = %s", c.statuses())
					}
				}
				if a, b := <-got, <-got; a != "18" || b != "19" {
					t.Errorf("delivered %s then %s, want in order", a, b)
				}
			})
			t.Run("QueueExpires", func(t *testing.T) {
				a := g.command(sleeper, syncSet("20", "mode", "queue", "expires_in_ms", 1000))
				if a.status != 202 || a.cmd.Status != "queued" {
					t.Fatalf("answer %d %+v", a.status, a.cmd)
				}
				c := g.waitCommand(a.cmd.ID, 5*time.Second, "expired", func(c commandBody) bool { return c.Status == "expired" })
				if c.statuses() != "pending,queued,expired" {
					t.Errorf("history = %s", c.statuses())
				}
			})
			t.Run("Cancel", func(t *testing.T) {
				a := g.command(sleeper, syncSet("20", "mode", "queue"))
				var c commandBody
				if code := g.do("POST", "/v1/commands/"+a.cmd.ID+"/cancel", nil, &c); code != 200 || c.Status != "canceled" {
					t.Errorf("cancel = %d %+v", code, c)
				}
				var e struct{ Code string }
				if code := g.do("POST", "/v1/commands/"+a.cmd.ID+"/cancel", nil, &e); code != 409 || e.Code != "command_not_queued" {
					t.Errorf("cancel again = %d %+v", code, e)
				}
			})
			t.Run("IdempotencyKey", func(t *testing.T) {
				key := "e2e-" + name
				first := g.command(thermo, syncSet("23"), "Idempotency-Key", key)
				again := g.command(thermo, syncSet("23"), "Idempotency-Key", key)
				if first.status != 200 || again.status != 200 || again.cmd.ID != first.cmd.ID || again.header.Get("Idempotent-Replayed") != "true" {
					t.Errorf("first %d %s, again %d %s %q", first.status, first.cmd.ID, again.status, again.cmd.ID, again.header.Get("Idempotent-Replayed"))
				}
				if other := g.command(thermo, syncSet("24"), "Idempotency-Key", key); other.status != 422 || other.code != "idempotency_key_reused" {
					t.Errorf("other body: %d %s", other.status, other.code)
				}
			})
			t.Run("Refused", func(t *testing.T) {
				if a := g.command(thermo, syncSet("999")); a.status != 422 || a.code != "unprocessable" {
					t.Errorf("invalid payload: %d %s", a.status, a.code)
				}
				if a := g.command("nobody@"+e.xs.Domain(), syncSet("20")); a.status != 404 {
					t.Errorf("unknown device: %d %s", a.status, a.code)
				}
			})
			t.Run("List", func(t *testing.T) {
				var page struct {
					Items      []commandBody `json:"items"`
					NextCursor string        `json:"next_cursor"`
				}
				seen := 0
				path := "/v1/devices/" + url.PathEscape(thermo) + "/commands?limit=3"
				for p := path; ; p = path + "&cursor=" + url.QueryEscape(page.NextCursor) {
					page.NextCursor = ""
					if code := g.do("GET", p, nil, &page); code != 200 {
						t.Fatalf("list: %d", code)
					}
					seen += len(page.Items)
					if page.NextCursor == "" {
						break
					}
				}
				var all struct{ Items []commandBody }
				g.do("GET", "/v1/devices/"+url.PathEscape(thermo)+"/commands", nil, &all)
				if seen != len(all.Items) || seen < 8 {
					t.Errorf("listed %d commands by 3, %d in one page; want the same, at least 8", seen, len(all.Items))
				}
			})
			t.Run("RestartResolvesSentKeepsQueued", func(t *testing.T) {
				sent := g.command(thermo, syncSet("42", "mode", "async", "timeout_ms", 60000))
				queued := g.command(sleeper, syncSet("20", "mode", "queue"))
				if sent.status != 202 || queued.cmd.Status != "queued" {
					t.Fatalf("answers %d, %+v", sent.status, queued.cmd)
				}
				if err := g.proc.Kill(); err != nil {
					t.Fatal(err)
				}
				// The new gate outlives this subtest.
				g = startGate(parent, e.env)
				e.g = g
				g.waitReady(200, 30*time.Second, nil)
				c := g.waitCommand(sent.cmd.ID, 5*time.Second, "failed", func(c commandBody) bool { return c.Status == "failed" })
				if c.ErrorCode != "restarted" || !strings.Contains(c.Error, "restarted") {
					t.Errorf("left-over sent command: %+v", c)
				}
				if c := g.waitCommand(queued.cmd.ID, time.Second, "queued", func(c commandBody) bool { return true }); c.Status != "queued" {
					t.Errorf("queued command after restart: %s", c.Status)
				}
				g.waitState(thermo, 10*time.Second, "online again", func(s stateBody) bool { return s.Online })
			})
			t.Run("XMPPServerDown503", func(t *testing.T) {
				inflight := make(chan commandAnswer, 1)
				go func() { inflight <- g.command(thermo, syncSet("42", "timeout_ms", 60000)) }()
				// Wait until it is sent.
				deadline := time.Now().Add(5 * time.Second)
				for {
					var page struct{ Items []commandBody }
					g.do("GET", "/v1/devices/"+url.PathEscape(thermo)+"/commands?limit=1", nil, &page)
					if len(page.Items) == 1 && page.Items[0].Status == "sent" {
						break
					}
					if time.Now().After(deadline) {
						t.Fatal("the command was not sent")
					}
					time.Sleep(10 * time.Millisecond)
				}
				killed := time.Now()
				if err := e.xs.Kill(); err != nil {
					t.Fatal(err)
				}
				select {
				case a := <-inflight:
					if a.status != 503 || a.code != "xmpp_unavailable" || a.cmd.Status != "failed" {
						t.Errorf("in-flight command: %d %s %+v", a.status, a.code, a.cmd)
					}
					if d := time.Since(killed); d > time.Second {
						t.Errorf("503 %s after the kill, want within a second", d)
					}
				case <-time.After(10 * time.Second):
					t.Fatal("the in-flight command did not fail")
				}
				g.waitReady(503, 5*time.Second, nil)
				a := g.command(thermo, syncSet("20"))
				if a.status != 503 || a.code != "xmpp_unavailable" || a.took > time.Second {
					t.Errorf("while down: %d %s after %s", a.status, a.code, a.took)
				}
			})
		})
	}
}

// BenchmarkCommandLatency measures the command round trip through the real
// binary (built without -race) and a real Prosody: POST a sync command,
// iotgate stores it and sends the IQ, a device answers at once, iotgate
// stores the outcome and answers 200. It reports the p50 and p99 latency
// seen by the HTTP client, at concurrency 1 and 64, over 8 devices:
//
//	go test -tags integration -run '^$' -bench CommandLatency -benchtime 2000x ./cmd/iotgate/
func BenchmarkCommandLatency(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	pg := servers.PostgresForTest(b)
	xs := servers.ProsodyForTest(b, servers.XMPPOptions{Components: map[string]string{e2eDomain: e2eSecret}})
	bin, err := servers.BuildIotgate(ctx, b.TempDir(), false)
	if err != nil {
		b.Fatal(err)
	}
	proc := servers.IotgateForTest(b, servers.IotgateOptions{Bin: bin, Env: map[string]string{
		"IOTGATE_LOG_LEVEL": "warn", "IOTGATE_API_RATE": "0",
		"IOTGATE_XMPP_ADDR": xs.ComponentAddr(), "IOTGATE_DOMAIN": e2eDomain, "IOTGATE_SECRET": e2eSecret, "IOTGATE_DATABASE_URL": pg.DSN(),
	}})
	base := proc.URL()
	admin := &http.Client{Transport: bearerTransport{token: proc.Token()}}
	post := func(path string, body any) int {
		raw, _ := json.Marshal(body)
		resp, err := admin.Post(base+path, "application/json", bytes.NewReader(raw))
		if err != nil {
			return 0
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	waitFor := func(what string, cond func() bool) {
		deadline := time.Now().Add(30 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				b.Fatalf("%s: not within 30s", what)
			}
			time.Sleep(25 * time.Millisecond)
		}
	}
	if code := post("/v1/schemas", map[string]string{"name": "thermostat", "xsd": string(examples.Thermostat())}); code != 201 {
		b.Fatalf("register schema: %d", code)
	}
	const nDevices = 8
	jids := make([]string, nDevices)
	for i := range jids {
		user := fmt.Sprintf("bench%d", i)
		jids[i] = user + "@" + xs.Domain()
		if code := post("/v1/devices", map[string]any{"jid": jids[i], "schema": "thermostat"}); code != 201 {
			b.Fatalf("register device: %d", code)
		}
		servers.RegisterUserForTest(b, xs, user, "pw")
		dev, err := device.Dial(ctx, device.Options{Addr: xs.C2SAddr(), JID: jids[i], Password: "pw", IQHandler: thermostat})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { dev.Close() })
		if err := dev.Subscribe(ctx, e2eDomain); err != nil {
			b.Fatal(err)
		}
		if err := dev.SendAvailable(ctx, 0, ""); err != nil {
			b.Fatal(err)
		}
		waitFor(jids[i]+" online", func() bool {
			var st stateBody
			resp, err := admin.Get(base + "/v1/devices/" + url.PathEscape(jids[i]) + "/state")
			if err != nil {
				return false
			}
			defer resp.Body.Close()
			json.NewDecoder(resp.Body).Decode(&st)
			return st.Online
		})
	}
	body, _ := json.Marshal(map[string]any{"payload": setTarget("21.5")})

	for _, conc := range []int{1, 64} {
		b.Run(fmt.Sprintf("concurrency=%d", conc), func(b *testing.B) {
			client := &http.Client{Transport: bearerTransport{token: proc.Token(), base: &http.Transport{MaxIdleConnsPerHost: conc}}}
			defer client.CloseIdleConnections()
			lat := make([]time.Duration, b.N)
			var next atomic.Int64
			var failed atomic.Int64
			var codesMu sync.Mutex
			codes := map[string]int{}
			var wg sync.WaitGroup
			b.ResetTimer()
			start := time.Now()
			for range conc {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						i := int(next.Add(1) - 1)
						if i >= b.N {
							return
						}
						t0 := time.Now()
						resp, err := client.Post(base+"/v1/devices/"+url.PathEscape(jids[i%nDevices])+"/commands", "application/json", bytes.NewReader(body))
						var raw []byte
						if err == nil {
							raw, _ = io.ReadAll(resp.Body)
							resp.Body.Close()
						}
						lat[i] = time.Since(t0)
						if err != nil || resp.StatusCode != 200 {
							failed.Add(1)
							what := fmt.Sprint(err)
							if err == nil {
								what = fmt.Sprintf("%d %.200s", resp.StatusCode, raw)
							}
							codesMu.Lock()
							codes[what]++
							codesMu.Unlock()
						}
					}
				}()
			}
			wg.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			if n := failed.Load(); n > 0 {
				b.Fatalf("%d of %d commands did not answer 200: %v", n, b.N, codes)
			}
			slices.Sort(lat)
			q := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) / 1000 }
			b.ReportMetric(q(0.50), "p50-ms")
			b.ReportMetric(q(0.99), "p99-ms")
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "commands/s")
			b.ReportMetric(0, "ns/op") // wall time per op means nothing at concurrency > 1
		})
	}
}
