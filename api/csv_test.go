package api

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestAcceptsCSV(t *testing.T) {
	for _, tt := range []struct {
		accept string
		want   bool
	}{
		{"", false},
		{"application/json", false},
		{"*/*", false},
		{"text/csv", true},
		{"text/csv; charset=utf-8", true},
		{"application/json;q=0.9, text/csv", true},
		{"text/csv;q=0", false},
		{"text/csvx", false},
	} {
		if got := acceptsCSV(tt.accept); got != tt.want {
			t.Errorf("acceptsCSV(%q) = %v, want %v", tt.accept, got, tt.want)
		}
	}
}

func TestCSVValue(t *testing.T) {
	for _, tt := range []struct {
		in   any
		want string
	}{
		{nil, ""},
		{json.Number("-21.50"), "-21.50"},
		{true, "true"},
		{"heat", "heat"},
		{"=HYPERLINK(\"x\")", "'=HYPERLINK(\"x\")"},
		{"-1+2", "'-1+2"},
		{"@SUM(A1)", "'@SUM(A1)"},
		{map[string]any{"a": json.Number("1")}, `{"a":1}`},
		{[]any{"=x"}, `["=x"]`},
	} {
		if got := csvValue(tt.in); got != tt.want {
			t.Errorf("csvValue(%#v) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestReadingsCSV(t *testing.T) {
	const target = "/v1/devices/thermo1%40example.com/readings"
	csvHeader := []string{"Accept", "text/csv"}
	// The fixture's readings: at testTime+30m, and at testTime+1h
	// stamped testTime by the device.
	at := func(d time.Duration) string { return testTime.Add(d).Format(time.RFC3339Nano) }
	all := "received_at,device_time,@unit,mode,temperature\n" +
		at(30*time.Minute) + ",,,,21\n" +
		at(time.Hour) + "," + at(0) + ",,heat,21.5\n"
	for _, tt := range []struct {
		name   string
		query  string
		header []string
		status int
		want   string // the body, for 200
	}{
		{"AllPages", "?order=asc&limit=1", csvHeader, 200,
			all},
		{"DefaultPage", "", csvHeader, 200,
			all},
		{"JSONByDefault", "", nil, 200, ""},
		{"ErrBadOrder", "?order=up", csvHeader, 400, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			svc := newDeviceFixture()
			rec := do(t, newAPI(t, nil, svc), http.MethodGet, target+tt.query, nil, tt.header...)
			if rec.Code != tt.status {
				t.Fatalf("= %d, want %d: %s", rec.Code, tt.status, rec.Body.String())
			}
			if tt.status != 200 {
				if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
					t.Errorf("error Content-Type = %q, want JSON", ct)
				}
				return
			}
			if tt.want == "" {
				if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
					t.Errorf("Content-Type = %q, want JSON", ct)
				}
				return
			}
			if ct := rec.Header().Get("Content-Type"); ct != "text/csv; charset=utf-8" {
				t.Errorf("Content-Type = %q", ct)
			}
			if got := rec.Body.String(); got != tt.want {
				t.Errorf("body =\n%s\nwant\n%s", got, tt.want)
			}
			if got := rec.Result().Trailer.Get(nextCursorTrailer); got != "" {
				t.Errorf("trailer %s = %q on a complete export", nextCursorTrailer, got)
			}
		})
	}
}
