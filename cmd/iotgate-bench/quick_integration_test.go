//go:build integration

package main

import (
	"bytes"
	"context"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestQuick runs the bench's smoke mode against real servers, so that the
// tool can't rot: every scenario must produce its rows, each with nonzero
// figures.
func TestQuick(t *testing.T) {
	for _, server := range []string{"prosody", "ejabberd"} {
		t.Run(server, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			var stdout, stderr bytes.Buffer
			start := time.Now()
			code := run(ctx, []string{"-quick", "-server", server}, &stdout, &stderr)
			t.Logf("quick run took %s", time.Since(start).Round(time.Millisecond))
			if code != 0 {
				t.Fatalf("run = %d\nstderr:\n%s\nstdout:\n%s", code, stderr.String(), stdout.String())
			}
			rows := tableRows(stdout.String())
			seen := map[string]int{}
			for _, r := range rows {
				if len(r) != 8 {
					t.Errorf("row %q: %d cells, want 8", r, len(r))
					continue
				}
				seen[r[0]]++
				for _, cell := range r[3:6] { // median, min, max
					v, err := strconv.ParseFloat(cell, 64)
					if err != nil || v <= 0 {
						t.Errorf("row %q: figure %q, want a number > 0", r, cell)
					}
				}
			}
			// instances: one vs two instances and failover on ejabberd, the
			// standby's takeover on Prosody.
			instances := map[string]int{"prosody": 2, "ejabberd": 19}[server]
			for _, want := range []struct {
				scenario string
				rows     int
			}{{"ingest", 10}, {"commands", 14}, {"reads", 6}, {"events", 7}, {"instances", instances}, {"scale", 9}} {
				if seen[want.scenario] != want.rows {
					t.Errorf("scenario %s: %d rows, want %d", want.scenario, seen[want.scenario], want.rows)
				}
			}
			for _, want := range []string{"cores:", "PostgreSQL:", "XMPP server: " + server, "load average"} {
				if !strings.Contains(stdout.String(), want) {
					t.Errorf("output lacks %q", want)
				}
			}
			if t.Failed() {
				t.Logf("stdout:\n%s\nstderr:\n%s", stdout.String(), stderr.String())
			}
		})
	}
}
