package component

import (
	"context"
	crand "crypto/rand"
	"fmt"

	"mellium.im/xmpp/jid"

	"github.com/iotgate/iotgate"
)

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
// stanza. A caller that sets the id must make it unguessable and unique.
func (c *Conn) SendIQ(ctx context.Context, st *Stanza) (*Stanza, error) {
	if err := c.checkFrom(st); err != nil {
		return nil, err
	}
	c.mu.Lock()
	sess := c.sess
	why, cause := c.why, c.lastErr
	c.mu.Unlock()
	if sess == nil {
		return nil, unavailable(why, cause)
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
	if st.ID == "" {
		st.ID = crand.Text()
	}
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
		return nil, unavailable("the stream with the XMPP server was lost", sess.err)
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
	stray := c.onStray
	c.mu.Unlock()
	if p == nil {
		c.log.Debug("IQ reply that matches no pending request", "id", st.ID, "from", st.From)
		for _, f := range stray {
			f(st)
		}
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
