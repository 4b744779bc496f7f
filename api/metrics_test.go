package api

import (
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/iotgate/iotgate"
	"github.com/iotgate/iotgate/devices"
)

func TestMetrics(t *testing.T) {
	m := NewMetrics(MetricsSources{
		XMPP:          fakeXMPPStats{up: true},
		OnlineDevices: func() int { return 2 },
		RateLimited:   func() uint64 { return 5 },
		QueueFull:     func() uint64 { return 8 },
		Unserved:      func() uint64 { return 6 },
		HeldReadings:  func() int { return 4 },

		OversizeStanzas: func() uint64 { return 6 },
	})
	m.ReadingsCommitted(10, 3*time.Millisecond)
	m.ReadingsCommitted(6, time.Millisecond)
	m.ReadingRefused(devices.RefusedInvalid)
	m.CommandFinished(iotgate.CommandSucceeded, "", 20*time.Millisecond)
	m.CommandFinished(iotgate.CommandFailed, iotgate.DetailDeviceOffline, 0)

	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	tests := []struct {
		name, want string
	}{
		{"Accepted", "iotgate_readings_accepted_total 16"},
		{"RefusedInvalid", `iotgate_readings_refused_total{reason="invalid"} 1`},
		{"RefusedZeroSeries", `iotgate_readings_refused_total{reason="queue_full"} 0`},
		{"Batches", "iotgate_ingest_batch_readings_count 2"},
		{"CommitSeconds", "iotgate_ingest_commit_seconds_sum 0.004"},
		{"XMPPUp", "iotgate_xmpp_up 1"},
		{"Reconnects", "iotgate_xmpp_reconnects_total 3"},
		{"PendingIQs", "iotgate_xmpp_pending_iqs 7"},
		{"Online", "iotgate_devices_online 2"},
		{"RateLimited", "iotgate_xmpp_rate_limited_total 5"},
		{"QueueFull", "iotgate_xmpp_queue_full_total 8"},
		{"Unserved", "iotgate_xmpp_unserved_total 6"},
		{"Held", "iotgate_readings_held 4"},
		{"Oversize", "iotgate_xmpp_stanzas_oversize_total 6"},
		{"CommandsOK", `iotgate_commands_total{code="",status="succeeded"} 1`},
		{"CommandsOffline", `iotgate_commands_total{code="device_offline",status="failed"} 1`},
		{"CommandSeconds", "iotgate_command_seconds_count 1"},
		{"GoRuntime", "go_goroutines "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !strings.Contains(string(body), tt.want) {
				t.Errorf("metrics lack %q", tt.want)
			}
		})
	}
}

// TestMetricsInstanceLabel checks that every metric carries the
// instance's ID, those registered by other parts too.
func TestMetricsInstanceLabel(t *testing.T) {
	m := NewMetrics(MetricsSources{Instance: "gw-1", OnlineDevices: func() int { return 2 }})
	m.Registry().MustRegister(prometheus.NewCounter(prometheus.CounterOpts{Name: "iotgate_test_total", Help: "A part's own."}))
	m.ReadingsCommitted(1, time.Millisecond)
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	samples := 0
	for _, line := range strings.Split(string(body), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		samples++
		if !strings.Contains(line, `instance="gw-1"`) {
			t.Errorf("no instance label: %s", line)
		}
	}
	for _, want := range []string{`iotgate_readings_accepted_total{instance="gw-1"} 1`, `iotgate_devices_online{instance="gw-1"} 2`, `iotgate_test_total{instance="gw-1"} 0`} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	if samples < 10 {
		t.Errorf("%d samples, want the Go runtime's too", samples)
	}
}
