package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/iotgate/iotgate"
	"github.com/iotgate/iotgate/api"
	"github.com/iotgate/iotgate/postgres"
)

// openDatabase connects and migrates (postgres.Open), retrying while the
// database is unavailable (unreachable, or refusing the login: an
// operator fixes that while iotgate waits), and telling failed each
// attempt's error. A dirty or too-new schema stops the start: it needs a
// human.
func openDatabase(ctx context.Context, cfg Config, log *slog.Logger, failed func(error)) (*postgres.DB, error) {
	delay := 500 * time.Millisecond
	for {
		db, err := postgres.Open(ctx, cfg.DatabaseURL, log.With("part", "db"))
		if err == nil {
			return db, nil
		}
		switch iotgate.ErrorCode(err) {
		case iotgate.EUnavailable, iotgate.ETimeout:
		default:
			return nil, err
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		failed(err)
		log.Warn("database not available yet, retrying", "in", delay, "err", err)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(delay):
		}
		delay = min(delay*2, 5*time.Second)
	}
}

// startingServer serves api.Starting on the HTTP address while iotgate
// waits for its database.
type startingServer struct {
	ln   net.Listener
	srv  *http.Server
	last atomic.Pointer[error]
	once sync.Once
}

// listenStarting takes addr and serves api.Starting on it. Errors:
// net.Listen's, wrapped.
func listenStarting(addr string) (*startingServer, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", addr, err)
	}
	s := &startingServer{ln: ln}
	s.srv = &http.Server{Handler: api.Starting(s.lastErr), ReadHeaderTimeout: 5 * time.Second}
	go s.srv.Serve(ln)
	return s, nil
}

func (s *startingServer) waiting(err error) { s.last.Store(&err) }

func (s *startingServer) lastErr() error {
	if p := s.last.Load(); p != nil {
		return *p
	}
	return nil
}

// addr is the address taken: with port 0 in the setting, the one the API
// must take over.
func (s *startingServer) addr() string { return s.ln.Addr().String() }

// close frees the address (requests in progress get a second to finish).
func (s *startingServer) close() {
	s.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if s.srv.Shutdown(ctx) != nil {
			s.srv.Close()
		}
		// Shutdown closes only a listener Serve has begun with.
		s.ln.Close()
	})
}
