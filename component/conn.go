package component

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"mellium.im/xmpp/jid"
)

// Conn is iotgate's connection to the XMPP server. It is safe for concurrent
// use. Create it with New, start it with Run.
type Conn struct {
	cfg     Config
	log     *slog.Logger
	handler atomic.Pointer[Handler]
	// builtins answers what the component answers itself (builtin.go).
	builtins *mux
	domain   jid.JID

	mu      sync.Mutex
	sess    *session // nil while disconnected
	up      bool
	since   time.Time
	lastErr error
	// why says in general terms why the stream is down: what Health and
	// the errors of Send show, where lastErr may name hosts.
	why     string
	pending map[string]*pendingIQ
	onUp    []func(context.Context)
	onDown  []func()
	onStray []func(*Stanza)

	reconnects atomic.Uint64
	// refused is set while the server refuses the stream with conflict:
	// another connection holds the domain (a standby on Prosody).
	refused  atomic.Bool
	oversize atomic.Uint64
	// skipErrors bounds the error messages sent back for skipped
	// stanzas, per sender.
	skipErrors    *limiter
	domainRefused atomic.Uint64
	// slowServer counts the times the server was slow but alive (see
	// keepAlive and writeAll).
	slowServer atomic.Uint64
}

// New returns a Conn for cfg. It does not connect: call Run.
func New(cfg Config) (*Conn, error) {
	cfg.setDefaults()
	if cfg.Addr == "" {
		return nil, errors.New("component: Addr is required")
	}
	d, err := jid.Parse(cfg.Domain)
	if err != nil || d.Localpart() != "" || d.Resourcepart() != "" {
		return nil, fmt.Errorf("component: Domain %q is not a bare domain JID", cfg.Domain)
	}
	cfg.Domain = d.String()
	c := &Conn{
		cfg:     cfg,
		log:     cfg.Logger,
		domain:  d,
		since:   time.Now(),
		lastErr: errors.New("not connected yet"),
		why:     "not connected yet",
		pending: make(map[string]*pendingIQ),

		skipErrors: newLimiter(errorRate, errorBurst),
	}
	c.builtins = c.newBuiltins()
	return c, nil
}

// Domain returns the component's domain.
func (c *Conn) Domain() string { return c.cfg.Domain }

// SetHandler sets the handler for stanzas the component does not answer
// itself. It may be called at any time; nil means none.
func (c *Conn) SetHandler(h Handler) {
	if h == nil {
		c.handler.Store(nil)
		return
	}
	c.handler.Store(&h)
}

// OnConnect registers f to run (in its own goroutine) each time a stream is
// established, for example to probe device presence.
func (c *Conn) OnConnect(f func(ctx context.Context)) {
	c.mu.Lock()
	c.onUp = append(c.onUp, f)
	c.mu.Unlock()
}

// OnStrayReply registers f to receive each IQ result or error that
// matches no IQ this connection waits for: with several instances on one
// domain, the answer to another instance's IQ. f runs on the stream's
// read loop and must not block.
func (c *Conn) OnStrayReply(f func(st *Stanza)) {
	c.mu.Lock()
	c.onStray = append(c.onStray, f)
	c.mu.Unlock()
}

// OnDisconnect registers f to run each time an established stream ends,
// after every pending IQ has failed.
func (c *Conn) OnDisconnect(f func()) {
	c.mu.Lock()
	c.onDown = append(c.onDown, f)
	c.mu.Unlock()
}

// Health reports whether the stream is established, since when that has been
// so, and while down, why: an unavailable error (xmpp_unavailable) whose
// message says what failed without saying where (it is shown by /readyz
// without authentication); the cause, for logs, is wrapped.
func (c *Conn) Health(context.Context) (ok bool, since time.Time, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.up {
		return true, c.since, nil
	}
	return false, c.since, unavailable(c.why, c.lastErr)
}

