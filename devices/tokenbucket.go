package devices

import (
	"sync"
	"time"

	"github.com/iotgate/iotgate"
)

// tokenBucket is one token bucket: rate tokens a second, at most burst.
type tokenBucket struct {
	rate, burst float64
	clock       iotgate.Clock

	mu     sync.Mutex
	tokens float64
	last   time.Time
}

func newTokenBucket(rate, burst float64, clock iotgate.Clock) *tokenBucket {
	return &tokenBucket{rate: rate, burst: burst, clock: clock, tokens: burst, last: clock()}
}

// refill adds the tokens earned since the last call; b.mu is held.
func (b *tokenBucket) refill() {
	now := b.clock()
	b.tokens = min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	b.last = now
}

// ready reports whether a token is there, without taking it.
func (b *tokenBucket) ready() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.refill()
	return b.tokens >= 1
}

// tryTake takes a token if there is one.
func (b *tokenBucket) tryTake() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.refill()
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// give returns a token taken for what did not happen after all.
func (b *tokenBucket) give() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.tokens = min(b.tokens+1, b.burst)
}
