package component

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"slices"
	"unicode/utf8"

	"mellium.im/xmpp/stanza"

	"github.com/iotgate/iotgate"
)

// Namespaces used on the component stream.
const (
	NSComponent = "jabber:component:accept"
	NSStream    = "http://etherx.jabber.org/streams"
	NSStreamErr = "urn:ietf:params:xml:ns:xmpp-streams"
	NSStanzaErr = "urn:ietf:params:xml:ns:xmpp-stanzas"
	NSXML       = "http://www.w3.org/XML/1998/namespace"
)

// Stanza kinds and the IQ/message types iotgate cares about.
const (
	KindMessage  = "message"
	KindPresence = "presence"
	KindIQ       = "iq"

	TypeGet    = "get"
	TypeSet    = "set"
	TypeResult = "result"
	TypeError  = "error"
)

// Stanza is one XMPP stanza (message, presence or iq) as it travels on the
// component stream. Inner holds the raw XML between the stanza's start and end
// tags: as received for incoming stanzas, as it will be written for outgoing
// ones (it must be well-formed XML; the caller is responsible for it).
//
// Keeping the payload raw lets readings reach the schema validator byte for
// byte, without a decode/re-encode round trip on the hot path.
type Stanza struct {
	Kind string // KindMessage, KindPresence or KindIQ
	ID   string
	From string
	To   string
	Type string
	Lang string
	// Inner is the raw XML content of the stanza.
	Inner []byte

	// What the read path learns of the stanza once, so that it is not
	// parsed again on the way to the device service: the sender's bare
	// JID (bareFrom) and where the payload's children lie (Children).
	bare bareCache
	kids kidsCache
}

// bareCache is iotgate.BareJID of a stanza's From, kept with the From it
// was computed for.
type bareCache struct {
	of   string
	done bool
	bare string
	err  error
}

// bareFrom returns iotgate.BareJID(s.From), parsing the JID only the first
// time it is asked for a given From: the domain allow-list, the reading
// and presence handlers all need it. Errors: invalid.
func (s *Stanza) bareFrom() (string, error) {
	if !s.bare.done || s.bare.of != s.From {
		b, err := iotgate.BareJID(s.From)
		s.bare = bareCache{of: s.From, done: true, bare: b, err: err}
	}
	return s.bare.bare, s.bare.err
}

// kidsCache holds where the children of an Inner lie, as the stream's
// decoder found them while checking the stanza: [start, end) offsets into
// Inner, and each child's start tag when the stream's decoder read it as a
// decoder of the child alone would (see childSpan.known). It counts only
// for the Inner it was found in (same first byte and length).
type kidsCache struct {
	first *byte
	n     int
	spans []childSpan
}

// childSpan is where a child of a stanza's payload lies in Inner, and its
// start tag as the stream's decoder read it.
type childSpan struct {
	start, end int
	// known is true when name and attr are what Children's decoder would
	// give (see plainParser.known); otherwise Children reads the start tag
	// again.
	known bool
	name  xml.Name
	attr  []xml.Attr
}

// setChildren records the children's spans in s.Inner (see kidsCache).
func (s *Stanza) setChildren(spans []childSpan) {
	if len(s.Inner) == 0 {
		return
	}
	for _, sp := range spans {
		if sp.start < 0 || sp.end <= sp.start || sp.end > len(s.Inner) || s.Inner[sp.start] != '<' {
			return // never trust a span that doesn't fit: Children parses
		}
	}
	s.kids = kidsCache{first: &s.Inner[0], n: len(s.Inner), spans: spans}
}

