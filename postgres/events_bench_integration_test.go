//go:build integration

package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/iotgate/iotgate"
)

// BenchmarkInsertReadings measures the store's hot path alone: batches of
// 50 readings of 10 devices, one InsertReadings call per batch (what the
// group commit hands it), events included.
//
//	go test -tags integration -run '^$' -bench BenchmarkInsertReadings -count 6 ./postgres/
func BenchmarkInsertReadings(b *testing.B) {
	ctx := context.Background()
	db, reg, svc := newStack(b)
	jids := make([]string, 10)
	for i := range jids {
		jids[i] = fmt.Sprintf("d%d@example.com", i)
	}
	devs := thermostats(b, reg, svc, jids...)
	data := []byte(`{"unit":"C","temperature":21.5,"mode":"heat"}`)
	xml := string(reading("21.5"))
	const batch = 50
	b.ResetTimer()
	for i := range b.N {
		now := time.Now().UTC()
		rs := make([]*iotgate.Reading, batch)
		for j := range rs {
			d := devs[(i*batch+j)%len(devs)]
			rs[j] = &iotgate.Reading{DeviceID: d.ID, DeviceJID: d.JID, ReceivedAt: now, XML: xml, Data: data}
		}
		if err := errors.Join(db.InsertReadings(ctx, rs)...); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "readings/s")
}
