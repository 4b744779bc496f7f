//go:build integration

package main

import (
	"bufio"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/iotgate/iotgate/internal/device"
	"github.com/iotgate/iotgate/internal/servers"
)

// sseEvent is one event of a stream, as a client reads it.
type sseEvent struct {
	ID   string
	Type string
	Body eventBody
}

// eventBody is an event's data line.
type eventBody struct {
	ID     int64           `json:"id"`
	Type   string          `json:"type"`
	Time   time.Time       `json:"time"`
	Device string          `json:"device"`
	Data   json.RawMessage `json:"data"`
}

// seq is the seq attribute of a reading event's payload (readingPayload),
// or -1.
func (b eventBody) seq() int {
	var d struct {
		Data struct {
			Seq json.Number `json:"@seq"`
		} `json:"data"`
	}
	if json.Unmarshal(b.Data, &d) != nil {
		return -1
	}
	n, err := strconv.Atoi(d.Data.Seq.String())
	if err != nil {
		return -1
	}
	return n
}

// sseStream is an open GET /v1/events.
type sseStream struct {
	resp   *http.Response
	events chan sseEvent
	// comments counts comment lines (keep-alives).
	mu       sync.Mutex
	comments int
	err      error
}

// openStream opens GET /v1/events?query with token (or none, for ticket
// URLs) and Last-Event-ID lastID (if not ""); it fails the test unless the
// answer is 200 text/event-stream.
func openStream(t *testing.T, ctx context.Context, g *gate, token, pathQuery, lastID string) *sseStream {
	t.Helper()
	s, code := tryStream(t, ctx, g, token, pathQuery, lastID)
	if s == nil {
		t.Fatalf("GET %s = %d, want a stream", pathQuery, code)
	}
	return s
}

// tryStream is openStream returning the status instead when it is not a
// stream.
func tryStream(t *testing.T, ctx context.Context, g *gate, token, pathQuery, lastID string) (*sseStream, int) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, "GET", g.base+pathQuery, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	req.Header.Set("Accept", "text/event-stream")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", pathQuery, err)
	}
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		t.Logf("GET %s = %d %s: %s", pathQuery, resp.StatusCode, resp.Header.Get("Content-Type"), b)
		return nil, resp.StatusCode
	}
	s := &sseStream{resp: resp, events: make(chan sseEvent, 100000)}
	t.Cleanup(s.close)
	go s.read()
	return s, 200
}

func (s *sseStream) close() { s.resp.Body.Close() }

// read parses the stream into s.events until it ends.
func (s *sseStream) read() {
	defer close(s.events)
	sc := bufio.NewScanner(s.resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var ev sseEvent
	var data string
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if data != "" {
				if err := json.Unmarshal([]byte(data), &ev.Body); err != nil {
					s.mu.Lock()
					s.err = fmt.Errorf("event data %q: %v", data, err)
					s.mu.Unlock()
					return
				}
				s.events <- ev
			}
			ev, data = sseEvent{}, ""
		case strings.HasPrefix(line, ":"):
			s.mu.Lock()
			s.comments++
			s.mu.Unlock()
		case strings.HasPrefix(line, "id:"):
			ev.ID = strings.TrimSpace(strings.TrimPrefix(line, "id:"))
		case strings.HasPrefix(line, "event:"):
			ev.Type = strings.TrimSpace(strings.TrimPrefix(line, "event:"))
		case strings.HasPrefix(line, "data:"):
			data = strings.TrimPrefix(strings.TrimPrefix(line, "data:"), " ")
		}
	}
}

// next returns the next event within d, failing the test otherwise.
func (s *sseStream) next(t *testing.T, d time.Duration, what string) sseEvent {
	t.Helper()
	select {
	case ev, ok := <-s.events:
		if !ok {
			s.mu.Lock()
			defer s.mu.Unlock()
			t.Fatalf("%s: the stream ended (%v)", what, s.err)
		}
		if ev.ID != strconv.FormatInt(ev.Body.ID, 10) || ev.Type != ev.Body.Type {
			t.Fatalf("%s: id/event lines %q/%q disagree with the data %+v", what, ev.ID, ev.Type, ev.Body)
		}
		return ev
	case <-time.After(d):
		t.Fatalf("%s: no event within %s", what, d)
	}
	return sseEvent{}
}

