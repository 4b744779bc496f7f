// Package device is an XMPP client that behaves like an IoT device: it logs
// in over c2s (STARTTLS, SASL SCRAM), sends readings to iotgate by message or
// IQ, and receives what iotgate sends back. Tests, the device simulator and
// the benchmark use it; it is built on mellium.im/xmpp and shares no code
// with iotgate's component, so it checks iotgate from the outside.
package device

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"

	"mellium.im/sasl"
	"mellium.im/xmlstream"
	"mellium.im/xmpp"
	"mellium.im/xmpp/jid"
	"mellium.im/xmpp/stanza"
)

// Options configure a Client.
type Options struct {
	// Addr is the server's c2s host:port.
	Addr string
	// JID is the device's bare or full JID; a resource is bound if absent.
	JID      string
	Password string
	// TLS: the server's certificate is not verified unless Verify is set
	// (throwaway servers use self-signed ones).
	Verify bool
	// IQHandler answers IQ get/set sent to the device (commands); nil
	// answers feature-not-implemented.
	IQHandler func(iq IQ) Reply
}

// IQ is an IQ request the device received.
type IQ struct {
	ID, From, To, Type string
	// Payload is the request's child element, re-serialized.
	Payload string
}

// Reply is the answer to an IQ, either way.
type Reply struct {
	// Type is "result" or "error".
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

// Client is a logged-in device.
type Client struct {
	s    *xmpp.Session
	conn net.Conn
	jid  jid.JID
	opts Options

	msgs chan Message
	done chan struct{}
	err  error
	once sync.Once
}

// Dial logs the device in.
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
	}
	if j.Resourcepart() == "" {
		features = append(features, xmpp.BindResource())
	} else {
		features = append(features, xmpp.BindCustom(func(jid.JID, string) (jid.JID, error) { return j, nil }))
	}
	s, err := xmpp.NewClientSession(ctx, j.Bare(), conn, features...)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("log in as %s: %w", j, err)
	}
	c := &Client{s: s, conn: conn, jid: s.LocalAddr(), opts: opts, msgs: make(chan Message, 1024), done: make(chan struct{})}
	go func() {
		err := s.Serve(xmpp.HandlerFunc(c.handle))
		c.once.Do(func() { c.err = err; close(c.done) })
	}()
	return c, nil
}

// JID returns the full JID the device is bound to.
func (c *Client) JID() string { return c.jid.String() }

// Messages returns messages the device received (errors included). When
// nobody reads them, the oldest are dropped beyond 1024.
func (c *Client) Messages() <-chan Message { return c.msgs }

// Done is closed when the session ends.
func (c *Client) Done() <-chan struct{} { return c.done }

// Close logs out.
func (c *Client) Close() error {
	err := c.s.Close()
	c.conn.Close()
	return err
}

// SendPresence sends available presence (or the given type, e.g.
// "subscribe", to someone).
func (c *Client) SendPresence(ctx context.Context, to, typ string) error {
	p := stanza.Presence{Type: stanza.PresenceType(typ)}
	if to != "" {
		p.To = jid.MustParse(to)
	}
	return c.s.Send(ctx, p.Wrap(nil))
}

// SendMessage sends a normal message to `to` carrying payload, a raw XML
// element whose namespaces are declared with xmlns on the element itself.
func (c *Client) SendMessage(ctx context.Context, to, id, payload string) error {
	r, err := rawTokens(payload)
	if err != nil {
		return err
	}
	msg := stanza.Message{To: jid.MustParse(to), ID: id, Type: stanza.NormalMessage}
	return c.s.Send(ctx, msg.Wrap(r))
}

