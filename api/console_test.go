package api

import (
	"net/http"
	"testing"
)

// TestConsoleMount: Deps.Console gets every GET and HEAD under /console/,
// with no token (the files hold no data); /console redirects; other
// methods and the API's own routes are not its business. Without it,
// /console/ is 404.
func TestConsoleMount(t *testing.T) {
	var got []string
	files := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = append(got, r.Method+" "+r.URL.Path)
		w.WriteHeader(http.StatusTeapot)
	})
	with := newServer(Config{}, Deps{Console: files})
	without := newServer(Config{}, Deps{})
	for _, tc := range []struct {
		name, method, path string
		srv                *Server
		status             int
		reached            string
		location           string
	}{
		{"Page", "GET", "/console/", with, http.StatusTeapot, "GET /console/", ""},
		{"File", "GET", "/console/vendor/uPlot.min.css", with, http.StatusTeapot, "GET /console/vendor/uPlot.min.css", ""},
		{"Head", "HEAD", "/console/app.js", with, http.StatusTeapot, "HEAD /console/app.js", ""},
		{"NoSlash", "GET", "/console", with, http.StatusMovedPermanently, "", "/console/"},
		{"Post", "POST", "/console/", with, http.StatusMethodNotAllowed, "", ""},
		{"Off", "GET", "/console/", without, http.StatusNotFound, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got = nil
			// No Authorization header: the files need no token.
			rec := do(t, tc.srv, tc.method, tc.path, nil, "Authorization", "")
			if rec.Code != tc.status {
				t.Fatalf("status %d, want %d", rec.Code, tc.status)
			}
			if tc.reached != "" && (len(got) != 1 || got[0] != tc.reached) {
				t.Errorf("handler got %q, want %q", got, tc.reached)
			}
			if tc.reached == "" && len(got) != 0 {
				t.Errorf("handler got %q, want nothing", got)
			}
			if loc := rec.Header().Get("Location"); loc != tc.location {
				t.Errorf("Location = %q, want %q", loc, tc.location)
			}
		})
	}
}
