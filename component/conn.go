// Package component connects iotgate to an XMPP server as an external
// component (XEP-0114) and keeps it connected.
//
// A Conn dials the server's component port, performs the handshake and runs
// the stream: one reader, one writer fed by a bounded queue, a keepalive ping
// that notices a dead TCP connection, and IQ tracking that accepts a reply
// only from the entity the request was sent to. When the stream drops, every
// pending IQ fails at once and the Conn reconnects with capped exponential
// backoff and jitter, forever, until its context ends.
//
// The stream protocol is small enough that it is implemented here on
// encoding/xml rather than on a general XMPP library: iotgate needs control
// over deadlines, queueing and reply matching that the libraries we studied
// don't give (see docs/design.md). JIDs are handled with
// mellium.im/xmpp/jid and stanza error conditions with mellium.im/xmpp/stanza.
//
// It may import the root package iotgate and devices (the ingest
// scheduler, the domain allow-list, the CommandSender port it implements);
// never api (HTTP), postgres or cmd.
package component

import (
	"bufio"
	"context"
	crand "crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"mellium.im/xmpp/jid"
	"mellium.im/xmpp/stanza"

	"github.com/iotgate/iotgate"
	"github.com/iotgate/iotgate/devices"
)

// Config configures a Conn. Zero durations and sizes take the defaults noted.
type Config struct {
	// Addr is host:port of the server's component listener.
	Addr string
	// Domain is the component's JID, e.g. iot.example.com.
	Domain string
	// Secret is the shared secret of the handshake.
	Secret string
	// PingTo is where keepalive pings go. Default: Domain without its first
	// label (the server's own domain); an IP-literal Domain itself.
	PingTo string

	// Software and Version are reported by XEP-0092 and disco.
	Software string
	Version  string

	QueueSize        int           // outgoing stanzas waiting for the writer; default 4096
	MaxPendingIQs    int           // IQs awaiting a reply; default 10000
	MaxStanzaBytes   int           // largest incoming stanza kept; larger ones are skipped and refused; default DefaultMaxStanzaBytes
	MaxStanzaDepth   int           // deepest nesting of an incoming stanza kept (the stanza is 1); default 64
	DialTimeout      time.Duration // default 5s
	HandshakeTimeout time.Duration // default 10s
	WriteTimeout     time.Duration // a write blocked longer kills the stream; default 10s
	KeepAlive        time.Duration // ping interval; default 15s
	KeepAliveTimeout time.Duration // ping answer deadline; default 10s
	MinBackoff       time.Duration // first reconnect delay; default 250ms
	MaxBackoff       time.Duration // reconnect delay cap; default 5s
	CloseTimeout     time.Duration // wait for the server's </stream:stream> on shutdown; default 2s
	// ConflictBackoff is the shortest reconnect delay after the server
	// refused the stream with conflict; default 2s. See Run.
	ConflictBackoff time.Duration

	// Disco configures the answers to service discovery.
	Disco DiscoConfig

	// DeviceDomains, unless it allows any, refuses stanzas from other
	// domains before any handler sees them: IQ requests are answered
	// cancel/not-allowed, messages and presence dropped (and counted:
	// DomainRefused). The component's own domain always passes.
	DeviceDomains devices.DomainAllowList

	Logger *slog.Logger
}

