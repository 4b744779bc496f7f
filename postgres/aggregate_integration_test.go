//go:build integration

package postgres_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/iotgate/iotgate"
	"github.com/iotgate/iotgate/postgres"
)

// TestAggregateReadings checks the buckets PostgreSQL computes against
// the same aggregates computed here from the readings inserted, through
// the device service (schema types checked) and the store.
func TestAggregateReadings(t *testing.T) {
	ctx := context.Background()
	db, reg, svc := newStack(t)
	d := thermostats(t, reg, svc, "agg@example.com")[0]
	other := thermostats(t, reg, svc, "other@example.com")[0]
	// Readings every 7 minutes over 3 hours, from a whole hour; a gap
	// (no readings) in the second hour's second half.
	start := time.Now().UTC().Add(-6 * time.Hour).Truncate(time.Hour)
	type sample struct {
		at   time.Time
		temp float64
		hum  *float64
	}
	var samples []sample
	var rs []*iotgate.Reading
	for i := 0; i < 180; i += 7 {
		if i >= 90 && i < 120 {
			continue
		}
		s := sample{at: start.Add(time.Duration(i) * time.Minute), temp: 20 + float64(i%13)/4}
		data := fmt.Sprintf(`{"@unit":"C","@seq":%d,"temperature":%s,"mode":"heat"}`, i, strconv.FormatFloat(s.temp, 'f', -1, 64))
		if i%2 == 0 {
			h := float64(40 + i%9)
			s.hum = &h
			data = fmt.Sprintf(`{"@unit":"C","@seq":%d,"temperature":%s,"humidity":%v,"mode":"heat"}`, i, strconv.FormatFloat(s.temp, 'f', -1, 64), h)
		}
		samples = append(samples, s)
		rs = append(rs, &iotgate.Reading{DeviceID: d.ID, DeviceJID: d.JID, ReceivedAt: s.at, XML: "<reading/>", Data: json.RawMessage(data)})
	}
	// A reading stored under another schema: a string temperature is
	// skipped, not an error; and another device's readings don't count.
	rs = append(rs,
		&iotgate.Reading{DeviceID: d.ID, DeviceJID: d.JID, ReceivedAt: start.Add(time.Minute), XML: "<reading/>", Data: json.RawMessage(`{"temperature":"INF","mode":"heat"}`)},
		&iotgate.Reading{DeviceID: other.ID, DeviceJID: other.JID, ReceivedAt: start.Add(time.Minute), XML: "<reading/>", Data: json.RawMessage(`{"temperature":99,"mode":"heat"}`)})
	if err := errors.Join(db.InsertReadings(ctx, rs)...); err != nil {
		t.Fatal(err)
	}

	// want computes the buckets from samples.
	want := func(q iotgate.AggregateQuery) []iotgate.AggregateBucket {
		type acc struct {
			n    int64
			vals [2][]float64
		}
		by := map[time.Time]*acc{}
		for _, s := range samples {
			if s.at.Before(q.From) || !s.at.Before(q.To) {
				continue
			}
			b := s.at.Truncate(q.Every)
			if by[b] == nil {
				by[b] = &acc{}
			}
			by[b].n++
			by[b].vals[0] = append(by[b].vals[0], s.temp)
			if s.hum != nil {
				by[b].vals[1] = append(by[b].vals[1], *s.hum)
			}
		}
		// The reading with a string temperature counts as a reading.
		if x := start.Add(time.Minute); !x.Before(q.From) && x.Before(q.To) {
			b := x.Truncate(q.Every)
			if by[b] == nil {
				by[b] = &acc{}
			}
			by[b].n++
		}
		var out []iotgate.AggregateBucket
		for b := q.From.Truncate(q.Every); b.Before(q.To); b = b.Add(q.Every) {
			a := by[b]
			if a == nil && !q.Fill {
				continue
			}
			bucket := iotgate.AggregateBucket{Start: b}
			for f := range q.Fields {
				var vals []float64
				if a != nil {
					bucket.Readings = a.n
					vals = a.vals[f]
				}
				row := make([]json.Number, len(q.Funcs))
				for j, fn := range q.Funcs {
					row[j] = aggregateOf(fn, vals, a != nil)
				}
				bucket.Values = append(bucket.Values, row)
			}
			out = append(out, bucket)
		}
		return out
	}
	fields := []iotgate.FieldPath{{"temperature"}, {"humidity"}}
	all := iotgate.AggregateFuncs
	for _, tt := range []struct {
		name string
		q    iotgate.AggregateQuery
	}{
		{"Hours", iotgate.AggregateQuery{From: start, To: start.Add(3 * time.Hour), Every: time.Hour, Fields: fields, Funcs: all}},
		{"QuarterHours", iotgate.AggregateQuery{From: start, To: start.Add(3 * time.Hour), Every: 15 * time.Minute, Fields: fields, Funcs: all}},
		{"QuarterHoursFilled", iotgate.AggregateQuery{From: start, To: start.Add(3 * time.Hour), Every: 15 * time.Minute, Fields: fields, Funcs: all, Fill: true}},
		{"UnalignedRange", iotgate.AggregateQuery{From: start.Add(50 * time.Minute), To: start.Add(130 * time.Minute), Every: 30 * time.Minute, Fields: fields[:1], Funcs: []iotgate.AggregateFunc{iotgate.AggCount, iotgate.AggMax}, Fill: true}},
		{"OneAggregate", iotgate.AggregateQuery{From: start, To: start.Add(3 * time.Hour), Every: time.Hour, Fields: []iotgate.FieldPath{{"temperature"}}, Funcs: []iotgate.AggregateFunc{iotgate.AggMin}}},
		{"Empty", iotgate.AggregateQuery{From: start.Add(-24 * time.Hour), To: start, Every: time.Hour, Fields: fields, Funcs: all}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := svc.Aggregate(ctx, d.JID, tt.q)
			if err != nil {
				t.Fatal(err)
			}
			w := want(tt.q)
			if len(got) != len(w) {
				t.Fatalf("%d buckets, want %d: %+v", len(got), len(w), got)
			}
			for i := range w {
				if !got[i].Start.Equal(w[i].Start) || got[i].Readings != w[i].Readings {
					t.Errorf("bucket %d = %s (%d readings), want %s (%d)", i, got[i].Start, got[i].Readings, w[i].Start, w[i].Readings)
				}
				for f := range w[i].Values {
					for j := range w[i].Values[f] {
						if !sameNumber(got[i].Values[f][j], w[i].Values[f][j]) {
							t.Errorf("bucket %s %s %s = %q, want %q", w[i].Start, tt.q.Fields[f], tt.q.Funcs[j], got[i].Values[f][j], w[i].Values[f][j])
						}
					}
				}
			}
		})
	}

	for _, tt := range []struct {
		name, field, detail string
	}{
		{"ErrNotNumeric", "mode", iotgate.DetailFieldNotNumeric},
		{"ErrAttributeNotNumeric", "@unit", iotgate.DetailFieldNotNumeric},
		{"ErrUnknown", "pressure", iotgate.DetailFieldUnknown},
		{"ErrUnderAScalar", "temperature.x", iotgate.DetailFieldUnknown},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p, _ := iotgate.ParseFieldPath(tt.field)
			_, err := svc.Aggregate(ctx, d.JID, iotgate.AggregateQuery{From: start, To: start.Add(time.Hour), Every: time.Hour,
				Fields: []iotgate.FieldPath{{"temperature"}, p}, Funcs: all})
			var e *iotgate.Error
			if !errors.As(err, &e) || e.Code != iotgate.EUnprocessable || e.Detail != tt.detail {
				t.Fatalf("err = %v, want %s", err, tt.detail)
			}
			if f, _ := e.Fields.(map[string]string); f["field"] != tt.field {
				t.Errorf("details = %v, want the field %s", e.Fields, tt.field)
			}
		})
	}
	t.Run("AttributeNumeric", func(t *testing.T) {
		got, err := svc.Aggregate(ctx, d.JID, iotgate.AggregateQuery{From: start, To: start.Add(time.Hour), Every: time.Hour,
			Fields: []iotgate.FieldPath{{"@seq"}}, Funcs: []iotgate.AggregateFunc{iotgate.AggMax}})
		if err != nil || len(got) != 1 {
			t.Fatalf("= %+v, %v", got, err)
		}
		var max int
		for _, s := range samples {
			if s.at.Before(start.Add(time.Hour)) {
				max = int(s.at.Sub(start) / time.Minute)
			}
		}
		if string(got[0].Values[0][0]) != strconv.Itoa(max) {
			t.Errorf("max @seq = %s, want %d", got[0].Values[0][0], max)
		}
	})
	t.Run("ErrTooManyBuckets", func(t *testing.T) {
		_, err := svc.Aggregate(ctx, d.JID, iotgate.AggregateQuery{From: start.Add(-30 * 24 * time.Hour), To: start, Every: time.Minute,
			Fields: fields, Funcs: all})
		if e := new(iotgate.Error); !errors.As(err, &e) || e.Detail != iotgate.DetailTooManyBuckets {
			t.Fatalf("err = %v, want too_many_buckets", err)
		}
	})
	t.Run("ErrUnknownDevice", func(t *testing.T) {
		_, err := svc.Aggregate(ctx, "nobody@example.com", iotgate.AggregateQuery{From: start, To: start.Add(time.Hour), Every: time.Hour, Fields: fields, Funcs: all})
		if iotgate.ErrorCode(err) != iotgate.ENotFound {
			t.Fatalf("err = %v, want not_found", err)
		}
	})
}

