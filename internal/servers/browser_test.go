//go:build integration

package servers

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// reportTimeout bounds the wait for a page's report: a browser start on
// a loaded 2-core machine, and the page's work.
const reportTimeout = time.Minute

// TestBrowserStart runs a page's script in a real chromium a few times,
// checks what it reports and that Close leaves nothing behind, and logs
// how long each start took, from StartBrowser to the page's report.
func TestBrowserStart(t *testing.T) {
	page := NewPageReport(t, `<!doctype html>
<ul><li>a</li><li>b</li><li>c</li></ul>
<script src="/report.js"></script>
<script>
report({
	ua: navigator.userAgent,
	items: document.querySelectorAll('li').length,
	sum: [1, 2, 3, 4].map(x => x * x).reduce((a, b) => a + b),
});
</script>`)
	var took []time.Duration
	for i := range 3 {
		start := time.Now()
		b := BrowserForTest(t, page.URL())
		var got struct {
			UA    string
			Items int
			Sum   int
		}
		page.Next(t, b, reportTimeout, &got)
		took = append(took, time.Since(start))
		if !strings.Contains(got.UA, "HeadlessChrome/") {
			t.Errorf("userAgent %q: want a HeadlessChrome", got.UA)
		}
		if got.Items != 3 || got.Sum != 30 {
			t.Errorf("got %d items, sum %d; want 3, 30", got.Items, got.Sum)
		}
		if err := b.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
		assertGone(t, b.Dir())
		t.Logf("start %d: report after %v (%s)", i+1, took[i].Round(time.Millisecond), got.UA)
	}
	slices.Sort(took)
	t.Logf("browser start to first report: median %v of %v", took[len(took)/2].Round(time.Millisecond), took)
}

// TestBrowserLogDir checks that the page's console reaches the browser's
// log, and that Close copies the log to LogDir.
func TestBrowserLogDir(t *testing.T) {
	page := NewPageReport(t, `<script src="/report.js"></script>
<script>console.log('console-marker-' + (6 * 7)); report(true)</script>`)
	logs := t.TempDir()
	b, err := StartBrowser(testCtx(t), BrowserOptions{URL: page.URL(), LogDir: logs})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	var ok bool
	page.Next(t, b, reportTimeout, &ok)
	// The console line may come a little after the report.
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(b.Logs().String(), "console-marker-42") && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	saved, err := os.ReadFile(filepath.Join(logs, "browser-"+strconv.Itoa(b.PID()), "browser.log"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(saved), "console-marker-42") {
		t.Errorf("saved log has no console-marker-42:\n%s", b.LogTail(40))
	}
}

// TestBrowserMissing checks that StartBrowser says how to install chromium
// when it is not in PATH.
func TestBrowserMissing(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	b, err := StartBrowser(context.Background(), BrowserOptions{URL: "about:blank"})
	if err == nil {
		b.Close()
		t.Fatal("StartBrowser without chromium in PATH: no error")
	}
	if !strings.Contains(err.Error(), "scripts/deps.sh") {
		t.Errorf("error %q: want it to name scripts/deps.sh", err)
	}
}

// TestBrowserPageError checks that an uncaught error in the page's script
// reaches the test (Next fails with it) rather than a timeout.
func TestBrowserPageError(t *testing.T) {
	page := NewPageReport(t, `<script src="/report.js"></script>
<script>undefinedFunction()</script>`)
	b := BrowserForTest(t, page.URL())
	ft := &fatalTB{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		var v any
		page.Next(ft, b, reportTimeout, &v)
	}()
	<-done
	if !strings.Contains(ft.msg, "undefinedFunction") {
		t.Errorf("Next failed with %q; want the page's ReferenceError", ft.msg)
	}
}

// TestBrowserExit checks that a browser that dies (killed here, as a
// crash would) fails Next at once with the browser's exit, and that
// Close still leaves nothing behind.
func TestBrowserExit(t *testing.T) {
	page := NewPageReport(t, `<p>a page that never reports</p>`)
	b := BrowserForTest(t, page.URL())
	if err := syscall.Kill(b.PID(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	ft := &fatalTB{TB: t}
	start := time.Now()
	done := make(chan struct{})
	go func() {
		defer close(done)
		var v any
		page.Next(ft, b, reportTimeout, &v)
	}()
	<-done
	if !strings.Contains(ft.msg, "browser exited") {
		t.Errorf("Next failed with %q; want the browser's exit", ft.msg)
	}
	if took := time.Since(start); took > reportTimeout/2 {
		t.Errorf("Next took %v to see the exit", took)
	}
	if err := b.Close(); err != nil {
		t.Errorf("close: %v", err)
	}
	assertGone(t, b.Dir())
}

// fatalTB records Fatalf's message and ends the goroutine, as testing's
// FailNow does, without failing the real test.
type fatalTB struct {
	TB
	msg string
}

func (f *fatalTB) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// sseEvent is an event as the page saw it.
type sseEvent struct {
	Data        string
	LastEventID string
}

// writeEvents writes the events from..to (ids and a JSON data line) to w
// and flushes them.
func writeEvents(w http.ResponseWriter, from, to int) {
	for id := from; id <= to; id++ {
		fmt.Fprintf(w, "id: %d\nevent: reading\ndata: {\"seq\":%d}\n\n", id, id)
	}
	w.(http.Flusher).Flush()
}

// wantEvents is what the page reports for events 1..3 of writeEvents.
var wantEvents = []sseEvent{
	{`{"seq":1}`, "1"},
	{`{"seq":2}`, "2"},
	{`{"seq":3}`, "3"},
}

// eventsPage returns a page that opens an EventSource on url and reports
// the first three "reading" events, or an error once the browser gives
// the stream up.
func eventsPage(url string) string {
	return fmt.Sprintf(`<script src="/report.js"></script>
<script>
const got = [];
const es = new EventSource(%q);
es.addEventListener('reading', e => {
	got.push({data: e.data, lastEventId: e.lastEventId});
	if (got.length === 3) {
		es.close();
		report({events: got});
	}
});
// A stream that fails for good (not one that reconnects) is CLOSED.
es.onerror = () => {
	if (es.readyState === EventSource.CLOSED) report({events: got, error: 'closed'});
};
</script>`, url)
}

// eventsReport is what eventsPage reports.
type eventsReport struct {
	Events []sseEvent
	Error  string
}

// TestBrowserEventSource checks the browser's own EventSource on a
// same-origin stream that ends after two events: the browser reconnects
// with Last-Event-ID, as iotgate's GET /v1/events expects, and gets the
// third.
func TestBrowserEventSource(t *testing.T) {
	page := NewPageReport(t, eventsPage("/events"))
	var (
		mu      sync.Mutex
		lastIDs []string // the Last-Event-ID of each request
	)
	page.Handle("GET /events", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		last := r.Header.Get("Last-Event-ID")
		mu.Lock()
		lastIDs = append(lastIDs, last)
		first := len(lastIDs) == 1
		mu.Unlock()
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "no-cache")
		if first {
			// A short retry, then the end of the response: the
			// browser reconnects.
			fmt.Fprint(w, "retry: 50\n\n")
			writeEvents(w, 1, 2)
			return
		}
		n, _ := strconv.Atoi(last)
		writeEvents(w, n+1, 3)
		select {
		case <-r.Context().Done():
		case <-time.After(reportTimeout):
		}
	}))
	b := BrowserForTest(t, page.URL())
	var got eventsReport
	page.Next(t, b, reportTimeout, &got)
	if got.Error != "" || !slices.Equal(got.Events, wantEvents) {
		t.Errorf("page got %+v; want events %+v", got, wantEvents)
	}
	mu.Lock()
	defer mu.Unlock()
	if want := []string{"", "2"}; !slices.Equal(lastIDs, want) {
		t.Errorf("Last-Event-ID of the requests: %q; want %q", lastIDs, want)
	}
}

