package component

import (
	"context"
	"encoding/xml"
	"strings"

	"mellium.im/xmpp/stanza"
)

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

// mux routes requests addressed to the component's domain itself to the
// built-in handler registered for them (as mellium's mux.ServeMux does, on
// iotgate's own Stanza): a table keyed by the stanza's kind and type and
// the name of its one child element. Built once by New, read only after.
type mux struct {
	domain string
	routes map[[2]string]map[xml.Name]builtinFunc // by kind and type, then by child
}

// builtinFunc answers st, whose only child is q, on the read loop: what
// may be slow it hands off.
type builtinFunc func(ctx context.Context, sess *session, st *Stanza, q Element)

func newMux(domain string) *mux {
	return &mux{domain: domain, routes: make(map[[2]string]map[xml.Name]builtinFunc)}
}

// handle registers f for stanzas of kind and type whose one child is
// {ns}local.
func (m *mux) handle(kind, typ, ns, local string, f builtinFunc) {
	k := [2]string{kind, typ}
	if m.routes[k] == nil {
		m.routes[k] = make(map[xml.Name]builtinFunc)
	}
	m.routes[k][xml.Name{Space: ns, Local: local}] = f
}

// serve runs the built-in handler for st, if one is registered and st is
// addressed to the component's domain itself, and reports whether it ran.
// Kinds and types with no route (a reading's IQ set) cost a map lookup,
// not a parse.
func (m *mux) serve(ctx context.Context, sess *session, st *Stanza) bool {
	byName := m.routes[[2]string{st.Kind, st.Type}]
	if byName == nil || normJID(st.To) != m.domain {
		return false
	}
	kids, err := st.Children()
	if err != nil || len(kids) != 1 {
		return false
	}
	f := byName[kids[0].Name]
	if f == nil {
		return false
	}
	f(ctx, sess, st, kids[0])
	return true
}

// dispatch routes one incoming stanza: replies to their waiters, requests
// from refused domains away, then to the built-ins, and what is left to the
// installed Handler (the reading handler), the fallback.
func (c *Conn) dispatch(ctx context.Context, sess *session, st *Stanza) {
	if st.Kind == KindIQ {
		switch st.Type {
		case TypeResult, TypeError:
			c.deliverReply(sess, st)
			return
		case TypeGet, TypeSet:
			if c.refuseDomain(sess, st) || c.builtins.serve(ctx, sess, st) {
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
	bare, err := st.bareFrom()
	if err != nil {
		// Not the allow-list's business: the handlers refuse it.
		return false
	}
	// A bare JID is domain or local@domain, and a localpart holds no '@'.
	_, d, ok := strings.Cut(bare, "@")
	if !ok {
		d = bare
	}
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
