package webhooks_test

import (
	"context"
	"testing"
	"time"

	"github.com/iotgate/iotgate/webhooks"
)

// BenchmarkDeliver measures delivery throughput to a loopback receiver:
// b.N events already in the log, delivered in batches of 100 (the
// default), signed; the figure is ns per event delivered.
func BenchmarkDeliver(b *testing.B) {
	e := newEnv(b)
	r := newReceiver(b, nil)
	e.create(b, r.URL, webhooks.CreateRequest{})
	e.readings("a@example.com", b.N)
	cfg := fastConfig()
	cfg.BatchWait = time.Millisecond
	b.ResetTimer()
	d := webhooks.NewDispatcher(e.store, e.log, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { d.Run(ctx); close(done) }()
	for len(r.acked()) < b.N {
		time.Sleep(time.Millisecond)
	}
	b.StopTimer()
	cancel()
	<-done
	b.ReportMetric(float64(len(r.deliveries())), "posts")
}
