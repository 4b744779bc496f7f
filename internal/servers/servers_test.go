//go:build integration

package servers

import (
	"context"
	"database/sql"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// These are integration tests (build tag integration; make test sets it):
// they start the real servers and fail, never skip, when a server can't
// start.

func TestMain(m *testing.M) { Main(m) }

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// assertGone checks that nothing of an instance is left: no process that
// names or works in dir, no directory, no listener on addrs.
func assertGone(t *testing.T, dir string, addrs ...string) {
	t.Helper()
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("instance dir %s still exists (stat: %v)", dir, err)
	}
	for _, p := range allProcs() {
		if p.state == 'Z' {
			continue
		}
		pd := "/proc/" + strconv.Itoa(p.pid)
		cl, _ := os.ReadFile(pd + "/cmdline")
		cwd, _ := os.Readlink(pd + "/cwd")
		if strings.Contains(string(cl), dir) || within(strings.TrimSuffix(cwd, " (deleted)"), dir) {
			t.Errorf("process %d left behind: %q (cwd %s)", p.pid, strings.ReplaceAll(string(cl), "\x00", " "), cwd)
		}
	}
	for _, a := range addrs {
		if accepts(a) {
			t.Errorf("%s still accepts connections", a)
		}
	}
}

func queryInt(t *testing.T, db *sql.DB, q string) int {
	t.Helper()
	var n int
	if err := db.QueryRow(q).Scan(&n); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return n
}

func TestPostgres(t *testing.T) {
	ctx := testCtx(t)
	start := time.Now()
	pg, err := StartPostgres(ctx, PostgresOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("StartPostgres took %v", time.Since(start).Round(time.Millisecond))
	t.Cleanup(func() { pg.Close() })

	db, err := sql.Open("postgres", pg.DSN())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var user, database string
	if err := db.QueryRow("SELECT current_user, current_database()").Scan(&user, &database); err != nil {
		t.Fatalf("query %s: %v", pg.DSN(), err)
	}
	if user != PostgresUser || database != PostgresDatabase {
		t.Errorf("got user %q db %q, want %q %q", user, database, PostgresUser, PostgresDatabase)
	}
	if _, err := db.Exec("CREATE TABLE t (n int); INSERT INTO t VALUES (1)"); err != nil {
		t.Fatal(err)
	}

	t.Run("NewDatabase", func(t *testing.T) {
		dsn, err := pg.NewDatabase(ctx, "other_db")
		if err != nil {
			t.Fatal(err)
		}
		db2, err := sql.Open("postgres", dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer db2.Close()
		if got := queryInt(t, db2, "SELECT count(*) FROM pg_tables WHERE tablename = 't'"); got != 0 {
			t.Errorf("new database sees %d tables t, want 0", got)
		}
		if _, err := pg.NewDatabase(ctx, "Bad-Name"); err == nil {
			t.Error("NewDatabase(Bad-Name): no error")
		}
		if err := pg.DropDatabase(ctx, "other_db"); err != nil {
			t.Error(err)
		}
	})

	t.Run("KillStart", func(t *testing.T) {
		if err := pg.Kill(); err != nil {
			t.Fatal(err)
		}
		if pg.Running() {
			t.Error("Running after Kill")
		}
		if accepts(pg.Addr()) {
			t.Fatal("port still accepts after Kill")
		}
		start := time.Now()
		if err := pg.Start(ctx); err != nil {
			t.Fatal(err)
		}
		t.Logf("Start after Kill took %v", time.Since(start).Round(time.Millisecond))
		// A committed row survives the crash; the old pool reconnects.
		if got := queryInt(t, db, "SELECT count(*) FROM t"); got != 1 {
			t.Errorf("rows after crash: got %d, want 1", got)
		}
		if err := pg.Start(ctx); !errors.Is(err, ErrRunning) {
			t.Errorf("Start while running: got %v, want ErrRunning", err)
		}
	})

	t.Run("StopStart", func(t *testing.T) {
		if err := pg.Stop(ctx); err != nil {
			t.Fatal(err)
		}
		if accepts(pg.Addr()) {
			t.Fatal("port still accepts after Stop")
		}
		if err := pg.Start(ctx); err != nil {
			t.Fatal(err)
		}
		if got := queryInt(t, db, "SELECT count(*) FROM t"); got != 1 {
			t.Errorf("rows after restart: got %d, want 1", got)
		}
	})

	t.Run("Close", func(t *testing.T) {
		db.Close()
		if err := pg.Close(); err != nil {
			t.Fatal(err)
		}
		assertGone(t, pg.Dir(), pg.Addr())
		if err := pg.Start(ctx); !errors.Is(err, ErrClosed) {
			t.Errorf("Start after Close: got %v, want ErrClosed", err)
		}
	})
}

func TestPostgresStartErrorHasLog(t *testing.T) {
	// Hold a port so the server can't bind it: the error must say why.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := l.Addr().(*net.TCPAddr).Port
	pg, err := StartPostgres(testCtx(t), PostgresOptions{Port: port})
	if err == nil {
		pg.Close()
		t.Fatal("StartPostgres on a busy port: no error")
	}
	if !strings.Contains(err.Error(), "could not bind") {
		t.Errorf("error lacks the server log:\n%v", err)
	}
}

func TestDatabaseForTest(t *testing.T) {
	dsn1 := DatabaseForTest(t)
	dsn2 := DatabaseForTest(t)
	if dsn1 == dsn2 {
		t.Fatalf("two databases with one DSN %s", dsn1)
	}
	if SharedPostgres(t) != SharedPostgres(t) {
		t.Error("SharedPostgres returned two instances")
	}
	db, err := sql.Open("postgres", dsn1)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Ping(); err != nil {
		t.Fatalf("ping %s: %v", dsn1, err)
	}
}

func TestXMPP(t *testing.T) {
	for _, name := range XMPPServerNames {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			testXMPP(t, name)
		})
	}
}

