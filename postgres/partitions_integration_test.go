//go:build integration

package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/iotgate/iotgate"
	"github.com/iotgate/iotgate/postgres"
)

// seamDay is the start (UTC) of the day the partition tests are set on.
var seamDay = time.Date(2030, 3, 10, 0, 0, 0, 0, time.UTC)

// insertAt stores one reading of dev at each time and returns them with
// their ids.
func insertAt(t *testing.T, db *postgres.DB, dev *iotgate.Device, at ...time.Time) []*iotgate.Reading {
	t.Helper()
	rs := make([]*iotgate.Reading, len(at))
	for i, a := range at {
		rs[i] = &iotgate.Reading{DeviceID: dev.ID, DeviceJID: dev.JID, ReceivedAt: a,
			XML: string(reading("21.5")), Data: []byte(`{"temperature":21.5}`)}
	}
	if err := errors.Join(db.InsertReadings(context.Background(), rs)...); err != nil {
		t.Fatal(err)
	}
	return rs
}

// partitionOf returns the partition that holds reading id.
func partitionOf(t *testing.T, db *postgres.DB, id int64) string {
	t.Helper()
	var name string
	if err := db.SQL().QueryRow(`SELECT tableoid::regclass::text FROM readings WHERE id = $1`, id).Scan(&name); err != nil {
		t.Fatalf("partition of reading %d: %v", id, err)
	}
	return name
}

// partitionNames returns the names of the partitions of readings in order.
func partitionNames(t *testing.T, db *postgres.DB) []string {
	t.Helper()
	rows, err := db.SQL().Query(`SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
		WHERE i.inhparent = 'readings'::regclass ORDER BY pg_get_expr(c.relpartbound, c.oid) LIKE '%MINVALUE%' DESC,
		substring(pg_get_expr(c.relpartbound, c.oid) FROM 'FROM \(''([^'']+)''\)')::timestamptz`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var names []string
	for rows.Next() {
		var n string
		rows.Scan(&n)
		names = append(names, n)
	}
	return names
}

// migratedDay returns the day in the name of the first partition, which
// migration 0010 names after the day it ran (so the names below depend on
// the date the test runs).
func migratedDay(t *testing.T, db *postgres.DB) string {
	t.Helper()
	names := partitionNames(t, db)
	if len(names) == 0 || !strings.HasPrefix(names[0], "readings_before_") {
		t.Fatalf("partitions %v: want readings_before_YYYYMMDD first", names)
	}
	return strings.TrimPrefix(names[0], "readings_before_")
}

// allPages walks a device's readings a page of limit at a time and returns
// their ids.
func allPages(t *testing.T, db *postgres.DB, jid string, f iotgate.ReadingFilter) []int64 {
	t.Helper()
	var ids []int64
	for i := 0; ; i++ {
		p, err := db.Readings(context.Background(), jid, f)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range p.Items {
			ids = append(ids, r.ID)
		}
		if p.NextCursor == "" {
			return ids
		}
		if i > 1000 {
			t.Fatal("paging does not end")
		}
		f.Cursor = p.NextCursor
	}
}

func TestPartitionSeam(t *testing.T) {
	ctx := context.Background()
	db, reg, svc := newStack(t)
	dev := thermostats(t, reg, svc, "seam@example.com")[0]
	day := migratedDay(t, db)
	created, err := db.EnsurePartitions(ctx, seamDay, 2)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"readings_p20300310", "readings_p20300311", "readings_p20300312", "readings_from_20300313"}
	if !slices.Equal(created, want) {
		t.Fatalf("created %v, want %v", created, want)
	}

	seam := seamDay.Add(24 * time.Hour)
	later := seamDay.Add(5*24*time.Hour + time.Hour)
	far := time.Date(2099, 1, 1, 0, 0, 0, 0, time.UTC)
	past := time.Date(1999, 1, 1, 0, 0, 0, 0, time.UTC)
	rs := insertAt(t, db, dev,
		seam.Add(-time.Microsecond), seam, seam, seam.Add(time.Microsecond), // two at the seam itself
		seam.Add(-time.Hour), seam.Add(time.Hour), far, past, later)
	for i, wantPart := range []string{"readings_p20300310", "readings_p20300311", "readings_p20300311", "readings_p20300311",
		"readings_p20300310", "readings_p20300311", "readings_from_20300313", "", "readings_from_20300313"} {
		got := partitionOf(t, db, rs[i].ID)
		if wantPart == "" { // before every daily partition: the partition the old table became
			if !strings.HasPrefix(got, "readings_before_") {
				t.Errorf("reading at %v is in %s, want the first partition", rs[i].ReceivedAt, got)
			}
			continue
		}
		if got != wantPart {
			t.Errorf("reading at %v is in %s, want %s", rs[i].ReceivedAt, got, wantPart)
		}
	}

	// Every order and range, a page of 1 and 2 at a time, gives the same
	// readings as one big page.
	since, until := seam.Add(-2*time.Hour), seam.Add(2*time.Hour)
	for _, f := range []iotgate.ReadingFilter{
		{}, {Desc: true}, {Since: &since, Until: &until}, {Since: &since, Until: &until, Desc: true}, {Since: &seam}, {Until: &seam, Desc: true},
	} {
		f.Limit = 1000
		whole := allPages(t, db, dev.JID, f)
		for _, limit := range []int{1, 2} {
			f.Limit = limit
			if got := allPages(t, db, dev.JID, f); !slices.Equal(got, whole) {
				t.Errorf("filter %+v paged by %d: %v, want %v", f, limit, got, whole)
			}
		}
		if len(whole) == 0 {
			t.Errorf("filter %+v: no readings", f)
		}
	}

	// Days created later out of the last partition take its readings of
	// them; the days between stay one partition.
	created, err = db.EnsurePartitions(ctx, later, 0)
	if want := []string{"readings_p20300315", "readings_from_20300316"}; err != nil || !slices.Equal(created, want) {
		t.Fatalf("EnsurePartitions(%v) = %v, %v; want %v", later, created, err, want)
	}
	for i, want := range map[int]string{6: "readings_from_20300316", 8: "readings_p20300315"} {
		if got := partitionOf(t, db, rs[i].ID); got != want {
			t.Errorf("reading at %v is in %s, want %s", rs[i].ReceivedAt, got, want)
		}
	}
	if got := partitionNames(t, db); !slices.Equal(got, []string{"readings_before_" + day, "readings_p" + day + "_20300310",
		"readings_p20300310", "readings_p20300311", "readings_p20300312", "readings_p20300313_20300315", "readings_p20300315", "readings_from_20300316"}) {
		t.Errorf("partitions %v", got)
	}
	// And again: nothing to do.
	if created, err := db.EnsurePartitions(ctx, seamDay, 2); err != nil || len(created) != 0 {
		t.Errorf("second EnsurePartitions = %v, %v; want nothing", created, err)
	}
}

