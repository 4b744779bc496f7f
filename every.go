package iotgate

import (
	"context"
	"time"
)

// Every calls f at once and then every d until ctx ends, in the caller's
// goroutine: the periodic jobs (trimming the event log, maintaining
// tables, heartbeats) share this loop instead of each writing its own.
// A call that overruns d delays the next one; calls never overlap.
func Every(ctx context.Context, d time.Duration, f func(ctx context.Context)) {
	t := time.NewTicker(d)
	defer t.Stop()
	for ctx.Err() == nil {
		f(ctx)
		select {
		case <-ctx.Done():
		case <-t.C:
		}
	}
}
