package component

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
)

// framer cuts the component stream into its top-level elements before any
// XML decoding, so that one element too large or too deep costs only itself:
// it is skipped with bounded memory (counted, not buffered) and the stream
// goes on. It is a small lexer that knows tags, quoted attribute values,
// comments, processing instructions and CDATA sections (inside elements,
// where their content may hold '<' or '>'), and nothing else: names, entities
// and UTF-8 are checked by encoding/xml when a kept element is decoded.
type framer struct {
	r        *bufio.Reader
	max      int // the largest element kept, in bytes
	maxDepth int // the deepest nesting kept; the top-level element is 1
	buf      []byte

	// Lexer state, kept across the reader's chunks.
	state    lexState
	depth    int
	quote    byte // the quote that closes the attribute value being read
	prev     byte // the previous byte of a tag or PI (for "/>" and "?>")
	run      int  // '-' or ']' seen in a row, for "-->" and "]]>"
	bang     int  // bytes of "--" or "[CDATA[" matched after "<!"
	bangWant string
	header   bool // reading the prolog and the stream header
	loose    bool // what was read is a CDATA section between elements

	// The element being read.
	size     int // bytes so far
	startLen int // length of its start tag once read, else -1
	over     bool
	deep     bool
}

type lexState uint8

const (
	lexText    lexState = iota // character data, or between elements
	lexLT                      // after '<'
	lexTag                     // in a start tag, outside quotes
	lexAttr                    // in a quoted attribute value
	lexEndTag                  // in an end tag
	lexPI                      // in a processing instruction
	lexBang                    // after "<!"
	lexComment                 // in a comment
	lexCDATA                   // in a CDATA section
)

// frame is one top-level element of the stream.
type frame struct {
	// raw is the element's XML. For an element over the size or depth
	// limit it is only its start tag, made self-closing so that it
	// decodes alone; nil if even the start tag was over the size limit.
	raw   []byte
	start int // the length of raw's start tag, for a kept element
	size  int // the element's size on the wire, in bytes
	over  bool
	deep  bool
}

// xmlError is XML that iotgate refuses at stream level: the stream can't be
// trusted past it, so it ends with a stream error of condition cond.
type xmlError struct {
	cond string
	text string
}

func (e *xmlError) Error() string {
	return "invalid XML from the XMPP server (" + e.cond + "): " + e.text
}

func restricted(what string) error {
	// RFC 6120 §11.1: no comments, PIs or DTDs on an XMPP stream.
	return &xmlError{cond: "restricted-xml", text: "the stream carries " + what}
}

// maxHeaderBytes bounds the prolog and stream header (a few hundred bytes
// from a real server), whatever the stanza limit.
const maxHeaderBytes = 64 << 10

// bufferShrink is the capacity above which the buffer is dropped after use,
// so that one large element does not pin its memory for the stream's life.
const bufferShrink = 256 << 10

func newFramer(r io.Reader, max, maxDepth int) *framer {
	return &framer{r: bufio.NewReaderSize(r, 32<<10), max: max, maxDepth: maxDepth}
}

// readHeader returns the stream's prolog up to and including the stream
// header's start tag: what a decoder must see first to know the stream's
// namespaces. Errors: I/O errors, *xmlError for a DOCTYPE or a prolog over
// maxHeaderBytes.
func (f *framer) readHeader() ([]byte, error) {
	f.begin()
	f.header = true
	f.state = lexText
	max := f.max
	f.max = maxHeaderBytes
	defer func() { f.header, f.max = false, max }()
	fr, err := f.lex()
	if err != nil {
		return nil, err
	}
	if fr.over {
		return nil, &xmlError{cond: "policy-violation", text: fmt.Sprintf("stream header larger than %d bytes", maxHeaderBytes)}
	}
	return fr.raw, nil
}

// next returns the next top-level element, skipping character data
// (CDATA sections included) between elements. It returns errPeerClosed at
// </stream:stream>, *xmlError for a comment, PI or DOCTYPE between
// elements, and I/O errors. The frame's bytes are valid until the next call.
func (f *framer) next() (frame, error) {
	if cap(f.buf) > bufferShrink {
		f.buf = nil
	}
	for {
		// Between elements only whitespace is expected (keepalives);
		// other text is ignored, as a decoder would return it as
		// character data that no one reads.
		chunk, err := f.peekChunk()
		if err != nil {
			return frame{}, err
		}
		i := bytes.IndexByte(chunk, '<')
		if i < 0 {
			f.r.Discard(len(chunk))
			continue
		}
		f.r.Discard(i)
		two, err := f.r.Peek(2)
		if err != nil {
			return frame{}, err
		}
		switch two[1] {
		case '/':
			return frame{}, errPeerClosed
		case '?':
			return frame{}, restricted("a processing instruction")
		}
		f.begin()
		f.state = lexText
		fr, err := f.lex()
		if err != nil || !f.loose {
			return fr, err
		}
		// A CDATA section between elements: legal character data of the
		// stream that no one reads.
	}
}

// begin resets the per-element state.
func (f *framer) begin() {
	f.buf = f.buf[:0]
	f.depth, f.size, f.startLen, f.over, f.deep, f.loose = 0, 0, -1, false, false, false
}

// peekChunk returns what the reader holds, reading if it holds nothing.
func (f *framer) peekChunk() ([]byte, error) {
	if n := f.r.Buffered(); n > 0 {
		return f.r.Peek(n)
	}
	if _, err := f.r.Peek(1); err != nil {
		return nil, err
	}
	return f.r.Peek(f.r.Buffered())
}

