// Package device is an XMPP client that behaves like an IoT device: it logs
// in over c2s (STARTTLS, SASL SCRAM), subscribes to iotgate's presence and
// approves iotgate's subscription, sends readings to iotgate by message or
// IQ, answers commands, and reports what iotgate sends back. Tests, the
// device simulator and the benchmark use it; it is built on
// mellium.im/xmpp and shares no code with iotgate's component, so it
// checks iotgate from the outside.
//
// mellium negotiates the stream; reading it is ours, because mellium's
// Serve answers every IQ its handler leaves unanswered at once with
// service-unavailable, and a simulated device must be able to answer a
// command late (or never) without holding up the rest of its stream.
// Bounding writes in time is ours too (see Client.send): mellium's way,
// a deadline set from the caller's context by a goroutine of its own, can
// fire after the write it was meant for and break a later one.
//
// It imports no package of the project, on purpose.
package device

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"mellium.im/sasl"
	"mellium.im/xmpp"
	"mellium.im/xmpp/jid"
	"mellium.im/xmpp/stanza"
)

// Options configure a Client.
type Options struct {
	// Addr is the server's c2s host:port.
	Addr string
	// JID is the device's JID. The server assigns the resource (a
	// resourcepart given here is not asked for: mellium's client binding
	// can't); JID returns the bound one.
	JID      string
	Password string
	// TLS: the server's certificate is not verified unless Verify is set
	// (throwaway servers use self-signed ones).
	Verify bool
	// IQHandler answers IQ get/set sent to the device (commands). Each
	// request is handled in a goroutine of its own (at most
	// MaxPendingIQs at once; beyond that the device answers
	// wait/resource-constraint), so a slow handler delays only its own
	// answer. A Reply of type NoReply sends nothing. nil answers
	// cancel/feature-not-implemented.
	IQHandler func(iq IQ) Reply
	// Approve lists whose subscription requests the device approves as
	// they arrive: bare JIDs or domains ("iot.example.com"), or "*" for
	// anyone. Other requests are only reported on Presences. Subscribe
	// adds the component it subscribes to.
	Approve []string
	// WriteTimeout bounds each write to the server (default
	// DefaultWriteTimeout). A write that doesn't complete in time ends the
	// session: an interrupted TLS write can't be resumed.
	WriteTimeout time.Duration
}

// DefaultWriteTimeout is the default Options.WriteTimeout.
const DefaultWriteTimeout = 10 * time.Second

// MaxPendingIQs bounds the IQ requests a Client handles at once.
const MaxPendingIQs = 64

// NoReply is the Reply type of an IQ the device leaves unanswered.
const NoReply = "none"

// IQ is an IQ request the device received.
type IQ struct {
	ID, From, To, Type string
	// Payload is the request's child element, re-serialized.
	Payload string
}

// Reply is the answer to an IQ, either way.
type Reply struct {
	// Type is "result" or "error" ("" counts as "result"); in an
	// IQHandler's answer, NoReply sends nothing.
	Type string
	// Payload is the raw XML of a result payload (optional).
	Payload string
	// For errors.
	ErrorType stanza.ErrorType
	Condition stanza.Condition
	Text      string
}

// Message is a message the device received.
type Message struct {
	ID, From, Type string
	Error          *stanza.Error
	Body           string
}

// Presence is a presence stanza the device received.
type Presence struct {
	From, To string
	// Type is "" (available), "unavailable", "subscribe", "subscribed",
	// "unsubscribe", "unsubscribed", "probe" or "error".
	Type     string
	Show     string
	Status   string
	Priority int
	Error    *stanza.Error
	// Approved is set on a subscription request the device approved.
	Approved bool
}

// ErrClosed is returned by SendIQ when the session ended before the answer.
var ErrClosed = errors.New("device: session closed")

// Client is a logged-in device.
type Client struct {
	s    *xmpp.Session
	conn net.Conn
	jid  jid.JID
	opts Options

	msgs      chan Message
	presences chan Presence
	handlers  chan struct{} // one token per IQ request being handled
	writing   chan struct{} // the write token (see send)

	mu       sync.Mutex
	pending  map[string]pendingIQ
	approve  map[string]bool
	closing  bool
	writeErr error // the write failure that ended the session

	done chan struct{}
	err  error
}

// pendingIQ is an IQ the device sent and waits an answer for.
type pendingIQ struct {
	to jid.JID
	c  chan Reply
}

// Dial logs the device in. It does not send presence: until SendPresence
// or SendAvailable, the server delivers no presence to the device and
// iotgate sees it offline. ctx bounds the log-in only.
func Dial(ctx context.Context, opts Options) (*Client, error) {
	j, err := jid.Parse(opts.JID)
	if err != nil {
		return nil, fmt.Errorf("device JID: %w", err)
	}
	conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", opts.Addr)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", opts.Addr, err)
	}
	features := []xmpp.StreamFeature{
		xmpp.StartTLS(&tls.Config{ServerName: j.Domainpart(), InsecureSkipVerify: !opts.Verify}), //nolint:gosec // opt-in verification for throwaway servers
		xmpp.SASL("", opts.Password, sasl.ScramSha256, sasl.ScramSha1, sasl.Plain),
		xmpp.BindResource(),
	}
	c, err := start(ctx, conn, j, opts, features)
	if err != nil {
		return nil, fmt.Errorf("log in as %s: %w", j, err)
	}
	return c, nil
}