// knownChildren returns the children recorded by setChildren, reading
// again only the start tags the stream's decoder could not vouch for; ok
// is false when none are recorded for s.Inner.
func (s *Stanza) knownChildren() (out []Element, ok bool) {
	if s.kids.first == nil || len(s.Inner) != s.kids.n || &s.Inner[0] != s.kids.first {
		return nil, false
	}
	if len(s.kids.spans) > 0 {
		out = make([]Element, 0, len(s.kids.spans))
	}
	for _, sp := range s.kids.spans {
		raw := s.Inner[sp.start:sp.end]
		if sp.known {
			out = append(out, Element{Name: sp.name, Attr: slices.Clone(sp.attr), Raw: raw})
			continue
		}
		// A decoder of its own, as Children's: the child's namespaces
		// are the ones it declares.
		tok, err := newSafeDecoder(bytes.NewReader(raw)).Token()
		start, isStart := tok.(xml.StartElement)
		if err != nil || !isStart {
			return nil, false
		}
		out = append(out, Element{Name: start.Name, Attr: start.Copy().Attr, Raw: raw})
	}
	return out, true
}

// Element is one child element of a stanza, with its raw XML.
type Element struct {
	Name xml.Name
	Attr []xml.Attr
	// Raw is the element's complete XML as received (start tag to end tag).
	Raw []byte
}

// AttrValue returns the value of the attribute with the given local name (in
// no namespace), or "".
func (e Element) AttrValue(local string) string {
	for _, a := range e.Attr {
		if a.Name.Space == "" && a.Name.Local == local {
			return a.Value
		}
	}
	return ""
}

// Children splits the stanza's inner XML into its child elements. Text
// between children is ignored. Namespaces are resolved as the children
// declare them; a child that relies on a prefix declared on the stanza itself
// is reported in no namespace (servers declare namespaces on each child).
//
// A stanza read from the stream had its payload checked by the stream's
// decoder, which noted where the children lie: only their start tags are
// read again.
func (s *Stanza) Children() ([]Element, error) {
	if kids, ok := s.knownChildren(); ok {
		return kids, nil
	}
	if len(bytes.TrimSpace(s.Inner)) == 0 {
		return nil, nil
	}
	d := newSafeDecoder(bytes.NewReader(s.Inner))
	var out []Element
	for {
		off := d.InputOffset()
		tok, err := d.Token()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, fmt.Errorf("parse stanza payload: %w", err)
		}
		start, ok := tok.(xml.StartElement)
		if !ok {
			if _, isDir := tok.(xml.Directive); isDir {
				return out, errors.New("parse stanza payload: DOCTYPE and other directives are not allowed")
			}
			continue
		}
		if err := d.Skip(); err != nil {
			return out, fmt.Errorf("parse stanza payload: %w", err)
		}
		out = append(out, Element{Name: start.Name, Attr: start.Copy().Attr, Raw: s.Inner[off:d.InputOffset()]})
	}
}

// FirstChild returns the first child element of the stanza, if any.
func (s *Stanza) FirstChild() (Element, bool) {
	kids, err := s.Children()
	if err != nil || len(kids) == 0 {
		return Element{}, false
	}
	return kids[0], true
}

// Result returns the IQ result that answers s, carrying the given raw
// payload (may be nil).
func (s *Stanza) Result(payload []byte) *Stanza {
	return &Stanza{Kind: KindIQ, Type: TypeResult, ID: s.ID, From: s.To, To: s.From, Inner: payload}
}

// head returns s without its payload: what an answer to s needs, and all
// that a reading waiting for its commit keeps of its stanza.
func (s *Stanza) head() *Stanza {
	return &Stanza{Kind: s.Kind, Type: s.Type, ID: s.ID, From: s.From, To: s.To, Lang: s.Lang, bare: s.bare}
}

// ErrorReply returns the error stanza that answers s with the given
// condition, type and human-readable text.
func (s *Stanza) ErrorReply(typ stanza.ErrorType, cond stanza.Condition, text string) *Stanza {
	return &Stanza{Kind: s.Kind, Type: TypeError, ID: s.ID, From: s.To, To: s.From, Inner: AppendStanzaError(nil, typ, cond, text)}
}

// StanzaError returns the stanza error carried by an error stanza, parsed
// from its payload. The boolean is false when s is not of type error or
// carries no parsable <error/> element.
func (s *Stanza) StanzaError() (stanza.Error, bool) {
	if s.Type != TypeError {
		return stanza.Error{}, false
	}
	kids, _ := s.Children()
	for _, k := range kids {
		if k.Name.Local != "error" {
			continue
		}
		var se stanza.Error
		d := newSafeDecoder(bytes.NewReader(k.Raw))
		if err := d.Decode(&se); err != nil {
			return stanza.Error{}, false
		}
		return se, true
	}
	return stanza.Error{}, false
}