// Refused reports whether the server refused the last attempt with
// conflict: another connection holds the domain.
func (c *Conn) Refused() bool { return c.refused.Load() }

// SlowServer returns how many times the server failed to answer a
// keepalive ping within KeepAliveTimeout, or to read within WriteTimeout,
// while its TCP stack was alive: each gave the server until
// KeepAliveSlowTimeout instead of dropping the stream.
func (c *Conn) SlowServer() uint64 { return c.slowServer.Load() }

// Reconnects returns how many times the stream has been re-established.
func (c *Conn) Reconnects() uint64 { return c.reconnects.Load() }

// Run connects and keeps the component connected until ctx ends, then closes
// the stream politely and returns nil. Failures are logged and retried with
// backoff; Run never gives up on its own.
//
// A conflict at the handshake means the server still holds a stream for the
// domain: most often iotgate's own previous one, which iotgate gave up on
// (keepalive) but the server, busy or cut off from iotgate's close, has not
// seen die. Prosody refuses the newcomer until it drops that stream (unless
// component_conflict_resolve = "kick_old"); ejabberd accepts both. That is
// also how a standby instance waits on Prosody while another one holds the
// domain: after a conflict Run retries every ConflictBackoff (with
// jitter), without growing it, so it takes over within ConflictBackoff of
// the server dropping the old stream.
func (c *Conn) Run(ctx context.Context) error {
	attempt := 0
	connectedOnce := false
	for ctx.Err() == nil {
		s, err := dialStream(ctx, &c.cfg)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			c.setDown(err, "cannot establish a stream with the XMPP server")
			c.logFailure("cannot establish XMPP component stream", err)
		} else {
			if connectedOnce {
				c.reconnects.Add(1)
			}
			connectedOnce = true
			began := time.Now()
			err = c.serve(ctx, s)
			if ctx.Err() != nil {
				break
			}
			c.logFailure("XMPP component stream lost", err)
			if time.Since(began) > 10*time.Second {
				attempt = 0
			}
		}
		delay := backoff(attempt, c.cfg.MinBackoff, c.cfg.MaxBackoff)
		se := (*StreamError)(nil)
		conflict := errors.As(err, &se) && se.Condition == "conflict"
		c.refused.Store(conflict)
		if conflict {
			// A standby: retry at a steady pace, not a growing one, so
			// that it takes over soon after the holder goes.
			delay = backoff(0, c.cfg.ConflictBackoff, c.cfg.ConflictBackoff)
		}
		attempt++
		c.log.Info("reconnecting to XMPP server", "in", delay.Round(time.Millisecond), "addr", c.cfg.Addr)
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
		case <-t.C:
		}
	}
	c.setDown(errors.New("iotgate is shutting down"), "iotgate is shutting down")
	return nil
}

func (c *Conn) logFailure(msg string, err error) {
	var se *StreamError
	if errors.As(err, &se) {
		c.log.Error(msg, "reason", se.explain(c.cfg.Domain), "condition", se.Condition, "addr", c.cfg.Addr)
		return
	}
	c.log.Error(msg, "reason", err.Error(), "addr", c.cfg.Addr)
}

// backoff returns the delay before reconnect attempt n: exponential from min,
// capped at max, with jitter so that many instances don't reconnect in step.
func backoff(n int, min, max time.Duration) time.Duration {
	d := max
	if n < 30 {
		if e := min << n; e > 0 && e < max {
			d = e
		}
	}
	// Between half and all of d.
	return d/2 + rand.N(d/2+1)
}

// setDown records that the stream is down because of err; why says so for
// clients, unless err is a stream error, whose condition says it better.
func (c *Conn) setDown(err error, why string) {
	var se *StreamError
	if errors.As(err, &se) {
		err = fmt.Errorf("%s", se.explain(c.cfg.Domain))
		why = se.summary()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.up {
		c.since = time.Now()
	}
	c.up = false
	c.sess = nil
	c.lastErr = err
	c.why = why
}
