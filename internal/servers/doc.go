// Package servers starts throwaway PostgreSQL, Prosody and ejabberd
// instances for integration tests, the dev runner and benchmarks, and a
// headless browser for tests of what a person looks at.
//
// Every instance lives in its own directory (a new temporary directory
// unless the options name one), listens on 127.0.0.1 only (federated XMPP
// servers also on port 5269 of other 127/8 addresses: see S2SPort and
// XMPPOptions.S2SAddrs), on ports picked
// once at start and kept for restarts, so a test can Kill a server and
// Start it again on the same address and data. Close stops the instance and
// removes its directory; it never leaves processes behind.
//
// The servers are the real ones from Debian's packages (postgresql,
// prosody, ejabberd; scripts/deps.sh installs them). When the caller is
// root, each server runs as its Debian service user (postgres, prosody,
// ejabberd), because PostgreSQL refuses to run as root and the others are
// not meant to; otherwise it runs as the caller.
//
// Failures to start are returned as errors that carry the tail of the
// server's log: integration tests call t.Fatalf with them and never skip.
// The helpers in testing.go (PostgresForTest, ProsodyForTest,
// EjabberdForTest, DatabaseForTest) do exactly that.
//
// Processes are started in their own process group with a parent-death
// signal, and every instance directory records the process that owns it, so
// a later Start in any process removes instances whose owner died without
// calling Close (a test binary killed by its timeout, say).
//
// For what a person looks at, tests drive a real browser: StartBrowser
// (BrowserForTest in tests) runs Debian's chromium headless on a page,
// with a throwaway profile, and PageReport is how the page and the test
// talk without a DevTools client: it serves the test's HTML, and the
// page's script POSTs its results back as JSON (report(value), from
// "/report.js"), which the test reads with Next. Next fails the test, with
// the browser's log (its stderr, which has the page's console), on a
// script error in the page, if the browser exits, or on timeout.
//
// It imports no package of the project: adapters' tests and the commands
// under cmd/ may import it, the packages they test never do outside tests.
package servers
