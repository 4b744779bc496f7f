//go:build integration

package servers

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/remote"
)

// DevTools is a browser started by StartBrowser (with its flags and its
// clean-up) that a test drives through the DevTools protocol with
// chromedp, rather than through a page that reports (PageReport).
type DevTools struct {
	*Browser
	// Ctx is a chromedp context of one tab of the browser: pass it (or a
	// context.WithTimeout of it, to bound a step) to chromedp.Run and
	// chromedp.Do. It is canceled when the test ends.
	Ctx context.Context
}

// DevToolsForTest starts chromium as BrowserForTest does (StartBrowser), with the
// DevTools protocol on a free port of 127.0.0.1 (the browser picks it and
// writes it into its profile), connects chromedp to it and opens a blank
// tab. The browser is closed, and its log shown if the test failed, when
// the test ends. It fails the test if chromium is missing or doesn't come
// up: it never skips. chromedp needs no browser of its own: this is the
// same chromium, started the same way, as every other browser test's.
func DevToolsForTest(t TB) *DevTools {
	t.Helper()
	b := browserForTest(t, BrowserOptions{URL: "about:blank",
		Args: []string{"--remote-debugging-port=0", "--remote-debugging-address=127.0.0.1"}})
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	ws, err := devToolsURL(ctx, b)
	if err != nil {
		t.Fatalf("servers: %v\nbrowser log:\n%s", err, b.LogTail(40))
	}
	// NoModifyURL: the URL is the browser's own WebSocket endpoint, not
	// an HTTP address to ask for it.
	alloc, cancelAlloc := remote.NewAllocator(context.Background(), ws, remote.NoModifyURL)
	tab, cancelTab := chromedp.NewContext(alloc)
	t.Cleanup(func() {
		cancelTab()
		cancelAlloc()
	})
	// The first Do attaches to the browser and opens the tab. It must
	// get the tab's own context: chromedp ties the tab to the context of
	// its first run, so a timeout context here would close it on return.
	// The remote allocator bounds the connection by its dial timeout.
	if err := chromedp.Do(tab); err != nil {
		t.Fatalf("servers: connect to the browser's DevTools at %s: %v\nbrowser log:\n%s", ws, err, b.LogTail(40))
	}
	return &DevTools{Browser: b, Ctx: tab}
}

// devToolsURL waits for the browser's DevToolsActivePort file (its port,
// then the path of its WebSocket endpoint) and returns the endpoint's URL.
func devToolsURL(ctx context.Context, b *Browser) (string, error) {
	file := filepath.Join(b.Dir(), "profile", "DevToolsActivePort")
	for {
		body, err := os.ReadFile(file)
		if err == nil {
			lines := strings.Fields(string(body))
			if len(lines) >= 2 {
				if port, err := strconv.Atoi(lines[0]); err == nil && port > 0 {
					return fmt.Sprintf("ws://127.0.0.1:%d%s", port, lines[1]), nil
				}
			}
		} else if !errors.Is(err, os.ErrNotExist) {
			return "", fmt.Errorf("read %s: %w", file, err)
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("the browser wrote no DevTools port to %s: %w", file, ctx.Err())
		case <-b.Done():
			return "", errors.New("the browser exited before it opened its DevTools port")
		case <-time.After(50 * time.Millisecond):
		}
	}
}
