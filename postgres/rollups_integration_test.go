//go:build integration

package postgres_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/lib/pq"

	"github.com/iotgate/iotgate"
	"github.com/iotgate/iotgate/postgres"
)

// TestAggregateRollups checks that the aggregates read from the hourly
// rollups are exactly those of the raw query, on random windows, fields,
// aggregates and widths, with part of the hours rolled; then after a late
// reading for a rolled hour, a roll by two instances at once, retention
// and a device's delete.
func TestAggregateRollups(t *testing.T) {
	ctx := context.Background()
	db, reg, svc := newStack(t)
	devs := thermostats(t, reg, svc, "roll@example.com", "other@example.com", "idle@example.com")
	d := devs[0]
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, seed))
	now := time.Now().UTC()
	start := now.Add(-96 * time.Hour).Truncate(time.Hour)
	dailyPartitions(t, db, start.Add(-48*time.Hour), now.Add(48*time.Hour))

	// Readings at random intervals over 3 days, with numbers written at
	// several scales, a humidity now and then, values that are not
	// numbers (a string, an object: another schema version's shapes) and
	// a nested number.
	number := func() string {
		switch rng.IntN(4) {
		case 0:
			return fmt.Sprint(rng.IntN(200) - 100)
		case 1:
			return fmt.Sprintf("%.1f", rng.Float64()*50)
		case 2:
			return fmt.Sprintf("%.3f0", rng.Float64()*50) // a trailing zero
		default:
			return fmt.Sprintf("%.7f", rng.NormFloat64()*1e6)
		}
	}
	reading := func(dev *iotgate.Device, at time.Time, seq int) *iotgate.Reading {
		temp := number()
		switch rng.IntN(20) {
		case 0:
			temp = `"INF"`
		case 1:
			temp = `{"#text":` + number() + `}`
		}
		data := fmt.Sprintf(`{"@seq":%d,"@unit":"C","temperature":%s,"mode":"heat"`, seq, temp)
		if rng.IntN(3) == 0 {
			data += `,"humidity":` + number()
		}
		if rng.IntN(10) == 0 {
			data += `,"extra":{"deep":[1,2],"n":` + number() + `}`
		}
		return &iotgate.Reading{DeviceID: dev.ID, DeviceJID: dev.JID, ReceivedAt: at.Round(time.Microsecond), XML: "<reading/>", Data: json.RawMessage(data + "}")}
	}
	var rs []*iotgate.Reading
	for at, seq := start, 0; at.Before(start.Add(72 * time.Hour)); at, seq = at.Add(time.Duration(1+rng.IntN(900))*time.Second), seq+1 {
		if at.Sub(start) > 30*time.Hour && at.Sub(start) < 33*time.Hour {
			continue // hours without readings
		}
		rs = append(rs, reading(d, at, seq))
		if seq%5 == 0 {
			rs = append(rs, reading(devs[1], at, seq))
		}
	}
	insert := func(rs ...*iotgate.Reading) {
		t.Helper()
		if err := errors.Join(db.InsertReadings(ctx, rs)...); err != nil {
			t.Fatal(err)
		}
	}
	// Data that is not an object (no reading has such, but the raw query
	// counts it all the same).
	rs = append(rs, &iotgate.Reading{DeviceID: d.ID, DeviceJID: d.JID, ReceivedAt: start.Add(90 * time.Minute), XML: "<reading/>", Data: json.RawMessage(`[1,{"temperature":2}]`)})
	insert(rs...)

	// Nested fields too (another schema version's), through the store:
	// the service would refuse them by the thermostat schema.
	fieldSets := [][]iotgate.FieldPath{{{"temperature"}}, {{"humidity"}, {"temperature"}}, {{"@seq"}}, {{"temperature"}, {"@seq"}, {"humidity"}},
		{{"temperature", "#text"}, {"extra", "n"}}, {{"extra", "deep"}, {"mode"}, {"extra"}}}
	everies := []time.Duration{time.Hour, 2 * time.Hour, 3 * time.Hour, 24 * time.Hour}
	// compare asks n random queries of the store (rollups where they
	// apply) and of the raw query, and wants the same answers, to the
	// digit.
	compare := func(t *testing.T, n int) {
		t.Helper()
		for range n {
			var q iotgate.AggregateQuery
			span := 5 * 24 * time.Hour
			q.From = start.Add(-12 * time.Hour).Add(time.Duration(rng.Int64N(int64(span))))
			q.To = q.From.Add(time.Duration(rng.Int64N(int64(span))))
			if rng.IntN(3) == 0 {
				q.From = q.From.Truncate(time.Hour)
			}
			if rng.IntN(3) == 0 {
				q.To = q.To.Truncate(time.Hour)
			}
			q.From, q.To = q.From.Round(time.Microsecond), q.To.Round(time.Microsecond)
			if !q.To.After(q.From) {
				continue
			}
			q.Every = everies[rng.IntN(len(everies))]
			q.Fields = fieldSets[rng.IntN(len(fieldSets))]
			q.Funcs = slices.Clone(iotgate.AggregateFuncs)
			rng.Shuffle(len(q.Funcs), func(i, j int) { q.Funcs[i], q.Funcs[j] = q.Funcs[j], q.Funcs[i] })
			q.Funcs = q.Funcs[:1+rng.IntN(len(q.Funcs))]
			q.Fill = rng.IntN(2) == 0
			if err := q.Validate(); err != nil {
				t.Fatal(err)
			}
			got, err := db.AggregateReadings(ctx, d.JID, q)
			if err != nil {
				t.Fatalf("%+v: %v", q, err)
			}
			want, err := postgres.AggregateRaw(db, ctx, d.JID, q)
			if err != nil {
				t.Fatal(err)
			}
			if diff := diffBuckets(got, want); diff != "" {
				t.Fatalf("from %s to %s every %s fields %v fns %v fill %v: %s", q.From, q.To, q.Every, q.Fields, q.Funcs, q.Fill, diff)
			}
		}
	}
	rollupRows := func(dev *iotgate.Device) int {
		t.Helper()
		var n int
		if err := db.SQL().QueryRowContext(ctx, `SELECT count(*) FROM reading_rollups WHERE device_id = $1`, dev.ID).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	mark := func(dev *iotgate.Device) time.Time {
		t.Helper()
		var m time.Time
		if err := db.SQL().QueryRowContext(ctx, `SELECT rolled_until FROM reading_rollup_marks WHERE device_id = $1`, dev.ID).Scan(&m); err != nil {
			t.Fatal(err)
		}
		return m.UTC()
	}
	roll := func(end time.Time) postgres.RollStats {
		t.Helper()
		st, err := db.RollReadings(ctx, end, 0)
		if err != nil {
			t.Fatal(err)
		}
		return st
	}

	t.Run("NotRolled", func(t *testing.T) { compare(t, 20) })
	// Two days rolled, the third not.
	rolledTo := start.Add(48 * time.Hour)
	t.Run("PartlyRolled", func(t *testing.T) {
		st := roll(rolledTo)
		if st.Hours == 0 || st.Rows == 0 || st.Idle != 1 || rollupRows(d) == 0 {
			t.Fatalf("rolled %+v, %d rows", st, rollupRows(d))
		}
		for _, dev := range devs {
			if m := mark(dev); !m.Equal(rolledTo) {
				t.Fatalf("%s: mark = %s, want %s", dev.JID, m, rolledTo)
			}
		}
		if st := roll(rolledTo); st.Hours != 0 {
			t.Errorf("a second roll rolled %+v", st)
		}
		compare(t, 200)
	})
	t.Run("Budget", func(t *testing.T) {
		// A spent budget ends a run after its first transaction: one
		// device-day rolled, the rest at the next run.
		back := rolledTo.Add(-40 * time.Hour)
		if _, err := db.SQL().ExecContext(ctx, `UPDATE reading_rollup_marks SET rolled_until = $2 WHERE device_id = $1`, d.ID, back); err != nil {
			t.Fatal(err)
		}
		st, err := db.RollReadings(ctx, rolledTo, time.Nanosecond)
		if err != nil {
			t.Fatal(err)
		}
		if m := mark(d); st.Devices != 1 || !m.Equal(back.Add(24*time.Hour)) {
			t.Fatalf("rolled %+v, mark %s; want one device-day, mark %s", st, m, back.Add(24*time.Hour))
		}
		compare(t, 30)
		if st := roll(rolledTo); st.Devices != 1 || st.Hours != 16 {
			t.Errorf("the next run rolled %+v, want the 16 hours left", st)
		}
		compare(t, 30)
	})
	t.Run("LateReading", func(t *testing.T) {
		late := reading(d, start.Add(5*time.Hour+17*time.Minute), 1_000_000)
		insert(late)
		if m := mark(d); !m.Equal(start.Add(5 * time.Hour)) {
			t.Fatalf("mark = %s after a late reading, want its hour %s", m, start.Add(5*time.Hour))
		}
		if m := mark(devs[1]); !m.Equal(rolledTo) {
			t.Errorf("other device's mark = %s, want %s", m, rolledTo)
		}
		compare(t, 50)
	})
	t.Run("TwoRollers", func(t *testing.T) {
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for i := range errs {
			wg.Go(func() { _, errs[i] = db.RollReadings(ctx, now, 0) })
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			t.Fatal(err)
		}
		if m, want := mark(d), now.Truncate(time.Hour); !m.Equal(want) {
			t.Fatalf("mark = %s, want %s", m, want)
		}
		compare(t, 200)
	})
	t.Run("LateReadingWhileRolling", func(t *testing.T) {
		// A roller holds d's mark and rolls the hour of a late reading
		// without it (its snapshot predates the reading's commit): the
		// reading's transaction waits for the roller's commit, then moves
		// the mark back to its hour, though the hour was not rolled yet
		// when the reading was inserted.
		hour := start.Add(50 * time.Hour)
		if _, err := db.SQL().ExecContext(ctx, `UPDATE reading_rollup_marks SET rolled_until = $2 WHERE device_id = $1`, d.ID, hour); err != nil {
			t.Fatal(err)
		}
		roller, err := db.SQL().BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer roller.Rollback()
		if _, err := roller.ExecContext(ctx, `SELECT 1 FROM reading_rollup_marks WHERE device_id = $1 FOR UPDATE`, d.ID); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() {
			done <- errors.Join(db.InsertReadings(ctx, []*iotgate.Reading{reading(d, hour.Add(20*time.Minute), 3_000_000)})...)
		}()
		waitForLockWait(t, db)
		if _, err := roller.ExecContext(ctx, `UPDATE reading_rollup_marks SET rolled_until = $2 WHERE device_id = $1`, d.ID, hour.Add(2*time.Hour)); err != nil {
			t.Fatal(err)
		}
		if err := roller.Commit(); err != nil {
			t.Fatal(err)
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if m := mark(d); !m.Equal(hour) {
			t.Fatalf("mark = %s after a late reading committed behind a roll, want its hour %s", m, hour)
		}
		compare(t, 50)
	})
	t.Run("LateReadingNoMark", func(t *testing.T) {
		// A device the roller has not seen yet gets a mark of nothing
		// rolled from its late reading's transaction.
		dev := thermostats(t, reg, svc, "new@example.com")[0]
		insert(reading(dev, start.Add(time.Hour), 1))
		var m sql.NullTime
		if err := db.SQL().QueryRowContext(ctx, `SELECT rolled_until FROM reading_rollup_marks WHERE device_id = $1`, dev.ID).Scan(&m); err != nil || m.Valid {
			t.Fatalf("mark = %v, %v; want a NULL mark", m, err)
		}
	})
	t.Run("OnTime", func(t *testing.T) {
		// Readings of the current hour, committed at once, rolled once
		// the hour is over: from the mark, with no hour to skip.
		roll(now)
		at := time.Now().Add(-time.Second)
		insert(reading(d, at, 2_000_000), reading(d, at.Add(time.Millisecond), 2_000_001))
		if m, want := mark(d), now.Truncate(time.Hour); !m.Equal(want) {
			t.Fatalf("mark = %s after readings on time, want %s", m, want)
		}
		end := at.Add(2 * time.Hour).Truncate(time.Hour)
		if st := roll(end); st.Hours != int(end.Sub(now.Truncate(time.Hour))/time.Hour) {
			t.Errorf("rolled %+v, want the hours from the mark to %s", st, end)
		}
		compare(t, 50)
	})
	t.Run("Retention", func(t *testing.T) {
		before := start.Add(24 * time.Hour).Truncate(24 * time.Hour)
		if _, err := db.DropReadingPartitions(ctx, before); err != nil {
			t.Fatal(err)
		}
		var n int
		if err := db.SQL().QueryRowContext(ctx, `SELECT count(*) FROM reading_rollups WHERE hour < $1`, before).Scan(&n); err != nil || n != 0 {
			t.Fatalf("%d rollup rows before %s (%v), want none", n, before, err)
		}
		compare(t, 50)
	})
	t.Run("DeleteDevice", func(t *testing.T) {
		if err := svc.Delete(ctx, devs[1].JID); err != nil {
			t.Fatal(err)
		}
		if n := rollupRows(devs[1]); n != 0 {
			t.Fatalf("%d rollup rows left of a deleted device", n)
		}
	})
}

// diffBuckets says how got differs from want, to the digit ("" if not).
func diffBuckets(got, want []iotgate.AggregateBucket) string {
	if len(got) != len(want) {
		return fmt.Sprintf("%d buckets, want %d", len(got), len(want))
	}
	for i := range want {
		g, w := got[i], want[i]
		if !g.Start.Equal(w.Start) || g.Readings != w.Readings {
			return fmt.Sprintf("bucket %d = %s (%d readings), want %s (%d)", i, g.Start, g.Readings, w.Start, w.Readings)
		}
		for f := range w.Values {
			for j := range w.Values[f] {
				if g.Values[f][j] != w.Values[f][j] {
					return fmt.Sprintf("bucket %s field %d aggregate %d = %q, want %q", w.Start, f, j, g.Values[f][j], w.Values[f][j])
				}
			}
		}
	}
	return ""
}

// waitForLockWait waits until a session of db's database waits for a
// lock.
func waitForLockWait(t *testing.T, db *postgres.DB) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		var n int
		if err := db.SQL().QueryRowContext(context.Background(), `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			return
		}
	}
	t.Fatal("no session waits for a lock")
}

// BenchmarkRollReadings measures the roller's steady work each hour: 200
// devices with a reading every 10 s (360 in the hour) and 1000 idle ones;
// each iteration moves every mark back an hour and rolls it again. It
// reports the time per active device-hour and per reading rolled.
//
//	IOTGATE_INTEGRATION=1 go test -tags integration -run '^$' -bench BenchmarkRollReadings -benchtime 10x ./postgres/
func BenchmarkRollReadings(b *testing.B) {
	ctx := context.Background()
	db, reg, svc := newStack(b)
	const active, idle, perHour = 200, 1000, 360
	jids := make([]string, active+idle)
	for i := range jids {
		jids[i] = fmt.Sprintf("d%04d@example.com", i)
	}
	devs := thermostats(b, reg, svc, jids...)
	end := time.Now().UTC().Add(-postgres.RollupSettle).Truncate(time.Hour)
	hour := end.Add(-time.Hour)
	ids := make([]int64, active)
	for i := range ids {
		ids[i] = devs[i].ID
	}
	if _, err := db.SQL().ExecContext(ctx, `INSERT INTO readings (device_id, received_at, xml, data)
		SELECT d, $2::timestamptz + i * interval '10 seconds', '<reading/>',
			jsonb_build_object('@seq', i, '@unit', 'C', 'temperature', 20 + (i % 100) / 10.0, 'humidity', 40 + i % 20, 'mode', 'heat')
		FROM unnest($1::bigint[]) d, generate_series(0, $3 - 1) i`, pq.Array(ids), hour, perHour); err != nil {
		b.Fatal(err)
	}
	if _, err := db.SQL().ExecContext(ctx, `UPDATE devices SET last_seen_at = $2 WHERE id = ANY($1)`, pq.Array(ids), end.Add(-time.Second)); err != nil {
		b.Fatal(err)
	}
	if _, err := db.RollReadings(ctx, end, 0); err != nil {
		b.Fatal(err)
	}
	if _, err := db.SQL().ExecContext(ctx, `VACUUM ANALYZE readings, reading_rollups, reading_rollup_marks`); err != nil {
		b.Fatal(err)
	}
	var total time.Duration
	for b.Loop() {
		b.StopTimer()
		if _, err := db.SQL().ExecContext(ctx, `UPDATE reading_rollup_marks SET rolled_until = $1`, hour); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		t0 := time.Now()
		st, err := db.RollReadings(ctx, end, 0)
		total += time.Since(t0)
		if err != nil || st.Devices != active || st.Idle != idle {
			b.Fatalf("rolled %+v, %v; want %d devices, %d idle", st, err, active, idle)
		}
	}
	per := float64(total.Microseconds()) / 1000 / float64(b.N)
	b.ReportMetric(per/active, "ms/device-hour")
	b.ReportMetric(per*1000/(active*perHour), "µs/reading")
}
