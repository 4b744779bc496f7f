package servers

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"
)

// TB is the part of testing.TB the helpers use. *testing.T, *testing.B and
// *testing.F satisfy it; it is declared here so that this package does not
// import testing into the programs that use it.
type TB interface {
	Helper()
	Name() string
	Logf(format string, args ...any)
	Fatalf(format string, args ...any)
	Failed() bool
	Cleanup(func())
}

// startTimeout bounds the start of a server by a test helper.
const startTimeout = 2 * time.Minute

// PostgresForTest starts a PostgreSQL instance of the test's own and closes
// it when the test ends. The test may Stop, Kill and Start it. It fails
// the test, with the server log, if the server doesn't start. Tests that
// only need an empty database should prefer DatabaseForTest, which shares
// one instance per test binary.
func PostgresForTest(t TB) *Postgres {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	pg, err := StartPostgres(ctx, PostgresOptions{})
	if err != nil {
		t.Fatalf("servers: %v", err)
	}
	cleanupServer(t, pg.LogTail, pg.Close)
	return pg
}

// ProsodyForTest starts a Prosody server of the test's own (see
// StartProsody) and closes it when the test ends. It fails the test, with
// the server log, if the server doesn't start.
func ProsodyForTest(t TB, opts XMPPOptions) *Prosody {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	p, err := StartProsody(ctx, opts)
	if err != nil {
		t.Fatalf("servers: %v", err)
	}
	cleanupServer(t, p.LogTail, p.Close)
	return p
}

// EjabberdForTest starts an ejabberd server of the test's own (see
// StartEjabberd) and closes it when the test ends. It fails the test, with
// the server log, if the server doesn't start.
func EjabberdForTest(t TB, opts XMPPOptions) *Ejabberd {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	e, err := StartEjabberd(ctx, opts)
	if err != nil {
		t.Fatalf("servers: %v", err)
	}
	cleanupServer(t, e.LogTail, e.Close)
	return e
}

// XMPPForTest starts the XMPP server called name ("prosody" or
// "ejabberd"), for tests that run against both:
//
//	for _, name := range servers.XMPPServerNames {
//		t.Run(name, func(t *testing.T) { srv := servers.XMPPForTest(t, name, opts); ... })
//	}
func XMPPForTest(t TB, name string, opts XMPPOptions) XMPPServer {
	t.Helper()
	switch name {
	case "prosody":
		return ProsodyForTest(t, opts)
	case "ejabberd":
		return EjabberdForTest(t, opts)
	}
	t.Fatalf("servers: unknown XMPP server %q (want one of %v)", name, XMPPServerNames)
	return nil
}

// XMPPServerNames lists the XMPP servers this package can start.
var XMPPServerNames = []string{"prosody", "ejabberd"}

// RegisterUserForTest registers user with password on srv, failing the
// test if it can't.
func RegisterUserForTest(t TB, srv XMPPServer, user, password string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := srv.RegisterUser(ctx, user, password); err != nil {
		t.Fatalf("servers: %v\n%s", err, srv.LogTail())
	}
}

// cleanupServer closes the server when the test ends, and logs the tail of
// its log first if the test failed.
func cleanupServer(t TB, logTail func() string, closeFn func() error) {
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("servers: log of the test's server:\n%s", logTail())
		}
		if err := closeFn(); err != nil {
			t.Logf("servers: close: %v", err)
		}
	})
}

// The instance SharedPostgres hands out, started at first use.
var (
	sharedMu  sync.Mutex
	sharedPG  *Postgres
	sharedErr error
)

// SharedPostgres returns the test binary's shared PostgreSQL instance,
// starting it on first use; it fails the test if it can't start. Tests
// must not Stop or Kill it (use PostgresForTest for that). Main closes it;
// without Main, it dies with the test binary and the next start of any
// instance removes its directory.
func SharedPostgres(t TB) *Postgres {
	t.Helper()
	sharedMu.Lock()
	defer sharedMu.Unlock()
	if sharedPG == nil && sharedErr == nil {
		ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
		defer cancel()
		sharedPG, sharedErr = StartPostgres(ctx, PostgresOptions{})
	}
	if sharedErr != nil {
		t.Fatalf("servers: shared postgres: %v", sharedErr)
	}
	return sharedPG
}

// DatabaseForTest creates an empty database on the shared instance (see
// SharedPostgres), named after the test, returns its DSN, and drops it
// when the test ends.
func DatabaseForTest(t TB) string {
	t.Helper()
	pg := SharedPostgres(t)
	name := testDBName(t.Name())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dsn, err := pg.NewDatabase(ctx, name)
	if err != nil {
		t.Fatalf("servers: %v\n%s", err, pg.LogTail())
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := pg.DropDatabase(ctx, name); err != nil {
			t.Logf("servers: %v", err)
		}
	})
	return dsn
}

// testDBName turns a test name into a unique database name.
func testDBName(test string) string {
	var sb strings.Builder
	sb.WriteString("t_")
	for _, r := range strings.ToLower(test) {
		if sb.Len() >= 40 {
			break
		}
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			sb.WriteRune(r)
		} else {
			sb.WriteByte('_')
		}
	}
	return sb.String() + "_" + randomHex(4)
}

// Main runs the tests and then closes the shared instances, for use as
//
//	func TestMain(m *testing.M) { servers.Main(m) }
func Main(m interface{ Run() int }) {
	code := m.Run()
	if err := CloseShared(); err != nil {
		fmt.Fprintf(os.Stderr, "servers: %v\n", err)
	}
	os.Exit(code)
}

// CloseShared closes the instance of SharedPostgres, if any. A later
// SharedPostgres starts a new one.
func CloseShared() error {
	sharedMu.Lock()
	defer sharedMu.Unlock()
	var err error
	if sharedPG != nil {
		err = sharedPG.Close()
	}
	sharedPG, sharedErr = nil, nil
	return err
}

// EjabberdClusterForTest starts an ejabberd cluster of the test's own
// (see StartEjabberdCluster) and closes it when the test ends. It fails
// the test, with the nodes' logs, if the cluster doesn't form.
func EjabberdClusterForTest(t TB, opts XMPPOptions, nodes int) *EjabberdCluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	c, err := StartEjabberdCluster(ctx, opts, nodes)
	if err != nil {
		t.Fatalf("servers: %v", err)
	}
	cleanupServer(t, c.LogTail, c.Close)
	return c
}
