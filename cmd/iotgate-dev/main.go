// Command iotgate-dev runs iotgate for a developer (`make dev`): it starts
// a throwaway PostgreSQL and an XMPP server (Prosody, or ejabberd) on
// 127.0.0.1, registers a few demo device accounts, builds and runs
// bin/iotgate against them, and streams its log. Once iotgate is ready, it
// registers the thermostat schema and the -sim devices with iotgate and
// runs them as simulated thermostats (package internal/device/sim), which
// send readings and answer commands. Ctrl-C stops the simulated devices,
// iotgate, then the servers, and removes their state.
//
// Usage:
//
//	go run ./cmd/iotgate-dev [flags]
//
// The component secret is taken from IOTGATE_DEV_SECRET (default
// "dev-secret"), iotgate's bootstrap admin API token from
// IOTGATE_DEV_ADMIN_TOKEN (default DevAdminToken, printed in the banner).
// Run with -h for the flags.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/iotgate/iotgate/internal/device/sim"
	"github.com/iotgate/iotgate/internal/servers"
)

// DevAdminToken is the admin API token of `make dev` unless
// IOTGATE_DEV_ADMIN_TOKEN says otherwise. It is fixed so that the docs'
// example commands work as they are; the dev servers listen on 127.0.0.1
// only and are thrown away.
const DevAdminToken = "iotg_dev-admin-token-for-make-dev-only"

// config is everything the runner is told, from flags and the environment.
type config struct {
	dir           string
	xmpp          string
	domain        string
	component     string
	secret        string
	adminToken    string
	c2sPort       int
	componentPort int
	pgPort        int
	httpAddr      string
	devices       []string
	sim           []string
	simRate       float64
	logLevel      string
	bin           string
	build         bool
	clean         bool
}

func main() {
	cfg, err := parseConfig(os.Args[1:], os.Getenv, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "iotgate-dev: %v\n", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// With `make dev | tee log`, Ctrl-C kills tee too: without this, our
	// next line to the closed pipe would kill us with SIGPIPE before we
	// stop the servers. (Notify, unlike Ignore, is not inherited by
	// iotgate.)
	signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)
	code, err := run(ctx, cfg, os.Stdout)
	if err != nil {
		fmt.Fprintf(os.Stderr, "iotgate-dev: %v\n", err)
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}

// parseConfig reads the flags in args and the environment through getenv;
// usage and flag errors go to stderr.
func parseConfig(args []string, getenv func(string) string, stderr io.Writer) (config, error) {
	var cfg config
	fs := flag.NewFlagSet("iotgate-dev", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: iotgate-dev [flags]\n\n"+
			"Runs iotgate with a throwaway PostgreSQL and XMPP server on 127.0.0.1.\n"+
			"A port that is busy is replaced by a free one. Environment:\n"+
			"  IOTGATE_DEV_SECRET  the component secret (default \"dev-secret\")\n"+
			"  IOTGATE_DEV_ADMIN_TOKEN  iotgate's admin API token (default \""+DevAdminToken+"\")\n\nFlags:\n")
		fs.PrintDefaults()
	}
	var devices, simulated string
	fs.StringVar(&cfg.dir, "dir", ".dev", "state `directory` of the servers, removed on exit")
	fs.StringVar(&cfg.xmpp, "xmpp", "prosody", "XMPP server: prosody or ejabberd")
	fs.StringVar(&cfg.domain, "domain", "localhost", "XMPP domain of the device accounts")
	fs.StringVar(&cfg.component, "component", "iot.localhost", "iotgate's component domain")
	fs.IntVar(&cfg.c2sPort, "c2s-port", 15222, "client (device) port of the XMPP server")
	fs.IntVar(&cfg.componentPort, "component-port", 15347, "component (XEP-0114) port of the XMPP server")
	fs.IntVar(&cfg.pgPort, "pg-port", 15432, "PostgreSQL port")
	fs.StringVar(&cfg.httpAddr, "http-addr", "127.0.0.1:8080", "`host:port` of iotgate's REST API")
	fs.StringVar(&devices, "devices", "thermo1,thermo2,lamp1", "comma-separated demo device accounts; each one's password is its name")
	fs.StringVar(&simulated, "sim", "thermo1,thermo2,thermo3", "comma-separated accounts (created if missing) to run as simulated thermostats, registered with iotgate; empty for none")
	fs.Float64Var(&cfg.simRate, "sim-rate", 0.2, "readings per second of each simulated thermostat")
	fs.StringVar(&cfg.logLevel, "log-level", "info", "iotgate's log level: debug, info, warn or error")
	fs.StringVar(&cfg.bin, "bin", filepath.Join("bin", "iotgate"), "path of the iotgate binary to run")
	fs.BoolVar(&cfg.build, "build", true, "build -bin from ./cmd/iotgate before running it")
	fs.BoolVar(&cfg.clean, "clean", false, "stop whatever a killed runner left in -dir, remove it, and exit")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if cfg.xmpp != "prosody" && cfg.xmpp != "ejabberd" {
		return cfg, fmt.Errorf("-xmpp %q: want prosody or ejabberd", cfg.xmpp)
	}
	if _, _, err := net.SplitHostPort(cfg.httpAddr); err != nil {
		return cfg, fmt.Errorf("-http-addr %q: %w", cfg.httpAddr, err)
	}
	cfg.devices = splitList(devices)
	cfg.sim = splitList(simulated)
	if cfg.simRate <= 0 || cfg.simRate > sim.MaxRate {
		return cfg, fmt.Errorf("-sim-rate %v: want more than 0 and at most %d", cfg.simRate, sim.MaxRate)
	}
	cfg.secret = getenv("IOTGATE_DEV_SECRET")
	if cfg.secret == "" {
		cfg.secret = "dev-secret"
	}
	cfg.adminToken = getenv("IOTGATE_DEV_ADMIN_TOKEN")
	if cfg.adminToken == "" {
		cfg.adminToken = DevAdminToken
	}
	if len(cfg.adminToken) < 32 {
		return cfg, errors.New("IOTGATE_DEV_ADMIN_TOKEN: at least 32 characters")
	}
	return cfg, nil
}

