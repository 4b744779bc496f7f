package iotgate

import (
	"encoding/base64"
	"strconv"
	"strings"
	"time"
)

// Page sizes of every list (devices, readings, rejections, commands,
// tokens).
const (
	DefaultPageLimit = 100  // when the caller asks for no limit
	MaxPageLimit     = 1000 // the most one page holds
)

// PageLimit returns n within 1..MaxPageLimit, DefaultPageLimit when n is
// not positive. The API checks a client's limit and since/until, and
// refuses what is out of range with the field that is wrong; the services
// only clamp, so that no caller can ask the store for an unbounded page.
func PageLimit(n int) int {
	if n <= 0 {
		return DefaultPageLimit
	}
	return min(n, MaxPageLimit)
}

// DefaultPageBytes is the byte budget of one page of readings, rejections
// or commands when the caller gives none: rows are counted in rows and in
// bytes, so that a page of huge rows stays small.
const DefaultPageBytes = 4 << 20

// PageBytes returns the byte budget n, DefaultPageBytes when n is not
// positive: no caller can ask the store for a page unbounded in bytes.
// A page ends once its rows' stored sizes (XML, JSON, answer) reach the
// budget; it always holds at least one row, so it may pass the budget by
// at most one row.
func PageBytes(n int64) int64 {
	if n <= 0 {
		return DefaultPageBytes
	}
	return n
}

// TimeCursor is a position in a list ordered by time and then ID (the
// readings and rejections of a device): the received_at and ID of the
// last item served. Its String is the next_cursor clients pass back; the
// store and the device service's in-memory pages read and write the same
// encoding, so that a cursor from one continues in the other.
type TimeCursor struct {
	At time.Time
	ID int64
}

// String encodes c (base64url of "unixnano.id").
func (c TimeCursor) String() string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(c.At.UnixNano(), 10) + "." + strconv.FormatInt(c.ID, 10)))
}

// ParseTimeCursor reads what TimeCursor.String wrote. Errors: invalid.
func ParseTimeCursor(s string) (TimeCursor, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err == nil {
		ns, id, ok := strings.Cut(string(b), ".")
		n, err1 := strconv.ParseInt(ns, 10, 64)
		i, err2 := strconv.ParseInt(id, 10, 64)
		if ok && err1 == nil && err2 == nil {
			return TimeCursor{time.Unix(0, n).UTC(), i}, nil
		}
	}
	return TimeCursor{}, Errorf(EInvalid, "cursor is not valid")
}
