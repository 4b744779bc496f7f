package api

import (
	"fmt"
	"sync"

	"github.com/labstack/echo/v4"

	"github.com/iotgate/iotgate"
)

// Heavy requests (pages of readings, rejections and commands: up to a
// page's byte budget each, see Config.MaxPageBytes) in progress at once.
const (
	DefaultMaxHeavyPerToken = 4
	DefaultMaxHeavy         = 32
)

// concurrency counts requests in progress, per key and overall, and
// refuses those beyond its caps. A key's count is dropped when it falls to
// zero, so the map holds only keys with requests in progress.
type concurrency struct {
	perKey, total int

	mu  sync.Mutex
	n   map[string]int
	all int
}

func newConcurrency(perKey, total int) *concurrency {
	return &concurrency{perKey: perKey, total: total, n: map[string]int{}}
}

// acquire takes a slot for key; ok is false, and keyFull says which cap
// was reached, when there is none. Each acquired slot must be released.
func (l *concurrency) acquire(key string) (ok, keyFull bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.n[key] >= l.perKey {
		return false, true
	}
	if l.all >= l.total {
		return false, false
	}
	l.n[key]++
	l.all++
	return true, false
}

func (l *concurrency) release(key string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.n[key]--; l.n[key] <= 0 {
		delete(l.n, key)
	}
	l.all--
}

// heavy bounds how many heavy requests each token, and the server, has in
// progress: one token's burst of large pages must not run the server out
// of memory nor starve the other tokens. Beyond either cap the request
// gets 429 too_many_concurrent with Retry-After: such requests end in
// about the time a page takes, so one second is a fair wait.
func (s *Server) heavy(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		tok := tokenOf(c)
		if tok == nil {
			return next(c)
		}
		ok, keyFull := s.heavyLimit.acquire(tok.ID)
		if !ok {
			c.Response().Header().Set("Retry-After", "1")
			msg := fmt.Sprintf("this token has %d list requests in progress already; retry in 1 s", s.heavyLimit.perKey)
			if !keyFull {
				msg = "too many list requests in progress on this server; retry in 1 s"
			}
			return &iotgate.Error{Code: iotgate.ETooMany, Detail: iotgate.DetailTooManyConcurrent, Message: msg}
		}
		defer s.heavyLimit.release(tok.ID)
		return next(c)
	}
}

// heavyWhen is heavy for the requests for which cond holds (a list that
// asks for more per item), and next alone for the others.
func (s *Server) heavyWhen(cond func(echo.Context) bool, next echo.HandlerFunc) echo.HandlerFunc {
	h := s.heavy(next)
	return func(c echo.Context) error {
		if cond(c) {
			return h(c)
		}
		return next(c)
	}
}
