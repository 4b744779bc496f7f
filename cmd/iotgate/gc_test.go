package main

import (
	"log/slog"
	"runtime/debug"
	"testing"
)

// TestApplyGC checks that iotgate's GC settings apply unless the Go
// runtime's own variables are set, which win.
func TestApplyGC(t *testing.T) {
	// The settings are the process's: put back what the test found.
	oldPercent := debug.SetGCPercent(100)
	oldLimit := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetGCPercent(oldPercent); debug.SetMemoryLimit(oldLimit) })
	const unset = int64(1) << 62
	tests := []struct {
		name        string
		cfg         Config
		env         map[string]string
		wantPercent int
		wantLimit   int64
	}{
		{"Settings", Config{GCPercent: 400, MemoryLimit: 1 << 30}, nil, 400, 1 << 30},
		{"NoLimit", Config{GCPercent: 200}, nil, 200, unset},
		{"GOGCWins", Config{GCPercent: 400, MemoryLimit: 1 << 30}, map[string]string{"GOGC": "150"}, 150, 1 << 30},
		{"GOMEMLIMITWins", Config{GCPercent: 300, MemoryLimit: 1 << 30}, map[string]string{"GOMEMLIMIT": "2GiB"}, 300, unset},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// What the runtime would have read from GOGC and GOMEMLIMIT
			// at start (here: 150 and "unset", since the test process
			// was started without them).
			debug.SetGCPercent(150)
			debug.SetMemoryLimit(unset)
			applyGC(tt.cfg, func(k string) string { return tt.env[k] }, slog.New(slog.DiscardHandler))
			gotPercent := debug.SetGCPercent(100)
			gotLimit := debug.SetMemoryLimit(-1)
			if gotPercent != tt.wantPercent || gotLimit != tt.wantLimit {
				t.Errorf("GC percent, memory limit = %d, %d; want %d, %d", gotPercent, gotLimit, tt.wantPercent, tt.wantLimit)
			}
		})
	}
}
