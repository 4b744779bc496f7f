package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// eventsScenario measures what push costs ingest and how fast it is: the
// ingest devices send the same message load without and with sseClients
// streams and two webhooks attached, and then a paced IQ load measures
// how long a reading takes from being stamped by iotgate to reaching the
// clients.
type eventsScenario struct {
	ing  *ingestScenario
	hook *hookSink
	// pacedSent counts the readings of the latency load.
	pacedSent atomic.Int64
}

// Sizes of the events scenario (-quick makes them smaller).
const (
	sseClients    = 100
	eventWebhooks = 2
	// pacedRate is the readings per second of the latency load, spread
	// over the devices: enough to keep every stream busy, far from
	// saturating ingest.
	pacedRate = 400
	pacedFor  = 3 * time.Second
)

func newEvents(ctx context.Context, e *env) (*eventsScenario, error) {
	ing, err := newIngest(ctx, e)
	if err != nil {
		return nil, err
	}
	h, err := startHookSink()
	if err != nil {
		ing.close()
		return nil, err
	}
	return &eventsScenario{ing: ing, hook: h}, nil
}

func (s *eventsScenario) close() {
	s.ing.close()
	s.hook.close()
}

func (s *eventsScenario) run(ctx context.Context, res *results) error {
	e := s.ing.e
	const sc = "events"
	total := int64(len(s.ing.clients) * e.cfg.ingestReadings)
	count := func(ctx context.Context) (int64, error) { return countReadings(ctx, e.db) }

	m := e.meter(e.gate)
	bare, err := s.ing.messages(ctx, gateDomain, total, count)
	if err != nil {
		return fmt.Errorf("messages, no subscribers: %w", err)
	}
	res.addCPU("events: message, no subscribers", m.stop().per(total))
	clients := sseClients
	if e.cfg.quick {
		clients = 4
	}
	subs, err := s.subscribe(ctx, clients)
	if err != nil {
		return err
	}
	defer subs.close()
	hooks, err := s.addWebhooks(ctx)
	if err != nil {
		return err
	}
	defer s.removeWebhooks(hooks)

	before := subs.minCount()
	hookBefore := s.hook.count.Load()
	m = e.meter(e.gate)
	with, err := s.ing.messages(ctx, gateDomain, total, count)
	if err != nil {
		return fmt.Errorf("messages, with subscribers: %w", err)
	}

	// Every stream and webhook gets every reading; wait for the slowest.
	t0 := time.Now()
	if err := waitFor(ctx, 60*time.Second, func() bool {
		return subs.minCount()-before >= total && s.hook.count.Load()-hookBefore >= int64(eventWebhooks)*total
	}); err != nil {
		return fmt.Errorf("subscribers caught up with %d of %d, webhooks %d of %d: %w",
			subs.minCount()-before, total, s.hook.count.Load()-hookBefore, int64(eventWebhooks)*total, err)
	}
	caughtUp := time.Since(t0)
	// Per reading stored: its deliveries to every stream and webhook
	// included.
	res.addCPU("events: message, with subscribers, until caught up (the bench reads every stream)", m.stop().per(total))
	if err := subs.failed(); err != nil {
		return err
	}
	devs := fmt.Sprintf("%d devices × %d", len(s.ing.clients), e.cfg.ingestReadings)
	res.add(sc, "message, no subscribers, stored ("+devs+")", "readings/s", "", bare)
	res.add(sc, fmt.Sprintf("message, %d SSE + %d webhooks, stored", clients, eventWebhooks), "readings/s", "", with)
	res.add(sc, "with ÷ without subscribers", "ratio", "≥ 0.9", with/bare)
	res.add(sc, "last reading stored → all streams caught up", "ms", "", ms(caughtUp))

	// Latency at a paced load: stamped (received_at, before the commit)
	// → each client; an upper bound of commit → client.
	subs.resetLatency()
	s.hook.resetLatency()
	s.pacedSent.Store(0)
	hookBefore = s.hook.count.Load()
	if err := s.paced(ctx); err != nil {
		return err
	}
	sent := s.pacedSent.Load()
	if err := waitFor(ctx, 30*time.Second, func() bool {
		return subs.latencyCount() >= sent*int64(clients) && s.hook.count.Load()-hookBefore >= sent*eventWebhooks
	}); err != nil {
		return fmt.Errorf("paced load: %d of %d deliveries to streams, %d of %d to webhooks: %w",
			subs.latencyCount(), sent*int64(clients), s.hook.count.Load()-hookBefore, sent*eventWebhooks, err)
	}
	lat := subs.latency()
	res.add(sc, fmt.Sprintf("stamped → SSE client p50 (%d/s, %d clients)", pacedRate, clients), "ms", "", ms(lat.quantile(0.5)))
	res.add(sc, fmt.Sprintf("stamped → SSE client p99 (%d/s, %d clients)", pacedRate, clients), "ms", "< 100", ms(lat.quantile(0.99)))
	res.add(sc, "stamped → webhook receiver p99", "ms", "", ms(s.hook.latency().quantile(0.99)))
	return nil
}

