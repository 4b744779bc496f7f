package component

import (
	"bytes"
	"encoding/xml"
	"strings"
	"unicode/utf8"
)

// readPlain reads the kept element raw, whose start tag is raw[:start],
// without the stream's decoder when it is a stanza in plain XML, as
// stanzas from Prosody and ejabberd are. It returns the stanza without its
// payload (as stanzaAttrs makes it) and its children's spans (as
// readPayload finds them), and ok false for anything outside the plain
// subset, which the decoder then reads, with its own errors.
//
// The plain subset is a part of what the decoder accepts, so that it
// accepts nothing the decoder refuses and refuses nothing itself: no line
// breaks or other control characters but tab (which keeps the decoder's
// line count, part of its error text, as if it had read raw), ASCII names
// with at most one colon, no comments, processing instructions, CDATA
// sections or DOCTYPE, only XML's five predefined entities (no character
// references), valid UTF-8 of XML's characters, end tags that repeat
// their start tag's name byte for byte, and a stanza that is message,
// presence or iq, unprefixed, with no prefixed attribute but xml:lang.
// FuzzPlain checks it against the decoder.
//
// A child's start tag is returned (known) under plainParser.known's rule
// (its own xmlns, no prefixed name); its namespace is then its own
// xmlns's value, as for a decoder of the child alone.
func readPlain(raw []byte, start int) (st *Stanza, spans []childSpan, ok bool) {
	var attrBuf [8]plainAttr
	p := plainParser{raw: raw, attrs: attrBuf[:0]}
	stanzaName, attrs, end, empty, ok := p.startTag(0)
	if !ok || end != start || p.prefix(stanzaName) >= 0 {
		return nil, nil, false
	}
	var kind string
	switch string(raw[stanzaName.start:stanzaName.end]) {
	case KindMessage:
		kind = KindMessage
	case KindPresence:
		kind = KindPresence
	case KindIQ:
		kind = KindIQ
	default:
		return nil, nil, false
	}
	st = &Stanza{Kind: kind}
	if !p.stanzaAttrs(st, attrs) {
		return nil, nil, false
	}
	if empty {
		if end != len(raw) {
			return nil, nil, false
		}
		return st, nil, true
	}
	// The payload: children's spans at depth 1, and a stack of the open
	// elements' names for their end tags.
	var stackBuf [16]span
	stack := stackBuf[:0]
	i := end
	for {
		// Character data up to the next tag.
		for i < len(raw) && raw[i] != '<' {
			c := raw[i]
			switch {
			case c == '&':
				n := entityLen(raw[i:])
				if n == 0 {
					return nil, nil, false
				}
				i += n
				continue
			case c == '>':
				if i >= 2 && raw[i-1] == ']' && raw[i-2] == ']' {
					return nil, nil, false // "]]>" outside CDATA
				}
			case c < 0x20 && c != '\t':
				return nil, nil, false
			case c >= utf8.RuneSelf:
				n := runeLen(raw[i:])
				if n == 0 {
					return nil, nil, false
				}
				i += n
				continue
			}
			i++
		}
		if i+1 >= len(raw) {
			return nil, nil, false
		}
		switch raw[i+1] {
		case '!', '?':
			return nil, nil, false
		case '/':
			name, next, ok := p.endTag(i)
			if !ok {
				return nil, nil, false
			}
			if len(stack) == 0 {
				// The stanza's own end tag, which must end raw.
				if !p.same(name, stanzaName) || next != len(raw) {
					return nil, nil, false
				}
				return st, spans, true
			}
			if !p.same(name, stack[len(stack)-1]) {
				return nil, nil, false
			}
			stack = stack[:len(stack)-1]
			if len(stack) == 0 {
				spans[len(spans)-1].end = next - start
			}
			i = next
		default:
			name, attrs, next, empty, ok := p.startTag(i)
			if !ok {
				return nil, nil, false
			}
			if len(stack) == 0 {
				sp := childSpan{start: i - start, end: -1}
				if empty {
					sp.end = next - start
				}
				p.known(&sp, i, next, name, attrs)
				spans = append(spans, sp)
			}
			if !empty {
				stack = append(stack, name)
			}
			i = next
		}
	}
}

// sharedTagMax is the largest child start tag whose names and values
// share one string.
const sharedTagMax = 256

// span is [start, end) in the parser's raw.
type span struct{ start, end int }

// plainAttr is an attribute of a start tag: its name, its value between
// the quotes, and whether the value holds entities to replace.
type plainAttr struct {
	name, val span
	escaped   bool
}

// plainParser reads the plain subset of XML (see readPlain) from raw.
type plainParser struct {
	raw []byte
	// attrs is reused by every start tag.
	attrs []plainAttr
}

