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