// SendIQ sends an IQ of type typ carrying payload and waits for the answer.
func (c *Client) SendIQ(ctx context.Context, typ, to, payload string) (Reply, error) {
	r, err := rawTokens(payload)
	if err != nil {
		return Reply{}, err
	}
	iq := stanza.IQ{To: jid.MustParse(to), Type: stanza.IQType(typ)}
	resp, err := c.s.SendIQ(ctx, iq.Wrap(r))
	if err != nil {
		return Reply{}, err
	}
	defer resp.Close()
	var v struct {
		Type string        `xml:"type,attr"`
		Err  *stanza.Error `xml:"error"`
	}
	if err := xml.NewTokenDecoder(resp).Decode(&v); err != nil {
		return Reply{}, fmt.Errorf("decode IQ reply: %w", err)
	}
	rep := Reply{Type: v.Type}
	if v.Err != nil {
		rep.ErrorType, rep.Condition = v.Err.Type, v.Err.Condition
		rep.Text = v.Err.Text[""]
	}
	return rep, nil
}

func (c *Client) handle(t xmlstream.TokenReadEncoder, start *xml.StartElement) error {
	switch start.Name.Local {
	case "message":
		var m struct {
			ID   string        `xml:"id,attr"`
			From string        `xml:"from,attr"`
			Type string        `xml:"type,attr"`
			Err  *stanza.Error `xml:"error"`
			Body string        `xml:"body"`
		}
		if err := xml.NewTokenDecoder(xmlstream.MultiReader(xmlstream.Token(*start), t)).Decode(&m); err != nil {
			return nil
		}
		msg := Message{ID: m.ID, From: m.From, Type: m.Type, Error: m.Err, Body: m.Body}
		select {
		case c.msgs <- msg:
		default:
		}
		return nil
	case "iq":
		iq, err := stanza.NewIQ(*start)
		if err != nil || (iq.Type != stanza.GetIQ && iq.Type != stanza.SetIQ) {
			return nil
		}
		payload, err := innerXML(t)
		if err != nil {
			return nil
		}
		req := IQ{ID: iq.ID, From: iq.From.String(), To: iq.To.String(), Type: string(iq.Type), Payload: payload}
		rep := Reply{Type: "error", ErrorType: stanza.Cancel, Condition: stanza.FeatureNotImplemented, Text: "this device does not support that command"}
		if c.opts.IQHandler != nil {
			rep = c.opts.IQHandler(req)
		}
		return writeReply(t, iq, rep)
	}
	return nil
}

func writeReply(t xmlstream.TokenReadEncoder, iq stanza.IQ, rep Reply) error {
	if rep.Type == "error" {
		se := stanza.Error{Type: rep.ErrorType, Condition: rep.Condition}
		if rep.Text != "" {
			se.Text = map[string]string{"": rep.Text}
		}
		_, err := xmlstream.Copy(t, iq.Error(se))
		return err
	}
	var payload xml.TokenReader
	if rep.Payload != "" {
		r, err := rawTokens(rep.Payload)
		if err != nil {
			return err
		}
		payload = r
	}
	_, err := xmlstream.Copy(t, iq.Result(payload))
	return err
}

// innerXML re-serializes the rest of the current element's children.
func innerXML(r xml.TokenReader) (string, error) {
	var buf bytes.Buffer
	e := xml.NewEncoder(&buf)
	if _, err := xmlstream.Copy(e, xmlstream.Inner(r)); err != nil {
		return "", err
	}
	if err := e.Flush(); err != nil {
		return "", err
	}
	return buf.String(), nil
}

// rawTokens turns raw XML into tokens without namespace processing, so that
// xmlns attributes pass through as written.
func rawTokens(payload string) (xml.TokenReader, error) {
	if strings.TrimSpace(payload) == "" {
		return nil, nil
	}
	d := xml.NewDecoder(strings.NewReader(payload))
	var toks []xml.Token
	for {
		tok, err := d.RawToken()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("payload: %w", err)
		}
		toks = append(toks, xml.CopyToken(tok))
	}
	i := 0
	return xmlstream.ReaderFunc(func() (xml.Token, error) {
		if i >= len(toks) {
			return nil, io.EOF
		}
		i++
		return toks[i-1], nil
	}), nil
}
