//go:build integration

package postgres_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/iotgate/iotgate"
	"github.com/iotgate/iotgate/internal/servers"
	"github.com/iotgate/iotgate/postgres"
)

// TestReadingsAtScale measures history queries over many readings: it
// loads IOTGATE_BENCH_ROWS readings of 1000 devices over 60 days and logs
// p50/p99 of the newest page, of a page whose range spans a day's seam,
// and of the latest reading. IOTGATE_BENCH_LAYOUT=before measures the
// table as it was before migration 0010 (one plain table); otherwise the
// readings are in daily partitions, as after 60 days of running, with a
// DEFAULT partition too if IOTGATE_BENCH_LAYOUT=default. It is
// not run without IOTGATE_BENCH_ROWS:
//
//	IOTGATE_INTEGRATION=1 IOTGATE_BENCH_ROWS=10000000 [IOTGATE_BENCH_LAYOUT=before|default] \
//	  go test -tags integration -count=1 -timeout 30m -run TestReadingsAtScale -v ./postgres/
func TestReadingsAtScale(t *testing.T) {
	rows, _ := strconv.Atoi(os.Getenv("IOTGATE_BENCH_ROWS"))
	if rows <= 0 {
		t.Skip("IOTGATE_BENCH_ROWS not set")
	}
	const devices, days, queries = 1000, 60, 2000
	before := os.Getenv("IOTGATE_BENCH_LAYOUT") == "before"
	ctx := context.Background()
	db, err := postgres.Open(ctx, servers.DatabaseForTest(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	now := time.Now().UTC()
	exec := func(q string, args ...any) {
		t.Helper()
		if _, err := db.SQL().ExecContext(ctx, q, args...); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	if before {
		if err := db.MigrateDown(ctx, 1); err != nil {
			t.Fatal(err)
		}
	} else {
		// As after 60 days of running: a partition per day (made here, as
		// EnsurePartitions makes them from today on only).
		first := now.Add(-(days + 1) * 24 * time.Hour).Truncate(24 * time.Hour)
		last := now.Add(8 * 24 * time.Hour).Truncate(24 * time.Hour)
		exec(`DO $$ DECLARE p text; BEGIN
			FOR p IN SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
				WHERE i.inhparent = 'readings'::regclass LOOP
				EXECUTE format('DROP TABLE %I', p);
			END LOOP; END $$`)
		bound := func(t time.Time) string { return "'" + t.Format(time.RFC3339) + "'" }
		exec(`CREATE TABLE readings_before PARTITION OF readings FOR VALUES FROM (MINVALUE) TO (` + bound(first) + `)`)
		exec(`CREATE TABLE readings_from PARTITION OF readings FOR VALUES FROM (` + bound(last) + `) TO (MAXVALUE)`)
		for d := first; d.Before(last); d = d.Add(24 * time.Hour) {
			exec(`CREATE TABLE readings_p` + d.Format("20060102") + ` PARTITION OF readings FOR VALUES FROM (` +
				bound(d) + `) TO (` + bound(d.Add(24*time.Hour)) + `)`)
		}
		if os.Getenv("IOTGATE_BENCH_LAYOUT") == "default" {
			// What a DEFAULT partition would cost, though it stays empty.
			exec(`CREATE TABLE readings_default PARTITION OF readings DEFAULT`)
		}
	}
	exec(`INSERT INTO devices (jid) SELECT 'd' || i || '@example.com' FROM generate_series(1, $1) i`, devices)

	start := time.Now()
	const chunk = 1_000_000
	for from := 0; from < rows; from += chunk {
		exec(`
			INSERT INTO readings (device_id, received_at, xml, data)
			SELECT d.ids[1 + g % $4], $1::timestamptz - make_interval(days => $5) + g * (make_interval(days => $5) / $2),
				'<reading xmlns="urn:example:thermostat" unit="C"><temperature>21.5</temperature><mode>heat</mode></reading>',
				'{"unit":"C","temperature":21.5,"mode":"heat"}'
			FROM (SELECT array_agg(id ORDER BY id) AS ids FROM devices) AS d,
				generate_series($3::bigint + 1, least($3::bigint + $6, $2)) AS g`,
			now, rows, from, devices, days, chunk)
	}
	exec(`VACUUM ANALYZE readings`)
	var size string
	db.SQL().QueryRowContext(ctx, `SELECT pg_size_pretty(sum(pg_total_relation_size(relid))) FROM pg_partition_tree('readings')`).Scan(&size)
	if before {
		db.SQL().QueryRowContext(ctx, `SELECT pg_size_pretty(pg_total_relation_size('readings'))`).Scan(&size)
	}
	t.Logf("layout %q: loaded %d readings of %d devices over %d days in %v (%s)", os.Getenv("IOTGATE_BENCH_LAYOUT"), rows, devices, days, time.Since(start).Round(time.Second), size)

	// A seam 30 days ago: 3 hours on each side of midnight.
	seam := now.Add(-30 * 24 * time.Hour).Truncate(24 * time.Hour)
	since, until := seam.Add(-3*time.Hour), seam.Add(3*time.Hour)
	rnd := rand.New(rand.NewPCG(1, 2))
	jid := func() string { return fmt.Sprintf("d%d@example.com", 1+rnd.IntN(devices)) }
	for _, q := range []struct {
		name string
		run  func() (int, error)
	}{
		{"newest 50", func() (int, error) {
			p, err := db.Readings(ctx, jid(), iotgate.ReadingFilter{Limit: 50, Desc: true})
			return len(p.Items), err
		}},
		{"second page of 50 (cursor)", func() (int, error) {
			j := jid()
			p, err := db.Readings(ctx, j, iotgate.ReadingFilter{Limit: 50, Desc: true})
			if err != nil {
				return 0, err
			}
			p, err = db.Readings(ctx, j, iotgate.ReadingFilter{Limit: 50, Desc: true, Cursor: p.NextCursor})
			return len(p.Items), err
		}},
		{"6 h across a seam, newest first", func() (int, error) {
			p, err := db.Readings(ctx, jid(), iotgate.ReadingFilter{Limit: 50, Desc: true, Since: &since, Until: &until})
			return len(p.Items), err
		}},
		{"latest reading", func() (int, error) {
			_, err := db.LatestReading(ctx, jid())
			return 1, err
		}},
	} {
		ds := make([]time.Duration, 0, queries)
		items := 0
		for range queries {
			t0 := time.Now()
			n, err := q.run()
			ds = append(ds, time.Since(t0))
			if err != nil {
				t.Fatalf("%s: %v", q.name, err)
			}
			items += n
		}
		slices.Sort(ds)
		t.Logf("%-32s p50 %8v  p99 %8v  max %8v  (%d queries, %.1f items each)", q.name,
			ds[len(ds)/2].Round(time.Microsecond), ds[len(ds)*99/100].Round(time.Microsecond), ds[len(ds)-1].Round(time.Microsecond),
			queries, float64(items)/queries)
	}
}
