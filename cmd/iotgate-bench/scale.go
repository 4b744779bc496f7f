package main

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/iotgate/iotgate/internal/servers"
)

// scaleScenario is a database of its own with many registered devices and
// many stored readings, and a fresh iotgate per run.
type scaleScenario struct {
	e       *env
	dsn     string
	db      *sql.DB
	online  []string // the devices that log in
	history []string // the devices that have readings
	perDev  int      // readings of each history device
	heaps   int      // heap profiles saved (one per run with -profile)
}

// scaleHistoryDevices is how many devices share the stored readings.
const scaleHistoryDevices = 1000

// newScale creates the database, registers the devices in SQL, creates
// the online devices' accounts and fills the readings. The main iotgate
// is stopped first: the scale runs' iotgate takes its component domain.
func newScale(ctx context.Context, e *env, res *results) (*scaleScenario, error) {
	cfg := e.cfg
	stopCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := e.gate.Stop(stopCtx); err != nil {
		e.log.Warn("stop iotgate", "err", err)
	}
	dsn, err := e.pg.NewDatabase(ctx, "scale")
	if err != nil {
		return nil, err
	}
	s := &scaleScenario{e: e, dsn: dsn}
	if s.db, err = sql.Open("postgres", dsn); err != nil {
		return nil, err
	}
	// A first start migrates the database; the schema goes in over REST.
	g, err := e.startGate(ctx, dsn)
	if err != nil {
		return nil, err
	}
	err = e.registerSchema(ctx, g)
	if stopErr := g.Stop(stopCtx); stopErr != nil {
		e.log.Warn("stop iotgate", "err", stopErr)
	}
	if err != nil {
		return nil, err
	}
	e.log.Info("scale: registering devices in SQL", "devices", cfg.scaleDevices)
	_, err = s.db.ExecContext(ctx, `INSERT INTO devices (jid, schema_name, schema_version)
		SELECT 'scale' || g || '@' || $1, $2, 1 FROM generate_series(1, $3::int) g`,
		e.xs.Domain(), schemaName, cfg.scaleDevices)
	if err != nil {
		return nil, fmt.Errorf("insert devices: %w", err)
	}
	s.online = e.deviceJIDs("scale", cfg.scaleOnline)
	var users []string
	for _, j := range s.online {
		u, _, _ := strings.Cut(j, "@")
		users = append(users, u)
	}
	e.log.Info("scale: creating XMPP accounts", "accounts", len(users))
	if err := servers.RegisterUsers(ctx, e.xs, users, devicePassword); err != nil {
		return nil, err
	}
	s.history = e.deviceJIDs("scale", min(scaleHistoryDevices, cfg.scaleDevices))
	s.perDev = cfg.scaleReadings / len(s.history)
	e.log.Info("scale: filling readings", "readings", s.perDev*len(s.history), "devices", len(s.history))
	start := time.Now()
	chunk := max(1, 1_000_000/len(s.history))
	var filled int64
	for from := 1; from <= s.perDev; from += chunk {
		n, err := fillReadings(ctx, s.db, s.history, from, min(s.perDev, from+chunk-1))
		if err != nil {
			return nil, err
		}
		filled += n
		e.log.Info("scale: filled", "readings", filled, "elapsed", time.Since(start).Round(time.Second))
	}
	if _, err := s.db.ExecContext(ctx, "VACUUM ANALYZE readings"); err != nil {
		return nil, fmt.Errorf("vacuum analyze: %w", err)
	}
	took := time.Since(start)
	res.add("scale", fmt.Sprintf("fill %d readings in SQL (+ VACUUM ANALYZE), once", filled), "s", "", took.Seconds())
	res.add("scale", "fill rate", "rows/s", "", float64(filled)/took.Seconds())
	return s, nil
}

