package api

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/iotgate/iotgate"
	"github.com/iotgate/iotgate/auth"
	"github.com/iotgate/iotgate/events"
	"github.com/iotgate/iotgate/internal/memstore"
)

// eventsEnv is a listening server with the event stream over an
// in-memory log, real tokens and tickets.
type eventsEnv struct {
	t       *testing.T
	base    string
	srv     *Server
	log     *memstore.EventLog
	hub     *events.Hub
	wake    chan struct{}
	auth    *auth.Service
	admin   string // secrets
	berlin  string
	schemas string
}

func newEventsEnv(t *testing.T, cfg Config) *eventsEnv {
	t.Helper()
	ctx := context.Background()
	e := &eventsEnv{t: t, log: &memstore.EventLog{}, wake: make(chan struct{}, 1)}
	e.log.SetLabels("a@x.com", map[string]string{"site": "berlin"})
	e.log.SetLabels("b@x.com", map[string]string{"site": "paris"})
	e.hub = events.NewHub(e.log, events.Config{Wake: e.wake, Poll: time.Hour, MaxPerToken: 3})
	if err := e.hub.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.hub.Close)
	svc, err := auth.NewService(memstore.NewTokenStore(), auth.Config{})
	if err != nil {
		t.Fatal(err)
	}
	mk := func(scope iotgate.Scope, sel iotgate.Selector) string {
		_, secret, err := svc.Create(ctx, auth.CreateRequest{Name: "t", Scopes: []iotgate.Scope{scope}, Devices: sel})
		if err != nil {
			t.Fatal(err)
		}
		return secret
	}
	e.auth = svc
	e.admin, e.berlin, e.schemas = mk(iotgate.ScopeAdmin, nil), mk(iotgate.ScopeDevicesRead, iotgate.Selector{"site": "berlin"}), mk(iotgate.ScopeSchemasRead, nil)
	e.srv = New(cfg, Deps{Auth: svc, Events: e.hub, Tickets: auth.NewTickets(svc, &memstore.TicketStore{}, nil)})
	if err := e.srv.Listen("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	go e.srv.Serve()
	t.Cleanup(func() { e.srv.Shutdown(context.Background()) })
	e.base = "http://" + e.srv.Addr().String()
	return e
}

// add appends one event per device and wakes the hub; it returns the ids.
func (e *eventsEnv) add(typ iotgate.EventType, devs ...string) []int64 {
	evs := make([]iotgate.Event, len(devs))
	for i, d := range devs {
		evs[i] = iotgate.Event{Type: typ, Time: time.Now().UTC(), Device: d, Data: json.RawMessage(`{"n": ` + strconv.Itoa(i) + `}`)}
	}
	ids := e.log.Append(evs...)
	select {
	case e.wake <- struct{}{}:
	default:
	}
	return ids
}

// sse is an open event stream read line by line.
type sse struct {
	res *http.Response
	r   *bufio.Reader
}

// open GETs path with the secret (if any) and headers given as pairs.
func (e *eventsEnv) open(path, secret string, header ...string) *http.Response {
	e.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, e.base+path, nil)
	if secret != "" {
		req.Header.Set("Authorization", "Bearer "+secret)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { res.Body.Close() })
	return res
}

func (e *eventsEnv) stream(path, secret string, header ...string) *sse {
	e.t.Helper()
	res := e.open(path, secret, header...)
	if res.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(res.Body)
		e.t.Fatalf("GET %s: %d %s", path, res.StatusCode, b)
	}
	return &sse{res: res, r: bufio.NewReader(res.Body)}
}

// frame is one event of the stream, or a comment.
type frame struct {
	id      string
	typ     string
	data    string
	comment string
}

// next reads the next frame (an event or a comment line).
func (s *sse) next(t *testing.T) frame {
	t.Helper()
	var f frame
	for {
		line, err := s.r.ReadString('\n')
		if err != nil {
			t.Fatalf("read stream: %v (frame so far %+v)", err, f)
		}
		line = strings.TrimSuffix(line, "\n")
		switch {
		case line == "":
			if f != (frame{}) {
				return f
			}
		case strings.HasPrefix(line, ":"):
			if f == (frame{}) {
				f.comment = strings.TrimSpace(line[1:])
			}
		case strings.HasPrefix(line, "id: "):
			f.id = line[4:]
		case strings.HasPrefix(line, "event: "):
			f.typ = line[7:]
		case strings.HasPrefix(line, "data: "):
			if f.data != "" {
				t.Fatalf("two data lines in one event: %q", line)
			}
			f.data = line[6:]
		default:
			t.Fatalf("unexpected line %q", line)
		}
	}
}

