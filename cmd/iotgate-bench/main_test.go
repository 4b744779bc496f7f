package main

import (
	"bytes"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseFlags(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{"Defaults", nil, ""},
		{"Quick", []string{"-quick", "-scenarios", "ingest,reads"}, ""},
		{"Ejabberd", []string{"-server", "ejabberd"}, ""},
		{"Instances", []string{"-server", "ejabberd", "-scenarios", "instances"}, ""},
		{"ErrServer", []string{"-server", "openfire"}, "-server"},
		{"ErrScenario", []string{"-scenarios", "ingest,bogus"}, "bogus"},
		{"ErrNoScenario", []string{"-scenarios", ","}, "none given"},
		{"ErrRuns", []string{"-runs", "0"}, "-runs"},
		{"ErrConcurrency", []string{"-concurrency", "1,x"}, "-concurrency"},
		{"ErrDuration", []string{"-duration", "2h"}, "-duration"},
		{"IssueScale", []string{"-scale-devices", "1000000", "-scale-online", "10000"}, ""},
		{"ErrTooManyOnline", []string{"-scale-devices", "1000000", "-scale-online", "10001"}, "scale flags"},
		{"ErrOnlineOverDevices", []string{"-scale-devices", "5000", "-scale-online", "5001"}, "scale flags"},
		{"ErrTooManyDevices", []string{"-scale-devices", "1000001"}, "scale flags"},
		{"ErrTooManyIngestDevices", []string{"-ingest-devices", "5000"}, "ingest flags"},
		{"ErrTooManyReadings", []string{"-scale-readings", "100000000"}, "scale flags"},
		{"ErrArgs", []string{"extra"}, "unexpected"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stderr bytes.Buffer
			cfg, err := parseFlags(tt.args, &stderr)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("parseFlags(%q) = %v", tt.args, err)
				}
				if cfg.runs < 1 || len(cfg.scenarios) == 0 || len(cfg.concurrency) == 0 {
					t.Errorf("parseFlags(%q) = %+v, want runs, scenarios and concurrency", tt.args, cfg)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("parseFlags(%q) = %v, want an error naming %q", tt.args, err, tt.wantErr)
			}
		})
	}
}

func TestMedian(t *testing.T) {
	tests := []struct {
		name string
		in   []float64
		want float64
	}{
		{"Empty", nil, 0},
		{"One", []float64{3}, 3},
		{"Odd", []float64{5, 1, 3}, 3},
		{"Even", []float64{4, 1, 3, 2}, 2.5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := median(tt.in); got != tt.want {
				t.Errorf("median(%v) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}

func TestQuantile(t *testing.T) {
	l := &latencies{}
	for i := 1; i <= 100; i++ {
		l.add(time.Duration(i) * time.Millisecond)
	}
	for _, tt := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 50 * time.Millisecond}, {0.99, 99 * time.Millisecond}, {1, 100 * time.Millisecond}} {
		if got := l.quantile(tt.q); got != tt.want {
			t.Errorf("quantile(%v) = %v, want %v", tt.q, got, tt.want)
		}
	}
}

// tableRows returns the rows of the first Markdown table in out, split
// into cells, header and separator left out.
func tableRows(out string) [][]string {
	var rows [][]string
	inTable := false
	for line := range strings.SplitSeq(out, "\n") {
		if !strings.HasPrefix(line, "|") {
			if inTable {
				break
			}
			continue
		}
		if !inTable {
			inTable = true // the header
			continue
		}
		if strings.HasPrefix(line, "|---") {
			continue
		}
		var cells []string
		for c := range strings.SplitSeq(strings.Trim(line, "|"), "|") {
			cells = append(cells, strings.TrimSpace(c))
		}
		rows = append(rows, cells)
	}
	return rows
}

func TestTableRows(t *testing.T) {
	res := &results{}
	res.add("ingest", "rate", "readings/s", "", 10)
	res.add("ingest", "rate", "readings/s", "", 30)
	res.add("reads", "p99", "ms", "< 10", 0.5)
	var b bytes.Buffer
	if err := res.writeTable(&b); err != nil {
		t.Fatal(err)
	}
	rows := tableRows(b.String())
	want := [][]string{
		{"ingest", "rate", "readings/s", "20.0", "10.0", "30.0", "2", ""},
		{"reads", "p99", "ms", "0.50", "0.50", "0.50", "1", "< 10"},
	}
	if len(rows) != len(want) {
		t.Fatalf("rows = %q, want %q", rows, want)
	}
	for i := range want {
		if strings.Join(rows[i], "|") != strings.Join(want[i], "|") {
			t.Errorf("row %d = %q, want %q", i, rows[i], want[i])
		}
	}
}

func TestCPUTablePerInstance(t *testing.T) {
	tests := []struct {
		name  string
		gates [][]float64 // per run
		want  string      // the iotgate cell
	}{
		{"OneInstance", [][]float64{{40}, {50}}, "45%"},
		{"TwoInstances", [][]float64{{20, 30}, {24, 26}}, "50% (22% + 28%)"},
		{"NoInstance", [][]float64{nil}, "0%"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := &results{}
			for _, gates := range tt.gates {
				use := cpuUse{gates: gates}
				for _, g := range gates {
					use.cpu[0] += g
				}
				res.addCPU("load", use)
			}
			var b bytes.Buffer
			if err := res.writeCPUTable(&b, "ejabberd"); err != nil {
				t.Fatal(err)
			}
			rows := tableRows(b.String())
			if len(rows) != 1 || len(rows[0]) != 7 {
				t.Fatalf("rows = %q, want one of 7 cells", rows)
			}
			if rows[0][1] != tt.want {
				t.Errorf("iotgate cell = %q, want %q", rows[0][1], tt.want)
			}
		})
	}
}

func TestBusyWarning(t *testing.T) {
	tests := []struct {
		name  string
		avg   string
		cores int
		warn  bool
	}{
		{"Idle", "0.10 0.20 0.30", 2, false},
		{"AtHalf", "1.00 0.20 0.30", 2, false},
		{"Busy", "1.98 1.20 0.82", 2, true},
		{"Unknown", "unknown", 2, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := busyWarning(tt.avg, tt.cores) != ""; got != tt.warn {
				t.Errorf("busyWarning(%q, %d) warns = %t, want %t", tt.avg, tt.cores, got, tt.warn)
			}
		})
	}
}

// TestNotesOnce: a note that every run makes is printed once.
func TestNotesOnce(t *testing.T) {
	res := &results{}
	for range 3 {
		res.note("not measured: why")
	}
	res.note("another")
	if want := []string{"not measured: why", "another"}; !slices.Equal(res.notes, want) {
		t.Errorf("notes %q, want %q", res.notes, want)
	}
}
