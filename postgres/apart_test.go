package postgres

import (
	"fmt"
	"slices"
	"testing"

	"github.com/iotgate/iotgate"
)

func TestApart(t *testing.T) {
	invalid := iotgate.Errorf(iotgate.EInvalid, "store: invalid value")
	down := iotgate.Errorf(iotgate.EUnavailable, "store: database unavailable")
	for _, tc := range []struct {
		name string
		n    int
		// bad are the items the database refuses; a batch holding one
		// fails with err.
		bad []int
		err error
		// conflict is an item whose outcome write sets in errs.
		conflict int
		// maxCalls bounds the statements written (0: no bound checked).
		maxCalls int
	}{
		{"OK", 8, nil, invalid, -1, 1},
		{"Empty", 0, nil, invalid, -1, 0},
		{"OnePoison", 1000, []int{417}, invalid, -1, 2*10 + 1},
		{"PoisonFirstAndLast", 16, []int{0, 15}, invalid, -1, 0},
		{"AllPoison", 5, []int{0, 1, 2, 3, 4}, invalid, -1, 2*5 - 1},
		{"ConflictKept", 6, []int{4}, invalid, 1, 0},
		{"ErrUnavailableNotSplit", 100, []int{3}, down, -1, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			items := make([]int, tc.n)
			for i := range items {
				items[i] = i
			}
			written := map[int]bool{}
			calls := 0
			errs := make([]error, tc.n)
			apart(items, errs, func(items []int, errs []error) error {
				calls++
				for _, it := range items {
					if slices.Contains(tc.bad, it) {
						return tc.err
					}
				}
				for i, it := range items {
					written[it] = true
					if it == tc.conflict {
						errs[i] = fmt.Errorf("conflict %d", it)
					}
				}
				return nil
			})
			if tc.maxCalls > 0 && calls > tc.maxCalls {
				t.Errorf("%d statements, want at most %d", calls, tc.maxCalls)
			}
			for i, err := range errs {
				bad := slices.Contains(tc.bad, i)
				switch {
				case tc.err == down && len(tc.bad) > 0:
					if err != down || written[i] {
						t.Errorf("item %d: err %v, written %v; want the batch's error, not written", i, err, written[i])
					}
				case bad:
					if err != tc.err || written[i] {
						t.Errorf("item %d: err %v, written %v; want %v, not written", i, err, written[i], tc.err)
					}
				case i == tc.conflict:
					if err == nil || err.Error() != fmt.Sprintf("conflict %d", i) {
						t.Errorf("item %d: err %v, want its conflict", i, err)
					}
				default:
					if err != nil || !written[i] {
						t.Errorf("item %d: err %v, written %v; want written", i, err, written[i])
					}
				}
			}
		})
	}
}
