// Command iotgate-bench measures iotgate on this machine: it starts a
// throwaway PostgreSQL and XMPP server (Prosody, or ejabberd with
// -server ejabberd) on 127.0.0.1, builds and runs the iotgate binary
// against them, runs each scenario -runs times, and prints a Markdown
// table of the median, min and max of every figure, then the machine it
// ran on. Progress goes to stderr, the table to stdout.
//
// Scenarios (-scenarios, comma-separated; all by default):
//
//   - ingest: devices send readings by message and by IQ (with a window
//     of outstanding IQs per device), to iotgate and, in the same run, to a
//     null sink component that only counts them; readings/s are counted in
//     the database.
//   - commands: sync REST commands to devices that answer at once, at
//     each -concurrency, against a component sending the same IQs
//     straight to the devices (the raw ceiling).
//   - reads: GET state and a readings page at -reads-concurrency.
//   - events: the ingest message load without and with 100 SSE streams
//     and 2 webhooks attached, and the latency from a reading's stamp to
//     the streams at a paced load.
//   - instances: on ejabberd, the IQ ingest and the REST commands (at
//     each -concurrency) through one iotgate instance, then split
//     over two on the same servers and cores, with each instance's CPU;
//     then kill -9 of the second during IQ ingest: how long until every
//     device's readings are acknowledged again and a command through the
//     survivor succeeds. On Prosody (one connection per component) the
//     takeover of a standby instance after kill -9 of the active one.
//   - scale: start-up time and RSS with many registered devices and
//     some online, and history pages among many stored readings.
//
// Load stays on loopback and is bounded in count and time. -quick is a
// smoke run (tiny counts, one run) that the tests run.
//
// Usage:
//
//	go run ./cmd/iotgate-bench                   # what make bench runs
//	go run ./cmd/iotgate-bench -quick -scenarios ingest,reads
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// scenarioNames are the scenarios, in the order they run (scale last: it
// replaces the main iotgate with its own).
var scenarioNames = []string{"ingest", "commands", "reads", "events", "instances", "scale"}

// config is everything the bench is told.
type config struct {
	server    string
	scenarios []string
	runs      int
	quick     bool
	fsync     bool
	// gateLogLevel is iotgate's IOTGATE_LOG_LEVEL; its log is shown
	// when a run fails.
	gateLogLevel string
	// logDir gets the servers' and iotgate's logs when they are closed.
	logDir string
	// profileDir gets a CPU profile of iotgate for each load of each run.
	profileDir string

	ingestDevices, ingestReadings, ingestWindow int

	cmdDevices  int
	concurrency []int
	duration    time.Duration // of each commands and reads load

	readsConcurrency int

	scaleDevices, scaleOnline, scaleReadings int
	historyRequests                          int
}

// Bounds on what the flags may ask for, so that the load stays bounded.
const (
	maxDevices  = 1_000_000 // scale: registered (rows in SQL, no accounts)
	maxOnline   = 2_000     // ingest and commands: devices that send
	maxLoggedIn = 10_000    // scale: devices logged in at once
	maxReadings = 20_000_000
	maxDuration = time.Minute
	maxRuns     = 10
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// run parses args, runs the bench and writes the table to stdout. It
// returns the exit status: 0, 1 for a failed run, 2 for bad flags.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cfg, err := parseFlags(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(stderr, "iotgate-bench:", err)
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	if err := bench(ctx, cfg, log, stdout); err != nil {
		fmt.Fprintln(stderr, "iotgate-bench:", err)
		return 1
	}
	return 0
}

