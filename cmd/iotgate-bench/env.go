package main

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	_ "github.com/lib/pq" // the database/sql driver for the counts and fills

	"github.com/iotgate/iotgate/component"
	"github.com/iotgate/iotgate/internal/device"
	"github.com/iotgate/iotgate/internal/servers"
	"github.com/iotgate/iotgate/schemas/examples"
)

// Names of the bench's XMPP world.
const (
	gateDomain = "iot.localhost"
	// sinkDomain is the second component: the null sink of the ingest
	// scenario and the raw IQ sender of the commands scenario.
	sinkDomain = "sink.localhost"
	schemaName = "thermostat"
	// devicePassword is every device account's password.
	devicePassword = "bench-device-pw"
)

// env is the bench's servers and iotgate, shared by the scenarios.
type env struct {
	cfg  config
	log  *slog.Logger
	pg   *servers.Postgres
	xs   servers.XMPPServer
	bin  string
	gate *servers.Iotgate
	db   *sql.DB
	sink *sink
	// api is the load generators' HTTP client: keep-alive, enough idle
	// connections for the highest concurrency.
	api *http.Client

	// gateEnvMetrics is the metrics address of the last iotgate started.
	gateEnvMetrics string

	// accounts are the device accounts created so far.
	accounts map[string]bool
}

// gateEnv is the iotgate environment of the bench: the rate limits are
// lifted (the defaults, 500/s and a burst of 1000 per device, would cap
// the ingest scenario; 50 API requests/s per token would cap the REST
// loads), and logging is at warn so that the log costs nothing.
func (e *env) gateEnv(dsn string) map[string]string {
	metrics, _ := servers.FreeAddr()
	e.gateEnvMetrics = metrics
	return map[string]string{
		"IOTGATE_METRICS_ADDR": metrics,
		"IOTGATE_XMPP_ADDR":    e.xs.ComponentAddrOf(gateDomain),
		"IOTGATE_DOMAIN":       gateDomain,
		"IOTGATE_SECRET":       e.xs.ComponentSecret(gateDomain),
		"IOTGATE_DATABASE_URL": dsn,
		"IOTGATE_LOG_LEVEL":    e.cfg.gateLogLevel,
		"IOTGATE_DEVICE_RATE":  "1000000",
		"IOTGATE_DEVICE_BURST": "1000000",
		// No per-token request rate (API auth, default 50/s): the
		// load generators use one token. Ignored by builds without it.
		"IOTGATE_API_RATE":               "0",
		"IOTGATE_MAX_COMMANDS_IN_FLIGHT": "10000",
		// The quotas would cap the scenarios' one token and few devices.
		"IOTGATE_MAX_COMMANDS_IN_FLIGHT_PER_TOKEN":  "10000",
		"IOTGATE_MAX_COMMANDS_IN_FLIGHT_PER_DEVICE": "10000",
		// The events scenario's webhook receiver is on 127.0.0.1, and
		// its 100 streams share one token (20 by default).
		"IOTGATE_WEBHOOK_ALLOW_PRIVATE":       "1",
		"IOTGATE_EVENT_MAX_STREAMS_PER_TOKEN": "1000",
		// The reads scenario's 64 concurrent pages share one token (4
		// list requests at once per token, 32 per instance by default).
		"IOTGATE_MAX_HEAVY_PER_TOKEN": "1000",
		"IOTGATE_MAX_HEAVY":           "1000",
	}
}

// setup starts PostgreSQL and the XMPP server, builds and starts iotgate,
// connects the null sink and registers the schema.
func setup(ctx context.Context, cfg config, log *slog.Logger, buildDir string) (*env, error) {
	e := &env{cfg: cfg, log: log, accounts: map[string]bool{}}
	e.api = &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			MaxIdleConns:        1024,
			MaxIdleConnsPerHost: 1024,
			IdleConnTimeout:     time.Minute,
		},
	}
	var err error
	log.Info("building iotgate")
	if e.bin, err = servers.BuildIotgate(ctx, buildDir, false); err != nil {
		return nil, err
	}
	log.Info("starting PostgreSQL")
	if e.pg, err = servers.StartPostgres(ctx, servers.PostgresOptions{Fsync: cfg.fsync, LogDir: cfg.logDir}); err != nil {
		return nil, err
	}
	log.Info("starting XMPP server", "server", cfg.server)
	// Separate listeners: on ejabberd, the sink would otherwise get
	// iotgate's stanzas too (and the other way round).
	opts := servers.XMPPOptions{
		LogDir: cfg.logDir, Debug: cfg.gateLogLevel == "debug", SeparateComponentListeners: true,
		Components: map[string]string{
			gateDomain: servers.NewAdminToken(),
			sinkDomain: servers.NewAdminToken(),
		},
		// The commands scenario's peer row (Prosody only).
		ModRest: cfg.server == "prosody",
	}
	switch cfg.server {
	case "prosody":
		e.xs, err = servers.StartProsody(ctx, opts)
	case "ejabberd":
		e.xs, err = servers.StartEjabberd(ctx, opts)
	default:
		err = fmt.Errorf("unknown XMPP server %q", cfg.server)
	}
	if err != nil {
		e.close()
		return nil, err
	}
	if e.db, err = sql.Open("postgres", e.pg.DSN()); err != nil {
		e.close()
		return nil, err
	}
	if e.gate, err = e.startGate(ctx, e.pg.DSN()); err != nil {
		e.close()
		return nil, err
	}
	if err := e.registerSchema(ctx, e.gate); err != nil {
		e.close()
		return nil, err
	}
	if e.sink, err = startSink(ctx, e.xs); err != nil {
		e.close()
		return nil, err
	}
	return e, nil
}

