package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/iotgate/iotgate"
	"github.com/iotgate/iotgate/auth"
	"github.com/iotgate/iotgate/postgres"
)

const tokenUsage = `usage:
  iotgate token create --name N --scopes S1,S2 [--devices k=v,...] [--expires 720h]
  iotgate token list
  iotgate token revoke ID
scopes: schemas:read, schemas:write, devices:read, devices:write, commands:send, admin`

// tokenCommand runs `iotgate token create|list|revoke` against the
// database. create prints the secret alone on stdout (so scripts can
// capture it) and what it created on stderr.
func tokenCommand(ctx context.Context, cfg Config, args []string, log *slog.Logger, stdout, stderr io.Writer) int {
	usage := func(msg string) int {
		if msg != "" {
			fmt.Fprintf(stderr, "iotgate: %s\n", msg)
		}
		fmt.Fprintln(stderr, tokenUsage)
		return 2
	}
	if len(args) == 0 {
		return usage("")
	}
	var run func(*auth.Service) error
	switch args[0] {
	case "create":
		fs := flag.NewFlagSet("token create", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		name := fs.String("name", "", "who or what uses the token (required)")
		scopes := fs.String("scopes", "", "comma-separated scopes (required)")
		sel := fs.String("devices", "", "limit the token to devices with these labels, e.g. site=berlin")
		expires := fs.Duration("expires", 0, "validity, e.g. 720h; 0: no expiry")
		if err := fs.Parse(args[1:]); err != nil || fs.NArg() > 0 {
			return usage("bad arguments to token create")
		}
		req := auth.CreateRequest{Name: *name, ExpiresIn: *expires}
		var err error
		if req.Scopes, err = auth.ParseScopes(*scopes); err != nil {
			return usage(err.Error())
		}
		if req.Devices, err = auth.ParseSelector(*sel); err != nil {
			return usage(err.Error())
		}
		if *expires < 0 {
			return usage("--expires must not be negative")
		}
		run = func(svc *auth.Service) error {
			t, secret, err := svc.Create(ctx, req)
			if err != nil {
				return err
			}
			fmt.Fprintln(stdout, secret)
			fmt.Fprintf(stderr, "created token %s (%s): scopes %s, devices %s, expires %s; the token above is shown only this once\n",
				t.ID, t.Name, scopeString(t.Scopes), selectorString(t.Devices), timeString(t.ExpiresAt, "never"))
			return nil
		}
	case "list":
		if len(args) != 1 {
			return usage("token list takes no arguments")
		}
		run = func(svc *auth.Service) error {
			ts, err := svc.List(ctx)
			if err != nil {
				return err
			}
			w := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "ID\tNAME\tSCOPES\tDEVICES\tCREATED\tEXPIRES\tLAST USED\tREVOKED")
			for _, t := range ts {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", t.ID, t.Name, scopeString(t.Scopes), selectorString(t.Devices),
					timeString(&t.CreatedAt, "-"), timeString(t.ExpiresAt, "never"), timeString(t.LastUsedAt, "never"), timeString(t.RevokedAt, "-"))
			}
			return w.Flush()
		}
	case "revoke":
		if len(args) != 2 {
			return usage("token revoke takes one token ID")
		}
		run = func(svc *auth.Service) error {
			t, err := svc.Revoke(ctx, args[1])
			if err != nil {
				return err
			}
			fmt.Fprintf(stdout, "revoked token %s (%s) at %s\n", t.ID, t.Name, timeString(t.RevokedAt, "-"))
			return nil
		}
	default:
		return usage(fmt.Sprintf("unknown token command %q", args[0]))
	}

	// Open migrates: the tokens table may not exist yet on a fresh
	// database.
	db, err := postgres.Open(ctx, cfg.DatabaseURL, log)
	if err != nil {
		fmt.Fprintf(stderr, "iotgate: %v\n", err)
		return 1
	}
	defer db.Close()
	svc, err := auth.NewService(db, auth.Config{})
	if err == nil {
		err = run(svc)
	}
	if err != nil {
		var de *iotgate.Error
		if errors.As(err, &de) && de.Code != iotgate.EInternal {
			fmt.Fprintf(stderr, "iotgate: %s\n", de.Message)
		} else {
			fmt.Fprintf(stderr, "iotgate: %v\n", err)
		}
		return 1
	}
	return 0
}

func scopeString(ss []iotgate.Scope) string {
	parts := make([]string, len(ss))
	for i, s := range ss {
		parts[i] = string(s)
	}
	return strings.Join(parts, ",")
}

func selectorString(s iotgate.Selector) string {
	if len(s) == 0 {
		return "all"
	}
	return s.String()
}

func timeString(t *time.Time, none string) string {
	if t == nil {
		return none
	}
	return t.UTC().Format(time.RFC3339)
}