// events reads n events, skipping comments.
func (s *sse) events(t *testing.T, n int) []frame {
	t.Helper()
	var out []frame
	for len(out) < n {
		if f := s.next(t); f.comment == "" {
			out = append(out, f)
		}
	}
	return out
}

func frameIDs(fs []frame) string {
	ids := make([]string, len(fs))
	for i, f := range fs {
		ids[i] = f.id
	}
	return strings.Join(ids, ",")
}

func TestEventStreamFraming(t *testing.T) {
	// A write timeout shorter than the test: the stream must outlive it.
	e := newEventsEnv(t, Config{WriteTimeout: 200 * time.Millisecond, ReadTimeout: 200 * time.Millisecond, EventPing: 50 * time.Millisecond})
	s := e.stream("/v1/events", e.admin)
	for k, want := range map[string]string{"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"} {
		if got := s.res.Header.Get(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	if f := s.next(t); f.comment != "ping" {
		t.Errorf("idle stream: %+v, want a ping comment", f)
	}
	time.Sleep(300 * time.Millisecond)
	ids := e.add(iotgate.EventReading, "a@x.com")
	f := s.events(t, 1)[0]
	if f.id != strconv.FormatInt(ids[0], 10) || f.typ != "reading" {
		t.Errorf("frame = %+v", f)
	}
	var ev struct {
		ID     int64           `json:"id"`
		Type   string          `json:"type"`
		Device string          `json:"device"`
		Time   time.Time       `json:"time"`
		Data   json.RawMessage `json:"data"`
		Labels any             `json:"labels"`
	}
	if err := json.Unmarshal([]byte(f.data), &ev); err != nil {
		t.Fatalf("data %q: %v", f.data, err)
	}
	if ev.ID != ids[0] || ev.Type != "reading" || ev.Device != "a@x.com" || ev.Time.IsZero() || string(ev.Data) != `{"n":0}` || ev.Labels != nil {
		t.Errorf("event = %+v", ev)
	}
}

func TestEventStreamFilters(t *testing.T) {
	e := newEventsEnv(t, Config{})
	all := e.stream("/v1/events", e.admin)
	berlin := e.stream("/v1/events", e.berlin)
	paris := e.stream("/v1/events?label=site:paris&types=presence,reading", e.admin)
	dev := e.stream("/v1/events?device=b@x.com&device=c@x.com&types=presence", e.admin)
	r := e.add(iotgate.EventReading, "a@x.com", "b@x.com", "c@x.com")
	p := e.add(iotgate.EventPresence, "a@x.com", "b@x.com")
	d := e.add(iotgate.EventDevice, "b@x.com")

	for _, tc := range []struct {
		name string
		s    *sse
		want []int64
	}{
		{"All", all, []int64{r[0], r[1], r[2], p[0], p[1], d[0]}},
		{"Scope", berlin, []int64{r[0], p[0]}},
		{"LabelAndTypes", paris, []int64{r[1], p[1]}},
		{"DevicesAndType", dev, []int64{p[1]}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := make([]string, len(tc.want))
			for i, id := range tc.want {
				want[i] = strconv.FormatInt(id, 10)
			}
			if got := frameIDs(tc.s.events(t, len(want))); got != strings.Join(want, ",") {
				t.Errorf("ids = %s, want %s", got, strings.Join(want, ","))
			}
		})
	}
	// The scoped stream gets nothing of paris even later: the next it
	// sees is berlin's.
	e.add(iotgate.EventReading, "b@x.com")
	last := e.add(iotgate.EventReading, "a@x.com")
	if got := berlin.events(t, 1)[0].id; got != strconv.FormatInt(last[0], 10) {
		t.Errorf("scoped stream's next id = %s, want %d", got, last[0])
	}
}

func TestEventStreamResume(t *testing.T) {
	e := newEventsEnv(t, Config{})
	ids := e.add(iotgate.EventReading, "a@x.com", "b@x.com", "a@x.com", "a@x.com")
	for _, tc := range []struct {
		name   string
		path   string
		header []string
		want   string
	}{
		{"After", "/v1/events?after=" + strconv.FormatInt(ids[0], 10), nil, "2,3,4"},
		{"LastEventID", "/v1/events?after=3", []string{"Last-Event-ID", "1"}, "2,3,4"},
		{"Scoped", "/v1/events?after=0", nil, "1,3,4"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			secret := e.admin
			if tc.name == "Scoped" {
				secret = e.berlin
			}
			s := e.stream(tc.path, secret, tc.header...)
			if got := frameIDs(s.events(t, 3)); got != tc.want {
				t.Errorf("ids = %s, want %s", got, tc.want)
			}
			s.res.Body.Close()
		})
	}
	t.Run("Gap", func(t *testing.T) {
		if _, err := e.log.TrimEvents(context.Background(), time.Now().Add(time.Hour), 2); err != nil {
			t.Fatal(err)
		}
		s := e.stream("/v1/events", e.admin, "Last-Event-ID", "0")
		fs := s.events(t, 3)
		if fs[0].typ != "gap" || fs[0].id != "2" || !strings.Contains(fs[0].data, `"oldest":3`) {
			t.Errorf("first frame = %+v, want gap 2", fs[0])
		}
		if got := frameIDs(fs); got != "2,3,4" {
			t.Errorf("ids = %s, want 2,3,4", got)
		}
	})
}

