package devices

import (
	"context"
	"fmt"
	"time"

	"github.com/iotgate/iotgate"
)

// Recover resolves the commands a previous run left unfinished: pending
// and sent ones fail (iotgate can't know whether the device acted on
// them). Queued ones stay queued. Call it once at start, before Run.
func (s *Commands) Recover(ctx context.Context) error {
	n, err := s.store.FailUnfinishedCommands(ctx, s.cfg.Instance, s.now(), iotgate.DetailRestarted, reasonRestarted)
	if err != nil {
		return fmt.Errorf("resolve unfinished commands: %w", err)
	}
	if n > 0 {
		s.log.Warn("commands left unfinished by the previous run marked failed", "commands", n)
	}
	jids, err := s.store.QueuedDeviceJIDs(ctx)
	if err != nil {
		return fmt.Errorf("list devices with queued commands: %w", err)
	}
	s.setQueued(jids)
	return nil
}

// setQueued replaces the set of devices with queued commands.
func (s *Commands) setQueued(jids []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.queuedFor)
	for _, j := range jids {
		s.queuedFor[j] = true
	}
}

func (s *Commands) markQueued(bare string, queued bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if queued {
		s.queuedFor[bare] = true
	} else {
		delete(s.queuedFor, bare)
	}
}

// Stopped is closed when Run has returned.
func (s *Commands) Stopped() <-chan struct{} { return s.stopped }

// Drain is the first step of a graceful shutdown: it gives the commands
// in flight until ctx ends to be answered, and starts no delivery of
// queued ones (they stay queued for the next start). It returns when none
// is in flight or ctx ends; then cancel Run's context, which fails the
// rest with "restarted".
func (s *Commands) Drain(ctx context.Context) {
	s.mu.Lock()
	s.draining = true
	s.mu.Unlock()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		s.mu.Lock()
		n := len(s.inflight)
		s.mu.Unlock()
		if n == 0 {
			return
		}
		select {
		case <-ctx.Done():
			s.log.Warn("shutdown: commands still waiting for their device fail", "commands", n)
			return
		case <-tick.C:
		}
	}
}
