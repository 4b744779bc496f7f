package api

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/iotgate/iotgate"
)

// encodeJSON is what c.JSON writes: encoding/json with HTML escaping,
// and a newline.
func encodeJSON(t *testing.T, v any) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := json.NewEncoder(&buf).Encode(v); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// readingOf is how the handlers converted readings before they wrote
// them directly: the reference the writers are held to.
func readingOf(r *iotgate.Reading) Reading {
	return Reading{ID: r.ID, ReceivedAt: r.ReceivedAt, DeviceTime: r.DeviceTime, XML: r.XML, Data: r.Data}
}

// record runs write on a fresh echo context and returns the body, after
// checking the status and content type.
func record(t *testing.T, write func(echo.Context) error) []byte {
	t.Helper()
	rec := httptest.NewRecorder()
	c := echo.New().NewContext(httptest.NewRequest(http.MethodGet, "/", nil), rec)
	if err := write(c); err != nil {
		t.Fatal(err)
	}
	if rec.Code != http.StatusOK || rec.Header().Get(echo.HeaderContentType) != echo.MIMEApplicationJSON {
		t.Fatalf("status %d, content type %q", rec.Code, rec.Header().Get(echo.HeaderContentType))
	}
	return rec.Body.Bytes()
}

var jsonReadings = []*iotgate.Reading{
	{ID: 1, ReceivedAt: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), XML: `<reading xmlns="urn:example:thermostat"><temperature>21</temperature></reading>`, Data: json.RawMessage(`{"temperature":21}`)},
	// PostgreSQL's jsonb output: spaces after colons and commas, also
	// inside strings, which must stay.
	{ID: 4711, ReceivedAt: time.Date(2026, 1, 2, 3, 4, 5, 123456789, time.UTC), DeviceTime: ptr(time.Date(2026, 1, 2, 3, 4, 0, 0, time.FixedZone("", 3600))),
		XML:  "<r a='1' b=\"2\">&amp; \\ \t\n\r\b\f\x01\x1f \u2028\u2029 é 😀 \xff\xfe</r>",
		Data: json.RawMessage(`{"@a": "x, y: z", "b": [1, 2.50, true, null], "c": {"d": "<&>\" \\ \u2028"}, "e": "\\u0041"}`)},
	{ID: 9, ReceivedAt: time.Date(2026, 1, 2, 3, 4, 5, 100, time.UTC), Data: nil},
	{ID: 10, ReceivedAt: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), Data: json.RawMessage(" \n{ \"k\" :\t[ ] }\r\n")},
}

func ptr[T any](v T) *T { return &v }

func TestWriteReadingsMatchesJSON(t *testing.T) {
	tests := []struct {
		name string
		page *iotgate.ReadingPage
	}{
		{"Empty", &iotgate.ReadingPage{Items: []*iotgate.Reading{}}},
		{"One", &iotgate.ReadingPage{Items: jsonReadings[:1]}},
		{"Several", &iotgate.ReadingPage{Items: jsonReadings}},
		{"Cursor", &iotgate.ReadingPage{Items: jsonReadings[1:2], NextCursor: "MTc2NzM2OTYwMDEyMzAwMDAwMC40NzEx"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := record(t, func(c echo.Context) error { return writeReadings(c, tt.page) })
			ref := ReadingList{Items: []Reading{}, NextCursor: tt.page.NextCursor}
			for _, r := range tt.page.Items {
				ref.Items = append(ref.Items, readingOf(r))
			}
			if want := encodeJSON(t, ref); !bytes.Equal(got, want) {
				t.Errorf("got  %s\nwant %s", got, want)
			}
		})
	}
}

func TestWriteStateMatchesJSON(t *testing.T) {
	seen := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	tests := []struct {
		name string
		st   *iotgate.State
	}{
		{"NoReading", &iotgate.State{JID: "thermo1@example.com", PresenceStale: true}},
		{"Online", &iotgate.State{JID: "a<b>&c@example.com", Online: true, LastSeenAt: &seen, Reading: jsonReadings[1],
			Resources: []iotgate.Resource{
				{JID: "a@example.com/x", Show: "away", Status: "on \"battery\"", Priority: -3, Since: seen},
				{JID: "a@example.com/y", Priority: 5, Since: seen.Add(time.Second)},
			}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := record(t, func(c echo.Context) error { return writeState(c, tt.st) })
			st := tt.st
			ref := DeviceState{JID: st.JID, Online: st.Online, PresenceStale: st.PresenceStale, LastSeenAt: st.LastSeenAt, Resources: []Resource{}}
			for _, r := range st.Resources {
				ref.Resources = append(ref.Resources, Resource(r))
			}
			if st.Reading != nil {
				r := readingOf(st.Reading)
				ref.Reading = &r
			}
			if want := encodeJSON(t, ref); !bytes.Equal(got, want) {
				t.Errorf("got  %s\nwant %s", got, want)
			}
		})
	}
}

// FuzzAppendCompactJSON holds the data writer to what encoding/json
// makes of a valid json.RawMessage.
func FuzzAppendCompactJSON(f *testing.F) {
	for _, r := range jsonReadings {
		f.Add([]byte(r.Data))
	}
	f.Fuzz(func(t *testing.T, v []byte) {
		if !json.Valid(v) {
			return // data is always valid JSON
		}
		want, err := json.Marshal(json.RawMessage(v))
		if err != nil {
			t.Fatal(err)
		}
		if got := appendCompactJSON(nil, v); !bytes.Equal(got, want) {
			t.Errorf("%q: got %s, want %s", v, got, want)
		}
	})
}
