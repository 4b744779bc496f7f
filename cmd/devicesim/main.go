// Command devicesim simulates IoT devices talking to iotgate: it logs in
// -devices XMPP accounts (-prefix1, -prefix2, ...), subscribes each to
// iotgate's presence, sends readings of an example schema at -rate (by IQ
// or message), answers commands, and prints a summary at the end. Some
// devices can be made slow, silent or offline, and some readings invalid,
// for demos and tests. It is bounded: -duration, at most 1000 devices and
// 50 readings per second each, and loopback addresses only unless
// -allow-remote.
//
// The accounts must exist on the XMPP server (prosodyctl register,
// ejabberdctl register; make dev creates thermo1..3 with their names as
// passwords). -register-with-iotgate registers the schema and devices with
// iotgate over REST first.
//
// Usage:
//
//	go run ./cmd/devicesim -devices 3 -register-with-iotgate http://127.0.0.1:8080
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/iotgate/iotgate/internal/device/sim"
)

// MaxDuration bounds -duration.
const MaxDuration = 24 * time.Hour

// config is everything devicesim is told.
type config struct {
	sim          sim.Config
	registerURL  string
	token        string
	schemaName   string
	duration     time.Duration
	quiet        bool
	verbose      bool
	allowRemote  bool
	slow, silent string
	offline      string
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// run parses args, runs the simulation and prints its summary on stdout;
// the log goes to stderr. It returns the exit status: 2 for bad flags, 1
// if registration failed or no device ever logged in.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cfg, err := parseConfig(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "devicesim: %v\n", err)
		return 2
	}
	level := slog.LevelInfo
	switch {
	case cfg.quiet:
		level = slog.LevelWarn
	case cfg.verbose:
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	cfg.sim.Log = log

	ctx, cancel := context.WithTimeout(ctx, cfg.duration)
	defer cancel()
	if cfg.registerURL != "" {
		var jids []string
		for _, d := range cfg.sim.Devices {
			jids = append(jids, d.User+"@"+cfg.sim.Domain)
		}
		n, err := sim.Register(ctx, nil, sim.Registration{BaseURL: cfg.registerURL, Schema: cfg.schemaName, Kind: cfg.sim.Kind,
			JIDs: jids, Labels: map[string]string{"source": "devicesim"}, Token: cfg.token})
		if err != nil {
			fmt.Fprintf(stderr, "devicesim: register with iotgate: %v\n", err)
			return 1
		}
		log.Info("registered with iotgate", "schema", cfg.schemaName, "devices", len(jids), "new", n)
	}

	var stats sim.Stats
	start := time.Now()
	if err := sim.Run(ctx, cfg.sim, &stats); err != nil {
		fmt.Fprintf(stderr, "devicesim: %v\n", err)
		return 2
	}
	sum := stats.Snapshot()
	fmt.Fprintf(stdout, "devicesim: %d %s devices for %s: %s\n", len(cfg.sim.Devices), cfg.sim.Kind,
		time.Since(start).Round(time.Millisecond), sum)
	if sum.LoggedIn == 0 && sum.LoginFailures > 0 {
		return 1
	}
	return 0
}

