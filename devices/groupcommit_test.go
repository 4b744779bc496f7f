package devices

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"
)

func TestGroupCommit(t *testing.T) {
	errOdd := errors.New("odd")
	for _, tc := range []struct {
		name    string
		callers int
		max     int
		// key maps a caller to its item's key; items with equal keys
		// must not share a batch.
		key func(i int) int
	}{
		{"Alone", 1, 10, func(i int) int { return i }},
		{"Concurrent", 50, 100, func(i int) int { return i }},
		{"MaxBatch", 50, 4, func(i int) int { return i }},
		{"ConflictsSplit", 40, 100, func(i int) int { return i % 3 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var mu sync.Mutex
			var batches [][]int
			release := make(chan struct{})
			first := true
			g := &groupCommit[int]{max: tc.max,
				conflicts: func(a, b int) bool { return tc.key(a) == tc.key(b) },
				write: func(items []int) []error {
					mu.Lock()
					batches = append(batches, slices.Clone(items))
					wasFirst := first
					first = false
					mu.Unlock()
					if wasFirst && tc.callers > 1 {
						// Hold the first batch so that the others queue up.
						<-release
					}
					errs := make([]error, len(items))
					for i, it := range items {
						if it%2 == 1 {
							errs[i] = fmt.Errorf("item %d: %w", it, errOdd)
						}
					}
					return errs
				}}
			var wg sync.WaitGroup
			got := make([]error, tc.callers)
			for i := range tc.callers {
				wg.Go(func() { got[i] = g.do(i) })
			}
			if tc.callers > 1 {
				time.Sleep(50 * time.Millisecond) // let them queue behind the first
				close(release)
			}
			wg.Wait()

			for i, err := range got {
				if want := i%2 == 1; errors.Is(err, errOdd) != want || want && err.Error() != fmt.Sprintf("item %d: odd", i) {
					t.Errorf("caller %d got %v", i, err)
				}
			}
			seen := map[int]int{}
			for _, b := range batches {
				if len(b) > tc.max {
					t.Errorf("batch of %d, max %d", len(b), tc.max)
				}
				keys := map[int]bool{}
				for _, it := range b {
					seen[it]++
					if keys[tc.key(it)] {
						t.Errorf("batch %v holds two items with key %d", b, tc.key(it))
					}
					keys[tc.key(it)] = true
				}
			}
			for i := range tc.callers {
				if seen[i] != 1 {
					t.Errorf("item %d written %d times", i, seen[i])
				}
			}
			if tc.callers > 1 && len(batches) >= tc.callers {
				t.Errorf("%d callers took %d batches: nothing was grouped", tc.callers, len(batches))
			}
			if !g.busy && len(g.waiting) != 0 || g.busy {
				t.Errorf("after all: busy %v, %d waiting", g.busy, len(g.waiting))
			}
		})
	}
}
