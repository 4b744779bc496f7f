//go:build integration

package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"testing"
	"time"

	"github.com/iotgate/iotgate"
	"github.com/iotgate/iotgate/internal/servers"
	"github.com/iotgate/iotgate/postgres"
)

// BenchmarkInsertReadingsCPU measures what PostgreSQL spends per reading
// stored, by batch size: the CPU time of the test database's sessions
// (from /proc; the server's background processes, the WAL writer among
// them, are left out) during InsertReadings calls of one batch each, of
// readings of 20 devices, divided by the readings. A batch's fixed costs
// (transaction, round trips, commit) shrink per reading as batches grow;
// what is left at large batches is the cost of each reading's rows.
//
//	go test -tags integration -run '^$' -bench InsertReadingsCPU -benchtime 500x ./postgres/
func BenchmarkInsertReadingsCPU(b *testing.B) {
	ctx := context.Background()
	db, reg, svc := newStack(b)
	jids := make([]string, 20)
	for i := range jids {
		jids[i] = fmt.Sprintf("d%d@example.com", i)
	}
	devs := thermostats(b, reg, svc, jids...)
	data := []byte(`{"unit":"C","temperature":21.5,"mode":"heat"}`)
	xml := string(reading("21.5"))
	for _, batch := range []int{10, 30, 100, 300} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			write := func() {
				now := time.Now().UTC()
				rs := make([]*iotgate.Reading, batch)
				for j := range rs {
					d := devs[j%len(devs)]
					rs[j] = &iotgate.Reading{DeviceID: d.ID, DeviceJID: d.JID, ReceivedAt: now.Add(time.Duration(j) * time.Microsecond), XML: xml, Data: data}
				}
				if err := errors.Join(db.InsertReadings(ctx, rs)...); err != nil {
					b.Fatal(err)
				}
			}
			write() // the pool's connections open and prepare
			before := sessionsCPU(b, db)
			b.ResetTimer()
			for range b.N {
				write()
			}
			b.StopTimer()
			cpu := servers.CPUDelta(before, sessionsCPU(b, db))
			n := float64(b.N * batch)
			b.ReportMetric(float64(cpu.Microseconds())/n, "pg-µs/reading")
			b.ReportMetric(n/b.Elapsed().Seconds(), "readings/s")
		})
	}
}

// sessionsCPU returns the CPU time used so far by each session (backend
// process) of the test's database.
func sessionsCPU(b *testing.B, db *postgres.DB) map[int]time.Duration {
	b.Helper()
	rows, err := db.SQL().Query(`SELECT pid FROM pg_stat_activity WHERE datname = current_database()`)
	if err != nil {
		b.Fatal(err)
	}
	defer rows.Close()
	out := map[int]time.Duration{}
	for rows.Next() {
		var pid int
		if err := rows.Scan(&pid); err != nil {
			b.Fatal(err)
		}
		maps.Copy(out, servers.TreeCPU(pid))
	}
	if err := rows.Err(); err != nil {
		b.Fatal(err)
	}
	return out
}