// startGate starts iotgate on database dsn and waits until it is ready.
// settings are more IOTGATE_* name, value pairs (e.g. the instance ID of
// a second instance).
func (e *env) startGate(ctx context.Context, dsn string, settings ...string) (*servers.Iotgate, error) {
	env := e.gateEnv(dsn)
	for i := 0; i+1 < len(settings); i += 2 {
		env[settings[i]] = settings[i+1]
	}
	g, err := servers.StartIotgate(servers.IotgateOptions{Bin: e.bin, Env: env})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if _, err := g.WaitReady(ctx); err != nil {
		_ = g.Stop(context.Background())
		return nil, err
	}
	return g, nil
}

// close stops everything setup started, in reverse order.
func (e *env) close() {
	if e.sink != nil {
		e.sink.close()
	}
	if e.gate != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		if err := e.gate.Stop(ctx); err != nil {
			e.log.Warn("stop iotgate", "err", err)
		}
		cancel()
		e.saveGateLog(e.gate)
	}
	if e.db != nil {
		e.db.Close()
	}
	if e.xs != nil {
		e.xs.Close()
	}
	if e.pg != nil {
		e.pg.Close()
	}
}

// saveGateLog writes what iotgate process g logged to -log-dir, if set,
// as iotgate-PID.log.
func (e *env) saveGateLog(g *servers.Iotgate) {
	if e.cfg.logDir == "" {
		return
	}
	name := filepath.Join(e.cfg.logDir, fmt.Sprintf("iotgate-%d.log", g.PID()))
	if err := os.WriteFile(name, []byte(g.Logs().String()), 0o644); err != nil {
		e.log.Warn("save iotgate log", "err", err)
	}
}

