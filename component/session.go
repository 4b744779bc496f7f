package component

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"mellium.im/xmpp/jid"

	"github.com/iotgate/iotgate"
)

// session is the life of one established stream.
type session struct {
	st       *stream
	out      chan []byte
	done     chan struct{}
	once     sync.Once
	err      error // why the session ended; set before done closes
	lastRead atomic.Int64
}

// fail ends the session with err (the first cause wins).
func (s *session) fail(err error) {
	s.once.Do(func() {
		s.err = err
		close(s.done)
		s.st.conn.Close()
	})
}

func (s *session) closed() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// serve runs one established stream until it ends, and returns why.
func (c *Conn) serve(ctx context.Context, st *stream) error {
	sess := &session{st: st, out: make(chan []byte, c.cfg.QueueSize), done: make(chan struct{})}
	sess.lastRead.Store(time.Now().UnixNano())

	c.mu.Lock()
	c.sess = sess
	c.up = true
	c.since = time.Now()
	c.lastErr, c.why = nil, ""
	hooks := append([]func(context.Context){}, c.onUp...)
	c.mu.Unlock()
	c.log.Info("XMPP component stream established", "domain", c.cfg.Domain, "addr", c.cfg.Addr)

	sessCtx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); c.writeLoop(sess) }()
	go func() { defer wg.Done(); c.keepAlive(sessCtx, sess) }()
	// Close politely when asked to stop: tell the server, give it a moment
	// to answer, then cut.
	stopClose := context.AfterFunc(ctx, func() {
		select {
		case sess.out <- []byte("</stream:stream>"):
		case <-sess.done:
		case <-time.After(c.cfg.CloseTimeout):
		}
		st.conn.SetReadDeadline(time.Now().Add(c.cfg.CloseTimeout))
	})
	for _, h := range hooks {
		wg.Add(1)
		go func() { defer wg.Done(); h(sessCtx) }()
	}

	err := c.readLoop(sessCtx, sess)
	sess.fail(err)
	c.setDown(sess.err, "the stream with the XMPP server was lost")
	stopClose()
	cancel()
	wg.Wait()
	c.mu.Lock()
	downHooks := append([]func(){}, c.onDown...)
	c.mu.Unlock()
	for _, h := range downHooks {
		h()
	}
	return sess.err
}

func (c *Conn) readLoop(ctx context.Context, sess *session) error {
	for {
		st, err := sess.st.next()
		if err != nil {
			if sess.closed() {
				return sess.err
			}
			var skipped *skippedError
			if errors.As(err, &skipped) {
				// It cost only itself: the stream goes on.
				sess.lastRead.Store(time.Now().UnixNano())
				c.skipped(ctx, sess, skipped)
				continue
			}
			var xe *xmlError
			if errors.As(err, &xe) {
				c.closeWithError(sess, xe.cond, xe.text)
			}
			return err
		}
		sess.lastRead.Store(time.Now().UnixNano())
		c.dispatch(ctx, sess, st)
	}
}

// closeWithError sends a stream error before the stream is torn down.
func (c *Conn) closeWithError(sess *session, cond, text string) {
	b := []byte(`<stream:error><` + cond + ` xmlns='` + NSStreamErr + `'/><text xmlns='` + NSStreamErr + `'>` +
		EscapeText(text) + `</text></stream:error></stream:stream>`)
	select {
	case sess.out <- b:
		time.Sleep(50 * time.Millisecond) // let the writer flush it
	default:
	}
}

func (c *Conn) writeLoop(sess *session) {
	buf := make([]byte, 0, 32<<10)
	for {
		select {
		case b := <-sess.out:
			buf = append(buf[:0], b...)
		case <-sess.done:
			return
		}
		// Batch what else is queued into one write: many small stanzas
		// become few syscalls under load.
	drain:
		for range 512 {
			select {
			case b := <-sess.out:
				buf = append(buf, b...)
			default:
				break drain
			}
		}
		if err := c.writeAll(sess, buf); err != nil {
			sess.fail(fmt.Errorf("write to XMPP server: %w", err))
			return
		}
		if cap(buf) > 1<<20 {
			buf = make([]byte, 0, 32<<10) // don't keep a burst's buffer
		}
	}
}

