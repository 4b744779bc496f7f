package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"
)

// latencies collects durations from many goroutines.
type latencies struct {
	mu sync.Mutex
	d  []time.Duration
}

// add records one duration.
func (l *latencies) add(d time.Duration) {
	l.mu.Lock()
	l.d = append(l.d, d)
	l.mu.Unlock()
}

// reset forgets what was recorded.
func (l *latencies) reset() {
	l.mu.Lock()
	l.d = l.d[:0]
	l.mu.Unlock()
}

// quantile returns the q-quantile (0..1) of what was recorded, by the
// nearest-rank method, or 0 if nothing was.
func (l *latencies) quantile(q float64) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.d) == 0 {
		return 0
	}
	s := slices.Clone(l.d)
	slices.Sort(s)
	i := int(q*float64(len(s))+0.999999) - 1
	return s[max(0, min(len(s)-1, i))]
}

// count returns how many durations were recorded.
func (l *latencies) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.d)
}

// ms returns d in milliseconds.
func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// metric is one row of the result table: one figure measured once per run.
type metric struct {
	scenario string // e.g. "ingest"
	name     string // e.g. "message via iotgate"
	unit     string // e.g. "readings/s"
	target   string // the target, or ""
	values   []float64
}

// results gathers the metrics in the order they were first reported.
type results struct {
	// profileDir, if set, gets each load's CPU profile (cpuUse.profile).
	profileDir string

	mu    sync.Mutex
	rows  []*metric
	cpu   []*cpuRow
	notes []string
}

// note records a remark printed under the table, once however many runs
// make it.
func (r *results) note(s string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !slices.Contains(r.notes, s) {
		r.notes = append(r.notes, s)
	}
}

// add records value for the metric (scenario, name), creating its row.
func (r *results) add(scenario, name, unit, target string, value float64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, m := range r.rows {
		if m.scenario == scenario && m.name == name {
			m.values = append(m.values, value)
			return
		}
	}
	r.rows = append(r.rows, &metric{scenario: scenario, name: name, unit: unit, target: target, values: []float64{value}})
}

