package servers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// BrowserBin is the browser StartBrowser runs, looked up in PATH: Debian's
// chromium (scripts/deps.sh installs it).
const BrowserBin = "chromium"

// BrowserOptions configures StartBrowser.
type BrowserOptions struct {
	// URL is the page the browser opens.
	URL string
	// Logs gets the browser's stdout and stderr, which include the page's
	// console messages; nil: a new LogBuffer.
	Logs *LogBuffer
	// LogDir, if set, gets a copy of the log when the browser is closed,
	// as browser-PID/browser.log (CI artifacts, post-mortems).
	LogDir string
	// Args are more command-line flags, after StartBrowser's own.
	Args []string
}

// Browser is a running headless chromium showing one page. Its methods are
// safe for concurrent use.
type Browser struct {
	proc     *process
	dir      string
	logs     *LogBuffer
	saveLogs string // BrowserOptions.LogDir

	closeOnce sync.Once
	closeErr  error
}

// StartBrowser runs chromium headless on opts.URL, with a new profile in
// a temporary directory, and returns once the browser process is up (not
// once the page has loaded: a page tells the test itself, see PageReport).
// It is made for tests: no extensions, no first run, no background
// traffic of its own (component updates, sync, metrics), no GPU, no
// remote debugging, and the sandbox off only when running as root, where
// chromium refuses to start with it.
//
// Errors: chromium is not in PATH, or exits or doesn't come up before
// ctx ends (the error carries the tail of its log).
func StartBrowser(ctx context.Context, opts BrowserOptions) (*Browser, error) {
	if opts.URL == "" {
		return nil, errors.New("start browser: no URL")
	}
	bin, err := exec.LookPath(BrowserBin)
	if err != nil {
		return nil, fmt.Errorf("start browser: %w (run scripts/deps.sh to install it)", err)
	}
	if opts.Logs == nil {
		opts.Logs = &LogBuffer{}
	}
	dir, err := makeInstanceDir("browser", "")
	if err != nil {
		return nil, fmt.Errorf("start browser: %w", err)
	}
	profile := filepath.Join(dir, "profile")
	args := []string{
		"--headless=new",
		"--user-data-dir=" + profile,
		"--disable-gpu",
		"--no-first-run",
		"--no-default-browser-check",
		"--disable-extensions",
		"--disable-component-extensions-with-background-pages",
		"--disable-background-networking",
		"--disable-component-update",
		"--disable-default-apps",
		"--disable-sync",
		"--disable-breakpad",
		"--metrics-recording-only",
		"--password-store=basic",
		"--mute-audio",
		// /dev/shm is 64 MiB in a default Docker container: too small.
		"--disable-dev-shm-usage",
		// The page's console messages and errors go to stderr, our log.
		"--enable-logging=stderr",
		"--v=0",
	}
	if os.Geteuid() == 0 {
		args = append(args, "--no-sandbox")
	}
	args = append(args, opts.Args...)
	args = append(args, opts.URL)
	proc, err := startProcess(procSpec{
		path: bin,
		args: args,
		dir:  dir,
		// Caches, fontconfig and the crash handler's database stay in the
		// instance directory too, and so the crash handlers (which
		// detach from the browser's process tree) name it in their
		// command line, where Close's CleanDir finds them.
		env: []string{"HOME=" + dir, "XDG_CONFIG_HOME=" + dir, "XDG_CACHE_HOME=" + dir},
		out: opts.Logs,
	})
	if err != nil {
		_ = CleanDir(dir)
		return nil, fmt.Errorf("start browser: %w", err)
	}
	b := &Browser{proc: proc, dir: dir, logs: opts.Logs, saveLogs: opts.LogDir}
	ctx, cancel := withStartTimeout(ctx)
	defer cancel()
	// The profile's lock is one of the first things chromium creates: it
	// is up, past its command line.
	err = waitReady(ctx, proc, func(context.Context) error {
		_, err := os.Lstat(filepath.Join(profile, "SingletonLock"))
		return err
	})
	if err != nil {
		err = fmt.Errorf("start browser: %w\n%s", err, b.LogTail(40))
		return nil, errors.Join(err, b.Close())
	}
	return b, nil
}

// Logs returns what the browser wrote so far.
func (b *Browser) Logs() *LogBuffer { return b.logs }

// LogTail returns the last n lines of the browser's log, without its
// complaints about the missing D-Bus (a container or CI runner has none;
// they are most of the log and never the cause of a failure).
func (b *Browser) LogTail(n int) string {
	var kept []string
	for line := range strings.SplitSeq(b.logs.String(), "\n") {
		if !strings.Contains(line, "dbus") && !strings.Contains(line, "D-Bus") {
			kept = append(kept, line)
		}
	}
	return tailBytes([]byte(strings.Join(kept, "\n")), n)
}

// Dir returns the browser's instance directory (its profile is in it),
// which Close removes.
func (b *Browser) Dir() string { return b.dir }

// PID returns the browser's process id.
func (b *Browser) PID() int { return b.proc.pid }

// Done is closed when the browser process has exited.
func (b *Browser) Done() <-chan struct{} { return b.proc.done }

// Close kills the browser and every process it started, and removes its
// directory, copying the log to LogDir if set. Calling it again does
// nothing and returns the same error.
func (b *Browser) Close() error {
	b.closeOnce.Do(func() {
		b.closeErr = errors.Join(b.proc.kill(), CleanDir(b.dir))
		if b.saveLogs != "" {
			b.closeErr = errors.Join(b.closeErr, b.saveLog())
		}
	})
	return b.closeErr
}

