package iotgate

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
