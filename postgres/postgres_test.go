//go:build integration

package postgres_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/iotgate/iotgate"
	"github.com/iotgate/iotgate/internal/servers"
	"github.com/iotgate/iotgate/migrations"
	"github.com/iotgate/iotgate/postgres"
)

func TestMain(m *testing.M) { servers.Main(m) }

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func open(t *testing.T, ctx context.Context, dsn string) *postgres.DB {
	t.Helper()
	db, err := postgres.Open(ctx, dsn, nil)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func checkCode(t *testing.T, err error, code string) {
	t.Helper()
	var e *iotgate.Error
	if !errors.As(err, &e) {
		t.Fatalf("error = %v (%T), want *iotgate.Error %q", err, err, code)
	}
	if e.Code != code {
		t.Fatalf("error = %v, code %q; want %q", err, e.Code, code)
	}
}

func TestOpen(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)

	t.Run("OK", func(t *testing.T) {
		db := open(t, ctx, servers.DatabaseForTest(t))
		var name string
		if err := db.SQL().QueryRowContext(ctx, `SELECT current_setting('application_name')`).Scan(&name); err != nil {
			t.Fatal(err)
		}
		if name != "iotgate" {
			t.Errorf("application_name = %q, want iotgate", name)
		}
		// Open migrates: the schema is at the latest version.
		v, dirty, err := db.MigrationVersion(ctx)
		latest, lerr := migrations.Latest()
		if err != nil || lerr != nil || dirty || v != latest {
			t.Errorf("MigrationVersion = %d, dirty %v, %v; want %d (%v), clean", v, dirty, err, latest, lerr)
		}
	})
	t.Run("ConnectDoesNotMigrate", func(t *testing.T) {
		db, err := postgres.Connect(ctx, servers.DatabaseForTest(t), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		if v, dirty, err := db.MigrationVersion(ctx); err != nil || dirty || v != 0 {
			t.Errorf("MigrationVersion after Connect = %d, dirty %v, %v; want 0", v, dirty, err)
		}
	})
	t.Run("ErrMalformedDSN", func(t *testing.T) {
		_, err := postgres.Open(ctx, "postgres://user:s3cret@host:notaport/db", nil)
		checkCode(t, err, iotgate.EInvalid)
		if strings.Contains(err.Error(), "s3cret") {
			t.Errorf("error %q shows the password", err)
		}
	})
	t.Run("ErrUnreachable", func(t *testing.T) {
		// A port that was free a moment ago: connection refused.
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()
		_, err = postgres.Open(ctx, "postgres://iotgate@"+addr+"/iotgate?sslmode=disable", nil)
		checkCode(t, err, iotgate.EUnavailable)
	})
	t.Run("ErrConnectTimeout", func(t *testing.T) {
		// A listener that never answers the startup message.
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		start := time.Now()
		_, err = postgres.Open(ctx, "postgres://iotgate@"+l.Addr().String()+"/iotgate?sslmode=disable&connect_timeout=1", nil)
		if err == nil {
			t.Fatal("Open succeeded against a silent server")
		}
		if d := time.Since(start); d > 10*time.Second {
			t.Errorf("Open gave up after %v, want about 1s", d)
		}
	})
	t.Run("ErrNoDatabase", func(t *testing.T) {
		dsn := strings.Replace(servers.SharedPostgres(t).DSN(), "/"+servers.PostgresDatabase, "/no_such_db", 1)
		_, err := postgres.Open(ctx, dsn, nil)
		checkCode(t, err, iotgate.EUnavailable)
	})
	t.Run("ErrUnknownRole", func(t *testing.T) {
		// The test server trusts every login, but not of a role it
		// doesn't have (SQLSTATE 28000, as a wrong password would be).
		dsn := strings.Replace(servers.SharedPostgres(t).DSN(), "://"+servers.PostgresUser+"@", "://nosuchrole@", 1)
		_, err := postgres.Open(ctx, dsn, nil)
		checkCode(t, err, iotgate.EUnavailable)
		if got := iotgate.ErrorMessage(err); !strings.Contains(got, "refused the credentials") {
			t.Errorf("message = %q, want it to say the credentials were refused", got)
		}
	})
}

// TestHealth follows the database down and up again.
func TestHealth(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	pg := servers.PostgresForTest(t)
	dsn, err := pg.NewDatabase(ctx, "health")
	if err != nil {
		t.Fatal(err)
	}
	opened := time.Now()
	db := open(t, ctx, dsn)

	ok, since, err := db.Health(ctx)
	if !ok || err != nil {
		t.Fatalf("Health = %v, %v; want ok", ok, err)
	}
	if since.Before(opened) || since.After(time.Now()) {
		t.Errorf("since = %v, want the time of Open (%v)", since, opened)
	}
	upSince := since

	// Still up: since doesn't move.
	if ok, since, _ := db.Health(ctx); !ok || !since.Equal(upSince) {
		t.Errorf("second Health = %v since %v; want ok since %v", ok, since, upSince)
	}

	if err := pg.Stop(ctx); err != nil {
		t.Fatalf("stop postgres: %v", err)
	}
	stopped := time.Now()
	ok, since, err = db.Health(ctx)
	if ok {
		t.Fatal("Health ok with the server stopped")
	}
	checkCode(t, err, iotgate.EUnavailable)
	if since.Before(stopped) {
		t.Errorf("down since %v, before the server stopped (%v)", since, stopped)
	}
	downSince := since
	if ok, since, _ := db.Health(ctx); ok || !since.Equal(downSince) {
		t.Errorf("second Health while down = %v since %v; want down since %v", ok, since, downSince)
	}

	if err := pg.Start(ctx); err != nil {
		t.Fatalf("start postgres: %v", err)
	}
	ok, since, err = db.Health(ctx)
	if !ok || err != nil {
		t.Fatalf("Health after restart = %v, %v; want ok", ok, err)
	}
	if !since.After(downSince) {
		t.Errorf("up since %v, want after %v", since, downSince)
	}
}

// TestTranslateReal checks translation of errors from a real server.
func TestTranslateReal(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	db := open(t, ctx, servers.DatabaseForTest(t))
	if _, err := db.SQL().ExecContext(ctx, `CREATE TABLE t (k text PRIMARY KEY CHECK (k <> ''))`); err != nil {
		t.Fatal(err)
	}
	if _, err := db.SQL().ExecContext(ctx, `INSERT INTO t VALUES ('a')`); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		sql  string
		code string
	}{
		{"Unique", `INSERT INTO t VALUES ('a')`, iotgate.EConflict},
		{"Check", `INSERT INTO t VALUES ('')`, iotgate.EInvalid},
		{"BadSQL", `INSERT INTO nosuchtable VALUES (1)`, iotgate.EInternal},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := db.SQL().ExecContext(ctx, tt.sql)
			checkCode(t, postgres.Translate(err, "insert"), tt.code)
		})
	}
}
