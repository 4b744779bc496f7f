package component

import (
	"bytes"
	"context"
	"crypto/sha1" //nolint:gosec // XEP-0114 mandates SHA-1 for the handshake.
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// errPeerClosed means the server closed the stream with </stream:stream>.
var errPeerClosed = errors.New("the XMPP server closed the stream")

// stream is one established XEP-0114 stream over one TCP connection.
//
// Its bytes go through a framer, which cuts them into top-level elements,
// and each kept element through one long-lived decoder, which has seen the
// stream header and so knows the namespaces it declares.
type stream struct {
	conn   net.Conn
	fr     *framer
	feed   *feed
	dec    *xml.Decoder
	header []byte // the prolog and stream header, to rebuild dec
	id     string
	// decodeAll has the decoder read every stanza, plain or not: the
	// reference that readPlain is tested against.
	decodeAll bool
}

// newStream returns a stream reading r, keeping elements of up to maxBytes
// and maxDepth.
func newStream(conn net.Conn, r io.Reader, maxBytes, maxDepth int) *stream {
	s := &stream{conn: conn, fr: newFramer(r, maxBytes, maxDepth), feed: &feed{}}
	s.dec = newSafeDecoder(s.feed)
	return s
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

	s := newStream(conn, conn, cfg.MaxStanzaBytes, cfg.MaxStanzaDepth)

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
	// Disarm the abort before clearing the deadline: once it has started
	// it may set its deadline at any moment, on the stream we'd return.
	if !stop() {
		return nil, fmt.Errorf("handshake: %w", context.Cause(ctx))
	}
	if err := conn.SetDeadline(time.Time{}); err != nil {
		return nil, fmt.Errorf("clear handshake deadline: %w", err)
	}
	return s, nil
}

func (s *stream) readHeader() error {
	raw, err := s.fr.readHeader()
	if err != nil {
		return fmt.Errorf("read stream header: %w", err)
	}
	s.header = append([]byte(nil), raw...)
	s.feed.b = raw
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

// resetDecoder replaces a decoder that met an error (its errors are
// sticky) with a new one that has read the stream header.
func (s *stream) resetDecoder() {
	s.feed.b = s.header
	s.dec = newSafeDecoder(s.feed)
	for {
		tok, err := s.dec.Token()
		if _, ok := tok.(xml.StartElement); ok || err != nil {
			return
		}
	}
}

// start feeds one element to the decoder and returns its start tag.
func (s *stream) start(raw []byte) (xml.StartElement, error) {
	s.feed.b = raw
	tok, err := s.dec.Token()
	if err != nil {
		return xml.StartElement{}, err
	}
	t, ok := tok.(xml.StartElement)
	if !ok {
		return xml.StartElement{}, fmt.Errorf("unexpected %T at the start of an element", tok)
	}
	return t, nil
}

func (s *stream) readHandshake() error {
	fr, err := s.fr.next()
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return fmt.Errorf("read handshake reply: %w", err)
	}
	if fr.raw == nil || fr.over || fr.deep {
		return fmt.Errorf("read handshake reply: an element of %d bytes", fr.size)
	}
	t, err := s.start(fr.raw)
	if err != nil {
		return fmt.Errorf("read handshake reply: %w", err)
	}
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
}

// next reads the next stanza. It returns a *StreamError when the server sends
// one, errPeerClosed on </stream:stream>, a *skippedError for a stanza over
// the size or depth limit (the stream goes on), an *xmlError for XML that
// ends the stream, and I/O errors.
func (s *stream) next() (*Stanza, error) {
	for {
		fr, err := s.fr.next()
		if err != nil {
			return nil, err
		}
		if fr.over || fr.deep {
			return nil, s.skipped(fr)
		}
		// Most stanzas are plain XML, read without the decoder; the
		// decoder reads the rest, and refuses what must be refused.
		if !s.decodeAll {
			if st, spans, ok := readPlain(fr.raw, fr.start); ok {
				return withPayload(st, fr, spans), nil
			}
		}
		t, err := s.start(fr.raw)
		if err != nil {
			return nil, &xmlError{cond: "not-well-formed", text: err.Error()}
		}
		if t.Name.Space == NSStream && t.Name.Local == "error" {
			return nil, decodeStreamError(s.dec, &t)
		}
		switch t.Name.Local {
		case KindMessage, KindPresence, KindIQ:
		default:
			// Unknown top-level elements are skipped, not fatal: a
			// server may add stream-level extensions.
			if err := s.dec.Skip(); err != nil {
				return nil, &xmlError{cond: "not-well-formed", text: err.Error()}
			}
			continue
		}
		// The decoder checks the payload (it reads it all); the framer
		// already holds its bytes, so the decoder need not save them.
		spans, err := s.readPayload(fr.raw, fr.start)
		if err != nil {
			return nil, &xmlError{cond: "not-well-formed", text: err.Error()}
		}
		if len(s.feed.b) != 0 {
			// The framer and the decoder disagree on where the element
			// ends: nothing after it can be trusted.
			return nil, &xmlError{cond: "not-well-formed", text: "an element ends before its last bytes"}
		}
		return withPayload(stanzaAttrs(t), fr, spans), nil
	}
}

// withPayload gives st, read from fr, its payload and its children's spans.
func withPayload(st *Stanza, fr frame, spans []childSpan) *Stanza {
	if end := bytes.LastIndexByte(fr.raw, '<'); end > fr.start {
		st.Inner = bytes.Clone(fr.raw[fr.start:end])
		st.setChildren(spans)
	}
	return st
}

// readPayload reads the rest of the element whose start tag the decoder
// has just returned (from raw, the element's bytes), as Skip does, and
// returns where its children lie, as [start, end) offsets from the end of
// that start tag, with their start tags when they stand alone (see
// plainParser.known): Children then need not tokenise the payload a second
// time.
func (s *stream) readPayload(raw []byte, rawStart int) ([]childSpan, error) {
	base := s.dec.InputOffset()
	var spans []childSpan
	depth := 0
	for {
		off := s.dec.InputOffset()
		tok, err := s.dec.Token()
		if err != nil {
			return nil, err
		}
		switch tok.(type) {
		case xml.StartElement:
			if depth == 0 {
				sp := childSpan{start: int(off - base), end: -1}
				if at := rawStart + sp.start; at >= 0 && at < len(raw) && raw[at] == '<' {
					// The start tag as written decides (see
					// plainParser.known), not as the decoder,
					// in the stream's namespaces, reads it.
					p := plainParser{raw: raw}
					if name, attrs, next, _, ok := p.startTag(at); ok {
						p.known(&sp, at, next, name, attrs)
					}
				}
				spans = append(spans, sp)
			}
			depth++
		case xml.EndElement:
			if depth == 0 {
				return spans, nil
			}
			depth--
			if depth == 0 {
				spans[len(spans)-1].end = int(s.dec.InputOffset() - base)
			}
		}
	}
}

// stanzaAttrs returns the stanza that start opens, without its payload.
func stanzaAttrs(start xml.StartElement) *Stanza {
	st := &Stanza{Kind: start.Name.Local}
	for _, a := range start.Attr {
		switch {
		case a.Name.Space == "" && a.Name.Local == "id":
			st.ID = a.Value
		case a.Name.Space == "" && a.Name.Local == "from":
			st.From = a.Value
		case a.Name.Space == "" && a.Name.Local == "to":
			st.To = a.Value
		case a.Name.Space == "" && a.Name.Local == "type":
			st.Type = a.Value
		case a.Name.Space == NSXML && a.Name.Local == "lang":
			st.Lang = a.Value
		}
	}
	return st
}

// skippedError is a stanza skipped for its size or depth. It costs only
// itself: the stream goes on.
type skippedError struct {
	// st has the stanza's attributes and no payload; nil when not even
	// its start tag was kept, or it was no stanza.
	st   *Stanza
	size int
	deep bool
}

func (e *skippedError) Error() string {
	if e.deep {
		return "stanza nested too deeply"
	}
	return fmt.Sprintf("stanza of %d bytes exceeds the size limit", e.size)
}

// skipped decodes what is left of an over-limit element: its start tag.
func (s *stream) skipped(fr frame) error {
	e := &skippedError{size: fr.size, deep: fr.deep && !fr.over}
	if fr.raw == nil {
		return e
	}
	t, err := s.start(fr.raw)
	if err == nil {
		err = s.dec.Skip()
	}
	if err != nil {
		// Only this start tag is bad: a fresh decoder goes on.
		s.resetDecoder()
		return e
	}
	if t.Name.Space != NSComponent {
		return e
	}
	switch t.Name.Local {
	case KindMessage, KindPresence, KindIQ:
	default:
		return e
	}
	e.st = stanzaAttrs(t)
	return e
}

// feed hands the decoder one element at a time. It is an io.ByteReader, so
// the decoder reads no further than the element's last byte.
type feed struct{ b []byte }

func (f *feed) Read(p []byte) (int, error) {
	if len(f.b) == 0 {
		return 0, io.EOF
	}
	n := copy(p, f.b)
	f.b = f.b[n:]
	return n, nil
}

func (f *feed) ReadByte() (byte, error) {
	if len(f.b) == 0 {
		return 0, io.EOF
	}
	c := f.b[0]
	f.b = f.b[1:]
	return c, nil
}
