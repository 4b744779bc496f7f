package main

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestRawGet checks the reads loads' hand-written HTTP/1.1 client against
// net/http's server: each kind of answer it must read to its end, and
// that a connection stays usable after it.
func TestRawGet(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer tok" {
			http.Error(w, "no token", http.StatusUnauthorized)
			return
		}
		switch r.URL.Path {
		case "/length":
			w.Write([]byte(`{"ok":true}`))
		case "/chunked":
			for range 3 {
				w.Write([]byte(strings.Repeat("x", 5000)))
				w.(http.Flusher).Flush()
			}
		case "/empty":
			w.WriteHeader(http.StatusOK)
		case "/missing":
			http.Error(w, `{"code":"not_found"}`, http.StatusNotFound)
		case "/close":
			w.Header().Set("Connection", "close")
			w.Write([]byte("bye"))
		}
	}))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	for _, tt := range []struct {
		name, path, token string
		wantErr           string // "" for none
		closed            bool
	}{
		{"ContentLength", "/length", "tok", "", false},
		{"Chunked", "/chunked", "tok", "", false},
		{"Empty", "/empty", "tok", "", false},
		{"ErrNotFound", "/missing", "tok", "404", false},
		{"ErrUnauthorized", "/length", "bad", "401", false},
		{"Closed", "/close", "tok", "", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			rc, err := dialRaw(context.Background(), host, host, tt.token)
			if err != nil {
				t.Fatal(err)
			}
			defer rc.close()
			for i := range 3 { // the same connection, again and again
				err := rc.get(tt.path, time.Now().Add(5*time.Second))
				switch {
				case tt.closed:
					if !errors.Is(err, errRawClosed) {
						t.Fatalf("get %d = %v, want errRawClosed", i, err)
					}
					return
				case tt.wantErr == "" && err != nil:
					t.Fatalf("get %d = %v, want nil", i, err)
				case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
					t.Fatalf("get %d = %v, want an error with %q", i, err, tt.wantErr)
				case tt.wantErr != "":
					return // the body was read, but the bench drops the connection
				}
			}
		})
	}
}

// TestRawLoad runs a short load against a server and checks that every
// request is counted, as a success or a failure.
func TestRawLoad(t *testing.T) {
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1)%10 == 0 {
			http.Error(w, "no", http.StatusTeapot)
			return
		}
		w.Write([]byte("{}"))
	}))
	defer srv.Close()
	r, err := rawLoad(context.Background(), srv.URL, "tok", 4, 200*time.Millisecond, func(i int) string { return "/x" })
	if err != nil {
		t.Fatal(err)
	}
	total := int64(r.lat.count()) + r.failed
	if got := n.Load(); total != got {
		t.Errorf("successes %d + failures %d = %d, want the %d requests served", r.lat.count(), r.failed, total, got)
	}
	if r.failed == 0 || r.firstErr == nil || !strings.Contains(r.firstErr.Error(), "418") {
		t.Errorf("failed = %d, first error %v: want the 418s counted", r.failed, r.firstErr)
	}
	if r.rate <= 0 {
		t.Errorf("rate = %v, want > 0", r.rate)
	}
}