// lex reads one element (or the prolog, in header mode) chunk by chunk,
// buffering it while it is within the limits.
func (f *framer) lex() (frame, error) {
	for {
		chunk, err := f.peekChunk()
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return frame{}, err
		}
		n, done, err := f.scan(chunk)
		if err != nil {
			return frame{}, err
		}
		f.keep(chunk[:n])
		f.r.Discard(n)
		if done {
			return f.frame(), nil
		}
	}
}

// keep buffers p, the element's next bytes, while the element is within
// its limits; past them only the start tag is kept.
func (f *framer) keep(p []byte) {
	if !f.over && !f.deep {
		if len(f.buf)+len(p) <= f.max {
			f.buf = append(f.buf, p...)
			return
		}
		f.over = true
	}
	// Skipping: keep just enough for the start tag, if it fits.
	if f.startLen < 0 || f.startLen > f.max {
		if len(f.buf)+len(p) > f.max {
			f.buf = f.buf[:0]
			f.startLen = f.max + 1 // too large to answer
		} else {
			f.buf = append(f.buf, p...)
		}
		return
	}
	if need := f.startLen - len(f.buf); need > 0 {
		f.buf = append(f.buf, p[:need]...)
	}
	f.buf = f.buf[:f.startLen]
}

func (f *framer) frame() frame {
	fr := frame{size: f.size, over: f.over || f.size > f.max, deep: f.deep}
	if !fr.over && !fr.deep {
		fr.raw, fr.start = f.buf, f.startLen
		return fr
	}
	if f.header || f.startLen < 0 || f.startLen > f.max || len(f.buf) < f.startLen {
		return fr
	}
	// Make the start tag self-closing: <iq ...> becomes <iq .../>.
	tag := f.buf[:f.startLen]
	if len(tag) >= 2 && tag[len(tag)-2] == '/' {
		fr.raw = tag
		return fr
	}
	fr.raw = append(tag[:len(tag)-1], '/', '>')
	f.buf = fr.raw
	return fr
}

// scan lexes p, the next bytes of the element. It returns how many bytes
// belong to the element and whether the element ended with them.
func (f *framer) scan(p []byte) (n int, done bool, err error) {
	i := 0
	for i < len(p) {
		switch f.state {
		case lexText:
			j := bytes.IndexByte(p[i:], '<')
			if j < 0 {
				i = len(p)
				continue
			}
			i += j + 1
			f.state = lexLT
		case lexLT:
			c := p[i]
			i++
			switch c {
			case '/':
				if f.depth == 0 {
					return i, false, &xmlError{cond: "not-well-formed", text: "an end tag before the stream header"}
				}
				f.state = lexEndTag
			case '?':
				f.state, f.prev = lexPI, 0
			case '!':
				f.state, f.bang, f.bangWant = lexBang, 0, ""
			default:
				f.depth++
				if f.depth > f.maxDepth && !f.header {
					f.deep = true
				}
				f.state, f.prev = lexTag, c
			}
		case lexTag:
			// A tight loop over the names and spaces of the tag: this is
			// most of what the lexer reads of small stanzas.
			j := i
			for j < len(p) && p[j] != '>' && p[j] != '"' && p[j] != '\'' {
				j++
			}
			if j > i {
				f.prev = p[j-1]
			}
			if j == len(p) {
				i = j
				continue
			}
			c := p[j]
			i = j + 1
			switch c {
			case '"', '\'':
				f.state, f.quote = lexAttr, c
			case '>':
				if f.startLen < 0 {
					f.startLen = f.size + i
				}
				if f.header {
					f.size += i
					return i, true, nil
				}
				if f.prev == '/' {
					f.depth--
				}
				f.state = lexText
				if f.depth == 0 {
					f.size += i
					return i, true, nil
				}
			}
		case lexAttr:
			j := bytes.IndexByte(p[i:], f.quote)
			if j < 0 {
				i = len(p)
				continue
			}
			i += j + 1
			f.state, f.prev = lexTag, f.quote
		case lexEndTag:
			j := bytes.IndexByte(p[i:], '>')
			if j < 0 {
				i = len(p)
				continue
			}
			i += j + 1
			f.depth--
			f.state = lexText
			if f.depth == 0 {
				f.size += i
				return i, true, nil
			}
		case lexPI:
			c := p[i]
			i++
			if c == '>' && f.prev == '?' {
				f.state = lexText
			}
			f.prev = c
		case lexBang:
			c := p[i]
			i++
			if f.bang == 0 {
				switch {
				case c == '-' && f.depth == 0 && !f.header:
					return i, false, restricted("a comment")
				case c == '-':
					f.bangWant = "--"
				case c == '[' && (f.depth > 0 || !f.header):
					f.bangWant = "[CDATA["
				default:
					return i, false, restricted("a DOCTYPE or other directive")
				}
			} else if c != f.bangWant[f.bang] {
				return i, false, restricted("a DOCTYPE or other directive")
			}
			f.bang++
			if f.bang == len(f.bangWant) {
				f.state, f.run = lexCDATA, 0
				if f.bangWant == "--" {
					f.state = lexComment
				}
			}
		case lexComment, lexCDATA:
			end := byte('-')
			if f.state == lexCDATA {
				end = ']'
			}
			c := p[i]
			i++
			switch {
			case c == end:
				f.run++
			case c == '>' && f.run >= 2:
				f.state = lexText
				f.run = 0
				if f.depth == 0 && !f.header { // a CDATA section between elements
					f.loose = true
					f.size += i
					return i, true, nil
				}
			default:
				f.run = 0
			}
		}
	}
	f.size += i
	return i, false, nil
}
