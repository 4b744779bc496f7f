package main

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/lib/pq"

	"github.com/iotgate/iotgate/internal/servers"
)

// A stored reading as the fills write it: what iotgate stores for a
// thermostat reading (the XML and its JSON rendering).
const (
	fillXML  = `<reading xmlns="urn:example:thermostat" unit="C" seq="1"><temperature>21.50</temperature><humidity>45.0</humidity><mode>heat</mode><target>22.00</target><battery>false</battery></reading>`
	fillJSON = `{"@seq": 1, "@unit": "C", "battery": false, "humidity": 45.0, "mode": "heat", "target": 22.00, "temperature": 21.50}`
)

// fillReadings inserts readings g = from..to (inclusive) for each device
// of jids, received g seconds before now, in one statement.
func fillReadings(ctx context.Context, db *sql.DB, jids []string, from, to int) (int64, error) {
	r, err := db.ExecContext(ctx, `INSERT INTO readings (device_id, received_at, xml, data)
		SELECT d.id, now() - make_interval(secs => g), $1, $2::jsonb
		FROM devices d CROSS JOIN generate_series($3::int, $4::int) g
		WHERE d.jid = ANY($5)`, fillXML, fillJSON, from, to, pq.Array(jids))
	if err != nil {
		return 0, fmt.Errorf("fill readings: %w", err)
	}
	return r.RowsAffected()
}

// registerDevices registers jids with g over REST (no XMPP accounts).
func (e *env) registerDevices(ctx context.Context, g *servers.Iotgate, jids []string) error {
	for _, j := range jids {
		code, b, err := e.call(ctx, g, http.MethodPost, "/v1/devices", map[string]any{"jid": j, "schema": schemaName})
		if err != nil {
			return fmt.Errorf("register device %s: %w", j, err)
		}
		if code != http.StatusCreated && code != http.StatusConflict {
			return fmt.Errorf("register device %s: %d %s", j, code, b)
		}
	}
	return nil
}

// readsScenario holds the devices whose state and readings are read.
type readsScenario struct {
	e    *env
	jids []string
}

// readsDevices is how many devices the reads spread over.
const readsDevices = 16

// newReads registers the devices and gives each 200 readings.
func newReads(ctx context.Context, e *env) (*readsScenario, error) {
	jids := e.deviceJIDs("read", readsDevices)
	if err := e.registerDevices(ctx, e.gate, jids); err != nil {
		return nil, err
	}
	if _, err := fillReadings(ctx, e.db, jids, 1, 200); err != nil {
		return nil, err
	}
	return &readsScenario{e: e, jids: jids}, nil
}

// run measures one run: the state, then a readings page, at the reads
// concurrency.
func (s *readsScenario) run(ctx context.Context, res *results) error {
	c := s.e.cfg.readsConcurrency
	for _, q := range []struct{ name, suffix, op, target string }{
		{"GET state", "/state", "", "≥ 40000"},
		{"GET readings?limit=50", "/readings?limit=50", "page", "≥ 15000"},
	} {
		name := fmt.Sprintf("%s c%d", q.name, c)
		m := s.e.meter(s.e.gate)
		paths := make([]string, len(s.jids))
		for i, j := range s.jids {
			paths[i] = "/v1/devices/" + url.PathEscape(j) + q.suffix
		}
		r, err := rawLoad(ctx, s.e.gate.URL(), s.e.gate.Token(), c, s.e.cfg.duration, func(i int) string { return paths[i%len(paths)] })
		if err != nil {
			return fmt.Errorf("%s: %w", q.name, err)
		}
		use := m.stop().per(int64(r.lat.count()))
		res.addCPU("reads: "+name, use)
		noteFailures(res, "reads: "+name, r)
		rate, lat := r.rate, r.lat
		res.add("reads", name, "req/s", q.target, rate)
		res.add("reads", name+" p50", "ms", "", ms(lat.quantile(0.5)))
		res.add("reads", name+" p99", "ms", "< 10", ms(lat.quantile(0.99)))
		if q.op != "" {
			res.addPerOp("reads", name, q.op, use, "", "~0 for recent pages")
		}
	}
	return nil
}

// get sends an authorized GET to g, reads the whole answer and wants 200.
func (e *env) get(ctx context.Context, g *servers.Iotgate, path string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, g.URL()+path, nil)
	if err != nil {
		return err
	}
	return e.do(g, req)
}

// do sends req to g with g's token, reads the whole answer and wants 200.
func (e *env) do(g *servers.Iotgate, req *http.Request) error {
	g.Authorize(req)
	resp, err := e.api.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("%s %s: %d %s", req.Method, req.URL.Path, resp.StatusCode, b)
	}
	// Read to the end without keeping it: the load generator shares the
	// cores with iotgate, so what it spends per answer is taken from it.
	_, err = io.Copy(io.Discard, resp.Body)
	return err
}

// timeParam formats t for a since/until query parameter.
func timeParam(t time.Time) string { return url.QueryEscape(t.UTC().Format(time.RFC3339Nano)) }

func (s *readsScenario) close() {}
