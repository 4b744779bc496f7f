package iotgate

import (
	"context"
	"testing"
	"time"
)

func TestEvery(t *testing.T) {
	tests := []struct {
		name      string
		d         time.Duration
		cancelAt  int // cancel ctx during this call (1-based)
		wantCalls int
	}{
		{"FirstCallAtOnce", time.Hour, 1, 1},
		{"Repeats", time.Millisecond, 3, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			calls := 0
			done := make(chan struct{})
			go func() {
				defer close(done)
				Every(ctx, tt.d, func(context.Context) {
					calls++
					if calls == tt.cancelAt {
						cancel()
					}
				})
			}()
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				t.Fatal("Every did not return after its context ended")
			}
			if calls != tt.wantCalls {
				t.Errorf("%d calls, want %d", calls, tt.wantCalls)
			}
		})
	}
	t.Run("NotAfterCancel", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		Every(ctx, time.Millisecond, func(context.Context) { t.Error("called with its context already done") })
	})
}
