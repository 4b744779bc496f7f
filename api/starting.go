package api

import (
	"encoding/json"
	"net/http"

	"github.com/iotgate/iotgate"
)

// Starting returns what iotgate serves on its HTTP address while it waits
// for its database at start, so that probes tell the truth before the API
// exists: /healthz answers 200, /readyz 503 with the database check saying
// why (waiting returns the last attempt's error, nil before any), and
// every other path 503 with the one error body (code unavailable).
// cmd/iotgate hands the address over to the API once it is built.
func Starting(waiting func() error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		switch r.URL.Path {
		case "/healthz":
			writeJSON(w, http.StatusOK, StatusResponse{Status: "ok"})
		case "/readyz":
			why := "iotgate is starting: waiting for the database"
			if err := waiting(); err != nil {
				// The domain message only: the cause may name hosts
				// or roles, and /readyz needs no token.
				why += " (" + iotgate.ErrorMessage(err) + ")"
			}
			writeJSON(w, http.StatusServiceUnavailable, ReadyResponse{Status: "unavailable", Checks: map[string]CheckResult{
				"database": {Error: why},
				"xmpp":     {Error: "not started: iotgate is waiting for the database"},
			}})
		default:
			w.Header().Set("Retry-After", "1")
			writeJSON(w, http.StatusServiceUnavailable, ErrorResponse{Code: iotgate.EUnavailable,
				Message: "iotgate is starting: waiting for its database, retry shortly"})
		}
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}