// saveHeap writes a heap profile of the iotgate of this run (serving its
// metrics at the address gateEnv chose for it) to the profile directory:
// what holds the RSS just measured (go tool pprof -sample_index=inuse_space).
func (s *scaleScenario) saveHeap(ctx context.Context) {
	e := s.e
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+e.gateEnvMetrics+"/debug/pprof/heap", nil)
	if err != nil {
		return
	}
	resp, err := e.api.Do(req)
	if err != nil {
		e.log.Warn("heap profile", "err", err)
		return
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil || resp.StatusCode != http.StatusOK {
		e.log.Warn("heap profile", "status", resp.StatusCode, "err", err)
		return
	}
	s.heaps++
	if err := os.MkdirAll(e.cfg.profileDir, 0o755); err != nil {
		e.log.Warn("heap profile", "err", err)
		return
	}
	name := filepath.Join(e.cfg.profileDir, fmt.Sprintf("scale-heap-%d.pprof", s.heaps))
	if err := os.WriteFile(name, b, 0o644); err != nil {
		e.log.Warn("heap profile", "err", err)
		return
	}
	e.log.Info("scale: heap profile saved", "file", name)
}

func (s *scaleScenario) close() {
	if s.db != nil {
		s.db.Close()
	}
}

// run measures one run: start-up, RSS with the devices online, and
// history pages.
func (s *scaleScenario) run(ctx context.Context, res *results) error {
	e, cfg := s.e, s.e.cfg
	g, err := servers.StartIotgate(servers.IotgateOptions{Bin: e.bin, Env: e.gateEnv(s.dsn)})
	if err != nil {
		return err
	}
	defer func() {
		stopCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := g.Stop(stopCtx); err != nil {
			e.log.Warn("stop iotgate", "err", err)
		}
		e.saveGateLog(g)
	}()
	readyCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	startup, err := g.WaitReady(readyCtx)
	if err != nil {
		return err
	}
	const sc = "scale"
	res.add(sc, fmt.Sprintf("start-up to /readyz 200, %d devices registered", cfg.scaleDevices), "s", "< 3", startup.Seconds())

	e.log.Info("scale: logging devices in", "devices", len(s.online))
	t0 := time.Now()
	clients, err := e.dialDevices(ctx, s.online, true, nil)
	if err != nil {
		return err
	}
	defer closeDevices(clients)
	if err := e.waitOnline(ctx, g, s.online, 5*time.Minute); err != nil {
		if ctx.Err() != nil {
			return err
		}
		// The RSS and the pages are still worth measuring; how many
		// were seen says what is missing (issue #17 on ejabberd).
		seen := 0
		for _, j := range s.online {
			if e.online(ctx, g, j) == nil {
				seen++
			}
		}
		e.log.Warn("scale: not every device seen online", "seen", seen, "of", len(s.online), "err", err)
		res.add(sc, fmt.Sprintf("devices of %d logged in seen online after 5 min (NOT all)", len(s.online)), "devices", fmt.Sprintf("= %d", len(s.online)), float64(seen))
	} else {
		res.add(sc, fmt.Sprintf("%d devices logged in and seen online", len(s.online)), "s", "", time.Since(t0).Seconds())
	}
	// Let the presence work settle before reading the RSS.
	time.Sleep(2 * time.Second)
	rss, err := g.RSS()
	if err != nil {
		return err
	}
	res.add(sc, fmt.Sprintf("iotgate RSS, %d registered, %d online", cfg.scaleDevices, len(s.online)), "MB", "< 400", float64(rss)/(1<<20))
	if cfg.profileDir != "" {
		s.saveHeap(ctx)
	}

	path := "/v1/devices/" + url.PathEscape(s.history[len(s.history)/2]) + "/readings?limit=50"
	now := time.Now()
	window := time.Duration(s.perDev/3) * time.Second
	ranged := path + "&since=" + timeParam(now.Add(-2*window)) + "&until=" + timeParam(now.Add(-window))
	for _, q := range []struct{ name, path string }{
		{"newest first", path},
		{"since/until", ranged},
	} {
		lat := &latencies{}
		for range cfg.historyRequests {
			t0 := time.Now()
			if err := e.get(ctx, g, q.path); err != nil {
				return fmt.Errorf("history %s: %w", q.name, err)
			}
			lat.add(time.Since(t0))
		}
		name := fmt.Sprintf("history page (limit 50, %s) of a device with %d readings, c1", q.name, s.perDev)
		res.add(sc, name+" p50", "ms", "", ms(lat.quantile(0.5)))
		res.add(sc, name+" p99", "ms", "< 20", ms(lat.quantile(0.99)))
	}
	return nil
}
