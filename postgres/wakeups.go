package postgres

import (
	"context"
	"time"

	"github.com/lib/pq"
)

// Listener reconnection backoff: first retry soon, then at most every 10 s.
const (
	listenMinReconnect = 100 * time.Millisecond
	listenMaxReconnect = 10 * time.Second
)

// EventWakeups listens on the channel every transaction writing events
// notifies (iotgate_events), on a connection of its own, and returns a
// channel (buffer 1, sends never block) that receives after each
// notification, once listening starts and after every reconnection (when
// notifications may have been lost), until ctx is done. A wake-up means
// "read the log after your last id"; readers still poll on a timer, since
// nothing is delivered while the listener is disconnected. Cancel ctx
// before closing the DB.
func (db *DB) EventWakeups(ctx context.Context) <-chan struct{} {
	out := make(chan struct{}, 1)
	db.listen(ctx, eventsChannel, "event listener", func(string, bool) {
		select {
		case out <- struct{}{}:
		default:
		}
	}, nil)
	return out
}

// listen listens on channel on a connection of its own until ctx is done
// and calls f with each notification's payload, in the order PostgreSQL
// sends them (commit order), from one goroutine. f("", true) means
// notifications may have been lost: once listening starts and after every
// reconnection. f must not block for long: the listener's buffer is
// small and a full one stalls it. up (if not nil) is told false when the
// connection is lost and true once listening again, after f("", true).
func (db *DB) listen(ctx context.Context, channel, name string, f func(payload string, lost bool), up func(bool)) {
	l := pq.NewListener(db.dsn, listenMinReconnect, listenMaxReconnect, func(ev pq.ListenerEventType, err error) {
		switch ev {
		case pq.ListenerEventDisconnected, pq.ListenerEventConnectionAttemptFailed:
			if up != nil {
				up(false)
			}
			db.log.Warn(name+": "+ev.String(), "err", err)
		case pq.ListenerEventReconnected:
			db.log.Info(name + ": reconnected")
		}
	})
	call := func(payload string, lost bool) {
		if ctx.Err() == nil {
			f(payload, lost)
		}
	}
	go func() {
		<-ctx.Done()
		l.Close() // also ends a Listen still waiting for a connection
	}()
	go func() {
		// Listen waits for a connection, however long it takes.
		if err := l.Listen(channel); err != nil {
			if ctx.Err() == nil {
				db.log.Error(name+": listen failed; only polling and cache expiry remain", "err", err)
			}
		} else {
			call("", true)
			if up != nil {
				up(true)
			}
		}
		// Drain until Close closes Notify, so the listener's goroutine
		// never blocks on it; a nil notification follows a reconnection.
		for n := range l.Notify {
			if n == nil {
				call("", true)
				if up != nil {
					up(true)
				}
				continue
			}
			call(n.Extra, false)
		}
	}()
}