// parseFlags reads the command line into a config.
func parseFlags(args []string, stderr io.Writer) (config, error) {
	fs := flag.NewFlagSet("iotgate-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg config
	scenarios := fs.String("scenarios", strings.Join(scenarioNames, ","), "comma-separated scenarios to run: "+strings.Join(scenarioNames, ", "))
	fs.StringVar(&cfg.server, "server", "prosody", "XMPP server: prosody or ejabberd")
	fs.IntVar(&cfg.runs, "runs", 3, "runs of each scenario (the table shows median, min and max)")
	fs.BoolVar(&cfg.quick, "quick", false, "smoke run: tiny counts, 1 run (overrides the count flags)")
	fs.BoolVar(&cfg.fsync, "fsync", true, "run PostgreSQL with fsync on (its default; off measures less of the disk)")
	fs.StringVar(&cfg.gateLogLevel, "gate-log-level", "warn", "iotgate's log level (its log is printed if a run fails)")
	fs.StringVar(&cfg.profileDir, "profile", "", "directory that gets a CPU profile (pprof) of iotgate for each load of each run, taken over the load's first -duration (go tool pprof -top FILE; profiling adds a little to iotgate's CPU), and a heap profile of each scale run once its devices are online (scale-heap-N.pprof)")
	fs.StringVar(&cfg.logDir, "log-dir", "", "directory that gets the servers' and each iotgate process's logs at the end (debug level with -gate-log-level debug)")
	fs.IntVar(&cfg.ingestDevices, "ingest-devices", 20, "ingest: devices sending at once")
	fs.IntVar(&cfg.ingestReadings, "ingest-readings", 500, "ingest: readings each device sends per load")
	fs.IntVar(&cfg.ingestWindow, "ingest-window", 16, "ingest: outstanding IQs per device")
	fs.IntVar(&cfg.cmdDevices, "command-devices", 16, "commands: devices the commands go to")
	conc := fs.String("concurrency", "1,16,64", "commands: comma-separated concurrency levels (the last is compared with the targets)")
	fs.DurationVar(&cfg.duration, "duration", 5*time.Second, "commands and reads: length of each load")
	fs.IntVar(&cfg.readsConcurrency, "reads-concurrency", 64, "reads: concurrent requests")
	fs.IntVar(&cfg.scaleDevices, "scale-devices", 100_000, "scale: registered devices (rows in SQL, up to 1000000; issue #17's row is 1000000)")
	fs.IntVar(&cfg.scaleOnline, "scale-online", 1_000, "scale: devices logged in (up to 10000; issue #17's row is 10000)")
	fs.IntVar(&cfg.scaleReadings, "scale-readings", 10_000_000, "scale: stored readings (spread over 1000 devices)")
	fs.IntVar(&cfg.historyRequests, "history-requests", 500, "scale: history pages requested per query shape")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	for s := range strings.SplitSeq(*scenarios, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		if !slices.Contains(scenarioNames, s) {
			return cfg, fmt.Errorf("-scenarios: unknown scenario %q (want some of %s)", s, strings.Join(scenarioNames, ","))
		}
		cfg.scenarios = append(cfg.scenarios, s)
	}
	cfg.concurrency = nil
	for s := range strings.SplitSeq(*conc, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 || n > 1024 {
			return cfg, fmt.Errorf("-concurrency: %q: want numbers from 1 to 1024", s)
		}
		cfg.concurrency = append(cfg.concurrency, n)
	}
	if cfg.quick {
		cfg.runs = 1
		cfg.ingestDevices, cfg.ingestReadings, cfg.ingestWindow = 4, 50, 8
		cfg.cmdDevices = 4
		cfg.concurrency = []int{1, 8}
		cfg.duration = 500 * time.Millisecond
		cfg.readsConcurrency = 8
		cfg.scaleDevices, cfg.scaleOnline, cfg.scaleReadings = 1_000, 20, 100_000
		cfg.historyRequests = 50
	}
	switch {
	case cfg.server != "prosody" && cfg.server != "ejabberd":
		return cfg, fmt.Errorf("-server %q: want prosody or ejabberd", cfg.server)
	case len(cfg.scenarios) == 0:
		return cfg, errors.New("-scenarios: none given")
	case cfg.runs < 1 || cfg.runs > maxRuns:
		return cfg, fmt.Errorf("-runs %d: want 1 to %d", cfg.runs, maxRuns)
	case cfg.ingestDevices < 1 || cfg.ingestDevices > maxOnline || cfg.ingestReadings < 1 || cfg.ingestReadings > 100_000 ||
		cfg.ingestWindow < 1 || cfg.ingestWindow > 64:
		return cfg, fmt.Errorf("ingest flags: want 1 to %d devices, 1 to 100000 readings, a window of 1 to 64", maxOnline)
	case cfg.cmdDevices < 1 || cfg.cmdDevices > maxOnline:
		return cfg, fmt.Errorf("-command-devices: want 1 to %d", maxOnline)
	case cfg.duration <= 0 || cfg.duration > maxDuration:
		return cfg, fmt.Errorf("-duration %s: want up to %s", cfg.duration, maxDuration)
	case cfg.readsConcurrency < 1 || cfg.readsConcurrency > 1024:
		return cfg, errors.New("-reads-concurrency: want 1 to 1024")
	case cfg.scaleDevices < 1 || cfg.scaleDevices > maxDevices || cfg.scaleOnline < 1 || cfg.scaleOnline > min(maxLoggedIn, cfg.scaleDevices) ||
		cfg.scaleReadings < 1 || cfg.scaleReadings > maxReadings || cfg.historyRequests < 1 || cfg.historyRequests > 100_000:
		return cfg, fmt.Errorf("scale flags: want 1 to %d devices, up to %d (and no more than devices) online, 1 to %d readings, 1 to 100000 history requests",
			maxDevices, maxLoggedIn, maxReadings)
	}
	return cfg, nil
}

// scenario is one scenario, set up once and run -runs times.
type scenario interface {
	run(ctx context.Context, res *results) error
	close()
}

// bench sets up the servers, runs the chosen scenarios and writes the
// table and the machine to stdout.
func bench(ctx context.Context, cfg config, log *slog.Logger, stdout io.Writer) error {
	began := time.Now()
	loadBefore := loadAvg()
	busy := busyWarning(loadBefore, numCPU())
	if busy != "" {
		log.Warn(busy)
	}
	buildDir, err := os.MkdirTemp("", "iotgate-bench-bin-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(buildDir)
	e, err := setup(ctx, cfg, log, buildDir)
	if err != nil {
		return fmt.Errorf("setup: %w", err)
	}
	defer e.close()
	res := &results{profileDir: cfg.profileDir}
	for _, name := range scenarioNames {
		if !slices.Contains(cfg.scenarios, name) {
			continue
		}
		log.Info("scenario: setting up", "scenario", name)
		var s scenario
		switch name {
		case "ingest":
			s, err = newIngest(ctx, e)
		case "commands":
			s, err = newCommands(ctx, e)
		case "reads":
			s, err = newReads(ctx, e)
		case "events":
			s, err = newEvents(ctx, e)
		case "instances":
			s, err = newInstances(ctx, e)
		case "scale":
			s, err = newScale(ctx, e, res)
		}
		if err != nil {
			return fmt.Errorf("%s: set up: %w", name, err)
		}
		for i := range cfg.runs {
			log.Info("scenario: run", "scenario", name, "run", i+1, "of", cfg.runs)
			t0 := time.Now()
			if err := s.run(ctx, res); err != nil {
				s.close()
				if e.gate != nil {
					log.Error("iotgate log (tail)", "log", tail(e.gate.Logs().String(), 60))
					log.Error("iotgate metrics", "metrics", e.gateMetrics(ctx))
				}
				return fmt.Errorf("%s: run %d: %w", name, i+1, err)
			}
			log.Info("scenario: run done", "scenario", name, "run", i+1, "took", time.Since(t0).Round(time.Millisecond))
		}
		s.close()
	}
	if err := res.writeTable(stdout); err != nil {
		return err
	}
	for _, n := range res.notes {
		fmt.Fprintf(stdout, "\nNote: %s\n", n)
	}
	fmt.Fprintf(stdout, "\nCPU use during each load, median over the runs, in %% of one core (the machine has %d):\n\n", numCPU())
	if err := res.writeCPUTable(stdout, cfg.server); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "\nMachine (the bench, iotgate and the servers share it):\n\n")
	for _, l := range machine(ctx, e) {
		fmt.Fprintf(stdout, "- %s\n", l)
	}
	fmt.Fprintf(stdout, "- load average at the start: %s\n", loadBefore)
	if busy != "" {
		fmt.Fprintf(stdout, "- WARN: %s\n", busy)
	}
	fmt.Fprintf(stdout, "- iotgate settings: IOTGATE_DEVICE_RATE=1000000, IOTGATE_DEVICE_BURST=1000000 (defaults 500/1000 would cap ingest), IOTGATE_API_RATE=0 (no per-token request limit), IOTGATE_MAX_COMMANDS_IN_FLIGHT=10000, IOTGATE_EVENT_MAX_STREAMS_PER_TOKEN=1000 (the 100 streams share a token), IOTGATE_WEBHOOK_ALLOW_PRIVATE=1 (the receiver is on 127.0.0.1), IOTGATE_MAX_HEAVY_PER_TOKEN=1000, IOTGATE_MAX_HEAVY=1000 (the 64 concurrent pages share a token), IOTGATE_LOG_LEVEL=warn\n")
	fmt.Fprintf(stdout, "- command line: iotgate-bench %s\n", cfg.String())
	fmt.Fprintf(stdout, "- took: %s\n", time.Since(began).Round(time.Second))
	return nil
}

// String returns the flags that reproduce cfg.
func (cfg config) String() string {
	conc := make([]string, len(cfg.concurrency))
	for i, c := range cfg.concurrency {
		conc[i] = strconv.Itoa(c)
	}
	return fmt.Sprintf("-server %s -scenarios %s -runs %d -fsync=%t -ingest-devices %d -ingest-readings %d -ingest-window %d "+
		"-command-devices %d -concurrency %s -duration %s -reads-concurrency %d -scale-devices %d -scale-online %d -scale-readings %d -history-requests %d",
		cfg.server, strings.Join(cfg.scenarios, ","), cfg.runs, cfg.fsync, cfg.ingestDevices, cfg.ingestReadings, cfg.ingestWindow,
		cfg.cmdDevices, strings.Join(conc, ","), cfg.duration, cfg.readsConcurrency, cfg.scaleDevices, cfg.scaleOnline, cfg.scaleReadings, cfg.historyRequests)
}

// numCPU returns the number of CPUs this process may use.
func numCPU() int { return runtime.NumCPU() }

// memTotal returns MemTotal of /proc/meminfo.
func memTotal() string {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return "unknown"
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "MemTotal:"); ok {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

// goVersion returns the version of the go command that built iotgate.
func goVersion() string {
	out, err := exec.Command("go", "env", "GOVERSION").Output()
	if err != nil {
		return runtime.Version()
	}
	return strings.TrimSpace(string(out))
}

// packageVersion returns the Debian package version of name.
func packageVersion(name string) string {
	out, err := exec.Command("dpkg-query", "-W", "-f", "${Version}", name).Output()
	if err != nil {
		return "(version unknown)"
	}
	return strings.TrimSpace(string(out))
}

// loadAvg returns /proc/loadavg's first three fields.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// busyWarning returns a warning if the 1-minute load average avg (as
// loadAvg returns it) was above half the cores: other work then competes
// with the bench for CPU and its figures are low and noisy. Else "".
func busyWarning(avg string, cores int) string {
	f := strings.Fields(avg)
	if len(f) == 0 {
		return ""
	}
	v, err := strconv.ParseFloat(f[0], 64)
	if err != nil || v <= 0.5*float64(cores) {
		return ""
	}
	return fmt.Sprintf("the machine was busy before the run: 1-minute load average %.2f > 0.5 × %d cores; the figures are not comparable", v, cores)
}
