package api

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestCORS(t *testing.T) {
	tests := []struct {
		name    string
		origins []string
		origin  string
		want    string // Access-Control-Allow-Origin
	}{
		{"NoneByDefault", nil, "https://app.example.com", ""},
		{"Allowed", []string{"https://app.example.com"}, "https://app.example.com", "https://app.example.com"},
		{"OtherOrigin", []string{"https://app.example.com"}, "https://evil.example.com", ""},
		{"Any", []string{"*"}, "https://whoever.example.com", "*"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newServer(Config{CORSOrigins: tt.origins}, Deps{})
			req := httptest.NewRequest(http.MethodOptions, "/healthz", nil)
			req.Header.Set("Origin", tt.origin)
			req.Header.Set("Access-Control-Request-Method", "POST")
			rec := httptest.NewRecorder()
			s.ServeHTTP(rec, req)
			if got := rec.Header().Get("Access-Control-Allow-Origin"); got != tt.want {
				t.Errorf("Access-Control-Allow-Origin = %q, want %q", got, tt.want)
			}
		})
	}
}

// TestCORSPreflightNeedsNoToken: browsers send preflights without
// credentials, so they must not meet the token check.
func TestCORSPreflightNeedsNoToken(t *testing.T) {
	s := newServer(Config{CORSOrigins: []string{"https://app.example.com"}}, Deps{Devices: newFakeDevices()})
	req := httptest.NewRequest(http.MethodOptions, "/v1/devices", nil)
	req.Header.Set("Origin", "https://app.example.com")
	req.Header.Set("Access-Control-Request-Method", "POST")
	req.Header.Set("Access-Control-Request-Headers", "Authorization")
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, req)
	if rec.Code != http.StatusNoContent || rec.Header().Get("Access-Control-Allow-Origin") != "https://app.example.com" {
		t.Errorf("preflight = %d %v, want 204 allowing the origin", rec.Code, rec.Header())
	}
}