// call sends a JSON request to g with the bearer token and returns the
// status and body. in may be nil.
func (e *env) call(ctx context.Context, g *servers.Iotgate, method, path string, in any) (int, []byte, error) {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return 0, nil, err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, g.URL()+path, body)
	if err != nil {
		return 0, nil, err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	g.Authorize(req)
	resp, err := e.api.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// registerSchema registers the example thermostat schema with g.
func (e *env) registerSchema(ctx context.Context, g *servers.Iotgate) error {
	code, b, err := e.call(ctx, g, http.MethodPost, "/v1/schemas",
		map[string]string{"name": schemaName, "xsd": string(examples.Thermostat())})
	if err != nil {
		return fmt.Errorf("register schema: %w", err)
	}
	if code != http.StatusCreated && code != http.StatusConflict {
		return fmt.Errorf("register schema: %d %s", code, b)
	}
	return nil
}

// deviceJIDs returns the bare JIDs prefix1..prefixN on the XMPP domain.
func (e *env) deviceJIDs(prefix string, n int) []string {
	jids := make([]string, n)
	for i := range jids {
		jids[i] = prefix + strconv.Itoa(i+1) + "@" + e.xs.Domain()
	}
	return jids
}

// ensureDevices creates the accounts of jids on the XMPP server (once)
// and registers them with g.
func (e *env) ensureDevices(ctx context.Context, g *servers.Iotgate, jids []string) error {
	var users []string
	for _, j := range jids {
		if !e.accounts[j] {
			u, _, _ := strings.Cut(j, "@")
			users = append(users, u)
		}
	}
	if err := servers.RegisterUsers(ctx, e.xs, users, devicePassword); err != nil {
		return err
	}
	for _, j := range jids {
		e.accounts[j] = true
	}
	for _, j := range jids {
		code, b, err := e.call(ctx, g, http.MethodPost, "/v1/devices", map[string]any{"jid": j, "schema": schemaName})
		if err != nil {
			return fmt.Errorf("register device %s: %w", j, err)
		}
		if code != http.StatusCreated && code != http.StatusConflict {
			return fmt.Errorf("register device %s: %d %s", j, code, b)
		}
	}
	return nil
}

// loginConcurrency is how many devices dialDevices logs in at once. 64
// was tried for the scale scenario's 10,000: no faster on Prosody (about
// 45 logins/s, bound by Prosody's one core), so the lighter burst stays.
const loginConcurrency = 16

// dialDevices logs the devices in, loginConcurrency at a time. With online set, each
// subscribes to iotgate and sends available presence. handler answers
// commands (nil: none expected).
func (e *env) dialDevices(ctx context.Context, jids []string, online bool, handler func(device.IQ) device.Reply) ([]*device.Client, error) {
	clients := make([]*device.Client, len(jids))
	errs := make([]error, len(jids))
	sem := make(chan struct{}, loginConcurrency)
	var wg sync.WaitGroup
	for i, j := range jids {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			c, err := device.Dial(ctx, device.Options{Addr: e.xs.C2SAddr(), JID: j, Password: devicePassword, IQHandler: handler})
			if err != nil {
				errs[i] = err
				return
			}
			clients[i] = c
			if !online {
				return
			}
			if err := c.Subscribe(ctx, gateDomain); err != nil {
				errs[i] = err
				return
			}
			errs[i] = c.SendAvailable(ctx, 0, "")
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		closeDevices(clients)
		return nil, err
	}
	return clients, nil
}

// closeDevices logs the devices out, in parallel.
func closeDevices(clients []*device.Client) {
	var wg sync.WaitGroup
	for _, c := range clients {
		if c != nil {
			wg.Go(func() { _ = c.Close() })
		}
	}
	wg.Wait()
}

// waitOnline polls the state of each device until iotgate sees it
// online, or until within passes.
func (e *env) waitOnline(ctx context.Context, g *servers.Iotgate, jids []string, within time.Duration) error {
	deadline := time.Now().Add(within)
	for _, j := range jids {
		for {
			err := e.online(ctx, g, j)
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("not online within %s: %w", within, err)
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	return nil
}

// online returns nil if g sees device jid online, else an error that
// says what g answered.
func (e *env) online(ctx context.Context, g *servers.Iotgate, jid string) error {
	var st struct {
		Online bool `json:"online"`
	}
	code, b, err := e.call(ctx, g, http.MethodGet, "/v1/devices/"+url.PathEscape(jid)+"/state", nil)
	if err == nil && code == http.StatusOK && json.Unmarshal(b, &st) == nil && st.Online {
		return nil
	}
	return fmt.Errorf("%s: %d %s %v", jid, code, b, err)
}

// countReadings returns the number of stored readings in db.
func countReadings(ctx context.Context, db *sql.DB) (int64, error) {
	var n int64
	err := db.QueryRowContext(ctx, "SELECT count(*) FROM readings").Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("count readings: %w", err)
	}
	return n, nil
}

// sink is a component on sinkDomain that counts what it receives and
// answers every IQ get/set with an empty result at once: the null sink
// of the ingest scenario. Its Conn also sends the raw IQs of the commands
// scenario. It uses iotgate's own component stream code, so the
// difference to iotgate is what iotgate does with a reading.
type sink struct {
	conn     *component.Conn
	messages atomic.Int64
	iqs      atomic.Int64
	cancel   context.CancelFunc
	done     chan struct{}
}

// startSink connects the sink and waits until its stream is up.
func startSink(ctx context.Context, xs servers.XMPPServer) (*sink, error) {
	conn, err := component.New(component.Config{
		Addr: xs.ComponentAddrOf(sinkDomain), Domain: sinkDomain, Secret: xs.ComponentSecret(sinkDomain),
		MaxPendingIQs: 100000,
	})
	if err != nil {
		return nil, err
	}
	s := &sink{conn: conn, done: make(chan struct{})}
	conn.SetHandler(component.HandlerFunc(func(ctx context.Context, st *component.Stanza) bool {
		switch st.Kind {
		case component.KindMessage:
			s.messages.Add(1)
		case component.KindIQ:
			s.iqs.Add(1)
			// On the read loop, as iotgate's own answers are queued.
			_ = conn.Send(ctx, st.Result(nil))
		}
		return true
	}))
	runCtx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	go func() { _ = conn.Run(runCtx); close(s.done) }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if ok, _, err := conn.Health(ctx); ok {
			return s, nil
		} else if time.Now().After(deadline) {
			s.close()
			return nil, fmt.Errorf("sink component not connected: %w", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// close ends the sink's stream.
func (s *sink) close() {
	s.cancel()
	<-s.done
}

// machine describes where the bench ran.
func machine(ctx context.Context, e *env) []string {
	lines := []string{
		fmt.Sprintf("cores: %d (runtime.NumCPU)", numCPU()),
		"memory: " + memTotal(),
		"go: " + goVersion(),
		"XMPP server: " + e.cfg.server + " " + packageVersion(e.cfg.server),
	}
	var pgv string
	if err := e.db.QueryRowContext(ctx, "SHOW server_version").Scan(&pgv); err != nil {
		pgv = "unknown (" + err.Error() + ")"
	}
	fsync := "off"
	if e.cfg.fsync {
		fsync = "on"
	}
	lines = append(lines, "PostgreSQL: "+pgv+" (fsync "+fsync+")")
	lines = append(lines, "load average at the end: "+loadAvg())
	return lines
}

// gateMetrics returns iotgate's own metrics (the iotgate_ ones), for the
// log of a failed run.
func (e *env) gateMetrics(ctx context.Context) string {
	addr := e.gateEnvMetrics
	if addr == "" {
		return "(no metrics address)"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return err.Error()
	}
	resp, err := e.api.Do(req)
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var out []string
	for line := range strings.SplitSeq(string(b), "\n") {
		if strings.HasPrefix(line, "iotgate_") && !strings.Contains(line, "_bucket") {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}
