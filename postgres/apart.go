package postgres

import (
	"github.com/iotgate/iotgate"
)

// apart writes items with write, in one statement if it can. When that
// statement fails for a reason one item can cause (a value PostgreSQL
// refuses, a constraint: any error but the database being unreachable or
// slow, see splittable), it writes each half of items the same way, down
// to single items: only the items that fail on their own get an error, and
// the others are written. k such items among n cost about 2k·log2(n/k)
// statements more, not n (row by row): a device that sends one poison
// value per batch can't make every batch cost a statement per row.
//
// write returns its statement's error, translated to *iotgate.Error; it
// may also set the outcome of single items in errs (a conflict), which
// has the same length as items. apart fills errs: nil for a written item.
func apart[T any](items []T, errs []error, write func(items []T, errs []error) error) {
	if len(items) == 0 {
		return
	}
	err := write(items, errs)
	if err == nil {
		return
	}
	if len(items) == 1 || !splittable(err) {
		for i := range errs {
			errs[i] = err
		}
		return
	}
	h := len(items) / 2
	apart(items[:h], errs[:h], write)
	apart(items[h:], errs[h:], write)
}

// splittable reports whether a batch's error may be one item's fault, so
// that writing the items apart may store the others. Unavailable and
// timeout are the database's state, not an item's: trying again piece by
// piece would only wait longer.
func splittable(err error) bool {
	switch iotgate.ErrorCode(err) {
	case iotgate.EUnavailable, iotgate.ETimeout:
		return false
	}
	return true
}