// readingsBySeq collects reading events until every seq in want arrived,
// and fails on a duplicate or on an event out of id order.
func (s *sseStream) readingsBySeq(t *testing.T, want map[int]bool, last *int64, within time.Duration) map[int]int64 {
	t.Helper()
	got := map[int]int64{}
	deadline := time.Now().Add(within)
	for len(got) < len(want) {
		ev := s.next(t, time.Until(deadline), fmt.Sprintf("readings (%d of %d)", len(got), len(want)))
		if ev.Body.ID <= *last {
			t.Fatalf("event %d after %d: out of order or duplicated", ev.Body.ID, *last)
		}
		*last = ev.Body.ID
		if ev.Type != "reading" {
			continue
		}
		seq := ev.Body.seq()
		if _, dup := got[seq]; dup {
			t.Fatalf("reading seq %d twice", seq)
		}
		got[seq] = ev.Body.ID
	}
	return got
}

// sendReadings sends readings from..to-1 as IQs (each acknowledged once
// stored, so its event is committed) and fails the test on a refusal.
func sendReadings(t *testing.T, ctx context.Context, c *device.Client, from, to int) {
	t.Helper()
	for seq := from; seq < to; seq++ {
		rep, err := c.SendIQ(ctx, "set", e2eDomain, readingPayload(seq))
		if err != nil || rep.Type != "result" {
			t.Fatalf("reading %d: %v %+v", seq, err, rep)
		}
	}
}

// webhookReceiver is an HTTP server that takes webhook deliveries, checks
// their signature as docs/events.md tells receivers to, and answers 503
// while down.
type webhookReceiver struct {
	t      *testing.T
	srv    *httptest.Server
	secret string

	mu      sync.Mutex
	down    bool
	events  []eventBody
	refused int
	badSig  int
}

func newWebhookReceiver(t *testing.T) *webhookReceiver {
	r := &webhookReceiver{t: t}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.srv.Close)
	return r
}

// verifySignature checks an Iotgate-Signature header ("t=<unix>,v1=<hex>")
// against body: v1 is HMAC-SHA256(secret, "<t>.<body>"), and t must be
// recent (replay protection).
func verifySignature(secret, header string, body []byte, now time.Time) error {
	var ts, sig string
	for _, part := range strings.Split(header, ",") {
		k, v, _ := strings.Cut(part, "=")
		switch k {
		case "t":
			ts = v
		case "v1":
			sig = v
		}
	}
	unix, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return fmt.Errorf("bad timestamp %q", ts)
	}
	if d := now.Sub(time.Unix(unix, 0)); d > 5*time.Minute || d < -5*time.Minute {
		return fmt.Errorf("timestamp %s too far from now", time.Unix(unix, 0))
	}
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(ts + "."))
	mac.Write(body)
	want := hex.EncodeToString(mac.Sum(nil))
	if !hmac.Equal([]byte(want), []byte(sig)) {
		return fmt.Errorf("signature mismatch")
	}
	return nil
}

func (r *webhookReceiver) serve(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.down {
		r.refused++
		http.Error(w, "down", http.StatusServiceUnavailable)
		return
	}
	if err := verifySignature(r.secret, req.Header.Get("Iotgate-Signature"), body, time.Now()); err != nil || req.Header.Get("Content-Type") != "application/json" {
		r.badSig++
		r.t.Errorf("delivery: %v (content type %q)", err, req.Header.Get("Content-Type"))
		http.Error(w, "bad signature", http.StatusBadRequest)
		return
	}
	var batch struct {
		Events []eventBody `json:"events"`
	}
	if err := json.Unmarshal(body, &batch); err != nil {
		r.t.Errorf("delivery body %q: %v", body, err)
		http.Error(w, "bad body", http.StatusBadRequest)
		return
	}
	r.events = append(r.events, batch.Events...)
}

func (r *webhookReceiver) setDown(down bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.down = down
}

