package postgres

import (
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/iotgate/iotgate"
)

func TestPageOf(t *testing.T) {
	cursorOf := func(n int) string { return strconv.Itoa(n) }
	for _, c := range []struct {
		name      string
		items     []int
		limit     int
		want      []int
		wantAfter string
	}{
		{"Empty", []int{}, 2, []int{}, ""},
		{"Short", []int{1}, 2, []int{1}, ""},
		{"Exact", []int{1, 2}, 2, []int{1, 2}, ""},
		{"OneMore", []int{1, 2, 3}, 2, []int{1, 2}, "2"},
		{"LimitOne", []int{7, 8}, 1, []int{7}, "7"},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, after := pageOf(c.items, c.limit, cursorOf)
			if !slices.Equal(got, c.want) || after != c.wantAfter || got == nil {
				t.Errorf("pageOf(%v, %d) = %v, %q; want %v, %q", c.items, c.limit, got, after, c.want, c.wantAfter)
			}
		})
	}
}

func TestBudgetPage(t *testing.T) {
	cursorOf := func(n int) string { return strconv.Itoa(n) }
	rows := func(more bool, items ...int) []budgeted[int] {
		out := make([]budgeted[int], len(items))
		for i, v := range items {
			out[i] = budgeted[int]{item: v, more: i < len(items)-1 || more}
		}
		return out
	}
	for _, c := range []struct {
		name      string
		rows      []budgeted[int]
		limit     int
		want      []int
		wantAfter string
	}{
		{"Empty", nil, 2, []int{}, ""},
		{"Short", rows(false, 1), 2, []int{1}, ""},
		{"Exact", rows(false, 1, 2), 2, []int{1, 2}, ""},
		{"OneMore", rows(true, 1, 2, 3), 2, []int{1, 2}, "2"},
		{"BucketMore", rows(false, 1, 2, 3, 4), 2, []int{1, 2}, "2"},
		// The budget ended the page before the limit: rows follow.
		{"BudgetCut", rows(true, 1), 5, []int{1}, "1"},
		{"BudgetCutExact", rows(true, 1, 2), 2, []int{1, 2}, "2"},
		{"NoLimit", rows(false, 1, 2), 0, []int{1}, "1"},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, after := budgetPage(c.rows, c.limit, cursorOf)
			if !slices.Equal(got, c.want) || after != c.wantAfter || got == nil {
				t.Errorf("budgetPage(%v, %d) = %v, %q; want %v, %q", c.rows, c.limit, got, after, c.want, c.wantAfter)
			}
		})
	}
}

func TestLimitBucket(t *testing.T) {
	tests := []struct{ n, want int }{
		{2, 11}, {11, 11}, {12, 21}, {51, 51}, {101, 101}, {102, 201}, {1001, 1001}, {1002, 1002},
	}
	for _, tt := range tests {
		if got := limitBucket(tt.n); got != tt.want {
			t.Errorf("limitBucket(%d) = %d, want %d", tt.n, got, tt.want)
		}
	}
}

// TestPageQueryCursorBoundsTime checks that a cursor also bounds
// received_at alone, which is what lets PostgreSQL skip partitions.
func TestPageQueryCursorBoundsTime(t *testing.T) {
	c := cursor{At: time.Date(2030, 3, 10, 0, 0, 0, 0, time.UTC), ID: 7}.String()
	for _, desc := range []bool{false, true} {
		q, _, err := pageQuery("readings", "t.id", "1", "d@example.com", iotgate.ReadingFilter{Limit: 50, Desc: desc, Cursor: c})
		if err != nil {
			t.Fatal(err)
		}
		want := "t.received_at >= $2"
		if desc {
			want = "t.received_at <= $2"
		}
		if !strings.Contains(q, want) || !strings.Contains(q, "LIMIT 51") {
			t.Errorf("desc %v: %s; want %q and LIMIT 51", desc, q, want)
		}
	}
}