func TestEventStreamErrors(t *testing.T) {
	e := newEventsEnv(t, Config{})
	for _, tc := range []struct {
		name, path, secret string
		header             []string
		status             int
		code               string
	}{
		{"NoToken", "/v1/events", "", nil, http.StatusUnauthorized, "unauthorized"},
		{"QueryToken", "/v1/events?access_token=" + e.admin, "", nil, http.StatusUnauthorized, "unauthorized"},
		{"BadTicket", "/v1/events?ticket=iotgt_nope", "", nil, http.StatusUnauthorized, "unauthorized"},
		{"Scope", "/v1/events", e.schemas, nil, http.StatusForbidden, "forbidden"},
		{"BadType", "/v1/events?types=reading,weather", e.admin, nil, http.StatusBadRequest, "invalid"},
		{"BadDevice", "/v1/events?device=x@y/res", e.admin, nil, http.StatusBadRequest, "invalid"},
		{"BadLabel", "/v1/events?label=site", e.admin, nil, http.StatusBadRequest, "invalid"},
		{"BadAfter", "/v1/events?after=x", e.admin, nil, http.StatusBadRequest, DetailInvalidEventID},
		{"NegativeAfter", "/v1/events?after=-1", e.admin, nil, http.StatusBadRequest, DetailInvalidEventID},
		{"BadLastEventID", "/v1/events", e.admin, []string{"Last-Event-ID", "abc"}, http.StatusBadRequest, DetailInvalidEventID},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := e.open(tc.path, tc.secret, tc.header...)
			var body ErrorResponse
			json.NewDecoder(res.Body).Decode(&body)
			if res.StatusCode != tc.status || body.Code != tc.code {
				t.Errorf("= %d %+v, want %d %s", res.StatusCode, body, tc.status, tc.code)
			}
		})
	}
	t.Run("TooManyForToken", func(t *testing.T) {
		for range 3 {
			e.stream("/v1/events", e.berlin)
		}
		res := e.open("/v1/events", e.berlin)
		if res.StatusCode != http.StatusTooManyRequests {
			t.Errorf("4th stream of a token: %d, want 429", res.StatusCode)
		}
	})
}

func TestEventTickets(t *testing.T) {
	e := newEventsEnv(t, Config{})
	ticket := func(secret string) EventTicket {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, e.base+"/v1/events/tickets", nil)
		req.Header.Set("Authorization", "Bearer "+secret)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		var tk EventTicket
		if err := json.NewDecoder(res.Body).Decode(&tk); err != nil || res.StatusCode != http.StatusCreated {
			t.Fatalf("POST tickets: %d %v", res.StatusCode, err)
		}
		if !strings.HasPrefix(tk.URL, "/v1/events?ticket=iotgt_") || time.Until(tk.ExpiresAt) > iotgate.EventTicketTTL || time.Until(tk.ExpiresAt) < iotgate.EventTicketTTL-10*time.Second {
			t.Fatalf("ticket = %+v", tk)
		}
		return tk
	}
	tk := ticket(e.berlin)
	s := e.stream(tk.URL+"&types=reading", "")
	ids := e.add(iotgate.EventReading, "b@x.com", "a@x.com")
	// The ticket's stream runs with the berlin token's selector.
	if got := s.events(t, 1)[0].id; got != strconv.FormatInt(ids[1], 10) {
		t.Errorf("ticket stream's first id = %s, want %d", got, ids[1])
	}
	if res := e.open(tk.URL, ""); res.StatusCode != http.StatusUnauthorized {
		t.Errorf("second use of a ticket: %d, want 401", res.StatusCode)
	}
	req, _ := http.NewRequest(http.MethodPost, e.base+"/v1/events/tickets", nil)
	req.Header.Set("Authorization", "Bearer "+e.schemas)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusForbidden {
		t.Errorf("ticket for a token without devices:read: %d, want 403", res.StatusCode)
	}
}

