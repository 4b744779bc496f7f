package console

import (
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"testing"
)

func serve(t *testing.T, h http.Handler, method, path string, header ...string) *http.Response {
	t.Helper()
	req := httptest.NewRequest(method, path, nil)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Result()
}

// TestHandler: each file with its media type, the security headers on
// every answer, and 404/405 for the rest.
func TestHandler(t *testing.T) {
	h := Handler()
	for _, tc := range []struct {
		name, method, path string
		status             int
		contentType        string
		bodyHas            string
	}{
		{"Index", "GET", "/console/", 200, "text/html; charset=utf-8", `<script src="app.js" defer>`},
		{"Script", "GET", "/console/app.js", 200, "text/javascript; charset=utf-8", "sessionStorage"},
		{"Style", "GET", "/console/app.css", 200, "text/css; charset=utf-8", ".badge"},
		{"UPlot", "GET", "/console/vendor/uPlot.iife.min.js", 200, "text/javascript; charset=utf-8", "uPlot"},
		{"UPlotCSS", "GET", "/console/vendor/uPlot.min.css", 200, "text/css; charset=utf-8", ".uplot"},
		{"UPlotLicence", "GET", "/console/vendor/uPlot.LICENSE", 200, "text/plain; charset=utf-8", "MIT"},
		{"Head", "HEAD", "/console/app.js", 200, "text/javascript; charset=utf-8", ""},
		{"IndexByName", "GET", "/console/index.html", 404, "", ""},
		{"Unknown", "GET", "/console/nope.js", 404, "", ""},
		{"Traversal", "GET", "/console/../console.go", 404, "", ""},
		{"VendorReadme", "GET", "/console/vendor/README.md", 404, "", ""},
		{"OutsidePrefix", "GET", "/app.js", 404, "", ""},
		{"Post", "POST", "/console/", 405, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := serve(t, h, tc.method, tc.path)
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.status)
			}
			for k, want := range map[string]string{
				"Content-Security-Policy": CSP,
				"X-Content-Type-Options":  "nosniff",
				"Referrer-Policy":         "no-referrer",
				"X-Frame-Options":         "DENY",
			} {
				if got := resp.Header.Get(k); got != want {
					t.Errorf("%s = %q, want %q", k, got, want)
				}
			}
			if tc.status != 200 {
				return
			}
			if got := resp.Header.Get("Content-Type"); got != tc.contentType {
				t.Errorf("Content-Type = %q, want %q", got, tc.contentType)
			}
			if got := resp.Header.Get("Cache-Control"); got != "no-cache" {
				t.Errorf("Cache-Control = %q, want no-cache", got)
			}
			if resp.Header.Get("ETag") == "" {
				t.Error("no ETag")
			}
			if tc.method == "HEAD" && len(body) != 0 {
				t.Errorf("HEAD answered a body of %d bytes", len(body))
			}
			if !strings.Contains(string(body), tc.bodyHas) {
				t.Errorf("body does not contain %q", tc.bodyHas)
			}
		})
	}
}

// TestRevalidate: a reload with the ETag gets 304, without the file.
func TestRevalidate(t *testing.T) {
	h := Handler()
	for _, path := range []string{"/console/", "/console/app.js"} {
		t.Run(path, func(t *testing.T) {
			first := serve(t, h, "GET", path)
			etag := first.Header.Get("ETag")
			again := serve(t, h, "GET", path, "If-None-Match", etag)
			if again.StatusCode != http.StatusNotModified {
				t.Errorf("status %d with If-None-Match %s, want 304", again.StatusCode, etag)
			}
			other := serve(t, h, "GET", path, "If-None-Match", `"other"`)
			if other.StatusCode != http.StatusOK {
				t.Errorf("status %d with another ETag, want 200", other.StatusCode)
			}
		})
	}
}

// TestCSP: the policy allows nothing but iotgate's origin, and no inline
// code.
func TestCSP(t *testing.T) {
	for _, want := range []string{"default-src 'self'", "script-src 'self'", "style-src 'self'", "connect-src 'self'",
		"frame-ancestors 'none'", "object-src 'none'", "base-uri 'none'"} {
		if !strings.Contains(CSP, want) {
			t.Errorf("CSP %q lacks %q", CSP, want)
		}
	}
	for _, bad := range []string{"unsafe-inline", "unsafe-eval", "*", "http:", "https:"} {
		if strings.Contains(CSP, bad) {
			t.Errorf("CSP %q allows %q", CSP, bad)
		}
	}
}

