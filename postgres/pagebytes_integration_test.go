//go:build integration

package postgres_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/iotgate/iotgate"
)

// bulky returns n bytes of incompressible text (hex), so that TOAST can't
// shrink what the attack stores.
func bulky(t testing.TB, n int) string {
	t.Helper()
	b := make([]byte, (n+1)/2)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)[:n]
}

// TestReadingPagesBoundedInBytes performs the attack of issue #15: 300
// readings of ~60 KB asked for with limit=1000 came back as one 34 MiB
// page. Each page must now stop at the byte budget (passing it by at most
// one row), and the cursors must walk every reading exactly once, in
// order, both ways.
func TestReadingPagesBoundedInBytes(t *testing.T) {
	ctx := context.Background()
	db, reg, svc := newStack(t)
	d := thermostats(t, reg, svc, "big@example.com")[0]
	const n, size = 300, 60 << 10
	start := time.Now().UTC().Add(-time.Hour).Truncate(time.Millisecond)
	xmlLen := map[int64]int{}
	for b := 0; b < n; b += 50 {
		rs := make([]*iotgate.Reading, 50)
		for i := range rs {
			k := b + i
			rs[i] = &iotgate.Reading{DeviceID: d.ID, ReceivedAt: start.Add(time.Duration(k/2) * time.Millisecond),
				XML:  "<reading xmlns='urn:example:thermostat'><mode>" + bulky(t, size-k%7*1000) + "</mode></reading>",
				Data: []byte(fmt.Sprintf(`{"n": %d}`, k))}
		}
		if err := errors.Join(db.InsertReadings(ctx, rs)...); err != nil {
			t.Fatal(err)
		}
		for _, r := range rs {
			xmlLen[r.ID] = len(r.XML)
		}
	}
	// slack covers each row's jsonb as stored ({"n": k}).
	const slack = 64
	for _, tt := range []struct {
		name   string
		budget int64
		desc   bool
	}{
		{"Default", 0, true},
		{"OneMiBDesc", 1 << 20, true},
		{"OneMiBAsc", 1 << 20, false},
		{"SmallerThanARow", 1000, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			budget := iotgate.PageBytes(tt.budget)
			seen := map[int64]bool{}
			var last *iotgate.Reading
			f := iotgate.ReadingFilter{Limit: 1000, Desc: tt.desc, MaxBytes: tt.budget}
			pages := 0
			for {
				p, err := db.Readings(ctx, d.JID, f)
				if err != nil {
					t.Fatal(err)
				}
				pages++
				if len(p.Items) == 0 {
					t.Fatalf("page %d is empty (cursor %q)", pages, f.Cursor)
				}
				var bytes, before int64
				for i, r := range p.Items {
					if seen[r.ID] {
						t.Fatalf("reading %d served twice", r.ID)
					}
					seen[r.ID] = true
					if last != nil && (r.ReceivedAt.Before(last.ReceivedAt) != tt.desc && !r.ReceivedAt.Equal(last.ReceivedAt)) {
						t.Fatalf("reading %d out of order", r.ID)
					}
					last = r
					if i == len(p.Items)-1 {
						before = bytes
					}
					bytes += int64(len(r.XML))
				}
				// The page ends at the row that reaches the budget.
				if before >= budget {
					t.Errorf("page %d: %d bytes before its last row, budget %d", pages, before, budget)
				}
				if p.NextCursor == "" {
					break
				}
				if bytes+int64(len(p.Items))*slack < budget {
					t.Errorf("page %d: %d rows of %d bytes end before the budget %d", pages, len(p.Items), bytes, budget)
				}
				f.Cursor = p.NextCursor
			}
			if len(seen) != n {
				t.Errorf("got %d readings across %d pages, want %d", len(seen), pages, n)
			}
			t.Logf("budget %d: %d readings in %d pages", budget, len(seen), pages)
		})
	}

	// How much one limit=1000 page allocates, unbounded (as before) and
	// with the default budget.
	for _, budget := range []int64{1 << 40, 0} {
		var m0, m1 runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&m0)
		p, err := db.Readings(ctx, d.JID, iotgate.ReadingFilter{Limit: 1000, Desc: true, MaxBytes: budget})
		if err != nil {
			t.Fatal(err)
		}
		runtime.ReadMemStats(&m1)
		t.Logf("MEASURE limit=1000 budget %d: %d readings, %.1f MiB allocated, heap in use %.1f MiB",
			iotgate.PageBytes(budget), len(p.Items), float64(m1.TotalAlloc-m0.TotalAlloc)/(1<<20), float64(m1.HeapInuse)/(1<<20))
	}
}

// TestCommandPagesBoundedInBytes is the same attack on commands with
// answers of 1 MiB.
func TestCommandPagesBoundedInBytes(t *testing.T) {
	ctx := context.Background()
	db, _, d := commandFixture(t)
	const n, size = 24, 1 << 20
	for b := 0; b < n; b += 6 {
		cs := make([]*iotgate.Command, 6)
		for i := range cs {
			k := b + i
			c := newCommand(d, fmt.Sprintf("big-%02d", k), cmdTime.Add(time.Duration(k)*time.Second), iotgate.CommandSucceeded)
			c.Response = &iotgate.CommandResponse{XML: "<r xmlns='urn:example:thermostat'>" + bulky(t, size) + "</r>"}
			cs[i] = c
		}
		if err := errors.Join(db.CreateCommands(ctx, cs)...); err != nil {
			t.Fatal(err)
		}
	}
	for _, budget := range []int64{0, 3 << 20, 1} {
		t.Run(fmt.Sprint(budget), func(t *testing.T) {
			want := iotgate.PageBytes(budget)
			f := iotgate.CommandFilter{Limit: 1000, MaxBytes: budget}
			next := n - 1
			for pages := 1; ; pages++ {
				p, err := db.Commands(ctx, d.JID, f)
				if err != nil {
					t.Fatal(err)
				}
				if len(p.Items) == 0 {
					t.Fatalf("page %d is empty", pages)
				}
				var bytes int64
				for i, c := range p.Items {
					if wantID := fmt.Sprintf("big-%02d", next); c.ID != wantID {
						t.Fatalf("page %d item %d is %s, want %s", pages, i, c.ID, wantID)
					}
					next--
					if i < len(p.Items)-1 {
						bytes += int64(len(c.Response.XML))
					}
				}
				if bytes >= want {
					t.Errorf("page %d: %d bytes before its last row, budget %d", pages, bytes, want)
				}
				if p.NextCursor == "" {
					break
				}
				f.Cursor = p.NextCursor
			}
			if next != -1 {
				t.Errorf("walked down to command %d, want all %d", next+1, n)
			}
		})
	}
}