// startTag reads the start tag at raw[at] ('<'). It returns its name, its
// attributes (valid until the next call), the offset after it, and
// whether it ends with "/>".
func (p *plainParser) startTag(at int) (name span, attrs []plainAttr, next int, empty, ok bool) {
	raw := p.raw
	if at >= len(raw) || raw[at] != '<' {
		return span{}, nil, 0, false, false
	}
	i := at + 1
	e := p.nameEnd(i)
	if e < 0 {
		return span{}, nil, 0, false, false
	}
	name = span{i, e}
	i = e
	p.attrs = p.attrs[:0]
	// After the name: a space, '/' or '>' (a byte of a name, or a
	// non-ASCII one, would have been part of it).
	if i >= len(raw) || raw[i] != ' ' && raw[i] != '\t' && raw[i] != '/' && raw[i] != '>' {
		return span{}, nil, 0, false, false
	}
	for {
		i = skipSpace(raw, i)
		if i >= len(raw) {
			return span{}, nil, 0, false, false
		}
		switch raw[i] {
		case '>':
			return name, p.attrs, i + 1, false, true
		case '/':
			if i+1 < len(raw) && raw[i+1] == '>' {
				return name, p.attrs, i + 2, true, true
			}
			return span{}, nil, 0, false, false
		}
		e := p.nameEnd(i)
		if e < 0 {
			return span{}, nil, 0, false, false
		}
		a := plainAttr{name: span{i, e}}
		i = skipSpace(raw, e)
		if i >= len(raw) || raw[i] != '=' {
			return span{}, nil, 0, false, false
		}
		i = skipSpace(raw, i+1)
		if i >= len(raw) || raw[i] != '"' && raw[i] != '\'' {
			return span{}, nil, 0, false, false
		}
		quote := raw[i]
		i++
		a.val.start = i
		for {
			if i >= len(raw) {
				return span{}, nil, 0, false, false
			}
			c := raw[i]
			if c == quote {
				break
			}
			switch {
			case c == '&':
				n := entityLen(raw[i:])
				if n == 0 {
					return span{}, nil, 0, false, false
				}
				a.escaped = true
				i += n
				continue
			case c == '<', c < 0x20 && c != '\t':
				return span{}, nil, 0, false, false
			case c >= utf8.RuneSelf:
				n := runeLen(raw[i:])
				if n == 0 {
					return span{}, nil, 0, false, false
				}
				i += n
				continue
			}
			i++
		}
		a.val.end = i
		i++
		p.attrs = append(p.attrs, a)
	}
}

// endTag reads the end tag at raw[at] ("</"): its name and the offset
// after it.
func (p *plainParser) endTag(at int) (name span, next int, ok bool) {
	e := p.nameEnd(at + 2)
	if e < 0 {
		return span{}, 0, false
	}
	i := skipSpace(p.raw, e)
	if i >= len(p.raw) || p.raw[i] != '>' {
		return span{}, 0, false
	}
	return span{at + 2, e}, i + 1, true
}

// nameEnd returns the end of the name at raw[i]: ASCII letters, digits,
// '_', '.', '-', starting with a letter or '_', in one or two such parts
// joined by a colon; -1 if there is none, or it goes on with a byte the
// decoder would read as part of a name (a second colon, non-ASCII).
func (p *plainParser) nameEnd(i int) int {
	raw := p.raw
	colon := false
	for part := 0; ; part++ {
		if i >= len(raw) || !nameFirst(raw[i]) {
			return -1
		}
		i++
		for i < len(raw) && nameByte(raw[i]) {
			i++
		}
		if i >= len(raw) {
			return -1
		}
		c := raw[i]
		if c == ':' && !colon {
			colon = true
			i++
			continue
		}
		if c == ':' || c >= utf8.RuneSelf {
			return -1
		}
		return i
	}
}

// prefix returns where the colon of name is, or -1.
func (p *plainParser) prefix(name span) int {
	for i := name.start; i < name.end; i++ {
		if p.raw[i] == ':' {
			return i
		}
	}
	return -1
}

func (p *plainParser) same(a, b span) bool {
	return string(p.raw[a.start:a.end]) == string(p.raw[b.start:b.end])
}

// stanzaAttrs sets st's id, from, to, type and xml:lang from attrs (the
// last of a name counts, as in the decoder's), all in one string of
// their own: not a string of the whole tag, which would keep whatever
// else the tag holds, unbounded, as long as st's head lives. It is false
// for a prefixed attribute other than xml:lang.
func (p *plainParser) stanzaAttrs(st *Stanza, attrs []plainAttr) bool {
	const id, from, to, typ, lang = 0, 1, 2, 3, 4
	pick := [5]int{-1, -1, -1, -1, -1}
	for k, a := range attrs {
		field := -1
		if c := p.prefix(a.name); c >= 0 {
			if string(p.raw[a.name.start:c]) != "xml" || string(p.raw[c+1:a.name.end]) != "lang" {
				return false
			}
			field = lang
		} else {
			switch string(p.raw[a.name.start:a.name.end]) {
			case "id":
				field = id
			case "from":
				field = from
			case "to":
				field = to
			case "type":
				field = typ
			}
		}
		if field >= 0 {
			pick[field] = k
		}
	}
	n := 0
	for _, k := range pick {
		if k >= 0 {
			n += attrs[k].val.end - attrs[k].val.start
		}
	}
	if n == 0 {
		return true
	}
	var b strings.Builder
	b.Grow(n)
	var ends [5]int
	for f, k := range pick {
		if k >= 0 {
			unescapeTo(&b, p.raw[attrs[k].val.start:attrs[k].val.end])
		}
		ends[f] = b.Len()
	}
	all := b.String()
	part := func(f int) string {
		if f == 0 {
			return all[:ends[0]]
		}
		return all[ends[f-1]:ends[f]]
	}
	st.ID, st.From, st.To, st.Type, st.Lang = part(id), part(from), part(to), part(typ), part(lang)
	return true
}