// TestAssetsKeepTheRules checks the files for what CSP would block or
// what would leak the token or inject API data as markup.
func TestAssetsKeepTheRules(t *testing.T) {
	read := func(name string) string {
		b, err := assets.ReadFile("assets/" + name)
		if err != nil {
			t.Fatal(err)
		}
		// Comments may name what the code must not do.
		var code []string
		for line := range strings.SplitSeq(string(b), "\n") {
			if !strings.HasPrefix(strings.TrimSpace(line), "//") {
				code = append(code, line)
			}
		}
		return strings.Join(code, "\n")
	}
	scripts := scriptFiles(t)
	for _, tc := range []struct {
		name  string
		files []string
		re    *regexp.Regexp
	}{
		{"InlineScript", []string{"index.html"}, regexp.MustCompile(`<script(?:\s[^>]*)?>\s*[^<\s]`)},
		{"ScriptWithoutSrc", []string{"index.html"}, regexp.MustCompile(`<script(?:(?:\s+(?:type|defer|async)(?:="[^"]*")?)*)\s*>`)},
		{"InlineStyleElement", []string{"index.html"}, regexp.MustCompile(`<style`)},
		{"StyleAttribute", []string{"index.html"}, regexp.MustCompile(`\sstyle=`)},
		{"EventAttribute", []string{"index.html"}, regexp.MustCompile(`\son[a-z]+=`)},
		{"InnerHTML", scripts, regexp.MustCompile(`innerHTML|outerHTML|insertAdjacentHTML|document\.write`)},
		{"Eval", scripts, regexp.MustCompile(`\beval\(|new Function\(`)},
		{"LocalStorage", scripts, regexp.MustCompile(`localStorage`)},
		{"TokenInURL", scripts, regexp.MustCompile(`[?&](?:token|access_token)=`)},
		{"ExternalURL", scripts, regexp.MustCompile(`https?://`)},
		{"ExternalURLInPage", []string{"index.html"}, regexp.MustCompile(`(?:src|href)="https?:`)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, f := range tc.files {
				if m := tc.re.FindString(read(f)); m != "" {
					t.Errorf("%s has %q", f, m)
				}
			}
		})
	}
}

// scriptFiles are the console's own scripts (assets/*.js), by name.
func scriptFiles(t *testing.T) []string {
	t.Helper()
	paths, err := fs.Glob(assets, "assets/*.js")
	if err != nil || len(paths) == 0 {
		t.Fatalf("no script embedded: %v", err)
	}
	names := make([]string, len(paths))
	for i, p := range paths {
		names[i] = strings.TrimPrefix(p, "assets/")
	}
	return names
}

// maxScriptLines keeps each script readable in one sitting.
const maxScriptLines = 400

// TestScripts: index.html loads every script of the console, each once,
// deferred (in order, after the page is parsed), with app.js, which
// starts the console, last; each is served, strict, short, and declares
// no top-level name another declares (the scripts share one global
// scope: a second declaration is a SyntaxError that stops its script).
func TestScripts(t *testing.T) {
	page, err := assets.ReadFile("assets/index.html")
	if err != nil {
		t.Fatal(err)
	}
	tags := regexp.MustCompile(`<script\s[^>]*>`).FindAllString(string(page), -1)
	srcRe := regexp.MustCompile(`\ssrc="([^"]+)"`)
	var loaded []string
	for _, tag := range tags {
		m := srcRe.FindStringSubmatch(tag)
		if m == nil {
			t.Errorf("script without src: %s", tag)
			continue
		}
		if !strings.Contains(tag, " defer") || strings.Contains(tag, "async") || strings.Contains(tag, "module") {
			t.Errorf("%s: want a plain deferred script", tag)
		}
		if !strings.HasPrefix(m[1], "vendor/") {
			loaded = append(loaded, m[1])
		}
	}
	scripts := scriptFiles(t)
	if got, want := sortedCopy(loaded), scripts; !slices.Equal(got, want) {
		t.Errorf("index.html loads %v, want each of %v once", loaded, want)
	}
	if len(loaded) == 0 || loaded[len(loaded)-1] != "app.js" {
		t.Errorf("index.html loads %v, want app.js last", loaded)
	}

	h := Handler()
	decl := regexp.MustCompile(`(?m)^(?:async\s+)?(?:function\*?|const|let|var|class)\s+([\w$]+)`)
	declaredIn := map[string]string{}
	for _, name := range scripts {
		t.Run(name, func(t *testing.T) {
			resp := serve(t, h, "GET", "/console/"+name)
			if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/javascript; charset=utf-8" {
				t.Errorf("GET %s: %d %s", name, resp.StatusCode, resp.Header.Get("Content-Type"))
			}
			b, err := assets.ReadFile("assets/" + name)
			if err != nil {
				t.Fatal(err)
			}
			src := string(b)
			if n := strings.Count(src, "\n"); n > maxScriptLines {
				t.Errorf("%d lines, want at most %d", n, maxScriptLines)
			}
			if !regexp.MustCompile(`(?m)^'use strict';$`).MatchString(src) {
				t.Error("no 'use strict' directive")
			}
			for _, m := range decl.FindAllStringSubmatch(src, -1) {
				if other, ok := declaredIn[m[1]]; ok {
					t.Errorf("%s declared here and in %s", m[1], other)
				}
				declaredIn[m[1]] = name
			}
		})
	}
}

func sortedCopy(s []string) []string {
	c := slices.Clone(s)
	slices.Sort(c)
	return c
}
