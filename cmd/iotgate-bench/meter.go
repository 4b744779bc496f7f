package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"time"

	"github.com/iotgate/iotgate/internal/servers"
)

// cpuMeter measures the CPU time the processes of the bench use during a
// load, and the database sessions opened meanwhile.
type cpuMeter struct {
	e        *env
	gates    []int                   // iotgate instances' pids
	pids     [2]int                  // XMPP server, PostgreSQL; 0: not known
	start    []map[int]time.Duration // gates, then pids
	self     time.Duration
	sessions int64
	at       time.Time
	// profile gets iotgate's CPU profile, when -profile asks for one.
	profile chan []byte
}

// meter starts measuring the CPU use of the iotgate instances gates (nil
// ones left out), the XMPP server, PostgreSQL and the bench itself.
func (e *env) meter(gates ...*servers.Iotgate) *cpuMeter {
	m := &cpuMeter{e: e, at: time.Now()}
	for _, g := range gates {
		if g != nil {
			m.gates = append(m.gates, g.PID())
		}
	}
	if p, ok := e.xs.(interface{ PID() int }); ok {
		m.pids[0] = p.PID()
	}
	m.pids[1] = e.pg.PID()
	m.sessions = e.sessions()
	for _, pid := range append(slices.Clone(m.gates), m.pids[:]...) {
		m.start = append(m.start, servers.TreeCPU(pid))
	}
	m.self = servers.SelfCPU()
	if e.cfg.profileDir != "" && len(m.gates) > 0 && e.gateEnvMetrics != "" {
		m.profile = make(chan []byte, 1)
		go func() { m.profile <- e.cpuProfile(e.gateEnvMetrics, e.cfg.duration) }()
	}
	return m
}

// cpuProfile returns a CPU profile of the iotgate serving its metrics at
// addr, over d (at least a second), or nil if it can't be had.
func (e *env) cpuProfile(addr string, d time.Duration) []byte {
	secs := max(1, int(d.Round(time.Second)/time.Second))
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(secs+10)*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", addr, secs), nil)
	if err != nil {
		return nil
	}
	resp, err := e.api.Do(req)
	if err != nil {
		e.log.Warn("CPU profile", "err", err)
		return nil
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		e.log.Warn("CPU profile", "status", resp.StatusCode, "err", err)
		return nil
	}
	return b
}

// sessions returns how many sessions the PostgreSQL instance has had
// (pg_stat_database.sessions, all databases), or -1.
func (e *env) sessions() int64 {
	var n int64
	if err := e.db.QueryRow("SELECT coalesce(sum(sessions), 0) FROM pg_stat_database").Scan(&n); err != nil {
		return -1
	}
	return n
}

// cpuUse is what a cpuMeter measured: CPU in % of one core for iotgate
// (all instances), the XMPP server, PostgreSQL and the bench, each
// iotgate instance's share, and database sessions opened.
type cpuUse struct {
	cpu      [4]float64
	gates    []float64
	sessions float64
	wall     time.Duration // how long the load ran
	ops      float64       // operations done; 0: not counted
	profile  []byte        // iotgate's CPU profile (-profile); nil: none
}

// stop returns the CPU use since meter, in % of one core of wall time,
// and the sessions opened. PostgreSQL's statistics lag by up to a
// second, so sessions are read after a pause (none with -quick, whose
// session counts may then fall short).
func (m *cpuMeter) stop() cpuUse {
	wall := time.Since(m.at)
	use := cpuUse{wall: wall}
	pct := func(i, pid int) float64 {
		return 100 * float64(servers.CPUDelta(m.start[i], servers.TreeCPU(pid))) / float64(wall)
	}
	for i, pid := range m.gates {
		use.gates = append(use.gates, pct(i, pid))
		use.cpu[0] += use.gates[i]
	}
	for i, pid := range m.pids {
		use.cpu[i+1] = pct(len(m.gates)+i, pid)
	}
	use.cpu[3] = 100 * float64(servers.SelfCPU()-m.self) / float64(wall)
	if !m.e.cfg.quick {
		time.Sleep(1100 * time.Millisecond)
	}
	use.sessions = float64(m.e.sessions() - m.sessions)
	if m.profile != nil {
		use.profile = <-m.profile
	}
	return use
}
