// Package console serves iotgate's web console: a few static files
// (HTML, a few plain scripts, one style sheet, the vendored uPlot chart
// library) embedded in the binary, which a browser loads from /console/
// and which then call the REST API with the token the user pastes. It is
// an adapter at the edge like api, and imports no other iotgate package:
// cmd/iotgate mounts its Handler on the API server.
//
// The files need no token (they hold no data); every data call the page
// makes carries the user's token. The page runs under a strict
// Content-Security-Policy: scripts, styles and connections from iotgate's
// own origin only, no inline script or style, no framing.
package console

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"
)

// Path is where the console is served; Handler serves the paths under it.
const Path = "/console/"

// CSP is the Content-Security-Policy of every file of the console: only
// iotgate's origin for scripts, styles, fetch and EventSource; no inline
// script or style (the page sets styles from scripts through the CSSOM,
// which CSP allows), no plugins, no <base>, no framing (clickjacking).
const CSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

//go:embed assets/index.html assets/*.js assets/app.css assets/vendor/uPlot.iife.min.js assets/vendor/uPlot.min.css assets/vendor/uPlot.LICENSE
var assets embed.FS

// contentTypes are the media types of the files by extension; a file
// with another extension is not served.
var contentTypes = map[string]string{
	".html":    "text/html; charset=utf-8",
	".js":      "text/javascript; charset=utf-8",
	".css":     "text/css; charset=utf-8",
	".LICENSE": "text/plain; charset=utf-8",
}

// file is one embedded file, ready to serve.
type file struct {
	body        []byte
	contentType string
	etag        string
}

// handler serves the embedded files.
type handler struct {
	files   map[string]file // by path under Path ("" is index.html)
	modTime time.Time
}

// Handler returns the http.Handler of the console's files, for requests
// whose path starts with Path: "/console/" is the page, the other files
// are under it by name. Only GET and HEAD are answered (405 otherwise);
// an unknown path gets 404. Every answer carries CSP and the other
// security headers; files are revalidated by ETag on every load
// (Cache-Control: no-cache), so an upgraded iotgate is never shown with
// the previous version's script.
func Handler() http.Handler {
	h := &handler{files: map[string]file{}, modTime: time.Now()}
	err := fs.WalkDir(assets, "assets", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		body, err := assets.ReadFile(p)
		if err != nil {
			return err
		}
		ct, ok := contentTypes[path.Ext(p)]
		if !ok {
			return fmt.Errorf("console: no content type for %s", p)
		}
		sum := sha256.Sum256(body)
		name := strings.TrimPrefix(p, "assets/")
		if name == "index.html" {
			name = ""
		}
		h.files[name] = file{body: body, contentType: ct, etag: `"` + hex.EncodeToString(sum[:12]) + `"`}
		return nil
	})
	if err != nil {
		// The files are embedded at build time: this is a bug, caught by
		// the package's tests.
		panic(err)
	}
	return h
}

// ServeHTTP serves one file.
func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hd := w.Header()
	hd.Set("Content-Security-Policy", CSP)
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Referrer-Policy", "no-referrer")
	hd.Set("X-Frame-Options", "DENY")
	hd.Set("Cross-Origin-Opener-Policy", "same-origin")
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		hd.Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	name, ok := strings.CutPrefix(r.URL.Path, Path)
	f, found := h.files[name]
	if !ok || !found {
		hd.Set("Cache-Control", "no-store")
		http.Error(w, "not found", http.StatusNotFound)
		return
	}
	hd.Set("Content-Type", f.contentType)
	hd.Set("Cache-Control", "no-cache")
	hd.Set("ETag", f.etag)
	// ServeContent answers If-None-Match with 304 and HEAD without a body.
	http.ServeContent(w, r, name, h.modTime, bytes.NewReader(f.body))
}
