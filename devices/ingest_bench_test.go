package devices

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/iotgate/iotgate"
	"github.com/iotgate/iotgate/internal/memstore"
)

// discardStore finds every device and stores readings nowhere.
type discardStore struct {
	memstore.DeviceStore
	mu   sync.Mutex
	devs map[string]*iotgate.Device
}

func (d *discardStore) Device(_ context.Context, jid string) (*iotgate.Device, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	dev := d.devs[jid]
	if dev == nil {
		dev = &iotgate.Device{ID: int64(len(d.devs) + 1), JID: jid, Schema: "s", SchemaVersion: 1}
		d.devs[jid] = dev
	}
	return dev, nil
}

func (d *discardStore) InsertReadings(_ context.Context, rs []*iotgate.Reading) []error {
	for i, r := range rs {
		r.ID = int64(i + 1)
	}
	return make([]error, len(rs))
}

// BenchmarkIngestCommit follows a message reading through the device
// service, from Ingest to its acknowledgement after the commit, with a
// schema that renders nothing and a store that keeps nothing: what the
// service itself costs per reading (the lookup, the queue, the batch, the
// caches, the answer).
// Run: go test ./devices -run '^$' -bench IngestCommit -benchmem
func BenchmarkIngestCommit(b *testing.B) {
	store := &discardStore{devs: map[string]*iotgate.Device{}}
	svc := NewService(store, anySchema{}, ServiceConfig{})
	ctx, cancel := context.WithCancel(context.Background())
	go svc.Run(ctx)
	defer func() { cancel(); <-svc.Stopped() }()
	const devices = 20
	ins := make([]iotgate.IncomingReading, devices)
	for i := range ins {
		jid := fmt.Sprintf("d%d@example.com", i)
		ins[i] = iotgate.IncomingReading{From: jid + "/r", Bare: jid, Via: "message",
			Payloads: []iotgate.Payload{{Namespace: "urn:t", Local: "x", XML: []byte(`<x xmlns="urn:t" v="21.5"/>`)}}}
	}
	var wg sync.WaitGroup
	done := func(err error) {
		if err != nil {
			b.Error(err)
		}
		wg.Done()
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		wg.Add(1)
		svc.Ingest(ctx, ins[i%devices], done)
		if i%500 == 499 {
			wg.Wait()
		}
	}
	wg.Wait()
}
