package webhooks

import (
	"testing"
	"time"
)

// TestBackoff: full jitter under a ceiling that doubles from BackoffMin to
// BackoffMax.
func TestBackoff(t *testing.T) {
	d := NewDispatcher(nil, nil, DispatcherConfig{})
	for _, tt := range []struct {
		n    int
		ceil time.Duration
	}{{1, time.Second}, {2, 2 * time.Second}, {4, 8 * time.Second}, {10, 512 * time.Second}, {11, 10 * time.Minute}, {100, 10 * time.Minute}} {
		var top time.Duration
		for range 1000 {
			b := d.backoff(tt.n)
			if b < 0 || b > tt.ceil {
				t.Fatalf("backoff(%d) = %v, outside [0, %v]", tt.n, b, tt.ceil)
			}
			top = max(top, b)
		}
		if top < tt.ceil/2 {
			t.Errorf("backoff(%d) never above %v: no jitter over the whole range", tt.n, top)
		}
	}
}

func TestBatchWaitDefaults(t *testing.T) {
	for _, tt := range []struct{ in, want time.Duration }{{0, DefaultBatchWait}, {-1, 0}, {5 * time.Millisecond, 5 * time.Millisecond}} {
		if got := (DispatcherConfig{BatchWait: tt.in}).withDefaults().BatchWait; got != tt.want {
			t.Errorf("BatchWait %v: %v, want %v", tt.in, got, tt.want)
		}
	}
}
