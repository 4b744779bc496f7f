package postgres

import (
	"context"
	"log/slog"
	"time"

	"github.com/iotgate/iotgate"
)

// Defaults of the Maintainer.
const (
	DefaultMaintainEvery      = time.Hour
	DefaultPartitionsAhead    = 7
	DefaultMaintainBatch      = 10000
	DefaultMaintainPause      = 100 * time.Millisecond
	DefaultRejectionRetention = 30 * 24 * time.Hour
	DefaultCommandRetention   = 90 * 24 * time.Hour
	// DefaultPresenceEventRetention: presence history is for looking
	// back at outages; a flapping device writes a row per change.
	DefaultPresenceEventRetention = 30 * 24 * time.Hour
)

// Maintainer keeps the tables that grow with time in shape: it creates
// the reading partitions ahead and applies the retention of readings,
// rejections, finished commands and presence events. Deletes go in bounded batches so that
// no statement holds locks long. Several instances may run one on the same
// database: partition changes take turns under an advisory lock, and
// deletes of the same oldest rows are harmless.
type Maintainer struct {
	DB *DB
	// Retentions: how long readings (IOTGATE_READING_RETENTION),
	// rejections and finished commands are kept; 0 keeps them forever.
	// Readings go a day at a time: a day's partition is dropped once its
	// end is older than the retention.
	ReadingRetention, RejectionRetention, CommandRetention time.Duration
	// PresenceEventRetention is how long presence history
	// (IOTGATE_PRESENCE_EVENT_RETENTION) is kept; 0 keeps it forever.
	PresenceEventRetention time.Duration
	// Every is how often Run maintains (0: DefaultMaintainEvery).
	Every time.Duration
	// Ahead is how many days of partitions are kept ready after today
	// (0: DefaultPartitionsAhead).
	Ahead int
	// Batch is the most rows one delete removes (0: DefaultMaintainBatch);
	// Pause is the wait between full batches (0: DefaultMaintainPause).
	Batch int
	Pause time.Duration
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
	// Logger receives what was done and failures; nil discards them.
	Logger *slog.Logger
}

// Maintenance is what one Maintain did.
type Maintenance struct {
	Created, Dropped     []string // reading partitions
	Rejections, Commands int      // rows deleted
	PresenceEvents       int      // rows deleted
}

// Run maintains at once and then every Every until ctx ends.
func (m *Maintainer) Run(ctx context.Context) {
	every := m.Every
	if every <= 0 {
		every = DefaultMaintainEvery
	}
	log := m.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	iotgate.Every(ctx, every, func(ctx context.Context) {
		r, err := m.Maintain(ctx)
		if err != nil && ctx.Err() == nil {
			log.Warn("maintain tables", "err", err)
		}
		if len(r.Created)+len(r.Dropped)+r.Rejections+r.Commands+r.PresenceEvents > 0 {
			log.Info("maintained tables", "created", r.Created, "dropped", r.Dropped,
				"rejections", r.Rejections, "commands", r.Commands, "presence_events", r.PresenceEvents)
		}
	})
}

// Maintain creates the partitions ahead, then applies each retention. A
// step that fails does not stop the others; the first error is returned.
// Errors: unavailable, timeout.
func (m *Maintainer) Maintain(ctx context.Context) (Maintenance, error) {
	now := time.Now
	if m.Now != nil {
		now = m.Now
	}
	ahead := m.Ahead
	if ahead <= 0 {
		ahead = DefaultPartitionsAhead
	}
	t := now()
	var r Maintenance
	var first error
	keep := func(err error) {
		if first == nil {
			first = err
		}
	}
	created, err := m.DB.EnsurePartitions(ctx, t, ahead)
	r.Created = created
	keep(err)
	if m.ReadingRetention > 0 {
		before := t.Add(-m.ReadingRetention)
		r.Dropped, err = m.DB.DropReadingPartitions(ctx, before)
		keep(err)
	}
	if m.RejectionRetention > 0 {
		r.Rejections, err = m.drain(ctx, t.Add(-m.RejectionRetention), m.DB.TrimRejections)
		keep(err)
	}
	if m.CommandRetention > 0 {
		r.Commands, err = m.drain(ctx, t.Add(-m.CommandRetention), m.DB.TrimCommands)
		keep(err)
	}
	if m.PresenceEventRetention > 0 {
		r.PresenceEvents, err = m.drain(ctx, t.Add(-m.PresenceEventRetention), m.DB.TrimPresenceEvents)
		keep(err)
	}
	return r, first
}

// drain calls trim with the batch size until it deletes less than a
// batch, pausing between batches, and returns how many rows it deleted.
func (m *Maintainer) drain(ctx context.Context, before time.Time, trim func(context.Context, time.Time, int) (int, error)) (int, error) {
	batch, pause := m.Batch, m.Pause
	if batch <= 0 {
		batch = DefaultMaintainBatch
	}
	if pause <= 0 {
		pause = DefaultMaintainPause
	}
	total := 0
	for {
		n, err := trim(ctx, before, batch)
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
