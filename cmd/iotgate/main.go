// Command iotgate runs the iotgate XMPP component and its REST API.
//
// This is the only place where the parts are wired together: configuration
// is read here and handed to constructors; nothing else reads the
// environment. An App (app.go) is built from the Config (New), run (Run)
// and stopped in reverse order of start (Shutdown); serve does just that.
//
// It may import every package of the project; nothing imports it (the
// rule, like the others, is checked by internal/arch).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"strconv"
	"syscall"

	"github.com/iotgate/iotgate/schemas/xsd"
)

// version is set at build time with -ldflags "-X main.version=..."; it falls
// back to the module version from the build info.
var version = ""

func main() {
	// A schema's trial compile re-runs this binary: serve it, before
	// anything else (it exits).
	xsd.ServeTrialCompile()
	os.Exit(run(context.Background(), os.Args[1:], os.Getenv, os.Stdout, os.Stderr))
}

// run is main with its dependencies passed in, so tests can drive it.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	cfg, rest, err := parseConfig(args, getenv, stdout)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "iotgate: %v\n", err)
		return 2
	}
	log := newLogger(cfg, stderr)
	applyGC(cfg, getenv, log)

	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()

	if len(rest) > 0 {
		switch rest[0] {
		case "migrate":
			return migrateCommand(ctx, cfg, rest[1:], log, stdout, stderr)
		case "token":
			return tokenCommand(ctx, cfg, rest[1:], log, stdout, stderr)
		case "serve":
		default:
			fmt.Fprintf(stderr, "iotgate: unknown command %q (see iotgate --help)\n", rest[0])
			return 2
		}
	}
	if err := serve(ctx, cfg, log); err != nil {
		log.Error("iotgate stopped", "err", err)
		return 1
	}
	return 0
}

// minMemoryLimit is the smallest IOTGATE_MEMORY_LIMIT accepted: below
// it the collector would run almost all the time.
const minMemoryLimit = 64 << 20

// applyGC sets the garbage collector's pace (IOTGATE_GC_PERCENT) and soft
// memory limit (IOTGATE_MEMORY_LIMIT), each unless the operator set the Go
// runtime's own variable (GOGC, GOMEMLIMIT), which then wins.
//
// Why not Go's default GOGC of 100: ingesting readings allocates a few KiB
// per reading that live only until its commit, while the live heap is
// small (tens of MiB), so at 100 the collector runs many times a second
// and its marking and the allocation it slows took about a quarter of
// iotgate's CPU per reading. At 400 the heap may grow to five times the
// live data between collections, which with the default limit of 1 GiB is
// bounded thus: a live heap up to ~200 MiB gets the full 400; above it
// the limit paces the collector, down to Go's usual pace (100) at a live
// heap of ~512 MiB; only a live heap over that collects more often than
// Go's default would, and over the limit itself the runtime caps the
// collector at half the CPU. So a deployment whose live heap nears
// 512 MiB should raise the limit (or set 0).
func applyGC(cfg Config, getenv func(string) string, log *slog.Logger) {
	gogc, limit := getenv("GOGC"), getenv("GOMEMLIMIT")
	if gogc == "" {
		debug.SetGCPercent(cfg.GCPercent)
		gogc = strconv.Itoa(cfg.GCPercent)
	}
	if limit == "" && cfg.MemoryLimit > 0 {
		debug.SetMemoryLimit(cfg.MemoryLimit)
	}
	// A negative limit reads it without changing it.
	log.Debug("garbage collector", "gogc", gogc, "memory_limit", debug.SetMemoryLimit(-1))
}

func newLogger(cfg Config, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: cfg.LogLevel}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func buildVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "dev"
}
