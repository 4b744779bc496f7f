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
