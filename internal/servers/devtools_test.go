//go:build integration

package servers

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// TestDevTools drives a page through DevToolsForTest: navigate, type,
// click, read; and the browser and its directory are gone after the test.
func TestDevTools(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		io.WriteString(w, `<input id=in><button id=go>Go</button><p id=out></p>
<script>document.querySelector('#go').onclick = () => {
	document.querySelector('#out').textContent = 'got ' + document.querySelector('#in').value };</script>`)
	}))
	defer srv.Close()

	var dir string
	t.Run("Drive", func(t *testing.T) {
		dt := DevToolsForTest(t)
		dir = dt.Dir()
		ctx, cancel := context.WithTimeout(dt.Ctx, time.Minute)
		defer cancel()
		if err := chromedp.Do(ctx,
			chromedp.Navigate(srv.URL),
			chromedp.SendKeys(chromedp.CSS("#in"), "hello"),
			chromedp.Click(chromedp.CSS("#go")),
		); err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			name, expr, want string
		}{
			{"Typed", `document.querySelector('#out').textContent`, "got hello"},
			{"Origin", `location.origin`, srv.URL},
		} {
			t.Run(tc.name, func(t *testing.T) {
				got, err := chromedp.Run(ctx, chromedp.Evaluate[string](tc.expr))
				if err != nil || got != tc.want {
					t.Errorf("%s = %q, %v; want %q", tc.expr, got, err, tc.want)
				}
			})
		}
	})
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("browser directory %s still there after the test (%v)", dir, err)
	}
}