// saveLog writes the log to LogDir/browser-PID/browser.log.
func (b *Browser) saveLog() error {
	dir := filepath.Join(b.saveLogs, "browser-"+strconv.Itoa(b.proc.pid))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("save browser log: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "browser.log"), []byte(b.logs.String()), 0o644); err != nil {
		return fmt.Errorf("save browser log: %w", err)
	}
	return nil
}

// BrowserForTest starts a browser on url (see StartBrowser) and closes it
// when the test ends, logging its output if the test failed. It fails
// the test if chromium is missing or doesn't start: it never skips.
func BrowserForTest(t TB, url string) *Browser {
	t.Helper()
	return browserForTest(t, BrowserOptions{URL: url})
}

// browserForTest is BrowserForTest with all the options.
func browserForTest(t TB, opts BrowserOptions) *Browser {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	b, err := StartBrowser(ctx, opts)
	if err != nil {
		t.Fatalf("servers: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("servers: browser log:\n%s", b.LogTail(100))
		}
		if err := b.Close(); err != nil {
			t.Logf("servers: close browser: %v", err)
		}
	})
	return b
}

// PageReport is a web server on 127.0.0.1 through which a test talks to
// a page in a real browser, with no DevTools client: it serves the test's
// HTML at "/" and the page POSTs its results, as JSON, back to "/report";
// Next hands them to the test in the order they arrive (a page that
// reports more than once awaits each report() to keep its order). A test
// does:
//
//	page := servers.NewPageReport(t, `<script src="/report.js"></script>
//		<script>report({ua: navigator.userAgent})</script>`)
//	b := servers.BrowserForTest(t, page.URL())
//	var got struct{ UA string }
//	page.Next(t, b, time.Minute, &got)
//
// "/report.js" defines report(value) and sends the page's uncaught
// errors and unhandled promise rejections to "/report/error", which make
// Next fail the test at once rather than wait for a report that will not
// come. Handle adds more handlers on the same origin.
type PageReport struct {
	srv     *httptest.Server
	mux     *http.ServeMux
	reports chan []byte
	errs    chan string
}

// reportJS is "/report.js", the page's side of PageReport.
const reportJS = `// report(value) sends value, as JSON, to the test (PageReport.Next).
function report(value) {
	return fetch('/report', {method: 'POST', body: JSON.stringify(value)});
}
// The page's own failures fail the test at once.
function reportError(text) {
	fetch('/report/error', {method: 'POST', body: text});
}
addEventListener('error', e => reportError(e.message + ' (' + e.filename + ':' + e.lineno + ')'));
addEventListener('unhandledrejection', e => reportError('unhandled rejection: ' + e.reason));
`

// maxReport bounds the size of one report.
const maxReport = 1 << 20

// NewPageReport starts a PageReport serving html at "/" and closes it
// when the test ends.
func NewPageReport(t TB, html string) *PageReport {
	t.Helper()
	p := &PageReport{
		mux:     http.NewServeMux(),
		reports: make(chan []byte, 100),
		errs:    make(chan string, 100),
	}
	p.mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		io.WriteString(w, html)
	})
	p.mux.HandleFunc("GET /report.js", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
		io.WriteString(w, reportJS)
	})
	p.mux.HandleFunc("POST /report", func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxReport))
		switch {
		case err != nil:
			p.pageError(fmt.Sprintf("read report: %v", err))
		case !json.Valid(body):
			p.pageError(fmt.Sprintf("report is not JSON: %.200q", body))
		default:
			select {
			case p.reports <- body:
			default:
				p.pageError("more than 100 reports not read by the test")
			}
		}
		w.WriteHeader(http.StatusNoContent)
	})
	p.mux.HandleFunc("POST /report/error", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(http.MaxBytesReader(w, r.Body, maxReport))
		p.pageError(string(body))
		w.WriteHeader(http.StatusNoContent)
	})
	// httptest listens on 127.0.0.1.
	p.srv = httptest.NewServer(p.mux)
	t.Cleanup(p.srv.Close)
	return p
}

// pageError queues an error of the page for Next.
func (p *PageReport) pageError(text string) {
	select {
	case p.errs <- text:
	default: // Next fails at the first one anyway.
	}
}

// URL returns the page's URL, http://127.0.0.1:PORT/; its origin is
// the URL without the final slash.
func (p *PageReport) URL() string { return p.srv.URL + "/" }

// Handle serves pattern (as http.ServeMux has it) with h, on the page's
// origin: a same-origin endpoint for the page, such as an event stream.
func (p *PageReport) Handle(pattern string, h http.Handler) { p.mux.Handle(pattern, h) }

// Next waits up to timeout for the page's next report and decodes it
// into v. It fails the test, with the browser's log, if the page reports
// an error, if the browser exits, or if no report comes in time.
func (p *PageReport) Next(t TB, b *Browser, timeout time.Duration, v any) {
	t.Helper()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("servers: page %s: %s\nbrowser log:\n%s", p.URL(), fmt.Sprintf(format, args...),
			b.LogTail(60))
	}
	select {
	case body := <-p.reports:
		if err := json.Unmarshal(body, v); err != nil {
			fail("decode report %.200q: %v", body, err)
		}
	case text := <-p.errs:
		fail("error: %s", text)
	case <-b.Done():
		fail("browser exited (%v) before the page reported", b.proc.err)
	case <-timer.C:
		fail("no report within %v", timeout)
	}
}
