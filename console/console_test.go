package console

import (
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
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
		{"Index", "GET", "/console/", 200, "text/html; charset=utf-8", `<script src="app.js" type="module">`},
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
	for _, tc := range []struct {
		name, file string
		re         *regexp.Regexp
	}{
		{"InlineScript", "index.html", regexp.MustCompile(`<script(?:\s[^>]*)?>\s*[^<\s]`)},
		{"ScriptWithoutSrc", "index.html", regexp.MustCompile(`<script(?:(?:\s+(?:type|defer|async)(?:="[^"]*")?)*)\s*>`)},
		{"InlineStyleElement", "index.html", regexp.MustCompile(`<style`)},
		{"StyleAttribute", "index.html", regexp.MustCompile(`\sstyle=`)},
		{"EventAttribute", "index.html", regexp.MustCompile(`\son[a-z]+=`)},
		{"InnerHTML", "app.js", regexp.MustCompile(`innerHTML|outerHTML|insertAdjacentHTML|document\.write`)},
		{"Eval", "app.js", regexp.MustCompile(`\beval\(|new Function\(`)},
		{"LocalStorage", "app.js", regexp.MustCompile(`localStorage`)},
		{"TokenInURL", "app.js", regexp.MustCompile(`[?&](?:token|access_token)=`)},
		{"ExternalURL", "app.js", regexp.MustCompile(`https?://`)},
		{"ExternalURLInPage", "index.html", regexp.MustCompile(`(?:src|href)="https?:`)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if m := tc.re.FindString(read(tc.file)); m != "" {
				t.Errorf("%s has %q", tc.file, m)
			}
		})
	}
}