// median returns the median of vs (the mean of the middle two for an even
// count).
func median(vs []float64) float64 {
	if len(vs) == 0 {
		return 0
	}
	s := slices.Clone(vs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// format prints v with a precision that suits its size.
func format(v float64) string {
	switch {
	case v == 0:
		return "0"
	case v >= 100 || v <= -100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10 || v <= -10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

// writeTable writes the results as a Markdown table: median, min and max
// over the runs of each metric.
func (r *results) writeTable(w io.Writer) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var sb strings.Builder
	sb.WriteString("| scenario | metric | unit | median | min | max | runs | target |\n")
	sb.WriteString("|---|---|---|---:|---:|---:|---:|---|\n")
	for _, m := range r.rows {
		fmt.Fprintf(&sb, "| %s | %s | %s | %s | %s | %s | %d | %s |\n",
			m.scenario, m.name, m.unit, format(median(m.values)),
			format(slices.Min(m.values)), format(slices.Max(m.values)), len(m.values), m.target)
	}
	_, err := io.WriteString(w, sb.String())
	return err
}

// cpuRow is the CPU use of the processes during one load, in % of one
// core, once per run.
type cpuRow struct {
	load string
	runs []cpuUse
}

// addCPU records the CPU use of one run of a load.
func (r *results) addCPU(load string, use cpuUse) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.profileDir != "" && len(use.profile) > 0 {
		r.writeProfile(load, use.profile)
	}
	for _, c := range r.cpu {
		if c.load == load {
			c.runs = append(c.runs, use)
			return
		}
	}
	r.cpu = append(r.cpu, &cpuRow{load: load, runs: []cpuUse{use}})
}

// writeCPUTable writes the median CPU use of each load as a Markdown
// table.
func (r *results) writeCPUTable(w io.Writer, xmpp string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.cpu) == 0 {
		return nil
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "| load | iotgate | %s | PostgreSQL | bench (load generator, devices) | PostgreSQL sessions opened | CPU ms per operation: iotgate / %s / PostgreSQL / bench |\n|---|---:|---:|---:|---:|---:|---:|\n", xmpp, xmpp)
	for _, c := range r.cpu {
		fmt.Fprintf(&sb, "| %s |", c.load)
		for col := range 4 {
			vs := make([]float64, len(c.runs))
			for i, run := range c.runs {
				vs[i] = run.cpu[col]
			}
			fmt.Fprintf(&sb, " %.0f%%", median(vs))
			if col == 0 {
				sb.WriteString(c.perGate())
			}
			sb.WriteString(" |")
		}
		vs := make([]float64, len(c.runs))
		for i, run := range c.runs {
			vs[i] = run.sessions
		}
		fmt.Fprintf(&sb, " %.0f |", median(vs))
		fmt.Fprintf(&sb, " %s |", c.perOpCell())
		sb.WriteString("\n")
	}
	_, err := io.WriteString(w, sb.String())
	return err
}

// perGate returns " (A% + B%)", the median CPU use of each iotgate
// instance, when the load ran on more than one; else "".
func (c *cpuRow) perGate() string {
	n := len(c.runs[0].gates)
	if n < 2 {
		return ""
	}
	parts := make([]string, n)
	for g := range n {
		var vs []float64
		for _, run := range c.runs {
			if g < len(run.gates) {
				vs = append(vs, run.gates[g])
			}
		}
		parts[g] = fmt.Sprintf("%.0f%%", median(vs))
	}
	return " (" + strings.Join(parts, " + ") + ")"
}

// perOp returns the median over the runs of the CPU time process col
// (0 iotgate, 1 the XMPP server, 2 PostgreSQL, 3 the bench) took per
// operation, in ms, and false if the load counted no operations.
func (c *cpuRow) perOp(col int) (float64, bool) {
	var vs []float64
	for _, run := range c.runs {
		if v, ok := run.perOp(col); ok {
			vs = append(vs, v)
		}
	}
	return median(vs), len(vs) > 0
}

// perOpCell returns "a / b / c / d", the CPU ms per operation of each
// process, or "–" if the load counted no operations.
func (c *cpuRow) perOpCell() string {
	parts := make([]string, 4)
	for col := range 4 {
		v, ok := c.perOp(col)
		if !ok {
			return "–"
		}
		parts[col] = fmt.Sprintf("%.3f", v)
	}
	return strings.Join(parts, " / ")
}

// perOp returns the CPU time process col took per operation, in ms, and
// false if no operation was counted.
func (u cpuUse) perOp(col int) (float64, bool) {
	if u.ops <= 0 {
		return 0, false
	}
	return u.cpu[col] / 100 * ms(u.wall) / u.ops, true
}

// per returns u with the number of operations done during the load, so
// that the CPU per operation can be told.
func (u cpuUse) per(ops int64) cpuUse {
	u.ops = float64(ops)
	return u
}

// addPerOp adds rows to the table for the CPU time per operation of
// iotgate and PostgreSQL during one load, with the targets ("" for
// none).
func (r *results) addPerOp(scenario, name, op string, use cpuUse, gateTarget, pgTarget string) {
	for _, p := range []struct {
		col          int
		proc, target string
	}{{0, "iotgate", gateTarget}, {2, "PostgreSQL", pgTarget}} {
		if v, ok := use.perOp(p.col); ok {
			r.add(scenario, fmt.Sprintf("%s: %s CPU per %s", name, p.proc, op), cpuPerOpUnit, p.target, v)
		}
	}
}

// cpuPerOpUnit is the unit of the CPU-per-operation rows. Their figures
// may be 0: a process can take less than a clock tick over a short load.
const cpuPerOpUnit = "CPU ms/op"

// writeProfile writes a load's CPU profile as DIR/<load>-<n>.pprof, n
// counting the runs; a failure is a note, not a failed run.
func (r *results) writeProfile(load string, profile []byte) {
	name := strings.Map(func(c rune) rune {
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' {
			return c
		}
		return '_'
	}, load)
	n := 1
	for _, c := range r.cpu {
		if c.load == load {
			n += len(c.runs)
		}
	}
	path := filepath.Join(r.profileDir, fmt.Sprintf("%s-%d.pprof", name, n))
	err := os.MkdirAll(r.profileDir, 0o755)
	if err == nil {
		err = os.WriteFile(path, profile, 0o644)
	}
	if err != nil {
		r.notes = append(r.notes, "profile of "+load+": "+err.Error())
	}
}
