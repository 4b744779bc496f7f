package device

import (
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"mellium.im/xmlstream"
	"mellium.im/xmpp/jid"
	"mellium.im/xmpp/stanza"
)

// maxStanzaTokens bounds the tokens of one received stanza; the server
// bounds stanza sizes too, this only keeps a broken peer from costing us
// unbounded memory.
const maxStanzaTokens = 1 << 16

// serve reads the stream until it ends, then closes Done.
func (c *Client) serve() {
	err := c.read()
	c.mu.Lock()
	closing, writeErr := c.closing, c.writeErr
	c.mu.Unlock()
	switch {
	case closing:
		err = nil
	case writeErr != nil:
		err = writeErr // the read failed because fail closed the connection
	case errors.Is(err, io.EOF):
		err = nil
	}
	_ = c.closeStream()
	c.conn.Close()
	c.err = err
	close(c.done)
}

// read dispatches stanzas until the stream ends (io.EOF) or fails.
func (c *Client) read() error {
	r := c.s.TokenReader()
	defer r.Close()
	for {
		tok, err := r.Token()
		if err != nil {
			return err
		}
		start, ok := tok.(xml.StartElement)
		if !ok {
			continue // whitespace keepalives
		}
		st, err := readStanza(start, r)
		if err != nil {
			return err
		}
		switch start.Name.Local {
		case "iq":
			c.handleIQ(st)
		case "message":
			c.handleMessage(st)
		case "presence":
			c.handlePresence(st)
		}
	}
}

// inStanza is a received stanza, kept as tokens.
type inStanza struct {
	start xml.StartElement
	toks  []xml.Token // from the start element to its end, both included
}

// readStanza reads the rest of the element start opened.
func readStanza(start xml.StartElement, r xml.TokenReader) (inStanza, error) {
	st := inStanza{start: start, toks: []xml.Token{start.Copy()}}
	for depth := 1; depth > 0; {
		tok, err := r.Token()
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return st, fmt.Errorf("read stanza: %w", err)
		}
		switch tok.(type) {
		case xml.StartElement:
			depth++
		case xml.EndElement:
			depth--
		}
		if len(st.toks) >= maxStanzaTokens {
			return st, fmt.Errorf("read stanza: more than %d tokens", maxStanzaTokens)
		}
		st.toks = append(st.toks, xml.CopyToken(tok))
	}
	return st, nil
}

func (st inStanza) attr(name string) string {
	for _, a := range st.start.Attr {
		if a.Name.Local == name && a.Name.Space == "" {
			return a.Value
		}
	}
	return ""
}

// decode unmarshals the stanza into v.
func (st inStanza) decode(v any) error {
	return xml.NewTokenDecoder(replay(st.toks)).Decode(v)
}

// payload re-serializes the stanza's first child element other than
// <error/>, or returns "" if there is none.
func (st inStanza) payload() (string, error) {
	depth := 0
	for i, tok := range st.toks {
		switch t := tok.(type) {
		case xml.StartElement:
			depth++
			if depth == 2 && t.Name.Local != "error" {
				return serialize(st.toks[i:])
			}
		case xml.EndElement:
			depth--
		}
	}
	return "", nil
}

// serialize writes the element toks starts with. The namespace of each
// element comes from its name: an element in its parent's namespace is
// written without xmlns, others with it; the xmlns attributes the decoder
// left in place are dropped, or the encoder would write them twice.
func serialize(toks []xml.Token) (string, error) {
	var buf bytes.Buffer
	e := xml.NewEncoder(&buf)
	// The default namespace in scope and the names as written, by depth.
	var scope []string
	var names []xml.Name
	for _, tok := range toks {
		switch t := tok.(type) {
		case xml.StartElement:
			parent := ""
			if len(scope) > 0 {
				parent = scope[len(scope)-1]
			}
			attrs := make([]xml.Attr, 0, len(t.Attr))
			for _, a := range t.Attr {
				if a.Name.Space == "xmlns" || a.Name.Space == "" && a.Name.Local == "xmlns" {
					continue
				}
				attrs = append(attrs, a)
			}
			name := t.Name
			switch {
			case name.Space == parent:
				name.Space = "" // inherited
			case name.Space == "":
				attrs = append(attrs, xml.Attr{Name: xml.Name{Local: "xmlns"}, Value: ""})
			}
			scope = append(scope, t.Name.Space)
			names = append(names, name)
			tok = xml.StartElement{Name: name, Attr: attrs}
		case xml.EndElement:
			if len(names) == 0 {
				return "", errors.New("serialize payload: unbalanced element")
			}
			tok = xml.EndElement{Name: names[len(names)-1]}
			scope, names = scope[:len(scope)-1], names[:len(names)-1]
		}
		if err := e.EncodeToken(tok); err != nil {
			return "", fmt.Errorf("serialize payload: %w", err)
		}
		if len(names) == 0 {
			break
		}
	}
	if err := e.Flush(); err != nil {
		return "", fmt.Errorf("serialize payload: %w", err)
	}
	return buf.String(), nil
}

// replay reads toks again.
func replay(toks []xml.Token) xml.TokenReader {
	i := 0
	return xmlstream.ReaderFunc(func() (xml.Token, error) {
		if i >= len(toks) {
			return nil, io.EOF
		}
		i++
		return toks[i-1], nil
	})
}

func (c *Client) handleIQ(st inStanza) {
	switch st.attr("type") {
	case "result", "error":
		c.answerPending(st)
	case "get", "set":
		c.serveIQ(st)
	}
}