// TestEventStreamEnds: the stream ends when the hub closes, and the
// server's Shutdown doesn't wait for open streams.
func TestEventStreamEnds(t *testing.T) {
	t.Run("HubClose", func(t *testing.T) {
		e := newEventsEnv(t, Config{})
		s := e.stream("/v1/events", e.admin)
		e.hub.Close()
		if _, err := io.ReadAll(s.r); err != nil {
			t.Errorf("stream ended with %v, want a clean end", err)
		}
	})
	t.Run("Shutdown", func(t *testing.T) {
		e := newEventsEnv(t, Config{})
		s := e.stream("/v1/events", e.admin)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		start := time.Now()
		if err := e.srv.Shutdown(ctx); err != nil {
			t.Fatalf("Shutdown: %v after %v", err, time.Since(start))
		}
		if _, err := io.ReadAll(s.r); err != nil {
			t.Errorf("stream ended with %v, want a clean end", err)
		}
	})
	t.Run("TokenRevoked", func(t *testing.T) {
		e := newEventsEnv(t, Config{EventPing: 50 * time.Millisecond})
		s := e.stream("/v1/events", e.berlin)
		ctx := context.Background()
		tok, err := e.auth.Authenticate(ctx, e.berlin)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.auth.Revoke(ctx, tok.ID); err != nil {
			t.Fatal(err)
		}
		for {
			f := s.next(t)
			if strings.HasPrefix(f.comment, "closed:") {
				break
			}
			if f.comment != "ping" {
				t.Fatalf("frame %+v, want pings, then the stream closed", f)
			}
		}
		if rest, err := io.ReadAll(s.r); err != nil || len(rest) > 0 {
			t.Errorf("after the closing comment: %q, %v; want a clean end", rest, err)
		}
	})
	t.Run("ClientLeaves", func(t *testing.T) {
		e := newEventsEnv(t, Config{})
		s := e.stream("/v1/events", e.admin)
		s.res.Body.Close()
		deadline := time.Now().Add(5 * time.Second)
		for e.hub.Subscribers() > 0 && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if n := e.hub.Subscribers(); n != 0 {
			t.Errorf("%d subscribers after the client left, want 0", n)
		}
	})
}

func TestEventMetrics(t *testing.T) {
	e := newEventsEnv(t, Config{})
	s := e.stream("/v1/events", e.admin)
	e.add(iotgate.EventReading, "a@x.com", "b@x.com")
	s.events(t, 2)
	m := NewMetrics(MetricsSources{Events: e.hub})
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	for _, want := range []string{"iotgate_event_streams 1", "iotgate_event_stream_events_total 2", "iotgate_event_streams_cut_off_total 0"} {
		if !strings.Contains(rec.Body.String(), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

// frameWriter counts the writes it gets and keeps their bytes.
type frameWriter struct {
	writes int
	buf    strings.Builder
}

func (w *frameWriter) Write(p []byte) (int, error) {
	w.writes++
	return w.buf.Write(p)
}

// TestWriteEvents: a batch is framed in one write (one syscall per
// wake-up of a stream, not one per few kilobytes), and a buffer reused
// from an earlier, larger batch carries nothing of it over.
func TestWriteEvents(t *testing.T) {
	event := func(id int64, size int) *iotgate.Event {
		e := &iotgate.Event{ID: id, Type: iotgate.EventReading, Device: "a@x.com",
			Data: json.RawMessage(`{"pad":"` + strings.Repeat("x", size) + `"}`)}
		if id%2 == 0 {
			// As the hub encodes it; the odd ones are encoded here.
			e.Encoded, _ = json.Marshal(e)
		}
		return e
	}
	tests := []struct {
		name      string
		n, size   int
		firstID   int64
		wantBytes int // at least
	}{
		{name: "Many", n: 200, size: 500, firstID: 1, wantBytes: 200 * 500},
		{name: "One", n: 1, size: 10, firstID: 4711, wantBytes: 10},
		{name: "Few", n: 3, size: 0, firstID: 9, wantBytes: 3 * 20},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var evs []*iotgate.Event
			var want strings.Builder
			for i := range tt.n {
				e := event(tt.firstID+int64(i), tt.size)
				evs = append(evs, e)
				data, _ := json.Marshal(e)
				fmt.Fprintf(&want, "id: %d\nevent: reading\ndata: %s\n\n", e.ID, data)
			}
			var w frameWriter
			if err := writeEvents(&w, evs); err != nil {
				t.Fatal(err)
			}
			if w.writes != 1 {
				t.Errorf("%d writes, want 1", w.writes)
			}
			if got := w.buf.String(); got != want.String() || len(got) < tt.wantBytes {
				t.Errorf("wrote %d bytes %.200q..., want %d bytes %.200q...", len(got), got, want.Len(), want.String())
			}
		})
	}
}
