package api

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
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
		// Past listChunk: written out in pieces.
		{"Streamed", &iotgate.ReadingPage{Items: bigReadings(40, 10<<10), NextCursor: "MTc2NzM2OTYwMDEyMzAwMDAwMC40NzEx"}},
	}
	for _, tt := range tests {
		// A page from the device service's memory comes with each
		// reading encoded by AppendReading: the same bytes.
		encoded := *tt.page
		for _, r := range tt.page.Items {
			encoded.Encoded = append(encoded.Encoded, AppendReading(nil, r))
		}
		for name, page := range map[string]*iotgate.ReadingPage{tt.name: tt.page, tt.name + "Encoded": &encoded} {
			t.Run(name, func(t *testing.T) {
				got := record(t, func(c echo.Context) error { return writeReadings(c, page) })
				ref := ReadingList{Items: []Reading{}, NextCursor: page.NextCursor}
				for _, r := range page.Items {
					ref.Items = append(ref.Items, readingOf(r))
				}
				if want := encodeJSON(t, ref); !bytes.Equal(got, want) {
					t.Errorf("got  %s\nwant %s", got, want)
				}
			})
		}
	}
}

// bigReadings returns n readings of about size bytes of XML each, with
// characters JSON escapes.
func bigReadings(n, size int) []*iotgate.Reading {
	rs := make([]*iotgate.Reading, n)
	for i := range rs {
		rs[i] = &iotgate.Reading{ID: int64(i + 1), ReceivedAt: time.Date(2026, 1, 2, 3, 4, 5, i, time.UTC),
			XML:  "<r>" + strings.Repeat("a<b & \"c\" ", size/14) + "</r>",
			Data: json.RawMessage(`{"n": ` + strconv.Itoa(i) + `}`)}
	}
	return rs
}

// writeCounter is a ResponseWriter that keeps the size of each write.
type writeCounter struct {
	*httptest.ResponseRecorder
	writes []int
}

func (w *writeCounter) Write(b []byte) (int, error) {
	w.writes = append(w.writes, len(b))
	return w.ResponseRecorder.Write(b)
}

// TestWriteListStreams checks that a large page is written out in pieces
// of about listChunk, not encoded whole first: the memory a page's JSON
// takes is about one row, not the page.
func TestWriteListStreams(t *testing.T) {
	const n, size = 100, 60 << 10
	page := &iotgate.ReadingPage{Items: bigReadings(n, size)}
	w := &writeCounter{ResponseRecorder: httptest.NewRecorder()}
	c := echo.New().NewContext(httptest.NewRequest(http.MethodGet, "/", nil), w)
	if err := writeReadings(c, page); err != nil {
		t.Fatal(err)
	}
	if w.Code != http.StatusOK || w.Header().Get(echo.HeaderContentType) != echo.MIMEApplicationJSON {
		t.Fatalf("status %d, content type %q", w.Code, w.Header().Get(echo.HeaderContentType))
	}
	total, most := 0, 0
	for _, m := range w.writes {
		total, most = total+m, max(most, m)
	}
	// One row's JSON is at most about twice its XML (escapes).
	if len(w.writes) < 10 || most > listChunk+2*size+1024 {
		t.Errorf("%d bytes in %d writes, the largest %d: want pieces of about %d", total, len(w.writes), most, listChunk)
	}
	var got ReadingList
	if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil || len(got.Items) != n {
		t.Errorf("body is not the list of %d readings: %v", n, err)
	}
}

// TestWriteListMatchesJSON holds the streamed commands and rejections to
// what c.JSON wrote before.
func TestWriteListMatchesJSON(t *testing.T) {
	cmds := make([]*iotgate.Command, 30)
	for i := range cmds {
		cmds[i] = &iotgate.Command{ID: "c" + strconv.Itoa(i), DeviceJID: "d@example.com", Type: "set", Payload: "<set/>",
			Mode: iotgate.CommandSync, Status: iotgate.CommandSucceeded, CreatedAt: time.Date(2026, 1, 2, 3, 4, 5, i, time.UTC),
			Response: &iotgate.CommandResponse{XML: "<ok>" + strings.Repeat("<&>", 3000) + "</ok>", Data: json.RawMessage(`{"ok": true}`)}}
	}
	got := record(t, func(c echo.Context) error {
		return writeList(c, len(cmds), func(b []byte, i int) ([]byte, error) { return appendJSON(b, cmds[i].View()) }, "next")
	})
	if want := encodeJSON(t, CommandList{Items: itemsOf(cmds, (*iotgate.Command).View), NextCursor: "next"}); !bytes.Equal(got, want) {
		t.Errorf("commands: got %d bytes, want %d: differ", len(got), len(want))
	}
	rejs := []*iotgate.Rejection{{ID: 1, Via: "iq", Reason: "bad <x>", Payload: strings.Repeat("<y/>", 30000)}, {ID: 2, Via: "message"}}
	got = record(t, func(c echo.Context) error {
		return writeList(c, len(rejs), func(b []byte, i int) ([]byte, error) { return appendJSON(b, rejectionOf(rejs[i])) }, "")
	})
	if want := encodeJSON(t, RejectionList{Items: itemsOf(rejs, rejectionOf)}); !bytes.Equal(got, want) {
		t.Errorf("rejections: got %s, want %s", got, want)
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
		// The device service's cached encoding of the reading.
		{"Encoded", &iotgate.State{JID: "thermo1@example.com", Online: true, LastSeenAt: &seen, Reading: jsonReadings[1],
			ReadingEncoded: AppendReading(nil, jsonReadings[1])}},
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

// discardWriter is a ResponseWriter that drops the body.
type discardWriter struct{ h http.Header }

func (d discardWriter) Header() http.Header       { return d.h }
func (discardWriter) Write(b []byte) (int, error) { return len(b), nil }
func (discardWriter) WriteHeader(int)             {}

// BenchmarkWriteReadingsPage writes a page the size of the default byte
// budget (69 readings of 60 KB, as in issue #15): streamed, and encoded
// whole as c.JSON would (Whole), to compare the bytes each allocates.
func BenchmarkWriteReadingsPage(b *testing.B) {
	page := &iotgate.ReadingPage{Items: bigReadings(69, 60<<10)}
	e := echo.New()
	b.Run("Streamed", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			c := e.NewContext(httptest.NewRequest(http.MethodGet, "/", nil), discardWriter{http.Header{}})
			if err := writeReadings(c, page); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Whole", func(b *testing.B) {
		ref := ReadingList{Items: itemsOf(page.Items, readingOf)}
		b.ReportAllocs()
		for b.Loop() {
			c := e.NewContext(httptest.NewRequest(http.MethodGet, "/", nil), discardWriter{http.Header{}})
			if err := c.JSON(http.StatusOK, ref); err != nil {
				b.Fatal(err)
			}
		}
	})
}