// waitSeqs waits until readings of every seq in want arrived, then checks
// that each arrived once and all in id order.
func (r *webhookReceiver) waitSeqs(t *testing.T, want map[int]bool, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		r.mu.Lock()
		got := map[int]int{}
		for _, e := range r.events {
			got[e.seq()]++
		}
		have := 0
		for seq := range want {
			if got[seq] > 0 {
				have++
			}
		}
		if have == len(want) {
			var last int64
			for _, e := range r.events {
				if e.ID <= last {
					r.mu.Unlock()
					t.Fatalf("webhook event %d after %d: out of order or duplicated", e.ID, last)
				}
				last = e.ID
			}
			for seq, n := range got {
				if n != 1 {
					r.mu.Unlock()
					t.Fatalf("webhook got seq %d %d times", seq, n)
				}
			}
			r.mu.Unlock()
			return
		}
		n := len(r.events)
		r.mu.Unlock()
		if time.Now().After(deadline) {
			t.Fatalf("webhook: %d of %d readings within %s (%d events)", have, len(want), within, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

type webhookBody struct {
	ID        string `json:"id"`
	Secret    string `json:"secret"`
	Paused    bool   `json:"paused"`
	Failing   bool   `json:"failing"`
	LastError string `json:"last_error"`
	Cursor    int64  `json:"cursor"`
}

func seqRange(from, to int) map[int]bool {
	m := map[int]bool{}
	for i := from; i < to; i++ {
		m[i] = true
	}
	return m
}

// TestE2EEvents: readings, presence and commands pushed to SSE clients and
// webhooks, on each XMPP server.
func TestE2EEvents(t *testing.T) { forEachXMPPServer(t, testEvents) }

func testEvents(t *testing.T, name string) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	e := newCommandsEnv(t, ctx, name, "IOTGATE_WEBHOOK_ALLOW_PRIVATE", "1",
		"IOTGATE_EVENT_KEEPALIVE", "1s", "IOTGATE_WEBHOOK_RETRY_MAX_DELAY", "500ms")
	g := e.g
	berlin := e.register("berlin1")
	paris := e.register("paris1")
	for jid, site := range map[string]string{berlin: "berlin", paris: "paris"} {
		if code := g.do("PATCH", "/v1/devices/"+url.PathEscape(jid), map[string]any{"labels": map[string]string{"site": site}}, nil); code != 200 {
			t.Fatalf("label %s: %d", jid, code)
		}
	}
	all := openStream(t, ctx, g, g.token, "/v1/events", "")
	devB := e.online("berlin1", thermostat)
	devP := e.online("paris1", thermostat)

	t.Run("Reading", func(t *testing.T) {
		s := openStream(t, ctx, g, g.token, "/v1/events?types=reading&device="+url.QueryEscape(berlin), "")
		sendReadings(t, ctx, devB, 1, 2)
		ev := s.next(t, 10*time.Second, "reading")
		if ev.Type != "reading" || ev.Body.Device != berlin || ev.Body.seq() != 1 {
			t.Fatalf("event = %+v, want berlin's reading 1", ev)
		}
		// The unfiltered stream had the presence events first.
		var types []string
		for {
			ev := all.next(t, 10*time.Second, "all events")
			types = append(types, ev.Type+":"+ev.Body.Device)
			if ev.Type == "reading" {
				break
			}
		}
		if !strings.Contains(strings.Join(types, " "), "presence:"+berlin) {
			t.Errorf("events before the reading: %v, want berlin's presence among them", types)
		}
	})

	t.Run("KeepAlive", func(t *testing.T) {
		s := openStream(t, ctx, g, g.token, "/v1/events?types=command", "")
		time.Sleep(2500 * time.Millisecond)
		s.mu.Lock()
		n := s.comments
		s.mu.Unlock()
		if n < 1 {
			t.Errorf("%d comment lines in 2.5 s with IOTGATE_EVENT_KEEPALIVE=1s", n)
		}
	})

	t.Run("Command", func(t *testing.T) {
		s := openStream(t, ctx, g, g.token, "/v1/events?types=command", "")
		a := g.command(berlin, map[string]any{"payload": setTarget("22")})
		if a.status != 200 {
			t.Fatalf("command: %d %s", a.status, a.code)
		}
		var statuses []string
		var last commandBody
		for len(statuses) == 0 || statuses[len(statuses)-1] != "succeeded" {
			ev := s.next(t, 10*time.Second, fmt.Sprintf("command events after %v", statuses))
			var c commandBody
			if err := json.Unmarshal(ev.Body.Data, &c); err != nil {
				t.Fatal(err)
			}
			if c.ID != a.cmd.ID {
				t.Fatalf("command event for %s, want %s", c.ID, a.cmd.ID)
			}
			statuses = append(statuses, c.Status)
			last = c
		}
		// A command is stored already sent (pending and sent in one
		// write): one event for that write, one for the answer.
		if got := strings.Join(statuses, ","); got != "sent,succeeded" {
			t.Errorf("command events %s, want sent,succeeded", got)
		}
		if got := last.statuses(); got != "pending,sent,succeeded" {
			t.Errorf("last command event's history %s, want pending,sent,succeeded", got)
		}
	})

	t.Run("Resume", func(t *testing.T) {
		// Readings keep flowing while the client drops its stream and
		// resumes with Last-Event-ID: together, the two streams have
		// every reading once.
		s := openStream(t, ctx, g, g.token, "/v1/events?types=reading&device="+url.QueryEscape(berlin), "")
		done := make(chan struct{})
		go func() {
			defer close(done)
			sendReadings(t, ctx, devB, 100, 300)
		}()
		var last int64
		first := s.readingsBySeq(t, seqRange(100, 130), &last, 30*time.Second)
		s.close()
		time.Sleep(200 * time.Millisecond) // readings go on meanwhile
		s2 := openStream(t, ctx, g, g.token, "/v1/events?types=reading&device="+url.QueryEscape(berlin), strconv.FormatInt(last, 10))
		want := seqRange(130, 300)
		<-done
		rest := s2.readingsBySeq(t, want, &last, 30*time.Second)
		for seq := range first {
			if _, dup := rest[seq]; dup {
				t.Errorf("seq %d on both streams", seq)
			}
		}
		// ?after= resumes the same way.
		s3 := openStream(t, ctx, g, g.token, "/v1/events?types=reading&device="+url.QueryEscape(berlin)+"&after="+strconv.FormatInt(first[129], 10), "")
		var l3 = first[129]
		s3.readingsBySeq(t, want, &l3, 30*time.Second)
	})

	t.Run("Selector", func(t *testing.T) {
		var tok tokenBody
		if code := g.do("POST", "/v1/tokens", map[string]any{"name": "berlin-events", "scopes": []string{"devices:read"}, "devices": map[string]string{"site": "berlin"}}, &tok); code != 201 {
			t.Fatalf("create token: %d", code)
		}
		s := openStream(t, ctx, g, tok.Secret, "/v1/events?types=reading", "")
		// Even asking for paris by name shows nothing of it.
		sp := openStream(t, ctx, g, tok.Secret, "/v1/events?device="+url.QueryEscape(paris), "")
		sendReadings(t, ctx, devP, 500, 510)
		sendReadings(t, ctx, devB, 510, 511)
		ev := s.next(t, 10*time.Second, "berlin's reading")
		if ev.Body.Device != berlin || ev.Body.seq() != 510 {
			t.Fatalf("limited token saw %+v first, want berlin's reading 510", ev.Body)
		}
		select {
		case ev := <-sp.events:
			t.Fatalf("limited token asking for paris got %+v", ev.Body)
		case <-time.After(time.Second):
		}
		// Resuming from before paris' readings doesn't show them either.
		s2 := openStream(t, ctx, g, tok.Secret, "/v1/events?types=reading&after=0", "")
		for {
			ev := s2.next(t, 10*time.Second, "replay")
			if ev.Body.Device != berlin {
				t.Fatalf("limited token's replay has %+v", ev.Body)
			}
			if ev.Body.seq() == 510 {
				break
			}
		}
		// Revoking the token ends its open streams (checked every
		// keep-alive interval, 1 s here).
		if code := g.do("DELETE", "/v1/tokens/"+tok.ID, nil, nil); code != 200 {
			t.Fatalf("revoke: %d", code)
		}
		deadline := time.After(10 * time.Second)
		for open := true; open; {
			select {
			case _, open = <-s.events:
			case <-deadline:
				t.Fatal("the revoked token's stream is still open after 10 s")
			}
		}
	})

	t.Run("Ticket", func(t *testing.T) {
		var tk struct {
			URL string `json:"url"`
		}
		if code := g.do("POST", "/v1/events/tickets", nil, &tk); code != 201 || !strings.HasPrefix(tk.URL, "/v1/events?") {
			t.Fatalf("ticket = %d %+v", code, tk)
		}
		s := openStream(t, ctx, g, "", tk.URL+"&types=reading", "")
		sendReadings(t, ctx, devB, 600, 601)
		if ev := s.next(t, 10*time.Second, "reading via ticket"); ev.Body.seq() != 600 {
			t.Fatalf("event %+v, want reading 600", ev.Body)
		}
		if _, code := tryStream(t, ctx, g, "", tk.URL, ""); code != 401 {
			t.Errorf("ticket used twice: %d, want 401", code)
		}
		if _, code := tryStream(t, ctx, g, "", "/v1/events?access_token="+g.token, ""); code != 401 {
			t.Errorf("token in the query string: %d, want 401", code)
		}
	})

	t.Run("WebhookDownThenUp", func(t *testing.T) {
		r := newWebhookReceiver(t)
		r.setDown(true)
		var wh webhookBody
		if code := g.do("POST", "/v1/webhooks", map[string]any{"url": r.srv.URL + "/hook", "types": []string{"reading"}, "devices": map[string]string{"site": "berlin"}}, &wh); code != 201 || wh.Secret == "" {
			t.Fatalf("create webhook = %d %+v", code, wh)
		}
		r.mu.Lock()
		r.secret = wh.Secret
		r.mu.Unlock()
		sendReadings(t, ctx, devB, 700, 750)
		sendReadings(t, ctx, devP, 750, 760) // not berlin: never delivered
		deadline := time.Now().Add(10 * time.Second)
		for {
			var got webhookBody
			g.do("GET", "/v1/webhooks/"+wh.ID, nil, &got)
			r.mu.Lock()
			refused := r.refused
			r.mu.Unlock()
			if refused >= 2 && got.LastError != "" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("webhook while down: %d refused deliveries, state %+v", refused, got)
			}
			time.Sleep(100 * time.Millisecond)
		}
		r.setDown(false)
		r.waitSeqs(t, seqRange(700, 750), 30*time.Second)
		r.mu.Lock()
		for _, e := range r.events {
			if e.Device != berlin || e.Type != "reading" {
				t.Errorf("webhook delivered %s of %s", e.Type, e.Device)
			}
		}
		r.mu.Unlock()

		// A restart of iotgate mid-delivery loses nothing.
		r.setDown(true)
		sendReadings(t, ctx, devB, 800, 820)
		g.stop()
		// Started for the rest of the test, not this subtest.
		g2 := startGate(e.t, e.env)
		g2.waitReady(200, 30*time.Second, nil)
		r.setDown(false)
		want := seqRange(700, 750)
		for k := range seqRange(800, 820) {
			want[k] = true
		}
		r.waitSeqs(t, want, 30*time.Second)
		e.g = g2
	})

	t.Run("TwoInstances", func(t *testing.T) {
		// A second iotgate on the same database, with no XMPP server,
		// short retention and the default (no private webhooks).
		env2 := map[string]string{
			"IOTGATE_XMPP_ADDR": freeAddr(t), "IOTGATE_DOMAIN": e2eDomain,
			"IOTGATE_SECRET": e2eSecret, "IOTGATE_DATABASE_URL": e.pg.DSN(),
			"IOTGATE_EVENT_RETENTION": "2s", "IOTGATE_EVENT_TRIM_INTERVAL": "500ms",
		}
		gB := startGate(t, env2)
		gB.waitReady(503, 30*time.Second, func(r readyBody) bool { return r.Checks["database"].OK })
		var first int64
		{
			s := openStream(t, ctx, gB, gB.token, "/v1/events?types=reading", "")
			devB2 := devB
			if devB.Err() != nil {
				t.Fatalf("device: %v", devB.Err())
			}
			sendReadings(t, ctx, devB2, 900, 901)
			ev := s.next(t, 10*time.Second, "reading committed by the other instance")
			if ev.Body.seq() != 900 {
				t.Fatalf("event %+v, want reading 900", ev.Body)
			}
			first = ev.Body.ID
		}
		// The gap: after retention trimmed the start of the log, resuming
		// from id 1 starts with a gap event.
		time.Sleep(3 * time.Second)
		s := openStream(t, ctx, gB, gB.token, "/v1/events?after=1", "")
		ev := s.next(t, 10*time.Second, "gap")
		if ev.Type != "gap" {
			t.Fatalf("first event after trimming = %+v, want gap", ev)
		}
		_ = first
		// Private webhook URLs are refused unless allowed.
		var prob struct {
			Code string `json:"code"`
		}
		if code := gB.do("POST", "/v1/webhooks", map[string]any{"url": "http://127.0.0.1:9/hook"}, &prob); code != 400 {
			t.Errorf("private URL = %d %+v, want 400", code, prob)
		}
		if code := gB.do("POST", "/v1/webhooks", map[string]any{"url": "http://169.254.169.254/latest/meta-data"}, &prob); code != 400 {
			t.Errorf("metadata URL = %d %+v, want 400", code, prob)
		}
	})
	_ = servers.XMPPServerNames
}

// browserEventsPage is a page on another origin than iotgate that does
// what docs/events.md tells a web app to: fetch a ticket with the bearer
// token (a CORS request with Authorization), open the browser's own
// EventSource on the ticket's URL, and report each reading event.
const browserEventsPage = `<!doctype html><script src="/report.js"></script><script>
(async () => {
	const cfg = await (await fetch('/config')).json();
	const r = await fetch(cfg.base + '/v1/events/tickets', {method: 'POST', headers: {Authorization: 'Bearer ' + cfg.token}});
	if (r.status !== 201) { await report({error: 'ticket: ' + r.status}); return; }
	const {url} = await r.json();
	// One report at a time: concurrent fetches may reach the test out of
	// order, which once looked like events out of order.
	let queue = Promise.resolve();
	const send = m => { queue = queue.then(() => report(m)); };
	const es = new EventSource(cfg.base + url + '&types=reading');
	es.onopen = () => send({open: true});
	es.onerror = () => send({error: 'EventSource error, readyState ' + es.readyState});
	es.addEventListener('reading', e => {
		const ev = JSON.parse(e.data);
		send({id: e.lastEventId, device: ev.device, seq: Number(ev.data.data['@seq'])});
	});
})();
</script>`

type browserReport struct {
	Open   bool   `json:"open"`
	Error  string `json:"error"`
	ID     string `json:"id"`
	Device string `json:"device"`
	Seq    int    `json:"seq"`
}

// TestE2EEventsBrowser: a real browser (headless chromium) follows a
// device's readings with EventSource, from a page on another origin.
func TestE2EEventsBrowser(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	page := servers.NewPageReport(t, browserEventsPage)
	origin := strings.TrimSuffix(page.URL(), "/")
	e := newCommandsEnv(t, ctx, "prosody", "IOTGATE_CORS_ORIGINS", origin)
	page.Handle("GET /config", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		json.NewEncoder(w).Encode(map[string]string{"base": e.g.base, "token": e.g.token})
	}))
	jid := e.register("thermo1")
	dev := e.online("thermo1", thermostat)
	b := servers.BrowserForTest(t, page.URL())
	var rep browserReport
	if page.Next(t, b, time.Minute, &rep); !rep.Open {
		t.Fatalf("page reported %+v, want the stream open", rep)
	}
	sendReadings(t, ctx, dev, 1, 4)
	var last int64
	for want := 1; want <= 3; want++ {
		page.Next(t, b, 30*time.Second, &rep)
		id, err := strconv.ParseInt(rep.ID, 10, 64)
		if rep.Error != "" || err != nil || rep.Device != jid || rep.Seq != want || id <= last {
			t.Fatalf("page reported %+v after id %d, want reading %d of %s", rep, last, want, jid)
		}
		last = id
	}
}
