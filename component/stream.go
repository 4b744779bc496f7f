package component

import (
	"context"
	"crypto/sha1" //nolint:gosec // XEP-0114 mandates SHA-1 for the handshake.
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"
)

// StreamError is an XMPP stream error (RFC 6120 §4.9) received from the
// server. The stream is gone after one.
type StreamError struct {
	Condition string
	Text      string
}

func (e *StreamError) Error() string {
	if e.Text != "" {
		return "stream error " + e.Condition + ": " + e.Text
	}
	return "stream error " + e.Condition
}

// explain says in an operator's words what a stream error means for a
// component serving domain.
func (e *StreamError) explain(domain string) string {
	switch e.Condition {
	case "not-authorized":
		return "the XMPP server refused the component secret (not-authorized): check IOTGATE_SECRET against component_secret in Prosody or the ejabberd_service password"
	case "conflict":
		return fmt.Sprintf("another connection already holds the component domain %s (conflict): another iotgate instance is connected, or the server still keeps an old connection; Prosody keeps the first unless component_conflict_resolve = \"kick_old\"", domain)
	case "host-unknown":
		return fmt.Sprintf("the XMPP server does not serve the component domain %s (host-unknown): declare Component %q in Prosody, or list it under the ejabberd_service hosts", domain, domain)
	case "system-shutdown":
		return "the XMPP server is shutting down (system-shutdown)"
	case "policy-violation":
		return "the XMPP server closed the stream for a policy violation (stanza too large or rate limit?)"
	}
	return e.Error()
}

// errPeerClosed means the server closed the stream with </stream:stream>.
var errPeerClosed = errors.New("the XMPP server closed the stream")

// stream is one established XEP-0114 stream over one TCP connection.
type stream struct {
	conn  net.Conn
	dec   *xml.Decoder
	limit *limitReader
	id    string
}

// dialStream connects to the server's component port, opens the stream and
// performs the handshake. The returned stream is ready for stanzas.
func dialStream(ctx context.Context, cfg *Config) (*stream, error) {
	dialer := net.Dialer{Timeout: cfg.DialTimeout, KeepAlive: cfg.KeepAlive}
	conn, err := dialer.DialContext(ctx, "tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", cfg.Addr, err)
	}
	s, err := openStream(ctx, conn, cfg)
	if err != nil {
		conn.Close()
		return nil, err
	}
	return s, nil
}

func openStream(ctx context.Context, conn net.Conn, cfg *Config) (*stream, error) {
	deadline := time.Now().Add(cfg.HandshakeTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	if err := conn.SetDeadline(deadline); err != nil {
		return nil, fmt.Errorf("set handshake deadline: %w", err)
	}
	// Abort the handshake at once when ctx ends.
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	defer stop()

	s := &stream{conn: conn, limit: &limitReader{r: conn, max: cfg.MaxStanzaBytes}}
	s.limit.reset()
	s.dec = newSafeDecoder(s.limit)

	header := `<?xml version='1.0'?><stream:stream xmlns='` + NSComponent +
		`' xmlns:stream='` + NSStream + `' to='` + EscapeText(cfg.Domain) + `'>`
	if _, err := io.WriteString(conn, header); err != nil {
		return nil, fmt.Errorf("send stream header: %w", err)
	}
	if err := s.readHeader(); err != nil {
		return nil, err
	}
	sum := sha1.Sum([]byte(s.id + cfg.Secret)) //nolint:gosec // mandated by XEP-0114
	if _, err := io.WriteString(conn, "<handshake>"+hex.EncodeToString(sum[:])+"</handshake>"); err != nil {
		return nil, fmt.Errorf("send handshake: %w", err)
	}
	if err := s.readHandshake(); err != nil {
		return nil, err
	}
	if err := conn.SetDeadline(time.Time{}); err != nil {
		return nil, fmt.Errorf("clear handshake deadline: %w", err)
	}
	return s, nil
}

func (s *stream) readHeader() error {
	for {
		tok, err := s.dec.Token()
		if err != nil {
			return fmt.Errorf("read stream header: %w", err)
		}
		switch t := tok.(type) {
		case xml.ProcInst, xml.CharData, xml.Comment:
			continue
		case xml.StartElement:
			if t.Name.Space != NSStream || t.Name.Local != "stream" {
				return fmt.Errorf("read stream header: unexpected <%s> from server", t.Name.Local)
			}
			for _, a := range t.Attr {
				if a.Name.Local == "id" && a.Name.Space == "" {
					s.id = a.Value
				}
			}
			if s.id == "" {
				// The server may still send a stream error (host-unknown)
				// before closing; read it to tell the operator why.
				var se *StreamError
				if _, err := s.next(); errors.As(err, &se) {
					return se
				}
				return errors.New("read stream header: server sent no stream id")
			}
			return nil
		default:
			return fmt.Errorf("read stream header: unexpected %T from server", tok)
		}
	}
}

func (s *stream) readHandshake() error {
	for {
		tok, err := s.dec.Token()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return fmt.Errorf("read handshake reply: %w", io.ErrUnexpectedEOF)
			}
			return fmt.Errorf("read handshake reply: %w", err)
		}
		switch t := tok.(type) {
		case xml.CharData:
			continue
		case xml.StartElement:
			if t.Name.Space == NSStream && t.Name.Local == "error" {
				return decodeStreamError(s.dec, &t)
			}
			if t.Name.Local != "handshake" {
				return fmt.Errorf("read handshake reply: unexpected <%s> from server", t.Name.Local)
			}
			if err := s.dec.Skip(); err != nil {
				return fmt.Errorf("read handshake reply: %w", err)
			}
			return nil
		case xml.EndElement:
			return fmt.Errorf("read handshake reply: %w", errPeerClosed)
		default:
			return fmt.Errorf("read handshake reply: unexpected %T from server", tok)
		}
	}
}