// writeAll writes b to the server. A write blocked for WriteTimeout ends
// the session, as a dead server must, unless the server's TCP stack is
// alive (see tcpConnAlive): a busy server that stopped reading for a while
// (its window shut, ejabberd waiting for its disk) may keep it blocked
// until KeepAliveSlowTimeout, as it may keep a keepalive ping unanswered.
func (c *Conn) writeAll(sess *session, b []byte) error {
	conn := sess.st.conn
	start := time.Now()
	for len(b) > 0 {
		conn.SetWriteDeadline(time.Now().Add(c.cfg.WriteTimeout))
		n, err := conn.Write(b)
		b = b[n:]
		if err == nil {
			continue
		}
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() || sess.closed() {
			return err
		}
		blocked := time.Since(start)
		if blocked >= c.cfg.KeepAliveSlowTimeout {
			return fmt.Errorf("blocked for %s although the server's TCP stack is alive: %w", blocked.Round(time.Millisecond), err)
		}
		if alive, known := c.cfg.tcpAlive(conn, c.cfg.WriteTimeout); !known || !alive {
			return err
		}
		c.slowServer.Add(1)
		c.log.Warn("the XMPP server has not read for a while, but its TCP stack is alive: waiting for it",
			"blocked", blocked.Round(time.Millisecond), "up_to", c.cfg.KeepAliveSlowTimeout, "addr", c.cfg.Addr)
	}
	return nil
}

// keepAlive pings the server every KeepAlive and tells a slow server from
// a dead one. A ping answered within KeepAliveTimeout, or anything read
// meanwhile, proves the server alive. After a missed answer the stream is
// dropped at once unless the connection shows a sign of life: the kernel
// (Linux) sees the server's TCP stack acknowledge our bytes, the ping's
// included, within KeepAliveTimeout. Then the server is
// slow, not gone (ejabberd, logging in 10,000 devices, was seen to send
// nothing for 28 s while its TCP stack kept acknowledging: its component
// process waited on its disk-based roster; docs/benchmarks.md):
// it gets until KeepAliveSlowTimeout after the ping to send anything, and
// the stream is dropped only then.
func (c *Conn) keepAlive(ctx context.Context, sess *session) {
	t := time.NewTicker(c.cfg.KeepAlive)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if !c.keepAliveRound(ctx, sess) {
			return
		}
	}
}

// keepAliveRound sends one keepalive ping and applies the rule above; it
// reports whether the session goes on.
func (c *Conn) keepAliveRound(ctx context.Context, sess *session) bool {
	sent := time.Now()
	before := sess.lastRead.Load()
	pctx, cancel := context.WithTimeout(ctx, c.cfg.KeepAliveTimeout)
	ping := &Stanza{Kind: KindIQ, Type: TypeGet, To: c.cfg.PingTo, Inner: []byte(`<ping xmlns="urn:xmpp:ping"/>`)}
	_, err := c.sendIQOn(pctx, sess, ping)
	cancel()
	// Any reply, even an error, proves the server alive; so does
	// anything read meanwhile.
	if err == nil || ctx.Err() != nil || iotgate.ErrorCode(err) != iotgate.ETimeout || sess.lastRead.Load() != before {
		return ctx.Err() == nil && !sess.closed()
	}
	if !c.connAlive(sess) {
		sess.fail(fmt.Errorf("the XMPP server did not answer a keepalive ping within %s and the connection shows no sign of life: presumed dead", c.cfg.KeepAliveTimeout))
		return false
	}
	c.slowServer.Add(1)
	c.log.Warn("the XMPP server has not answered a keepalive ping, but the connection is alive: waiting for it",
		"waited", time.Since(sent).Round(time.Millisecond), "up_to", c.cfg.KeepAliveSlowTimeout, "addr", c.cfg.Addr)
	if !awaitRead(ctx, sess, before, sent.Add(c.cfg.KeepAliveSlowTimeout)) {
		if ctx.Err() == nil && !sess.closed() {
			sess.fail(fmt.Errorf("the XMPP server did not answer a keepalive ping (nor send anything) within %s, although its TCP stack is alive: presumed stuck", c.cfg.KeepAliveSlowTimeout))
		}
		return false
	}
	c.log.Info("the XMPP server answered again", "silent_for", time.Duration(sess.lastRead.Load()-sent.UnixNano()).Round(time.Millisecond), "addr", c.cfg.Addr)
	return true
}

