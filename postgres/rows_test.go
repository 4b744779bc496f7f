package postgres

import (
	"slices"
	"strconv"
	"testing"
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