func startXMPP(ctx context.Context, name string, opts XMPPOptions) (XMPPServer, error) {
	if name == "prosody" {
		return StartProsody(ctx, opts)
	}
	return StartEjabberd(ctx, opts)
}

func testXMPP(t *testing.T, name string) {
	ctx := testCtx(t)
	opts := XMPPOptions{Components: map[string]string{
		"iot.localhost":   "s3cret",
		"other.localhost": "other-secret",
	}}
	start := time.Now()
	srv, err := startXMPP(ctx, name, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("Start%s took %v", name, time.Since(start).Round(time.Millisecond))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("log:\n%s", srv.LogTail())
		}
		srv.Close()
	})
	if srv.Name() != name || srv.Domain() != "localhost" {
		t.Errorf("Name, Domain = %q, %q", srv.Name(), srv.Domain())
	}
	if got := srv.ComponentSecret("iot.localhost"); got != "s3cret" {
		t.Errorf("ComponentSecret = %q, want s3cret", got)
	}
	if got := srv.ComponentSecret("nope.localhost"); got != "" {
		t.Errorf("ComponentSecret(unknown) = %q, want empty", got)
	}

	start = time.Now()
	if err := srv.RegisterUser(ctx, "thermo1", "pw1"); err != nil {
		t.Fatal(err)
	}
	t.Logf("RegisterUser took %v", time.Since(start).Round(time.Millisecond))
	// Registering again sets the password.
	if err := srv.RegisterUser(ctx, "thermo1", "thermo1"); err != nil {
		t.Fatal(err)
	}

	check := func(t *testing.T) {
		t.Helper()
		if err := c2sLogin(srv.C2SAddr(), srv.Domain(), "thermo1", "thermo1", false); err != nil {
			t.Errorf("login: %v", err)
		}
		if err := c2sLogin(srv.C2SAddr(), srv.Domain(), "thermo1", "thermo1", true); err != nil {
			t.Errorf("login with STARTTLS: %v", err)
		}
		if err := c2sLogin(srv.C2SAddr(), srv.Domain(), "thermo1", "wrong", false); !errors.Is(err, errAuth) {
			t.Errorf("login with a wrong password: got %v, want %v", err, errAuth)
		}
		for _, d := range srv.Components() {
			c, err := componentHandshake(srv.ComponentAddr(), d, srv.ComponentSecret(d))
			if err != nil {
				t.Errorf("component %s: %v", d, err)
				continue
			}
			c.Close()
		}
		if c, err := componentHandshake(srv.ComponentAddr(), "iot.localhost", "wrong"); !errors.Is(err, errHandshake) {
			t.Errorf("component with a wrong secret: got %v, want %v", err, errHandshake)
			if c != nil {
				c.Close()
			}
		}
	}
	t.Run("Connect", check)

	t.Run("KillStart", func(t *testing.T) {
		if err := srv.Kill(); err != nil {
			t.Fatal(err)
		}
		if srv.Running() || accepts(srv.C2SAddr()) || accepts(srv.ComponentAddr()) {
			t.Fatal("still running after Kill")
		}
		start := time.Now()
		if err := srv.Start(ctx); err != nil {
			t.Fatal(err)
		}
		t.Logf("Start after Kill took %v", time.Since(start).Round(time.Millisecond))
		check(t) // the account survives
	})

	t.Run("StopStart", func(t *testing.T) {
		start := time.Now()
		if err := srv.Stop(ctx); err != nil {
			t.Fatal(err)
		}
		t.Logf("Stop took %v", time.Since(start).Round(time.Millisecond))
		if accepts(srv.C2SAddr()) {
			t.Fatal("c2s still accepts after Stop")
		}
		if err := srv.Start(ctx); err != nil {
			t.Fatal(err)
		}
		if err := srv.Start(ctx); !errors.Is(err, ErrRunning) {
			t.Errorf("Start while running: got %v, want ErrRunning", err)
		}
		check(t)
	})

	t.Run("Close", func(t *testing.T) {
		dir := srv.(interface{ Dir() string }).Dir()
		if err := srv.Close(); err != nil {
			t.Fatal(err)
		}
		assertGone(t, dir, srv.C2SAddr(), srv.ComponentAddr())
	})
}