// known fills sp's start tag, read from raw[at:next], when what a decoder
// of the child alone reads (Children's rule: a child's namespaces are the
// ones it declares) is sure: its name has no prefix, it declares its
// namespace (xmlns), and no attribute has a prefix other than xmlns, as
// written (a prefix bound to "" around it would make a decoder of the
// whole stream see no prefix). Then the namespaces declared around it, on
// the stanza or the stream, play no part. It is the usual form of a
// reading (<reading xmlns='urn:...'>), and it spares Children a decoder
// per child.
func (p *plainParser) known(sp *childSpan, at, next int, name span, attrs []plainAttr) {
	if p.prefix(name) >= 0 {
		return
	}
	declared := false
	for _, a := range attrs {
		if c := p.prefix(a.name); c >= 0 {
			if string(p.raw[a.name.start:c]) != "xmlns" {
				return
			}
		} else if string(p.raw[a.name.start:a.name.end]) == "xmlns" {
			declared = true
		}
	}
	if !declared {
		return
	}
	// One string for a small tag, its names and values parts of it; a
	// large one's parts each on their own, so that a part kept long (the
	// namespace goes on to the reading) does not keep the whole tag.
	sub := func(s span) string { return string(p.raw[s.start:s.end]) }
	if next-at <= sharedTagMax {
		tag := string(p.raw[at:next])
		sub = func(s span) string { return tag[s.start-at : s.end-at] }
	}
	out := make([]xml.Attr, len(attrs))
	for k, a := range attrs {
		var n xml.Name
		if c := p.prefix(a.name); c >= 0 {
			n = xml.Name{Space: "xmlns", Local: sub(span{c + 1, a.name.end})}
		} else {
			n = xml.Name{Local: sub(a.name)}
		}
		v := sub(a.val)
		if a.escaped {
			v = unescapePlain(p.raw[a.val.start:a.val.end])
		}
		out[k] = xml.Attr{Name: n, Value: v}
		if n.Space == "" && n.Local == "xmlns" {
			// The decoder's rule: the last declaration counts.
			sp.name.Space = v
		}
	}
	sp.name.Local = sub(name)
	sp.known, sp.attr = true, out
}

func skipSpace(raw []byte, i int) int {
	for i < len(raw) && (raw[i] == ' ' || raw[i] == '\t') {
		i++
	}
	return i
}

func nameFirst(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || c == '_'
}

func nameByte(c byte) bool {
	return nameFirst(c) || '0' <= c && c <= '9' || c == '.' || c == '-'
}

// entityLen returns the length of the predefined entity b starts with
// ("&lt;" ...), or 0.
func entityLen(b []byte) int {
	for _, e := range [...]string{"&lt;", "&gt;", "&amp;", "&apos;", "&quot;"} {
		if len(b) >= len(e) && string(b[:len(e)]) == e {
			return len(e)
		}
	}
	return 0
}

// runeLen returns the length of the UTF-8 encoded character b starts
// with if it is one of XML's characters, or 0.
func runeLen(b []byte) int {
	r, n := utf8.DecodeRune(b)
	if r == utf8.RuneError && n == 1 || !isXMLChar(r) {
		return 0
	}
	return n
}

// unescapeTo writes b to w with its predefined entities (checked by
// entityLen) replaced.
func unescapeTo(w *strings.Builder, b []byte) {
	for len(b) > 0 {
		i := bytes.IndexByte(b, '&')
		if i < 0 {
			w.Write(b)
			return
		}
		w.Write(b[:i])
		b = b[i:]
		switch n := entityLen(b); n {
		case 4:
			if b[1] == 'l' {
				w.WriteByte('<')
			} else {
				w.WriteByte('>')
			}
			b = b[n:]
		case 5:
			w.WriteByte('&')
			b = b[n:]
		case 6:
			if b[1] == 'a' {
				w.WriteByte('\'')
			} else {
				w.WriteByte('"')
			}
			b = b[n:]
		default:
			w.WriteByte('&')
			b = b[1:]
		}
	}
}

// unescapePlain returns b with its predefined entities replaced.
func unescapePlain(b []byte) string {
	var w strings.Builder
	w.Grow(len(b))
	unescapeTo(&w, b)
	return w.String()
}