func (c *Config) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	defInt := func(d *int, v int) {
		if *d <= 0 {
			*d = v
		}
	}
	defInt(&c.QueueSize, 4096)
	defInt(&c.MaxPendingIQs, 10000)
	defInt(&c.MaxStanzaBytes, DefaultMaxStanzaBytes)
	defInt(&c.MaxStanzaDepth, 64)
	def(&c.DialTimeout, 5*time.Second)
	def(&c.HandshakeTimeout, 10*time.Second)
	def(&c.WriteTimeout, 10*time.Second)
	def(&c.KeepAlive, 15*time.Second)
	def(&c.KeepAliveTimeout, 10*time.Second)
	def(&c.MinBackoff, 250*time.Millisecond)
	def(&c.MaxBackoff, 5*time.Second)
	def(&c.ConflictBackoff, 2*time.Second)
	def(&c.CloseTimeout, 2*time.Second)
	c.Disco.setDefaults()
	if c.PingTo == "" {
		// An IP-literal domain has no parent: ping it, through the
		// server, which proves the server alive all the same.
		if net.ParseIP(c.Domain) != nil {
			c.PingTo = c.Domain
		} else if _, parent, ok := strings.Cut(c.Domain, "."); ok {
			c.PingTo = parent
		} else {
			c.PingTo = c.Domain
		}
	}
	if c.Software == "" {
		c.Software = "iotgate"
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Handler receives the stanzas that the component does not answer itself.
type Handler interface {
	// HandleStanza is called on the stream's read loop for every message
	// and presence, and for every IQ get/set that is not a built-in
	// (disco, ping, version). It must not block for long: hand slow work
	// off and answer later with Conn.Send. For an IQ get/set, returning
	// false makes the component answer service-unavailable.
	HandleStanza(ctx context.Context, st *Stanza) bool
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, st *Stanza) bool

// HandleStanza calls f.
func (f HandlerFunc) HandleStanza(ctx context.Context, st *Stanza) bool { return f(ctx, st) }

// Conn is iotgate's connection to the XMPP server. It is safe for concurrent
// use. Create it with New, start it with Run.
type Conn struct {
	cfg     Config
	log     *slog.Logger
	handler atomic.Pointer[Handler]
	domain  jid.JID

	mu      sync.Mutex
	sess    *session // nil while disconnected
	up      bool
	since   time.Time
	lastErr error
	pending map[string]*pendingIQ
	onUp    []func(context.Context)
	onDown  []func()

	reconnects atomic.Uint64
	oversize   atomic.Uint64
	// skipErrors bounds the error messages sent back for skipped
	// stanzas, per sender.
	skipErrors    *limiter
	domainRefused atomic.Uint64
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
	return &Conn{
		cfg:     cfg,
		log:     cfg.Logger,
		domain:  d,
		since:   time.Now(),
		lastErr: errors.New("not connected yet"),
		pending: make(map[string]*pendingIQ),

		skipErrors: newLimiter(errorRate, errorBurst),
	}, nil
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

// OnDisconnect registers f to run each time an established stream ends,
// after every pending IQ has failed.
func (c *Conn) OnDisconnect(f func()) {
	c.mu.Lock()
	c.onDown = append(c.onDown, f)
	c.mu.Unlock()
}

// Health reports whether the stream is established, since when that has been
// so, and while down, why.
func (c *Conn) Health(context.Context) (ok bool, since time.Time, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.up {
		return true, c.since, nil
	}
	return false, c.since, c.lastErr
}

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
// component_conflict_resolve = "kick_old"); ejabberd accepts both. Retrying
// fast only adds to a busy server's load, so after a conflict Run waits at
// least ConflictBackoff (with jitter): it is back within
// max(ConflictBackoff, MaxBackoff) of the server dropping the old stream.
func (c *Conn) Run(ctx context.Context) error {
	attempt := 0
	connectedOnce := false
	for ctx.Err() == nil {
		s, err := dialStream(ctx, &c.cfg)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			c.setDown(err)
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
		if se := (*StreamError)(nil); errors.As(err, &se) && se.Condition == "conflict" {
			delay = max(delay, backoff(0, c.cfg.ConflictBackoff, c.cfg.ConflictBackoff))
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
	c.setDown(errors.New("iotgate is shutting down"))
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

func (c *Conn) setDown(err error) {
	var se *StreamError
	if errors.As(err, &se) {
		err = fmt.Errorf("%s", se.explain(c.cfg.Domain))
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.up {
		c.since = time.Now()
	}
	c.up = false
	c.sess = nil
	c.lastErr = err
}

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
	c.lastErr = nil
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
	c.setDown(sess.err)
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
	conn := sess.st.conn
	w := bufio.NewWriterSize(conn, 32<<10)
	for {
		var b []byte
		select {
		case b = <-sess.out:
		case <-sess.done:
			return
		}
		conn.SetWriteDeadline(time.Now().Add(c.cfg.WriteTimeout))
		w.Write(b)
		// Batch what else is queued into one flush: many small stanzas
		// become few syscalls under load.
	drain:
		for range 512 {
			select {
			case b = <-sess.out:
				w.Write(b)
			default:
				break drain
			}
		}
		if err := w.Flush(); err != nil {
			sess.fail(fmt.Errorf("write to XMPP server: %w", err))
			return
		}
	}
}

func (c *Conn) keepAlive(ctx context.Context, sess *session) {
	t := time.NewTicker(c.cfg.KeepAlive)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		before := sess.lastRead.Load()
		pctx, cancel := context.WithTimeout(ctx, c.cfg.KeepAliveTimeout)
		ping := &Stanza{Kind: KindIQ, Type: TypeGet, To: c.cfg.PingTo, Inner: []byte(`<ping xmlns="urn:xmpp:ping"/>`)}
		_, err := c.sendIQOn(pctx, sess, ping)
		cancel()
		// Any reply, even an error, proves the server alive; so does
		// anything read meanwhile.
		if err != nil && ctx.Err() == nil && iotgate.ErrorCode(err) == iotgate.ETimeout && sess.lastRead.Load() == before {
			sess.fail(fmt.Errorf("the XMPP server did not answer a keepalive ping within %s: connection presumed dead", c.cfg.KeepAliveTimeout))
			return
		}
	}
}

// dispatch routes one incoming stanza.
func (c *Conn) dispatch(ctx context.Context, sess *session, st *Stanza) {
	if st.Kind == KindIQ {
		switch st.Type {
		case TypeResult, TypeError:
			c.deliverReply(sess, st)
			return
		case TypeGet, TypeSet:
			if c.refuseDomain(sess, st) || c.builtin(ctx, sess, st) {
				return
			}
		default:
			c.reply(sess, st.ErrorReply(stanza.Modify, stanza.BadRequest, "IQ type must be get, set, result or error"))
			return
		}
	}
	if st.Kind != KindIQ && c.refuseDomain(sess, st) {
		return
	}
	if hp := c.handler.Load(); hp != nil {
		if (*hp).HandleStanza(ctx, st) || st.Kind != KindIQ {
			return
		}
	}
	if st.Kind == KindIQ {
		c.reply(sess, st.ErrorReply(stanza.Cancel, stanza.ServiceUnavailable, "this request is not supported by "+c.cfg.Domain))
	}
}

// refuseDomain reports whether st comes from a domain outside
// Config.DeviceDomains, and refuses it: an IQ request gets
// cancel/not-allowed saying which domains are allowed, anything else is
// dropped (never answer a message: that is how loops start). Replies to
// iotgate's own IQs don't come here: they only match requests it sent.
func (c *Conn) refuseDomain(sess *session, st *Stanza) bool {
	if c.cfg.DeviceDomains.Any() {
		return false
	}
	from, err := jid.Parse(st.From)
	if err != nil {
		// Not the allow-list's business: the handlers refuse it.
		return false
	}
	d := from.Domainpart()
	if d == c.domain.Domainpart() || c.cfg.DeviceDomains.AllowsDomain(d) {
		return false
	}
	c.domainRefused.Add(1)
	if st.Kind == KindIQ {
		c.reply(sess, ErrorReplyFor(st, c.cfg.DeviceDomains.Check(st.From)))
	}
	c.log.Debug("stanza from a domain outside the allow-list refused", "from", st.From, "kind", st.Kind)
	return true
}

// DomainRefused returns how many stanzas were refused since start because
// their sender's domain is outside Config.DeviceDomains.
func (c *Conn) DomainRefused() uint64 { return c.domainRefused.Load() }

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
	cause := c.lastErr
	c.mu.Unlock()
	if sess == nil {
		return unavailable(cause)
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
		return unavailable(sess.err)
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

func unavailable(cause error) error {
	msg := "the XMPP stream is not connected"
	if cause != nil {
		msg += ": " + cause.Error()
	}
	return &iotgate.Error{Code: iotgate.EUnavailable, Detail: "xmpp_unavailable", Message: msg}
}

// pendingIQ is an IQ waiting for its reply.
type pendingIQ struct {
	from  string // who must answer: the normalized 'to' of the request
	sess  *session
	reply chan *Stanza
}

// SendIQ sends an IQ get or set and waits for its reply, which is returned
// whether it is a result or an error (see Stanza.StanzaError). The id is
// replaced by an unguessable one, and a reply counts only if it comes from
// the entity the IQ was sent to. Errors: unavailable (xmpp_unavailable) when
// the stream is down or drops before the reply, timeout when ctx ends first,
// too_many_requests when MaxPendingIQs are already waiting, invalid for a bad
// stanza.
func (c *Conn) SendIQ(ctx context.Context, st *Stanza) (*Stanza, error) {
	if err := c.checkFrom(st); err != nil {
		return nil, err
	}
	c.mu.Lock()
	sess := c.sess
	cause := c.lastErr
	c.mu.Unlock()
	if sess == nil {
		return nil, unavailable(cause)
	}
	return c.sendIQOn(ctx, sess, st)
}

func (c *Conn) sendIQOn(ctx context.Context, sess *session, st *Stanza) (*Stanza, error) {
	if st.Kind != KindIQ || (st.Type != TypeGet && st.Type != TypeSet) {
		return nil, iotgate.Errorf(iotgate.EInvalid, "SendIQ needs an IQ get or set")
	}
	if st.From == "" {
		st.From = c.cfg.Domain
	}
	st.ID = crand.Text()
	p := &pendingIQ{from: normJID(st.To), sess: sess, reply: make(chan *Stanza, 1)}

	c.mu.Lock()
	if len(c.pending) >= c.cfg.MaxPendingIQs {
		c.mu.Unlock()
		return nil, &iotgate.Error{Code: iotgate.ETooMany, Message: fmt.Sprintf("%d IQs are already waiting for replies", c.cfg.MaxPendingIQs)}
	}
	c.pending[st.ID] = p
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.pending, st.ID)
		c.mu.Unlock()
	}()

	if err := c.enqueue(ctx, sess, st.AppendXML(make([]byte, 0, 128+len(st.Inner)))); err != nil {
		return nil, err
	}
	select {
	case r := <-p.reply:
		return r, nil
	case <-sess.done:
		return nil, unavailable(sess.err)
	case <-ctx.Done():
		return nil, &iotgate.Error{Code: iotgate.ETimeout, Message: "no reply to IQ in time", Err: ctx.Err()}
	}
}

// deliverReply hands an IQ result or error to its waiter, if the id is known
// and the sender is the entity the request went to; anything else is dropped.
func (c *Conn) deliverReply(sess *session, st *Stanza) {
	c.mu.Lock()
	p := c.pending[st.ID]
	if p != nil && p.sess == sess && p.from == normJID(st.From) {
		delete(c.pending, st.ID)
	} else {
		p = nil
	}
	c.mu.Unlock()
	if p == nil {
		c.log.Debug("dropped IQ reply that matches no pending request", "id", st.ID, "from", st.From)
		return
	}
	p.reply <- st
}

// PendingIQs returns how many IQs are waiting for replies.
func (c *Conn) PendingIQs() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.pending)
}

// normJID returns the canonical form of a JID for comparison, or s itself
// when it doesn't parse (then only an identical string matches).
func normJID(s string) string {
	j, err := jid.Parse(s)
	if err != nil {
		return "\x00" + s
	}
	return j.String()
}
