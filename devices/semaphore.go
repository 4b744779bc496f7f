package devices

import (
	"context"
	"sync"
)

// The semaphore s.sem bounds the commands in flight (MaxInFlight).
// tryAcquire takes a slot if one is free and returns its release, or nil.
func (s *Commands) tryAcquire() func() {
	select {
	case s.sem <- struct{}{}:
		var once sync.Once
		return func() { once.Do(func() { <-s.sem }) }
	default:
		return nil
	}
}

// acquire waits for a slot and returns its release, or nil when ctx ends.
func (s *Commands) acquire(ctx context.Context) func() {
	select {
	case s.sem <- struct{}{}:
		var once sync.Once
		return func() { once.Do(func() { <-s.sem }) }
	case <-ctx.Done():
		return nil
	}
}