// run does the work; it returns the exit code for main.
func run(ctx context.Context, cfg config, out io.Writer) (int, error) {
	say := func(format string, args ...any) { fmt.Fprintf(out, "iotgate-dev: "+format+"\n", args...) }

	// A runner killed with SIGKILL leaves its servers running: stop them.
	if _, err := os.Stat(cfg.dir); err == nil {
		say("removing %s left by an earlier run", cfg.dir)
	}
	if err := servers.CleanDir(cfg.dir); err != nil {
		return 1, err
	}
	if cfg.clean {
		return 0, nil
	}
	defer os.RemoveAll(cfg.dir)

	cfg.c2sPort = freeOr(cfg.c2sPort, say)
	cfg.componentPort = freeOr(cfg.componentPort, say)
	cfg.pgPort = freeOr(cfg.pgPort, say)
	host, portStr, _ := net.SplitHostPort(cfg.httpAddr)
	if port, err := strconv.Atoi(portStr); err == nil && port != 0 && host == "127.0.0.1" && !servers.PortFree(port) {
		cfg.httpAddr = net.JoinHostPort(host, strconv.Itoa(freeOr(port, say)))
	}

	start := time.Now()
	pg, err := servers.StartPostgres(ctx, servers.PostgresOptions{Dir: filepath.Join(cfg.dir, "postgres"), Port: cfg.pgPort})
	if err != nil {
		return 1, err
	}
	defer closeServer(say, "postgres", pg.Close)
	say("postgres ready at %s (%v)", pg.Addr(), time.Since(start).Round(time.Millisecond))

	start = time.Now()
	xs, err := startXMPP(ctx, cfg)
	if err != nil {
		return 1, err
	}
	defer closeServer(say, cfg.xmpp, xs.Close)
	say("%s ready: c2s %s, component %s (%v)", cfg.xmpp, xs.C2SAddr(), xs.ComponentAddr(), time.Since(start).Round(time.Millisecond))
	for _, d := range accounts(cfg) {
		if err := xs.RegisterUser(ctx, d, d); err != nil {
			return 1, err
		}
	}

	bin := cfg.bin
	if cfg.build {
		say("building %s", bin)
		build := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/iotgate")
		build.Stdout, build.Stderr = out, os.Stderr
		if err := build.Run(); err != nil {
			return 1, fmt.Errorf("build iotgate: %w", err)
		}
	}
	return runIotgate(ctx, cfg, bin, pg, xs, say, out)
}