// next reads the next stanza. It returns a *StreamError when the server sends
// one, errPeerClosed on </stream:stream>, and other errors for broken XML or
// I/O.
func (s *stream) next() (*Stanza, error) {
	for {
		s.limit.reset()
		tok, err := s.dec.Token()
		if err != nil {
			return nil, err
		}
		switch t := tok.(type) {
		case xml.CharData: // whitespace keepalive
			continue
		case xml.EndElement:
			return nil, errPeerClosed
		case xml.StartElement:
			if t.Name.Space == NSStream && t.Name.Local == "error" {
				return nil, decodeStreamError(s.dec, &t)
			}
			switch t.Name.Local {
			case KindMessage, KindPresence, KindIQ:
			default:
				// Unknown top-level elements are skipped, not fatal: a
				// server may add stream-level extensions.
				if err := s.dec.Skip(); err != nil {
					return nil, err
				}
				continue
			}
			var w wireStanza
			if err := s.dec.DecodeElement(&w, &t); err != nil {
				return nil, err
			}
			return &Stanza{Kind: t.Name.Local, ID: w.ID, From: w.From, To: w.To, Type: w.Type, Lang: w.Lang, Inner: w.Inner}, nil
		default:
			// Comments, processing instructions and DTDs are not allowed
			// in XMPP streams (RFC 6120 §11.1).
			return nil, &StreamError{Condition: "restricted-xml", Text: fmt.Sprintf("server sent %T", tok)}
		}
	}
}

type wireStanza struct {
	ID    string `xml:"id,attr"`
	From  string `xml:"from,attr"`
	To    string `xml:"to,attr"`
	Type  string `xml:"type,attr"`
	Lang  string `xml:"http://www.w3.org/XML/1998/namespace lang,attr"`
	Inner []byte `xml:",innerxml"`
}

func decodeStreamError(d *xml.Decoder, start *xml.StartElement) error {
	var v struct {
		Any []struct {
			XMLName xml.Name
			Data    string `xml:",chardata"`
		} `xml:",any"`
	}
	if err := d.DecodeElement(&v, start); err != nil {
		return fmt.Errorf("read stream error: %w", err)
	}
	se := &StreamError{Condition: "undefined-condition"}
	for _, el := range v.Any {
		if el.XMLName.Space != NSStreamErr {
			continue
		}
		if el.XMLName.Local == "text" {
			se.Text = strings.TrimSpace(el.Data)
		} else {
			se.Condition = el.XMLName.Local
		}
	}
	return se
}

// limitReader bounds how much one stanza may make the decoder read, so a
// peer can't grow our memory without bound. It counts bytes read from the
// connection since the last reset, which includes the decoder's read-ahead:
// the bound is approximate, which is all it needs to be.
type limitReader struct {
	r    io.Reader
	max  int
	left int
}

// errStanzaTooLarge is returned when a stanza exceeds MaxStanzaBytes.
var errStanzaTooLarge = errors.New("stanza exceeds the size limit")

func (l *limitReader) reset() { l.left = l.max }

func (l *limitReader) Read(p []byte) (int, error) {
	if l.left <= 0 {
		return 0, errStanzaTooLarge
	}
	if len(p) > l.left {
		p = p[:l.left]
	}
	n, err := l.r.Read(p)
	l.left -= n
	return n, err
}
