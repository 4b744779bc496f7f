package devices

import (
	"context"
	"fmt"
	"sync"

	"github.com/iotgate/iotgate"
)

// inFlight counts the commands in flight (sent, not yet answered or timed
// out) in all, per API token and per device, and bounds each count. The
// total alone let one token's commands to a silent device hold every
// slot, and every other tenant got 429; with the quotas, one token holds
// at most perToken slots and one device perDevice, whatever they do.
// The counts are this instance's: each instance bounds its own.
type inFlight struct {
	max, perToken, perDevice int

	mu       sync.Mutex
	total    int
	byToken  map[string]int
	byDevice map[string]int
	// freed is closed, and replaced, whenever a slot is freed: it wakes
	// the queue deliveries waiting for one.
	freed chan struct{}
}

// newInFlight returns counts bounded by max in all, perToken per token
// and perDevice per device (0 or less: no quota).
func newInFlight(max, perToken, perDevice int) *inFlight {
	return &inFlight{max: max, perToken: perToken, perDevice: perDevice,
		byToken: map[string]int{}, byDevice: map[string]int{}, freed: make(chan struct{})}
}

// take takes a slot for a command of token (""; no token: no per-token
// quota) to device, if neither count nor the total is at its bound, and
// returns its release (which may be called more than once). Errors:
// too_many_requests, with detail token_commands_in_flight or
// device_commands_in_flight when a quota is reached.
func (q *inFlight) take(token, device string) (func(), error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.takeLocked(token, device)
}

func (q *inFlight) takeLocked(token, device string) (func(), error) {
	switch {
	case token != "" && q.perToken > 0 && q.byToken[token] >= q.perToken:
		return nil, &iotgate.Error{Code: iotgate.ETooMany, Detail: iotgate.DetailTokenCommandsInFlight,
			Message: fmt.Sprintf("this token has %d commands in flight, its quota; try again later", q.perToken)}
	case q.perDevice > 0 && q.byDevice[device] >= q.perDevice:
		return nil, &iotgate.Error{Code: iotgate.ETooMany, Detail: iotgate.DetailDeviceCommandsInFlight,
			Message: fmt.Sprintf("device %s has %d commands in flight, its quota; try again later", device, q.perDevice)}
	case q.total >= q.max:
		return nil, iotgate.Errorf(iotgate.ETooMany, "%d commands are in flight, try again later", q.max)
	}
	q.total++
	if token != "" {
		q.byToken[token]++
	}
	q.byDevice[device]++
	var once sync.Once
	return func() { once.Do(func() { q.release(token, device) }) }, nil
}

func (q *inFlight) release(token, device string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.total--
	if token != "" {
		if q.byToken[token]--; q.byToken[token] <= 0 {
			delete(q.byToken, token)
		}
	}
	if q.byDevice[device]--; q.byDevice[device] <= 0 {
		delete(q.byDevice, device)
	}
	close(q.freed)
	q.freed = make(chan struct{})
}

// wait is take that waits for a slot until ctx ends; nil then.
func (q *inFlight) wait(ctx context.Context, token, device string) func() {
	for {
		q.mu.Lock()
		release, err := q.takeLocked(token, device)
		freed := q.freed
		q.mu.Unlock()
		if err == nil {
			return release
		}
		select {
		case <-freed:
		case <-ctx.Done():
			return nil
		}
	}
}

// counts returns the commands in flight in all, of token and to device.
func (q *inFlight) counts(token, device string) (total, ofToken, toDevice int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.total, q.byToken[token], q.byDevice[device]
}