// TestBrowserEventSourceCrossOrigin checks an EventSource whose stream is
// on another origin than its page (another port): the browser refuses it
// unless the stream's server allows the page's origin with
// Access-Control-Allow-Origin. iotgate's CORS setting must do that for
// GET /v1/events.
func TestBrowserEventSourceCrossOrigin(t *testing.T) {
	for _, tc := range []struct {
		name  string
		allow bool
	}{
		{"NoCORS", false},
		{"CORS", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			origins := make(chan string, 10)
			var pageOrigin atomic.Value // the page's origin, set once the page serves
			sse := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				origins <- r.Header.Get("Origin")
				if tc.allow {
					w.Header().Set("Access-Control-Allow-Origin", pageOrigin.Load().(string))
				}
				w.Header().Set("Content-Type", "text/event-stream")
				writeEvents(w, 1, 3)
				select {
				case <-r.Context().Done():
				case <-time.After(reportTimeout):
				}
			}))
			t.Cleanup(sse.Close)
			page := NewPageReport(t, eventsPage(sse.URL+"/events"))
			origin := strings.TrimSuffix(page.URL(), "/")
			pageOrigin.Store(origin)
			b := BrowserForTest(t, page.URL())
			var got eventsReport
			page.Next(t, b, reportTimeout, &got)
			if tc.allow {
				if got.Error != "" || !slices.Equal(got.Events, wantEvents) {
					t.Errorf("page got %+v; want events %+v", got, wantEvents)
				}
			} else if got.Error == "" || len(got.Events) != 0 {
				t.Errorf("page got %+v; want an error and no event", got)
			}
			// The browser did reach the stream's server: the
			// header alone made the difference.
			select {
			case o := <-origins:
				if o != origin {
					t.Errorf("Origin %q; want the page's %q", o, origin)
				}
			default:
				t.Error("the stream's server got no request")
			}
		})
	}
}
