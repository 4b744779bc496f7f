package api

import (
	"bytes"
	"encoding/json"
	"net/http"
	"testing"

	"github.com/iotgate/iotgate/api/openapi"
)

// TestSwaggerDocIsDescription checks that /swagger/doc.json serves
// openapi.Description, the form whose validity package openapi's tests
// check, and not swag's raw template with its empty host.
func TestSwaggerDocIsDescription(t *testing.T) {
	s, _ := newTestServer(t, Config{}, nil)
	rec := do(t, s, http.MethodGet, "/swagger/doc.json", nil)
	if rec.Code != http.StatusOK {
		t.Fatalf("status = %d, want %d", rec.Code, http.StatusOK)
	}
	want, err := openapi.Description()
	if err != nil {
		t.Fatal(err)
	}
	if got := rec.Body.Bytes(); !bytes.Equal(got, want) {
		t.Errorf("/swagger/doc.json is not openapi.Description (%d bytes, want %d)", len(got), len(want))
	}
	var doc map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &doc); err != nil {
		t.Fatalf("decode: %v", err)
	}
	if _, ok := doc["host"]; ok {
		t.Errorf("the served description has a host (%v); an empty one is invalid Swagger 2.0", doc["host"])
	}
	if got := rec.Header().Get("Content-Type"); got != "application/json; charset=UTF-8" {
		t.Errorf("Content-Type = %q", got)
	}
}
