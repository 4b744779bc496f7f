package api

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"testing"

	"github.com/labstack/echo/v4"

	"github.com/iotgate/iotgate"
)

// FuzzEventFilter reads arbitrary queries and Last-Event-ID headers as
// the event stream does: it never panics, refuses with invalid only, and
// what it accepts is in range (known types, bare JIDs, an id >= 0).
func FuzzEventFilter(f *testing.F) {
	for _, s := range [][2]string{
		{"types=reading,presence&device=a@x.com&label=site:berlin&after=17", ""},
		{"types=,reading", "4"}, {"device=a@x.com/r", ""}, {"label=:x&label=a", ""},
		{"after=-1", ""}, {"after=99999999999999999999", ""}, {"", " 12 "}, {"%zz", ""},
	} {
		f.Add(s[0], s[1])
	}
	e := echo.New()
	f.Fuzz(func(t *testing.T, query, lastID string) {
		req := httptest.NewRequest(http.MethodGet, "/v1/events", nil)
		req.URL.RawQuery = query
		if lastID != "" {
			req.Header.Set("Last-Event-ID", lastID)
		}
		filter, after, err := eventFilter(e.NewContext(req, httptest.NewRecorder()))
		if err != nil {
			if iotgate.ErrorCode(err) != iotgate.EInvalid {
				t.Fatalf("error %v, want invalid", err)
			}
			return
		}
		for _, ty := range filter.Types {
			if !slices.Contains(iotgate.EventTypes, ty) {
				t.Errorf("accepted type %q", ty)
			}
		}
		for _, d := range filter.Devices {
			if n, err := iotgate.NormalizeJID(d); err != nil || n != d {
				t.Errorf("accepted device %q (%v)", d, err)
			}
		}
		if after != nil && *after < 0 {
			t.Errorf("accepted after %d", *after)
		}
		if _, perr := url.ParseQuery(query); perr == nil && after == nil && lastID == "" && req.URL.Query().Get("after") != "" {
			t.Errorf("after=%q ignored", req.URL.Query().Get("after"))
		}
	})
}