// parseConfig reads the flags; usage and flag errors go to stderr.
func parseConfig(args []string, stderr io.Writer) (config, error) {
	var cfg config
	fs := flag.NewFlagSet("devicesim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: devicesim [flags]\n\n"+
			"Simulates IoT devices that log in to an XMPP server, send readings to iotgate\n"+
			"and answer its commands, then prints a summary.\n\n"+
			"-slow, -silent and -offline take a count of devices (2) or a fraction (0.25,\n"+
			"25%%); the roles go to the last devices, so the first stays well-behaved.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	s := &cfg.sim
	var n int
	var prefix, password string
	fs.StringVar(&s.Addr, "addr", "127.0.0.1:15222", "`host:port` of the XMPP server's client (c2s) listener")
	fs.StringVar(&s.Domain, "domain", "localhost", "XMPP domain of the device accounts")
	fs.StringVar(&s.Component, "component", "iot.localhost", "iotgate's component domain, where readings go")
	fs.IntVar(&n, "devices", 3, "number of devices")
	fs.StringVar(&prefix, "prefix", "thermo", "account names are the prefix and a number from 1")
	fs.StringVar(&password, "password", "{user}", "account password; {user} stands for the account name")
	fs.StringVar(&s.Kind, "schema", "thermostat", "device model, after its example schema: "+strings.Join(sim.Kinds, " or "))
	fs.StringVar(&cfg.schemaName, "schema-name", "", "name of the schema in iotgate for -register-with-iotgate (default: -schema)")
	fs.StringVar(&cfg.registerURL, "register-with-iotgate", "", "iotgate's REST `URL` (http://127.0.0.1:8080): register the schema if missing and the devices first")
	fs.StringVar(&cfg.token, "token", os.Getenv("IOTGATE_TOKEN"), "iotgate API token for -register-with-iotgate (scopes schemas:read, schemas:write, devices:write; default $IOTGATE_TOKEN)")
	fs.Float64Var(&s.Rate, "rate", 0.2, "readings per second per device (0: none, just answer commands)")
	fs.StringVar(&s.Via, "via", "iq", "send readings by iq (acknowledged) or message (fire and forget)")
	fs.IntVar(&s.Count, "count", 0, "readings per device, then stop (0: until -duration)")
	fs.Float64Var(&s.Invalid, "invalid", 0, "fraction of readings that break the schema (0 to 1, spread evenly)")
	fs.StringVar(&cfg.slow, "slow", "0", "devices that answer commands after -slow-delay (count or fraction)")
	fs.DurationVar(&s.SlowDelay, "slow-delay", 5*time.Second, "how late slow devices answer")
	fs.StringVar(&cfg.silent, "silent", "0", "devices that never answer commands (count or fraction)")
	fs.StringVar(&cfg.offline, "offline", "0", "devices that don't log in (count or fraction)")
	fs.DurationVar(&s.OfflineAfter, "offline-after", 0, "if set, offline devices log in and log out for good after this long")
	fs.BoolVar(&s.NoPresence, "no-presence", false, "don't subscribe to iotgate or send presence (iotgate sees the devices offline)")
	fs.IntVar(&s.Priority, "priority", 0, "presence priority (-128 to 127)")
	fs.BoolVar(&s.Verify, "verify-tls", false, "verify the server's TLS certificate (throwaway servers use self-signed ones)")
	seed := fs.Uint64("seed", 1, "seed of the devices' noise")
	fs.DurationVar(&cfg.duration, "duration", time.Minute, "run this long, at most 24h (Ctrl-C stops earlier)")
	fs.BoolVar(&cfg.quiet, "quiet", false, "log only problems; print the summary")
	fs.BoolVar(&cfg.verbose, "v", false, "log every reading too")
	fs.BoolVar(&cfg.allowRemote, "allow-remote", false, "allow a non-loopback -addr and -register-with-iotgate")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	s.Seed = *seed
	if cfg.schemaName == "" {
		cfg.schemaName = s.Kind
	}
	if n < 1 || n > sim.MaxDevices {
		return cfg, fmt.Errorf("-devices %d: want 1 to %d", n, sim.MaxDevices)
	}
	if prefix == "" {
		return cfg, errors.New("-prefix is empty")
	}
	if cfg.duration <= 0 || cfg.duration > MaxDuration {
		return cfg, fmt.Errorf("-duration %s: want more than 0 and at most %s", cfg.duration, MaxDuration)
	}
	if s.SlowDelay < 0 || s.OfflineAfter < 0 {
		return cfg, errors.New("-slow-delay and -offline-after can't be negative")
	}
	var counts [3]int
	for i, f := range []struct{ name, value string }{{"slow", cfg.slow}, {"silent", cfg.silent}, {"offline", cfg.offline}} {
		c, err := share(f.value, n)
		if err != nil {
			return cfg, fmt.Errorf("-%s: %w", f.name, err)
		}
		counts[i] = c
	}
	if counts[0]+counts[1]+counts[2] > n {
		return cfg, fmt.Errorf("-slow, -silent and -offline add up to %d devices, more than the %d there are", counts[0]+counts[1]+counts[2], n)
	}
	for i := 1; i <= n; i++ {
		user := prefix + strconv.Itoa(i)
		s.Devices = append(s.Devices, sim.Device{User: user, Password: strings.ReplaceAll(password, "{user}", user)})
	}
	// The last devices misbehave: offline last, then silent, then slow.
	k := n
	for i, c := range []int{counts[2], counts[1], counts[0]} {
		for ; c > 0; c-- {
			k--
			b := &s.Devices[k].Behaviour
			switch i {
			case 0:
				b.Offline = true
			case 1:
				b.Silent = true
			case 2:
				b.Slow = true
			}
		}
	}
	if err := s.Check(); err != nil {
		return cfg, err
	}
	if !cfg.allowRemote {
		if err := loopbackAddr(s.Addr); err != nil {
			return cfg, fmt.Errorf("-addr: %w", err)
		}
		if cfg.registerURL != "" {
			u, err := url.Parse(cfg.registerURL)
			if err != nil || u.Host == "" {
				return cfg, fmt.Errorf("-register-with-iotgate %q: not a URL", cfg.registerURL)
			}
			if err := loopbackHost(u.Hostname()); err != nil {
				return cfg, fmt.Errorf("-register-with-iotgate: %w", err)
			}
		}
	}
	return cfg, nil
}

// share parses a count ("2") or a fraction ("0.25", "25%") of n devices;
// a fraction rounds to the nearest count.
func share(v string, n int) (int, error) {
	v = strings.TrimSpace(v)
	if c, err := strconv.Atoi(v); err == nil {
		if c < 0 || c > n {
			return 0, fmt.Errorf("%d devices: want 0 to %d", c, n)
		}
		return c, nil
	}
	pct := strings.HasSuffix(v, "%")
	f, err := strconv.ParseFloat(strings.TrimSuffix(v, "%"), 64)
	if err != nil || math.IsNaN(f) {
		return 0, fmt.Errorf("%q: want a count (2) or a fraction (0.25 or 25%%)", v)
	}
	if pct {
		f /= 100
	}
	if f < 0 || f > 1 {
		return 0, fmt.Errorf("%q: a fraction is 0 to 1 (0%% to 100%%)", v)
	}
	return int(math.Round(f * float64(n))), nil
}

// loopbackAddr checks that hostport is on the loopback interface.
func loopbackAddr(hostport string) error {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return err
	}
	return loopbackHost(host)
}

// loopbackHost checks that host is localhost or a loopback IP, without
// resolving anything.
func loopbackHost(host string) error {
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("%s is not a loopback address (use -allow-remote to mean it)", host)
}