// connAlive reports whether the connection shows a sign of life since a
// keepalive ping went unanswered: the kernel reports the server's TCP
// stack acknowledging what we sent (the ping included). Where the kernel
// can't say, it reports false: the missed answer alone decides, as before.
func (c *Conn) connAlive(sess *session) bool {
	alive, known := c.cfg.tcpAlive(sess.st.conn, c.cfg.KeepAliveTimeout)
	return known && alive
}

// awaitRead waits until something is read after before, or until
// deadline, or until ctx or the session ends; it reports whether
// something was read.
func awaitRead(ctx context.Context, sess *session, before int64, deadline time.Time) bool {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for sess.lastRead.Load() == before {
		if !time.Now().Before(deadline) {
			return false
		}
		select {
		case <-ctx.Done():
			return false
		case <-sess.done:
			return false
		case <-t.C:
		}
	}
	return true
}

// reply queues an answer from the read loop. It never blocks the loop for
// longer than the write timeout: a server that stops reading ends the session.
func (c *Conn) reply(sess *session, st *Stanza) {
	if st.From == "" {
		st.From = c.cfg.Domain
	}
	select {
	case sess.out <- st.AppendXML(nil):
	case <-sess.done:
	}
}

// Send queues st for the server. From defaults to the component's domain
// and must be on it. Errors: unavailable (code xmpp_unavailable) when the
// stream is down, timeout when ctx ends while the queue is full, invalid for
// a from outside the component's domain.
func (c *Conn) Send(ctx context.Context, st *Stanza) error {
	if err := c.checkFrom(st); err != nil {
		return err
	}
	c.mu.Lock()
	sess := c.sess
	why, cause := c.why, c.lastErr
	c.mu.Unlock()
	if sess == nil {
		return unavailable(why, cause)
	}
	return c.enqueue(ctx, sess, st.AppendXML(make([]byte, 0, 128+len(st.Inner))))
}

func (c *Conn) enqueue(ctx context.Context, sess *session, b []byte) error {
	select {
	case sess.out <- b:
		return nil
	default:
	}
	select {
	case sess.out <- b:
		return nil
	case <-sess.done:
		return unavailable("the stream with the XMPP server was lost", sess.err)
	case <-ctx.Done():
		return &iotgate.Error{Code: iotgate.ETimeout, Message: "XMPP output queue is full", Err: ctx.Err()}
	}
}

func (c *Conn) checkFrom(st *Stanza) error {
	if st.From == "" {
		st.From = c.cfg.Domain
		return nil
	}
	j, err := jid.Parse(st.From)
	if err != nil || j.Domainpart() != c.cfg.Domain {
		return iotgate.Errorf(iotgate.EInvalid, "stanzas may only be sent from %s, not %q", c.cfg.Domain, st.From)
	}
	return nil
}

// unavailable is the error of a stanza that can't be sent because the
// stream is down. Its message says why in general terms only: it reaches
// clients, and the cause (a dial error, say) names hosts; the cause is
// wrapped, for the log.
func unavailable(why string, cause error) error {
	msg := "the XMPP stream is not connected"
	if why != "" {
		msg += ": " + why
	}
	return &iotgate.Error{Code: iotgate.EUnavailable, Detail: iotgate.DetailXMPPUnavailable, Message: msg, Err: cause}
}