func TestProsodyComponentConflict(t *testing.T) {
	for _, tc := range []struct {
		name    string
		kickOld bool
	}{
		{"KickNew", false},
		{"KickOld", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := ProsodyForTest(t, XMPPOptions{KickOldComponent: tc.kickOld})
			d := srv.Components()[0]
			first, err := componentHandshake(srv.ComponentAddr(), d, srv.ComponentSecret(d))
			if err != nil {
				t.Fatal(err)
			}
			defer first.Close()
			second, err := componentHandshake(srv.ComponentAddr(), d, srv.ComponentSecret(d))
			if !tc.kickOld {
				if !errors.Is(err, errHandshake) {
					t.Errorf("second connection: got %v, want it refused", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("second connection: %v", err)
			}
			defer second.Close()
			_ = first.SetDeadline(time.Now().Add(10 * time.Second))
			el, err := first.next()
			if err != nil || el.XMLName.Local != "error" || !strings.Contains(el.Inner, "conflict") {
				t.Errorf("first connection: got <%s>%s (%v), want a conflict stream error", el.XMLName.Local, el.Inner, err)
			}
		})
	}
}

func TestXMPPStartErrorHasLog(t *testing.T) {
	for _, name := range XMPPServerNames {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			busy := l.Addr().(*net.TCPAddr).Port
			free, err := freePort()
			if err != nil {
				t.Fatal(err)
			}
			srv, err := startXMPP(testCtx(t), name, XMPPOptions{C2SPort: busy, ComponentPort: free})
			if err == nil {
				srv.Close()
				t.Fatal("start on a busy port: no error")
			}
			if !addrInUse(err.Error()) {
				t.Errorf("error lacks the server log:\n%v", err)
			}
		})
	}
}

func TestReapStale(t *testing.T) {
	// An instance whose owner died: a directory with an owner record of a
	// finished process, and a process still running for it.
	dir, err := os.MkdirTemp("", tempPrefix+"test-")
	if err != nil {
		t.Fatal(err)
	}
	dead := exec.Command("true")
	if err := dead.Start(); err != nil {
		t.Fatal(err)
	}
	st, _ := readStat(dead.Process.Pid)
	dead.Wait()
	if err := os.WriteFile(filepath.Join(dir, ownerFile), []byte(strconv.Itoa(st.pid)+" "+strconv.FormatUint(st.start, 10)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	logf := filepath.Join(dir, "x.log")
	if err := os.WriteFile(logf, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	orphan := exec.Command("tail", "-f", logf)
	if err := orphan.Start(); err != nil {
		t.Fatal(err)
	}
	defer orphan.Process.Kill()
	exited := make(chan error, 1)
	go func() { exited <- orphan.Wait() }()

	// And one whose owner lives (us): it must stay.
	live, err := makeInstanceDir("test", "")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(live)

	reapStale()
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		t.Error("process of the stale instance still runs")
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stale dir still exists (%v)", err)
	}
	if _, err := os.Stat(live); err != nil {
		t.Errorf("live instance dir removed: %v", err)
	}
}

func TestLogDir(t *testing.T) {
	ctx := testCtx(t)
	logs := t.TempDir()
	pg, err := StartPostgres(ctx, PostgresOptions{LogDir: logs})
	if err != nil {
		t.Fatal(err)
	}
	pg.Close()
	p, err := StartProsody(ctx, XMPPOptions{LogDir: logs})
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(p.C2SAddr())
	p.Close()
	for _, f := range []string{
		filepath.Join(logs, "postgres-"+strconv.Itoa(pg.Port()), "postgres.log"),
		filepath.Join(logs, "prosody-"+port, "prosody.log"),
	} {
		if b, err := os.ReadFile(f); err != nil || len(b) == 0 {
			t.Errorf("saved log %s: %d bytes, %v", f, len(b), err)
		}
	}
}
