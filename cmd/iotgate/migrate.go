package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"

	"github.com/iotgate/iotgate"
	"github.com/iotgate/iotgate/migrations"
	"github.com/iotgate/iotgate/postgres"
)

// migrateCommand runs `iotgate migrate up|down N|version|force V`.
func migrateCommand(ctx context.Context, cfg Config, args []string, log *slog.Logger, stdout, stderr io.Writer) int {
	usage := func() int {
		fmt.Fprintln(stderr, "usage: iotgate migrate up | down N | version | force V")
		return 2
	}
	if len(args) == 0 {
		return usage()
	}
	// Connect, not Open: down, force and version must work on a schema
	// that Open would refuse (dirty, too new).
	db, err := postgres.Connect(ctx, cfg.DatabaseURL, log)
	if err != nil {
		fmt.Fprintf(stderr, "iotgate: %v\n", err)
		return 1
	}
	defer db.Close()
	num := func() (int, bool) {
		if len(args) != 2 {
			return 0, false
		}
		n, err := strconv.Atoi(args[1])
		return n, err == nil && n >= 0
	}
	switch args[0] {
	case "up":
		err = db.Migrate(ctx)
	case "down":
		n, ok := num()
		if !ok || n < 1 {
			return usage()
		}
		err = db.MigrateDown(ctx, n)
	case "force":
		n, ok := num()
		if !ok {
			return usage()
		}
		err = db.ForceMigration(ctx, uint(n))
	case "version":
		v, dirty, verr := db.MigrationVersion(ctx)
		if verr == nil {
			latest, _ := migrations.Latest()
			fmt.Fprintf(stdout, "version %d (dirty: %v, latest available: %d)\n", v, dirty, latest)
		}
		err = verr
	default:
		return usage()
	}
	if err != nil {
		var de *iotgate.Error
		if errors.As(err, &de) {
			fmt.Fprintf(stderr, "iotgate: %s\n", de.Error())
		} else {
			fmt.Fprintf(stderr, "iotgate: %v\n", err)
		}
		return 1
	}
	return 0
}