// start negotiates the stream on conn and starts reading it; it closes
// conn if it fails.
//
// mellium bounds the negotiation with ctx by a goroutine that sets a past
// deadline on conn when ctx ends, and that goroutine may still be
// waiting when ctx ends later, after Dial returned (a caller's deferred
// cancel): it would then interrupt a read or write of the established
// session. So mellium gets a context that never ends, and ctx is
// enforced here, with a deadline and a close that both stop with the
// negotiation.
func start(ctx context.Context, conn net.Conn, j jid.JID, opts Options, features []xmpp.StreamFeature) (*Client, error) {
	if d, ok := ctx.Deadline(); ok {
		if err := conn.SetDeadline(d); err != nil {
			conn.Close()
			return nil, err
		}
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	s, err := xmpp.NewClientSession(context.WithoutCancel(ctx), j.Bare(), conn, features...)
	if !stop() {
		// ctx ended: conn is closed, whatever the negotiation returned.
		if err == nil {
			err = ctx.Err()
		}
	}
	if err == nil {
		err = conn.SetDeadline(time.Time{})
	}
	if err != nil {
		conn.Close()
		return nil, err
	}
	if opts.WriteTimeout <= 0 {
		opts.WriteTimeout = DefaultWriteTimeout
	}
	c := &Client{
		s: s, conn: conn, jid: s.LocalAddr(), opts: opts,
		msgs:      make(chan Message, 1024),
		presences: make(chan Presence, 1024),
		handlers:  make(chan struct{}, MaxPendingIQs),
		writing:   make(chan struct{}, 1),
		pending:   make(map[string]pendingIQ),
		approve:   make(map[string]bool),
		done:      make(chan struct{}),
	}
	for _, a := range opts.Approve {
		c.approve[strings.ToLower(a)] = true
	}
	go c.serve()
	return c, nil
}

// JID returns the full JID the device is bound to.
func (c *Client) JID() string { return c.jid.String() }

// Messages returns messages the device received (errors included). Beyond
// 1024 unread, newer ones are dropped.
func (c *Client) Messages() <-chan Message { return c.msgs }

// Presences returns presence stanzas the device received, subscription
// requests included (those it approved are marked Approved). Beyond 1024
// unread, newer ones are dropped.
func (c *Client) Presences() <-chan Presence { return c.presences }

// Done is closed when the session ends.
func (c *Client) Done() <-chan struct{} { return c.done }

// Err returns why the session ended once Done is closed: nil after Close
// or a clean close by the server; a failed write (see
// Options.WriteTimeout) or read otherwise.
func (c *Client) Err() error {
	select {
	case <-c.done:
		return c.err
	default:
		return nil
	}
}

// Close logs out: it ends the stream, waits a moment for the server to end
// its side (so that the server sees a clean logout), and closes the
// connection.
func (c *Client) Close() error {
	c.mu.Lock()
	c.closing = true
	c.mu.Unlock()
	err := c.closeStream()
	select {
	case <-c.done:
	case <-time.After(time.Second):
	}
	c.conn.Close()
	<-c.done
	return err
}

// SendPresence sends available presence (or the given type, e.g.
// "subscribe", to someone).
func (c *Client) SendPresence(ctx context.Context, to, typ string) error {
	p := stanza.Presence{Type: stanza.PresenceType(typ)}
	if to != "" {
		j, err := jid.Parse(to)
		if err != nil {
			return fmt.Errorf("presence to: %w", err)
		}
		p.To = j
	}
	return c.send(ctx, p.Wrap(nil))
}

// SendAvailable broadcasts available presence with a priority (-128 to
// 127; iotgate sends commands to the highest) and an optional status text.
func (c *Client) SendAvailable(ctx context.Context, priority int, status string) error {
	if priority < -128 || priority > 127 {
		return fmt.Errorf("presence priority %d: want -128 to 127", priority)
	}
	payload := fmt.Sprintf("<priority>%d</priority>", priority)
	if status != "" {
		payload += "<status>" + escape(status) + "</status>"
	}
	r, err := rawTokens(payload)
	if err != nil {
		return err
	}
	return c.send(ctx, stanza.Presence{}.Wrap(r))
}

// Subscribe asks component (iotgate's domain) for a presence subscription
// and arranges for iotgate's own request to be approved: iotgate answers a
// registered device with subscribed and a subscribe of its own, which the
// device approves as it arrives (a server delivers it only once the device
// is available), and in advance (RFC 6121 §3.4 pre-approval, which Prosody
// honours and ejabberd ignores). Call SendAvailable next; then iotgate
// sees the device online.
// Subscribe does not wait for iotgate's answer: the server delivers it
// only to an available resource, and not at all when the subscription
// already exists. It appears on Presences (unsubscribed: the device is not
// registered with iotgate).
func (c *Client) Subscribe(ctx context.Context, component string) error {
	j, err := jid.Parse(component)
	if err != nil {
		return fmt.Errorf("component: %w", err)
	}
	j = j.Bare() // subscriptions are between bare JIDs
	c.mu.Lock()
	c.approve[strings.ToLower(j.String())] = true
	c.mu.Unlock()
	if err := c.send(ctx, stanza.Presence{To: j, Type: stanza.SubscribePresence}.Wrap(nil)); err != nil {
		return fmt.Errorf("subscribe to %s: %w", j, err)
	}
	if err := c.send(ctx, stanza.Presence{To: j, Type: stanza.SubscribedPresence}.Wrap(nil)); err != nil {
		return fmt.Errorf("pre-approve %s: %w", j, err)
	}
	return nil
}

// SendMessage sends a normal message to `to` carrying payload, a raw XML
// element whose namespaces are declared with xmlns on the element itself.
func (c *Client) SendMessage(ctx context.Context, to, id, payload string) error {
	r, err := rawTokens(payload)
	if err != nil {
		return err
	}
	j, err := jid.Parse(to)
	if err != nil {
		return fmt.Errorf("message to: %w", err)
	}
	msg := stanza.Message{To: j, ID: id, Type: stanza.NormalMessage}
	return c.send(ctx, msg.Wrap(r))
}

// SendIQ sends an IQ of type typ carrying payload and waits for the
// answer, which counts only if it comes from `to`. It returns ctx's error
// if ctx ends first, and ErrClosed if the session does.
func (c *Client) SendIQ(ctx context.Context, typ, to, payload string) (Reply, error) {
	r, err := rawTokens(payload)
	if err != nil {
		return Reply{}, err
	}
	j, err := jid.Parse(to)
	if err != nil {
		return Reply{}, fmt.Errorf("IQ to: %w", err)
	}
	id := randomID()
	ch := make(chan Reply, 1)
	c.mu.Lock()
	c.pending[id] = pendingIQ{to: j, c: ch}
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.pending, id)
		c.mu.Unlock()
	}()
	if err := c.send(ctx, stanza.IQ{ID: id, To: j, Type: stanza.IQType(typ)}.Wrap(r)); err != nil {
		return Reply{}, fmt.Errorf("send IQ: %w", err)
	}
	select {
	case rep := <-ch:
		return rep, nil
	case <-ctx.Done():
		return Reply{}, ctx.Err()
	case <-c.done:
		return Reply{}, ErrClosed
	}
}