// aggregateOf is fn over vals as the store must give it; present says the
// bucket has readings (a filled empty bucket has null everywhere).
func aggregateOf(fn iotgate.AggregateFunc, vals []float64, present bool) json.Number {
	if fn == iotgate.AggCount {
		if !present {
			return ""
		}
		return json.Number(strconv.Itoa(len(vals)))
	}
	if len(vals) == 0 {
		return ""
	}
	var v float64
	switch fn {
	case iotgate.AggMin:
		v = slices.Min(vals)
	case iotgate.AggMax:
		v = slices.Max(vals)
	case iotgate.AggSum, iotgate.AggAvg:
		for _, x := range vals {
			v += x
		}
		if fn == iotgate.AggAvg {
			v /= float64(len(vals))
		}
	}
	return json.Number(strconv.FormatFloat(v, 'f', -1, 64))
}

// sameNumber compares two decimal numbers to 1e-9 (avg is rounded by
// PostgreSQL's numeric division); "" is null.
func sameNumber(a, b json.Number) bool {
	if a == "" || b == "" {
		return a == b
	}
	x, err1 := a.Float64()
	y, err2 := b.Float64()
	return err1 == nil && err2 == nil && math.Abs(x-y) < 1e-9
}

// BenchmarkAggregateReadings measures the aggregate query of a chart: a
// month of one reading per 10 seconds (259,200 rows) of one device, in
// daily partitions, and 2 fields with avg, min, max and count; Day asks
// for the last day in 5-minute buckets, Month for the month in hourly
// ones (from the hourly rollups; MonthRaw without them). It reports p50
// and p99 in ms (target: p99 < 50 ms). RollHour is the roller's cost of
// one device-hour.
//
//	IOTGATE_INTEGRATION=1 go test -tags integration -run '^$' -bench BenchmarkAggregateReadings -benchtime 40x ./postgres/
func BenchmarkAggregateReadings(b *testing.B) {
	ctx := context.Background()
	db, reg, svc := newStack(b)
	d := thermostats(b, reg, svc, "bench@example.com")[0]
	now := time.Now().UTC().Truncate(time.Second)
	start := now.Add(-30 * 24 * time.Hour)
	dailyPartitions(b, db, start.Add(-24*time.Hour), now.Add(48*time.Hour))
	if _, err := db.SQL().ExecContext(ctx, `INSERT INTO readings (device_id, received_at, xml, data)
		SELECT $1, $2::timestamptz + i * interval '10 seconds',
			'<reading xmlns="urn:example:thermostat" unit="C" seq="' || i || '"><temperature>' || (20 + (i % 100) / 10.0) ||
			'</temperature><humidity>' || (40 + i % 20) || '</humidity><mode>heat</mode></reading>',
			jsonb_build_object('@seq', i, '@unit', 'C', 'temperature', 20 + (i % 100) / 10.0, 'humidity', 40 + i % 20, 'mode', 'heat')
		FROM generate_series(0, 259199) i`, d.ID, start); err != nil {
		b.Fatal(err)
	}
	// As the store does when it inserts readings (the roller reads it).
	if _, err := db.SQL().ExecContext(ctx, `UPDATE devices SET last_seen_at = $2::timestamptz + 259199 * interval '10 seconds' WHERE id = $1`, d.ID, start); err != nil {
		b.Fatal(err)
	}
	// The month rolled as the Roller would (up to RollupSettle ago), once.
	t0 := time.Now()
	st, err := db.RollReadings(ctx, now.Add(-postgres.RollupSettle), 0)
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("rolled the month in %s: %+v", time.Since(t0), st)
	if _, err := db.SQL().ExecContext(ctx, `VACUUM ANALYZE readings, reading_rollups`); err != nil {
		b.Fatal(err)
	}
	fields := []iotgate.FieldPath{{"temperature"}, {"humidity"}}
	fns := []iotgate.AggregateFunc{iotgate.AggAvg, iotgate.AggMin, iotgate.AggMax, iotgate.AggCount}
	for _, w := range []struct {
		name    string
		from    time.Time
		every   time.Duration
		buckets int
		raw     bool // the raw query only, as without rollups
	}{
		{"Day", now.Add(-24 * time.Hour), 5 * time.Minute, 288, false},
		{"DayHourly", now.Add(-24 * time.Hour), time.Hour, 24, false},
		{"Month", start, time.Hour, 720, false},
		{"MonthDaily", start, 24 * time.Hour, 30, false},
		{"MonthRaw", start, time.Hour, 720, true},
	} {
		b.Run(w.name, func(b *testing.B) {
			q := iotgate.AggregateQuery{From: w.from, To: now, Every: w.every, Fields: fields, Funcs: fns}
			var ds []time.Duration
			for b.Loop() {
				t0 := time.Now()
				var got []iotgate.AggregateBucket
				var err error
				if w.raw {
					got, err = postgres.AggregateRaw(db, ctx, d.JID, q)
				} else {
					got, err = svc.Aggregate(ctx, d.JID, q)
				}
				ds = append(ds, time.Since(t0))
				if err != nil {
					b.Fatal(err)
				}
				if len(got) < w.buckets {
					b.Fatalf("%d buckets, want at least %d", len(got), w.buckets)
				}
			}
			sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
			ms := func(p float64) float64 {
				return float64(ds[min(len(ds)-1, int(p*float64(len(ds))))].Microseconds()) / 1000
			}
			b.ReportMetric(ms(0.5), "p50-ms")
			b.ReportMetric(ms(0.99), "p99-ms")
		})
	}
	// The roller's steady work: one device-hour (360 readings) rolled
	// again, its mark moved back an hour as a late reading would.
	b.Run("RollHour", func(b *testing.B) {
		for b.Loop() {
			if _, err := db.SQL().ExecContext(ctx, `UPDATE reading_rollup_marks SET rolled_until = rolled_until - interval '1 hour' WHERE device_id = $1`, d.ID); err != nil {
				b.Fatal(err)
			}
			st, err := db.RollReadings(ctx, now.Add(-postgres.RollupSettle), 0)
			if err != nil || st.Hours != 1 {
				b.Fatalf("rolled %+v, %v; want 1 hour", st, err)
			}
		}
	})
}

// dailyPartitions replaces the readings' partitions with one per UTC day
// from from to to (and the two open-ended ones around them), as after a
// month of running: EnsurePartitions makes them from today on only.
func dailyPartitions(t testing.TB, db *postgres.DB, from, to time.Time) {
	t.Helper()
	exec := func(q string) {
		t.Helper()
		if _, err := db.SQL().ExecContext(context.Background(), q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	first, last := from.Truncate(24*time.Hour), to.Truncate(24*time.Hour).Add(24*time.Hour)
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
}