// answerPending hands an IQ answer to the SendIQ waiting for it. An answer
// from anyone but the request's addressee is ignored.
func (c *Client) answerPending(st inStanza) {
	id := st.attr("id")
	c.mu.Lock()
	p, ok := c.pending[id]
	c.mu.Unlock()
	if !ok || !c.sameSender(st.attr("from"), p.to) {
		return
	}
	var v struct {
		Err *stanza.Error `xml:"error"`
	}
	if err := st.decode(&v); err != nil {
		return
	}
	rep := Reply{Type: st.attr("type")}
	if v.Err != nil {
		rep.ErrorType, rep.Condition = v.Err.Type, v.Err.Condition
		rep.Text = errorText(v.Err)
	} else {
		rep.Payload, _ = st.payload()
	}
	select {
	case p.c <- rep:
	default:
	}
}

// sameSender reports whether from (as received) is the JID to. The
// server answers for the account itself without a from.
func (c *Client) sameSender(from string, to jid.JID) bool {
	if from == "" {
		return to.Equal(c.jid.Bare()) || to.Equal(c.jid.Domain())
	}
	f, err := jid.Parse(from)
	return err == nil && f.Equal(to)
}

// errorText returns the error's text in any language, preferring none.
func errorText(e *stanza.Error) string {
	if t, ok := e.Text[""]; ok {
		return t
	}
	for _, t := range e.Text {
		return t
	}
	return ""
}

// serveIQ answers an IQ get/set in a goroutine of its own.
func (c *Client) serveIQ(st inStanza) {
	iq, err := stanza.NewIQ(st.start)
	if err != nil {
		return
	}
	payload, err := st.payload()
	if err != nil {
		c.reply(iq, Reply{Type: "error", ErrorType: stanza.Modify, Condition: stanza.BadRequest})
		return
	}
	if c.isRosterPush(st) {
		// RFC 6121 §2.1.6: acknowledge; the device keeps no roster.
		c.reply(iq, Reply{Type: "result"})
		return
	}
	req := IQ{ID: iq.ID, From: iq.From.String(), To: iq.To.String(), Type: string(iq.Type), Payload: payload}
	select {
	case c.handlers <- struct{}{}:
	default:
		c.reply(iq, Reply{Type: "error", ErrorType: stanza.Wait, Condition: stanza.ResourceConstraint, Text: "too many requests in progress"})
		return
	}
	go func() {
		defer func() { <-c.handlers }()
		rep := Reply{Type: "error", ErrorType: stanza.Cancel, Condition: stanza.FeatureNotImplemented, Text: "this device does not support that command"}
		if c.opts.IQHandler != nil {
			rep = c.opts.IQHandler(req)
		}
		c.reply(iq, rep)
	}()
}

// isRosterPush reports whether st is a roster push from the device's own
// account. Servers push only to resources that asked for the roster, but
// answering costs nothing.
func (c *Client) isRosterPush(st inStanza) bool {
	if st.attr("type") != "set" || !c.sameSender(st.attr("from"), c.jid.Bare()) {
		return false
	}
	for _, tok := range st.toks[1:] {
		if t, ok := tok.(xml.StartElement); ok {
			return t.Name.Space == "jabber:iq:roster" && t.Name.Local == "query"
		}
	}
	return false
}

// reply sends rep as the answer to iq, unless rep is NoReply.
func (c *Client) reply(iq stanza.IQ, rep Reply) {
	if rep.Type == NoReply {
		return
	}
	var out xml.TokenReader
	if rep.Type == "error" {
		se := stanza.Error{Type: rep.ErrorType, Condition: rep.Condition}
		if rep.Text != "" {
			se.Text = map[string]string{"": rep.Text}
		}
		out = iq.Error(se)
	} else {
		r, err := rawTokens(rep.Payload)
		if err != nil {
			out = iq.Error(stanza.Error{Type: stanza.Cancel, Condition: stanza.InternalServerError})
		} else {
			out = iq.Result(r)
		}
	}
	_ = c.send(context.Background(), out) // a failed write ends the session, which Done and Err report
}

func (c *Client) handleMessage(st inStanza) {
	var m struct {
		Err  *stanza.Error `xml:"error"`
		Body string        `xml:"body"`
	}
	if err := st.decode(&m); err != nil {
		return
	}
	msg := Message{ID: st.attr("id"), From: st.attr("from"), Type: st.attr("type"), Error: m.Err, Body: m.Body}
	select {
	case c.msgs <- msg:
	default:
	}
}

func (c *Client) handlePresence(st inStanza) {
	var v struct {
		Show     string        `xml:"show"`
		Status   string        `xml:"status"`
		Priority string        `xml:"priority"`
		Err      *stanza.Error `xml:"error"`
	}
	if err := st.decode(&v); err != nil {
		return
	}
	p := Presence{From: st.attr("from"), To: st.attr("to"), Type: st.attr("type"), Show: v.Show, Status: v.Status, Error: v.Err}
	p.Priority, _ = strconv.Atoi(strings.TrimSpace(v.Priority))
	if p.Type == "subscribe" && c.approves(p.From) {
		from, _ := jid.Parse(p.From)
		err := c.send(context.Background(), stanza.Presence{To: from.Bare(), Type: stanza.SubscribedPresence}.Wrap(nil))
		p.Approved = err == nil
	}
	select {
	case c.presences <- p:
	default:
	}
}

// approves reports whether a subscription request from `from` is approved
// at once.
func (c *Client) approves(from string) bool {
	j, err := jid.Parse(from)
	if err != nil {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.approve["*"] || c.approve[strings.ToLower(j.Bare().String())] || c.approve[strings.ToLower(j.Domainpart())]
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
	return replay(toks), nil
}
