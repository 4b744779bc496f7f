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
	wake := func() {
		if ctx.Err() != nil {
			return
		}
		select {
		case out <- struct{}{}:
		default:
		}
	}
	l := pq.NewListener(db.dsn, listenMinReconnect, listenMaxReconnect, func(ev pq.ListenerEventType, err error) {
		switch ev {
		case pq.ListenerEventDisconnected, pq.ListenerEventConnectionAttemptFailed:
			db.log.Warn("event listener: "+ev.String(), "err", err)
		case pq.ListenerEventReconnected:
			db.log.Info("event listener: reconnected")
		}
	})
	go func() {
		<-ctx.Done()
		l.Close() // also ends a Listen still waiting for a connection
	}()
	go func() {
		// Listen waits for a connection, however long it takes.
		if err := l.Listen(eventsChannel); err != nil {
			if ctx.Err() == nil {
				db.log.Error("event listener: listen failed; readers poll only", "err", err)
			}
		} else {
			wake()
		}
		// Drain until Close closes Notify, so the listener's goroutine
		// never blocks on it; a nil notification follows a reconnection.
		for range l.Notify {
			wake()
		}
	}()
	return out
}
