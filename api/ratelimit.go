package api

import (
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
	"golang.org/x/time/rate"
)

// maxLimiters bounds a limiter map: authenticated tokens in use at once,
// or client addresses with failed authentications.
const maxLimiters = 10000

// Failed authentications allowed per client (clientKey): a burst for a
// misconfigured client to notice, then a few per second; beyond them, its
// failed attempts get 429 instead of 401 (valid tokens still pass).
const (
	authFailureRate  = 2.0
	authFailureBurst = 20
)

// limiter is a token bucket per API token, keyed by token ID.
type limiter struct {
	rate  rate.Limit
	burst int
	// idle is how long an unused bucket takes to fill: past it, it is
	// the same as a new one and can be dropped.
	idle time.Duration
	now  func() time.Time

	mu      sync.Mutex
	buckets map[string]*bucket
}

type bucket struct {
	lim  *rate.Limiter
	last time.Time
}

func newLimiter(perSec float64, burst int, now func() time.Time) *limiter {
	if burst <= 0 {
		burst = max(int(perSec), 1)
	}
	return &limiter{
		rate: rate.Limit(perSec), burst: burst, now: now,
		idle:    time.Duration(float64(burst) / perSec * float64(time.Second)),
		buckets: map[string]*bucket{},
	}
}

// allow takes one request from key's bucket; when it is empty, it says
// how long until it won't be.
func (l *limiter) allow(key string) (bool, time.Duration) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.buckets[key]
	if !ok {
		if len(l.buckets) >= maxLimiters {
			l.evict(now)
		}
		b = &bucket{lim: rate.NewLimiter(l.rate, l.burst)}
		l.buckets[key] = b
	}
	b.last = now
	r := b.lim.ReserveN(now, 1)
	if !r.OK() {
		return false, time.Second
	}
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return false, d
	}
	return true, 0
}

// evict drops full (idle) buckets, and everything if that is not enough:
// a fresh bucket is full, so that only forgives a little.
func (l *limiter) evict(now time.Time) {
	for k, b := range l.buckets {
		if now.Sub(b.last) >= l.idle {
			delete(l.buckets, k)
		}
	}
	if len(l.buckets) >= maxLimiters {
		clear(l.buckets)
	}
}

// clientKey is what failed authentications are counted by: the client's
// IPv4 address, or the /64 of its IPv6 address (one host usually has a
// whole /64 to pick addresses from).
func clientKey(ip string) string {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return ip
	}
	if a = a.Unmap(); a.Is4() {
		return a.String()
	}
	p, _ := a.Prefix(64)
	return p.String()
}

// ipExtractor says where a request comes from (echo.Context.RealIP). With
// no trusted proxies, it is the connection's peer: X-Forwarded-For is
// ignored, as anyone can send it. Behind proxies, it is the nearest
// address in X-Forwarded-For that is not a trusted proxy, read only when
// the peer itself is one (echo trusts private and loopback addresses by
// default: here, only the given ranges).
func ipExtractor(trusted []*net.IPNet) echo.IPExtractor {
	if len(trusted) == 0 {
		return echo.ExtractIPDirect()
	}
	opts := []echo.TrustOption{echo.TrustLoopback(false), echo.TrustLinkLocal(false), echo.TrustPrivateNet(false)}
	for _, n := range trusted {
		opts = append(opts, echo.TrustIPRange(n))
	}
	return echo.ExtractIPFromXFFHeader(opts...)
}