// runIotgate runs bin with its log on out until it exits or ctx ends;
// then it stops it with SIGTERM, and SIGKILL if it takes too long.
func runIotgate(ctx context.Context, cfg config, bin string, pg *servers.Postgres, xs servers.XMPPServer, say func(string, ...any), out io.Writer) (int, error) {
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(),
		"IOTGATE_XMPP_ADDR="+xs.ComponentAddr(),
		"IOTGATE_DOMAIN="+cfg.component,
		"IOTGATE_SECRET="+cfg.secret,
		"IOTGATE_DATABASE_URL="+pg.DSN(),
		"IOTGATE_HTTP_ADDR="+cfg.httpAddr,
		"IOTGATE_LOG_LEVEL="+cfg.logLevel,
		"IOTGATE_ADMIN_TOKEN="+cfg.adminToken,
	)
	cmd.Stdout, cmd.Stderr = out, os.Stderr
	// Its own process group: Ctrl-C reaches only us, and we stop iotgate
	// before the servers it depends on. If we die, it gets SIGTERM.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		return 1, fmt.Errorf("start %s: %w", bin, err)
	}
	exited := make(chan error, 1)
	go func() {
		err := cmd.Wait()
		// Whatever it started itself goes with it.
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		exited <- err
	}()

	// The simulated devices stop before iotgate, and with it if it exits.
	simCtx, stopSim := context.WithCancel(ctx)
	simDone := make(chan struct{})
	defer func() {
		stopSim()
		<-simDone
	}()
	go func() {
		defer close(simDone)
		// The banner, once the API accepts connections.
		for range 300 {
			if c, err := net.DialTimeout("tcp", cfg.httpAddr, time.Second); err == nil {
				c.Close()
				banner(out, cfg, pg, xs)
				simulate(simCtx, cfg, xs, say, out)
				return
			}
			select {
			case <-simCtx.Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()

	select {
	case err := <-exited:
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode(), fmt.Errorf("iotgate exited: %w", err)
		}
		if err != nil {
			return 1, fmt.Errorf("iotgate: %w", err)
		}
		say("iotgate exited")
		return 0, nil
	case <-ctx.Done():
	}
	stopSim()
	<-simDone
	say("stopping iotgate")
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(30 * time.Second):
		say("iotgate did not stop in 30s: killing it")
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
	}
	return 0, nil
}

// banner tells the developer where everything is.
func banner(out io.Writer, cfg config, pg *servers.Postgres, xs servers.XMPPServer) {
	var devices []string
	for _, d := range accounts(cfg) {
		devices = append(devices, fmt.Sprintf("%s@%s (password %q)", d, xs.Domain(), d))
	}
	fmt.Fprintf(out, `
================================================================
 iotgate is running.
   Web console:  http://%[1]s/console/  (paste the admin token below)
   Swagger UI:   http://%[1]s/swagger/index.html
   REST API:     http://%[1]s/v1/...
   Admin token:  export TOKEN=%[10]s
                 curl -H "Authorization: Bearer $TOKEN" http://%[1]s/v1/devices
                 (Swagger UI: Authorize, then "Bearer $TOKEN")
   Devices log in to the XMPP server (%[2]s) at %[3]s:
     %[4]s
     STARTTLS is offered (self-signed certificate) but not required;
     SASL PLAIN and SCRAM work. Send to the component %[5]s.
   iotgate is component %[5]s at %[6]s (secret in IOTGATE_DEV_SECRET).
   PostgreSQL: psql '%[7]s'
   Server logs: %[8]s
 Ctrl-C stops everything and removes %[9]s.
================================================================

`, cfg.httpAddr, cfg.xmpp, xs.C2SAddr(), strings.Join(devices, "\n     "), cfg.component,
		xs.ComponentAddr(), pg.DSN(), serverLogs(cfg, pg), cfg.dir, cfg.adminToken)
}

// simulate waits until iotgate is ready, registers the thermostat schema
// and the simulated devices with it, tells the developer how to command
// them, and runs them until ctx ends.
func simulate(ctx context.Context, cfg config, xs servers.XMPPServer, say func(string, ...any), out io.Writer) {
	if len(cfg.sim) == 0 {
		return
	}
	base := "http://" + cfg.httpAddr
	if !waitReady(ctx, base, 2*time.Minute) {
		if ctx.Err() == nil {
			say("iotgate is not ready after 2 minutes: no simulated devices")
		}
		return
	}
	var jids []string
	devices := make([]sim.Device, 0, len(cfg.sim))
	for _, u := range cfg.sim {
		jids = append(jids, u+"@"+xs.Domain())
		devices = append(devices, sim.Device{User: u, Password: u})
	}
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	_, err := sim.Register(rctx, nil, sim.Registration{BaseURL: base, Schema: "thermostat", Kind: "thermostat",
		JIDs: jids, Labels: map[string]string{"source": "iotgate-dev"}, Token: cfg.adminToken})
	cancel()
	if err != nil {
		say("no simulated devices: register them with iotgate: %v", err)
		return
	}
	simBanner(out, cfg, jids)
	log := slog.New(slog.NewTextHandler(out, nil)).With("sim", "devicesim")
	err = sim.Run(ctx, sim.Config{
		Addr: xs.C2SAddr(), Domain: xs.Domain(), Component: cfg.component, Kind: "thermostat",
		Devices: devices, Rate: cfg.simRate, Via: "iq", SlowDelay: 5 * time.Second, Log: log,
	}, &sim.Stats{})
	if err != nil {
		say("simulated devices: %v", err)
	}
}

