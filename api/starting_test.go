package api

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/iotgate/iotgate"
)

func TestStarting(t *testing.T) {
	tests := []struct {
		name     string
		path     string
		last     error
		status   int
		contains string // in the body
		hidden   string // never in the body
	}{
		{"Healthz", "/healthz", nil, 200, `"status":"ok"`, ""},
		{"ReadyzBeforeAnyAttempt", "/readyz", nil, 503, "waiting for the database", ""},
		{"ReadyzSaysWhy", "/readyz", &iotgate.Error{Code: iotgate.EUnavailable, Message: "database refused the credentials", Err: errors.New("pq: password authentication failed for user \"secret-role\"")},
			503, "database refused the credentials", "secret-role"},
		{"ReadyzHidesInternals", "/readyz", errors.New("dial tcp 10.1.2.3:5432: connection refused"), 503, "internal error", "10.1.2.3"},
		{"API", "/v1/devices", nil, 503, `"code":"unavailable"`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			Starting(func() error { return tt.last }).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, tt.path, nil))
			body := rec.Body.String()
			if rec.Code != tt.status || !strings.Contains(body, tt.contains) || (tt.hidden != "" && strings.Contains(body, tt.hidden)) {
				t.Errorf("GET %s = %d %s, want %d containing %q without %q", tt.path, rec.Code, body, tt.status, tt.contains, tt.hidden)
			}
			if !json.Valid(rec.Body.Bytes()) {
				t.Errorf("body is not JSON: %s", body)
			}
		})
	}
}
