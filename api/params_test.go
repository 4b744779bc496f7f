package api

import (
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/iotgate/iotgate"
)

// TestParseQuery checks the one parser of list queries: each type, the
// defaults an absent or empty parameter keeps, and the errors naming the
// parameter.
func TestParseQuery(t *testing.T) {
	type query struct {
		Name   string            `query:"name" validate:"max=3"`
		Limit  int               `query:"limit" validate:"min=1,max=1000"`
		Since  *time.Time        `query:"since"`
		Online *bool             `query:"online"`
		Labels map[string]string `query:"label"`
		Other  string
	}
	since := time.Date(2026, 1, 2, 15, 4, 5, 0, time.UTC)
	yes := true
	tests := []struct {
		name    string
		query   string
		want    query
		wantErr string
	}{
		{name: "Absent", query: "", want: query{Name: "def", Limit: DefaultPageLimit}},
		{name: "Empty", query: "name=&limit=&since=&online=", want: query{Name: "def", Limit: DefaultPageLimit}},
		{name: "All", query: "name=ab&limit=5&since=2026-01-02T15:04:05Z&online=true&label=room:kitchen&label=site:berlin&Other=x",
			want: query{Name: "ab", Limit: 5, Since: &since, Online: &yes, Labels: map[string]string{"room": "kitchen", "site": "berlin"}}},
		{name: "FirstValue", query: "limit=7&limit=8", want: query{Name: "def", Limit: 7}},
		{name: "BadInt", query: "limit=ten", wantErr: `limit must be an integer, not "ten"`},
		{name: "BadTime", query: "since=2026-01-02", wantErr: "since must be an RFC 3339 time"},
		{name: "BadBool", query: "online=yes", wantErr: `online must be true or false, not "yes"`},
		{name: "BadLabel", query: "label=room", wantErr: "must be key:value"},
		{name: "FirstBadNamed", query: "limit=x&online=y", wantErr: "limit must be an integer"},
		{name: "Range", query: "limit=1001", wantErr: "limit must be at most 1000"},
		{name: "Validated", query: "name=abcd", wantErr: "name"},
	}
	e := echo.New()
	e.Validator = newValidator()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := e.NewContext(httptest.NewRequest("GET", "/?"+tt.query, nil), httptest.NewRecorder())
			got := query{Name: "def", Limit: DefaultPageLimit}
			err := parseQuery(c, &got)
			if tt.wantErr != "" {
				if iotgate.ErrorCode(err) != iotgate.EInvalid || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want invalid containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}