// ErrorText returns the default-language text of a stanza error, if any.
func ErrorText(se stanza.Error) string {
	if t, ok := se.Text[""]; ok {
		return t
	}
	for _, t := range se.Text {
		return t
	}
	return ""
}

// AppendStanzaError appends an RFC 6120 <error/> element to b.
func AppendStanzaError(b []byte, typ stanza.ErrorType, cond stanza.Condition, text string) []byte {
	b = append(b, `<error type="`...)
	b = appendEscaped(b, string(typ))
	b = append(b, `"><`...)
	b = append(b, cond...)
	b = append(b, ` xmlns="`+NSStanzaErr+`"/>`...)
	if text != "" {
		b = append(b, `<text xmlns="`+NSStanzaErr+`">`...)
		b = appendEscaped(b, text)
		b = append(b, `</text>`...)
	}
	return append(b, `</error>`...)
}

// AppendXML appends the stanza's XML to b.
func (s *Stanza) AppendXML(b []byte) []byte {
	b = append(b, '<')
	b = append(b, s.Kind...)
	b = appendAttr(b, "id", s.ID)
	b = appendAttr(b, "from", s.From)
	b = appendAttr(b, "to", s.To)
	b = appendAttr(b, "type", s.Type)
	b = appendAttr(b, "xml:lang", s.Lang)
	if len(s.Inner) == 0 {
		return append(b, "/>"...)
	}
	b = append(b, '>')
	b = append(b, s.Inner...)
	b = append(b, "</"...)
	b = append(b, s.Kind...)
	return append(b, '>')
}

func (s *Stanza) String() string { return string(s.AppendXML(nil)) }

func appendAttr(b []byte, name, value string) []byte {
	if value == "" {
		return b
	}
	b = append(b, ' ')
	b = append(b, name...)
	b = append(b, `="`...)
	b = appendEscaped(b, value)
	return append(b, '"')
}

// appendEscaped escapes text for use in both attribute values and character
// data, dropping characters that XML 1.0 does not allow.
func appendEscaped(b []byte, s string) []byte {
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == '<':
			b = append(b, "&lt;"...)
		case r == '>':
			b = append(b, "&gt;"...)
		case r == '&':
			b = append(b, "&amp;"...)
		case r == '"':
			b = append(b, "&quot;"...)
		case r == '\'':
			b = append(b, "&apos;"...)
		case r == '\t':
			b = append(b, "&#x9;"...)
		case r == '\n':
			b = append(b, "&#xA;"...)
		case r == '\r':
			b = append(b, "&#xD;"...)
		case r == utf8.RuneError && size == 1, !isXMLChar(r):
			b = append(b, "\uFFFD"...)
		default:
			b = append(b, s[i:i+size]...)
		}
		i += size
	}
	return b
}

func isXMLChar(r rune) bool {
	return r == 0x09 || r == 0x0A || r == 0x0D ||
		r >= 0x20 && r <= 0xD7FF ||
		r >= 0xE000 && r <= 0xFFFD ||
		r >= 0x10000 && r <= 0x10FFFF
}

// EscapeText returns s escaped for XML character data or attribute values.
func EscapeText(s string) string { return string(appendEscaped(nil, s)) }

// newSafeDecoder returns a strict decoder that knows only XML's predefined
// entities and refuses non-UTF-8 encodings, so nothing is ever loaded or
// expanded.
func newSafeDecoder(r io.Reader) *xml.Decoder {
	d := xml.NewDecoder(r)
	d.Strict = true
	// Only called for declared encodings other than UTF-8.
	d.CharsetReader = func(label string, _ io.Reader) (io.Reader, error) {
		return nil, fmt.Errorf("encoding %q not supported, only UTF-8", label)
	}
	return d
}