// waitReady polls base's /readyz until it answers 200, ctx ends or within
// passes; it reports whether iotgate is ready.
func waitReady(ctx context.Context, base string, within time.Duration) bool {
	client := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/readyz", nil)
		if err != nil {
			return false
		}
		if resp, err := client.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return true
			}
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(200 * time.Millisecond):
		}
	}
	return false
}

// simBanner tells the developer what the simulated devices do and how to
// command one.
func simBanner(out io.Writer, cfg config, jids []string) {
	period := time.Duration(float64(time.Second) / cfg.simRate).Round(100 * time.Millisecond)
	fmt.Fprintf(out, `
================================================================
 Simulated thermostats (schema "thermostat"), one reading every %[1]s each:
     %[2]s
   Watch their temperatures move on a chart in the web console:
     http://%[3]s/console/#/devices/%[4]s
   Their readings: GET http://%[3]s/v1/devices/%[4]s/readings
   Send one a command from the Swagger UI
   (http://%[3]s/swagger/index.html), "commands" section,
   POST /v1/devices/{jid}/commands with jid %[5]s and the body
     {"type": "set", "payload": "<set xmlns='urn:example:thermostat'><target>23.5</target><mode>heat</mode></set>"}
   It answers with its <state>; its next readings head for 23.5.
   {"type": "get", "payload": "<get xmlns='urn:example:thermostat'/>"} asks for the state;
   any other element gets feature-not-implemented.
   More devices, misbehaving ones: go run ./cmd/devicesim -h
================================================================

`, period, strings.Join(jids, ", "), cfg.httpAddr, strings.ReplaceAll(url.PathEscape(jids[0]), "@", "%40"), jids[0])
}

// accounts returns the demo accounts and the simulated ones, each once.
func accounts(cfg config) []string {
	seen := map[string]bool{}
	var all []string
	for _, d := range append(append([]string{}, cfg.devices...), cfg.sim...) {
		if !seen[d] {
			seen[d] = true
			all = append(all, d)
		}
	}
	return all
}

// splitList splits a comma-separated list, dropping empty items.
func splitList(s string) []string {
	var items []string
	for _, d := range strings.Split(s, ",") {
		if d = strings.TrimSpace(d); d != "" {
			items = append(items, d)
		}
	}
	return items
}

// serverLogs lists the log files of the servers.
func serverLogs(cfg config, pg *servers.Postgres) string {
	x := filepath.Join(cfg.dir, "xmpp", "prosody.log")
	if cfg.xmpp == "ejabberd" {
		x = filepath.Join(cfg.dir, "xmpp", "ejabberd.log")
	}
	return pg.LogPath() + ", " + mustAbs(x)
}

func mustAbs(p string) string {
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return p
}

// startXMPP starts the XMPP server cfg asks for.
func startXMPP(ctx context.Context, cfg config) (servers.XMPPServer, error) {
	opts := servers.XMPPOptions{
		Domain:        cfg.domain,
		Components:    map[string]string{cfg.component: cfg.secret},
		Dir:           filepath.Join(cfg.dir, "xmpp"),
		C2SPort:       cfg.c2sPort,
		ComponentPort: cfg.componentPort,
		// A restarted iotgate replaces a connection the server still
		// holds for its predecessor.
		KickOldComponent: true,
	}
	if cfg.xmpp == "ejabberd" {
		return servers.StartEjabberd(ctx, opts)
	}
	return servers.StartProsody(ctx, opts)
}

// freeOr returns port if it is free, else a free port, saying so.
func freeOr(port int, say func(string, ...any)) int {
	if servers.PortFree(port) {
		return port
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return port // let the server report the conflict
	}
	defer l.Close()
	free := l.Addr().(*net.TCPAddr).Port
	say("port %d is busy: using %d", port, free)
	return free
}

// closeServer closes a server and reports a failure.
func closeServer(say func(string, ...any), name string, closeFn func() error) {
	if err := closeFn(); err != nil {
		say("stop %s: %v", name, err)
		return
	}
	say("%s stopped and removed", name)
}
