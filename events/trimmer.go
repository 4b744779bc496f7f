package events

import (
	"context"
	"log/slog"
	"time"

	"github.com/iotgate/iotgate"
)

// Defaults of the Trimmer.
const (
	DefaultTrimEvery = time.Minute
	DefaultTrimBatch = 10000
	DefaultTrimPause = 100 * time.Millisecond
)

// Trimmer deletes the events older than the retention window, in bounded
// batches so that no statement holds locks long. Several instances may
// run one on the same log: they delete the same oldest rows, harmlessly.
type Trimmer struct {
	Log iotgate.EventLog
	// Retention is how long events are kept (IOTGATE_EVENT_RETENTION;
	// 0: iotgate.DefaultEventRetention).
	Retention time.Duration
	// Every is how often Run trims (0: DefaultTrimEvery).
	Every time.Duration
	// Batch is the most events one statement deletes (0:
	// DefaultTrimBatch); Pause is the wait between full batches (0:
	// DefaultTrimPause).
	Batch int
	Pause time.Duration
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
	// Logger receives failures; nil discards them.
	Logger *slog.Logger
}

// Run trims at once and then every Every until ctx ends.
func (t *Trimmer) Run(ctx context.Context) {
	every := t.Every
	if every <= 0 {
		every = DefaultTrimEvery
	}
	log := t.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	iotgate.Every(ctx, every, func(ctx context.Context) {
		if n, err := t.Trim(ctx); err != nil && ctx.Err() == nil {
			log.Warn("trim events", "deleted", n, "err", err)
		} else if n > 0 {
			log.Debug("trimmed events", "deleted", n)
		}
	})
}

// Trim deletes every event older than the retention window, a batch at a
// time, and returns how many it deleted. Errors: unavailable.
func (t *Trimmer) Trim(ctx context.Context) (int, error) {
	retention, batch, pause, now := t.Retention, t.Batch, t.Pause, t.Now
	if retention <= 0 {
		retention = iotgate.DefaultEventRetention
	}
	if batch <= 0 {
		batch = DefaultTrimBatch
	}
	if pause <= 0 {
		pause = DefaultTrimPause
	}
	if now == nil {
		now = time.Now
	}
	before := now().Add(-retention)
	total := 0
	for {
		n, err := t.Log.TrimEvents(ctx, before, batch)
		total += n
		if err != nil || n < batch {
			return total, err
		}
		select {
		case <-ctx.Done():
			return total, ctx.Err()
		case <-time.After(pause):
		}
	}
}