func TestReadingRetention(t *testing.T) {
	ctx := context.Background()
	db, reg, svc := newStack(t)
	dev := thermostats(t, reg, svc, "old@example.com")[0]
	day := migratedDay(t, db)
	if _, err := db.EnsurePartitions(ctx, seamDay, 3); err != nil {
		t.Fatal(err)
	}
	var at []time.Time
	for d := range 4 {
		at = append(at, seamDay.Add(time.Duration(d)*24*time.Hour+time.Hour))
	}
	far := time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC) // in the first partition
	rs := insertAt(t, db, dev, append(at, far)...)

	// Ten days after seamDay+1 ends, with 10 days' retention: the first
	// partitions up to seamDay+1 go, a new empty first one replaces them.
	m := &postgres.Maintainer{DB: db, ReadingRetention: 10 * 24 * time.Hour, Ahead: 1,
		Now: func() time.Time { return seamDay.Add(12*24*time.Hour + time.Minute) }}
	got, err := m.Maintain(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"readings_before_" + day, "readings_p" + day + "_20300310", "readings_p20300310", "readings_p20300311"}; !slices.Equal(got.Dropped, want) {
		t.Errorf("dropped %v, want %v", got.Dropped, want)
	}
	page, err := db.Readings(ctx, dev.JID, iotgate.ReadingFilter{Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	var ids []int64
	for _, r := range page.Items {
		ids = append(ids, r.ID)
	}
	if want := []int64{rs[2].ID, rs[3].ID}; !slices.Equal(ids, want) {
		t.Errorf("readings left %v, want %v", ids, want)
	}
	latest, err := db.LatestReading(ctx, dev.JID)
	if err != nil || latest.ID != rs[3].ID {
		t.Errorf("LatestReading = %v, %v; want reading %d", latest, err, rs[3].ID)
	}

	// An insert into a day whose partition was dropped lands in the new
	// first partition, which goes at the next run; an empty first
	// partition stays.
	old := insertAt(t, db, dev, seamDay.Add(time.Hour), seamDay.Add(2*time.Hour))
	if p := partitionOf(t, db, old[0].ID); p != "readings_before_20300312" {
		t.Errorf("reading of a dropped day is in %s, want readings_before_20300312", p)
	}
	for _, want := range [][]string{{"readings_before_20300312"}, nil} {
		got, err = m.Maintain(ctx)
		if err != nil || !slices.Equal(got.Dropped, want) {
			t.Errorf("Maintain dropped %v, %v; want %v", got.Dropped, err, want)
		}
	}
	if _, err := db.Readings(ctx, dev.JID, iotgate.ReadingFilter{Limit: 100}); err != nil {
		t.Fatal(err)
	}

	// A device whose readings all expired has none.
	m.Now = func() time.Time { return seamDay.Add(40 * 24 * time.Hour) }
	if _, err := m.Maintain(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := db.LatestReading(ctx, dev.JID); iotgate.ErrorCode(err) != iotgate.ENotFound {
		t.Errorf("LatestReading after every reading expired: %v, want not_found", err)
	}
}

func TestEnsurePartitionsConcurrent(t *testing.T) {
	ctx := context.Background()
	db, _, _ := newStack(t)
	const callers, days = 6, 5
	var wg sync.WaitGroup
	created := make([][]string, callers)
	errs := make([]error, callers)
	for i := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			created[i], errs[i] = db.EnsurePartitions(ctx, seamDay, days)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	var all []string
	for _, c := range created {
		all = append(all, c...)
	}
	slices.Sort(all)
	var want []string
	for d := range days + 1 {
		want = append(want, "readings_p"+seamDay.Add(time.Duration(d)*24*time.Hour).Format("20060102"))
	}
	want = append(want, "readings_from_"+seamDay.Add((days+1)*24*time.Hour).Format("20060102"))
	slices.Sort(want)
	if !slices.Equal(all, want) {
		t.Errorf("created %v, want each of %v once", all, want)
	}
}

func TestRejectionAndCommandRetention(t *testing.T) {
	ctx := context.Background()
	db, reg, svc := newStack(t)
	dev := thermostats(t, reg, svc, "rej@example.com")[0]
	now := time.Now().UTC()
	var rejs []*iotgate.Rejection
	for i := range 5 {
		rejs = append(rejs, &iotgate.Rejection{DeviceID: dev.ID, DeviceJID: dev.JID, Via: "iq", Reason: "invalid",
			Payload: "<x/>", ReceivedAt: now.Add(-time.Duration(i*10) * 24 * time.Hour)})
	}
	if err := db.InsertRejections(ctx, rejs, 0); err != nil {
		t.Fatal(err)
	}
	// Commands: finished and old, finished and new, queued and old.
	for i, c := range []struct {
		status string
		age    time.Duration
	}{{"succeeded", 100 * 24 * time.Hour}, {"failed", time.Hour}, {"queued", 100 * 24 * time.Hour}, {"timed_out", 95 * 24 * time.Hour}} {
		if _, err := db.SQL().ExecContext(ctx, `INSERT INTO commands (id, device_id, type, payload, mode, status, timeout_ms, created_at)
			VALUES ($1, $2, 'get', '<q/>', 'async', $3, 1000, $4)`, fmt.Sprintf("c%d", i), dev.ID, c.status, now.Add(-c.age)); err != nil {
			t.Fatal(err)
		}
	}
	m := &postgres.Maintainer{DB: db, RejectionRetention: 25 * 24 * time.Hour, CommandRetention: 90 * 24 * time.Hour, Batch: 1}
	got, err := m.Maintain(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got.Rejections != 2 || got.Commands != 2 {
		t.Errorf("deleted %d rejections, %d commands; want 2, 2", got.Rejections, got.Commands)
	}
	var left []string
	rows, err := db.SQL().QueryContext(ctx, `SELECT id FROM commands ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		rows.Scan(&id)
		left = append(left, id)
	}
	if !slices.Equal(left, []string{"c1", "c2"}) {
		t.Errorf("commands left %v, want c1 (new) and c2 (not finished)", left)
	}
}

// TestPartitionMigration runs migration 0010 on a populated table: every
// reading stays, history pages answer the same, and new readings get
// higher ids.
func TestPartitionMigration(t *testing.T) {
	ctx := context.Background()
	db, reg, svc := newStack(t)
	devs := thermostats(t, reg, svc, "m1@example.com", "m2@example.com")
	if err := db.MigrateDown(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := db.SQL().ExecContext(ctx, `
		INSERT INTO readings (device_id, received_at, xml, data)
		SELECT CASE WHEN g % 3 = 0 THEN $1::bigint ELSE $2::bigint END,
			now() - g * interval '37 minutes', '<r/>', '{}'
		FROM generate_series(1, 3000) g`, devs[0].ID, devs[1].ID); err != nil {
		t.Fatal(err)
	}
	since, until := time.Now().Add(-30*24*time.Hour), time.Now().Add(-10*24*time.Hour)
	filters := []iotgate.ReadingFilter{{Limit: 7}, {Limit: 50, Desc: true}, {Limit: 13, Since: &since, Until: &until, Desc: true}}
	answers := func() [][]int64 {
		var all [][]int64
		for _, d := range devs {
			for _, f := range filters {
				all = append(all, allPages(t, db, d.JID, f))
			}
		}
		return all
	}
	before := answers()
	if err := db.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	var n int
	var legacy string
	if err := db.SQL().QueryRowContext(ctx, `SELECT count(*), min(tableoid::regclass::text) FROM readings`).Scan(&n, &legacy); err != nil {
		t.Fatal(err)
	}
	if n != 3000 || legacy != "readings_before_"+time.Now().UTC().Add(24*time.Hour).Format("20060102") {
		t.Errorf("after the migration: %d readings in %s", n, legacy)
	}
	if after := answers(); !slices.EqualFunc(before, after, slices.Equal) {
		t.Errorf("history answers changed by the migration")
	}
	var maxID int64
	db.SQL().QueryRowContext(ctx, `SELECT max(id) FROM readings`).Scan(&maxID)
	if r := insertAt(t, db, devs[0], time.Now()); r[0].ID <= maxID {
		t.Errorf("new reading got id %d, not above %d", r[0].ID, maxID)
	}
}
