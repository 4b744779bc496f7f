package devices

import (
	"context"
	"sync"

	"github.com/iotgate/iotgate"
)

// SchedulerConfig sizes a Scheduler. Zero fields take the defaults noted.
type SchedulerConfig struct {
	// Workers bounds the jobs running at once; default 8. A slow job
	// (a long validation, a lookup waiting for the database) holds one
	// worker and delays only its own sender's later jobs.
	Workers int
	// Limits bounds the jobs waiting, per sender and in total.
	Limits QueueLimits
}

// Scheduler runs jobs off the caller's goroutine, keyed by sender: one
// sender's jobs run one at a time in the order submitted; different
// senders' jobs run in parallel on at most Workers goroutines, taken
// round-robin so that a sender with many jobs waiting cannot hold the
// others back. Submit never blocks: it is what the XMPP stream's read
// loop calls, and that loop must never wait on PostgreSQL or on a
// validation. Workers exist only while there is work.
type Scheduler struct {
	workers int

	mu      sync.Mutex
	q       *fairQueue[func()]
	running int
	closed  bool
	idle    chan struct{} // closed when closed and nothing is left; nil before
}

// NewScheduler returns a scheduler sized by cfg.
func NewScheduler(cfg SchedulerConfig) *Scheduler {
	if cfg.Workers <= 0 {
		cfg.Workers = 8
	}
	return &Scheduler{workers: cfg.Workers, q: newFairQueue[func()](cfg.Limits)}
}

// ErrShuttingDown refuses work submitted after Drain began.
var ErrShuttingDown = &iotgate.Error{Code: iotgate.EUnavailable, Message: "iotgate is shutting down, try again later"}

// Submit queues job to run after the jobs key submitted before it; size
// is what the job keeps alive meanwhile (the stanza's bytes), for the
// bounds. Errors: too_many_requests when key's queue or the whole queue
// is full, unavailable (ErrShuttingDown) after Drain began; job is then
// not run.
func (s *Scheduler) Submit(key string, size int, job func()) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrShuttingDown
	}
	ready, err := s.q.push(key, job, size)
	if err != nil {
		return err
	}
	// A key already queued or running is taken care of: its worker
	// puts it back in turn when done.
	if ready && s.running < s.workers {
		s.running++
		go s.work()
	}
	return nil
}

// work runs jobs until none is ready to run.
func (s *Scheduler) work() {
	s.mu.Lock()
	for {
		key, job, ok := s.q.next()
		if !ok {
			break
		}
		s.mu.Unlock()
		job()
		s.mu.Lock()
		s.q.done(key)
	}
	s.running--
	if s.closed && s.running == 0 && s.q.len() == 0 {
		close(s.idle)
	}
	s.mu.Unlock()
}

// Queued returns how many jobs wait to run.
func (s *Scheduler) Queued() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.q.len()
}

// Drain refuses new jobs and waits until every queued job has run, or ctx
// ends. Errors: ctx's, when it ends first.
func (s *Scheduler) Drain(ctx context.Context) error {
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		s.idle = make(chan struct{})
		if s.running == 0 && s.q.len() == 0 {
			close(s.idle)
		}
	}
	idle := s.idle
	s.mu.Unlock()
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