// send writes one stanza. ctx bounds the wait for the stream (another
// write in progress); the write itself is bounded by Options.WriteTimeout
// only, because interrupting it would break the stream for good: a TLS
// connection refuses every write after one timed out. A failed write ends
// the session (Done, Err), so that a device that can no longer answer
// doesn't look alive.
//
// mellium's Send is given a context that never ends, on purpose: for a
// context that can end, it starts a goroutine that sets a past write
// deadline on the connection when ctx ends, and that goroutine can still
// be waiting when Send has returned and the caller cancels ctx; it then
// interrupts whatever write is in progress on the connection, which from
// then on refuses every write while reads go on. That is how a simulated
// device stopped answering for good under load, its session still up (#17).
func (c *Client) send(ctx context.Context, r xml.TokenReader) error {
	select {
	case c.writing <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	case <-c.done:
		return ErrClosed
	}
	defer func() { <-c.writing }()
	if err := ctx.Err(); err != nil {
		return err
	}
	select {
	case <-c.done:
		return ErrClosed
	default:
	}
	if err := c.conn.SetWriteDeadline(time.Now().Add(c.opts.WriteTimeout)); err != nil {
		c.fail(fmt.Errorf("write: %w", err))
		return err
	}
	if err := c.s.Send(context.Background(), r); err != nil {
		err = fmt.Errorf("write: %w", err)
		c.fail(err)
		return err
	}
	// Clear the deadline: a write the TLS layer makes on its own while
	// reading (a key update) must not meet a deadline long past.
	if err := c.conn.SetWriteDeadline(time.Time{}); err != nil {
		c.fail(fmt.Errorf("write: %w", err))
		return err
	}
	return nil
}

// closeStream ends the output stream, as a write of its own.
func (c *Client) closeStream() error {
	c.writing <- struct{}{}
	defer func() { <-c.writing }()
	_ = c.conn.SetWriteDeadline(time.Now().Add(c.opts.WriteTimeout))
	return c.s.Close()
}

// fail ends the session after a failed write: closing the connection ends
// the read loop, which reports err.
func (c *Client) fail(err error) {
	c.mu.Lock()
	if c.writeErr == nil {
		c.writeErr = err
	}
	c.mu.Unlock()
	c.conn.Close()
}

func randomID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// escape escapes text for element content.
func escape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}