// paced sends IQ readings at pacedRate in all, for pacedFor.
func (s *eventsScenario) paced(ctx context.Context) error {
	n := len(s.ing.clients)
	every := time.Duration(int64(time.Second) * int64(n) / pacedRate)
	d := pacedFor
	if s.ing.e.cfg.quick {
		d = 500 * time.Millisecond
	}
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i, c := range s.ing.clients {
		wg.Go(func() {
			tick := time.NewTicker(every)
			defer tick.Stop()
			end := time.Now().Add(d)
			for time.Now().Before(end) {
				<-tick.C
				ictx, cancel := context.WithTimeout(ctx, opTimeout)
				rep, err := c.SendIQ(ictx, "set", gateDomain, s.ing.models[i].Reading(false))
				cancel()
				if err != nil || rep.Type != "result" {
					errs[i] = fmt.Errorf("paced reading: %v %s %s", err, rep.Condition, rep.Text)
					return
				}
				s.pacedSent.Add(1)
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// sseSubs are open GET /v1/events streams, counting the reading events
// each gets and, while measuring, their latency.
type sseSubs struct {
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	counts  []atomic.Int64
	mu      sync.Mutex
	lat     *latencies
	latN    atomic.Int64
	measure atomic.Bool
	err     error
}

func (s *eventsScenario) subscribe(ctx context.Context, n int) (*sseSubs, error) {
	g := s.ing.e.gate
	ctx, cancel := context.WithCancel(ctx)
	subs := &sseSubs{cancel: cancel, counts: make([]atomic.Int64, n), lat: &latencies{}}
	// Streams are long: their own client, no timeout, a connection each.
	client := &http.Client{Transport: &http.Transport{MaxConnsPerHost: 0, MaxIdleConnsPerHost: n}}
	for i := range n {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, g.URL()+"/v1/events?types=reading", nil)
		if err != nil {
			subs.close()
			return nil, err
		}
		g.Authorize(req)
		resp, err := client.Do(req)
		if err != nil {
			subs.close()
			return nil, fmt.Errorf("open stream %d: %w", i, err)
		}
		if resp.StatusCode != http.StatusOK {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
			resp.Body.Close()
			subs.close()
			return nil, fmt.Errorf("open stream %d: %d %s", i, resp.StatusCode, b)
		}
		subs.wg.Go(func() { subs.read(i, resp.Body) })
	}
	return subs, nil
}

// read counts the events of stream i until it ends.
func (s *sseSubs) read(i int, body io.ReadCloser) {
	defer body.Close()
	sc := bufio.NewScanner(body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		now := time.Now()
		s.counts[i].Add(1)
		if !s.measure.Load() {
			continue
		}
		var ev struct {
			Time time.Time `json:"time"`
		}
		if err := json.Unmarshal([]byte(data), &ev); err != nil {
			s.mu.Lock()
			s.err = fmt.Errorf("stream %d: event %q: %w", i, data, err)
			s.mu.Unlock()
			continue
		}
		s.lat.add(now.Sub(ev.Time))
		s.latN.Add(1)
	}
}

func (s *sseSubs) close() {
	s.cancel()
	s.wg.Wait()
}

func (s *sseSubs) minCount() int64 {
	m := int64(-1)
	for i := range s.counts {
		if c := s.counts[i].Load(); m < 0 || c < m {
			m = c
		}
	}
	return m
}

func (s *sseSubs) failed() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

func (s *sseSubs) resetLatency() {
	s.lat.reset()
	s.latN.Store(0)
	s.measure.Store(true)
}

func (s *sseSubs) latencyCount() int64 { return s.latN.Load() }
func (s *sseSubs) latency() *latencies { return s.lat }

// hookSink is the webhooks' receiver: it acknowledges every delivery and
// counts the events, with their latency from the event's time.
type hookSink struct {
	srv   *http.Server
	url   string
	count atomic.Int64
	lat   *latencies
}

func startHookSink() (*hookSink, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	h := &hookSink{url: "http://" + ln.Addr().String() + "/hook", lat: &latencies{}}
	h.srv = &http.Server{Handler: http.HandlerFunc(h.serve), ReadHeaderTimeout: 10 * time.Second}
	go h.srv.Serve(ln)
	return h, nil
}

func (h *hookSink) serve(w http.ResponseWriter, r *http.Request) {
	var batch struct {
		Events []struct {
			Time time.Time `json:"time"`
		} `json:"events"`
	}
	if err := json.NewDecoder(r.Body).Decode(&batch); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	now := time.Now()
	for _, e := range batch.Events {
		h.lat.add(now.Sub(e.Time))
	}
	h.count.Add(int64(len(batch.Events)))
}

func (h *hookSink) resetLatency()       { h.lat.reset() }
func (h *hookSink) latency() *latencies { return h.lat }

func (h *hookSink) close() { h.srv.Close() }

// addWebhooks creates eventWebhooks webhooks for readings to the sink and
// returns their ids.
func (s *eventsScenario) addWebhooks(ctx context.Context) ([]string, error) {
	e := s.ing.e
	var ids []string
	for range eventWebhooks {
		code, b, err := e.call(ctx, e.gate, http.MethodPost, "/v1/webhooks", map[string]any{"url": s.hook.url, "types": []string{"reading"}})
		if err != nil || code != http.StatusCreated {
			s.removeWebhooks(ids)
			return nil, fmt.Errorf("create webhook: %d %s %v", code, b, err)
		}
		var wh struct {
			ID string `json:"id"`
		}
		if err := json.Unmarshal(b, &wh); err != nil {
			return nil, err
		}
		ids = append(ids, wh.ID)
	}
	return ids, nil
}

func (s *eventsScenario) removeWebhooks(ids []string) {
	e := s.ing.e
	for _, id := range ids {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if code, b, err := e.call(ctx, e.gate, http.MethodDelete, "/v1/webhooks/"+id, nil); err != nil || code != http.StatusNoContent {
			e.log.Warn("delete webhook", "id", id, "status", code, "body", string(b), "err", err)
		}
		cancel()
	}
}

// waitFor polls cond every 10 ms until it holds, for at most within.
func waitFor(ctx context.Context, within time.Duration, cond func() bool) error {
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("not within %s", within)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
	return nil
}
