//go:build integration

package main

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/iotgate/iotgate/internal/device"
)

// steadyReadings has dev send reading(i) every 20 ms until the returned
// func is called, which checks that at least 10 were sent and every one
// was acknowledged within 3 s: the bystander of a test that makes
// iotgate do something costly for another tenant.
func steadyReadings(ctx context.Context, t *testing.T, dev *device.Client, phase string, reading func(i int) string) (stop func()) {
	t.Helper()
	done := make(chan struct{})
	var rtts []time.Duration
	errs := map[string]int{}
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-done:
				return
			case <-time.After(20 * time.Millisecond):
			}
			t0 := time.Now()
			rep, err := dev.SendIQ(ctx, "set", e2eDomain, reading(i))
			switch {
			case err != nil:
				errs[err.Error()]++
			case rep.Type != "result":
				errs[fmt.Sprintf("%s %s %s", rep.Type, rep.Condition, rep.Text)]++
			default:
				rtts = append(rtts, time.Since(t0))
			}
		}
	})
	return func() {
		t.Helper()
		close(done)
		wg.Wait()
		var worst time.Duration
		for _, d := range rtts {
			worst = max(worst, d)
		}
		t.Logf("%s: steady device: %d readings acknowledged, worst round trip %s, errors %v", phase, len(rtts), worst, errs)
		if len(errs) > 0 || len(rtts) < 10 {
			t.Errorf("%s: steady device: %d acknowledged, errors %v; want every reading acknowledged", phase, len(rtts), errs)
		}
		// Generous, for this loaded 2-core machine: well below the seconds
		// the costly work takes when it holds others up.
		if worst > 3*time.Second {
			t.Errorf("%s: steady device: worst round trip %s, want under 3 s", phase, worst)
		}
	}
}
