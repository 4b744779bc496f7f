package component

import (
	"bytes"
	"encoding/xml"
	"errors"
	"io"
	"strconv"
	"strings"

	"github.com/iotgate/iotgate"
)

// NSXMLNS is the namespace of namespace declarations themselves; nothing
// may be put in it.
const NSXMLNS = "http://www.w3.org/2000/xmlns/"

// AppendCleanElement parses src, which must hold exactly one XML element,
// and appends it to dst re-serialized from its tokens: every namespace
// declared explicitly (a default namespace per element, generated prefixes
// for namespaced attributes), text and attribute values escaped, and
// comments, processing instructions and an XML declaration dropped.
//
// Nothing of src is copied raw, so what reaches the stream is well-formed
// whatever src was: a server closes a component's stream for a comment, a
// processing instruction or a DOCTYPE in it (RFC 6120 11.1 restricted XML),
// which would cut every device off, not just the one a payload was for.
//
// Errors: invalid (not well-formed, not exactly one element, a DOCTYPE or
// other directive, a name in a reserved namespace).
func AppendCleanElement(dst, src []byte) ([]byte, error) {
	d := newSafeDecoder(bytes.NewReader(src))
	// defaults[i] is the default namespace in force at depth i+1.
	var defaults []string
	open := false // a start tag awaits its '>' (or '/>' if it ends at once)
	roots := 0
	for {
		tok, err := d.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return dst, cleanErr("not well-formed: " + err.Error())
		}
		switch t := tok.(type) {
		case xml.StartElement:
			if len(defaults) == 0 {
				if roots++; roots > 1 {
					return dst, cleanErr("more than one element")
				}
			}
			if open {
				dst = append(dst, '>')
			}
			// The root always declares its namespace, even none: the
			// stanza around it is in the stream's.
			parent := "\x00"
			if n := len(defaults); n > 0 {
				parent = defaults[n-1]
			}
			if dst, err = appendStart(dst, t, parent); err != nil {
				return dst, err
			}
			defaults = append(defaults, t.Name.Space)
			open = true
		case xml.EndElement:
			if open {
				dst = append(dst, "/>"...)
				open = false
			} else {
				dst = append(dst, "</"...)
				dst = append(dst, t.Name.Local...)
				dst = append(dst, '>')
			}
			defaults = defaults[:len(defaults)-1]
		case xml.CharData:
			if len(defaults) == 0 {
				if len(bytes.TrimSpace(t)) != 0 {
					return dst, cleanErr("text outside the element")
				}
				continue
			}
			if len(t) == 0 {
				continue
			}
			if open {
				dst = append(dst, '>')
				open = false
			}
			dst = appendEscaped(dst, string(t))
		case xml.Directive:
			return dst, cleanErr("DOCTYPE and other directives are not allowed")
		case xml.Comment, xml.ProcInst:
			// Dropped: they carry nothing a device needs.
		}
	}
	if roots != 1 {
		return dst, cleanErr("no element")
	}
	return dst, nil
}

func cleanErr(why string) error {
	return iotgate.Errorf(iotgate.EInvalid, "a command payload must be exactly one XML element: %s", why)
}

// appendStart appends a start tag without its closing '>'. Only the element
// name and its attributes are kept; the source's own namespace declarations
// are replaced by explicit ones.
func appendStart(b []byte, t xml.StartElement, parentDefault string) ([]byte, error) {
	if err := checkName(t.Name); err != nil {
		return b, err
	}
	if t.Name.Space == NSXML {
		return b, cleanErr("element " + strconv.Quote(t.Name.Local) + " in the reserved xml namespace")
	}
	b = append(b, '<')
	b = append(b, t.Name.Local...)
	if t.Name.Space != parentDefault {
		b = append(b, ` xmlns="`...)
		b = appendEscaped(b, t.Name.Space)
		b = append(b, '"')
	}
	var prefixes []string // namespaces of the attributes, prefix ns<i>
	seen := make(map[xml.Name]bool, len(t.Attr))
	for _, a := range t.Attr {
		if a.Name.Space == "xmlns" || a.Name.Space == "" && a.Name.Local == "xmlns" {
			continue
		}
		if err := checkName(a.Name); err != nil {
			return b, err
		}
		// Two prefixes for one namespace may name one attribute twice;
		// once is all a well-formed element may have.
		if seen[a.Name] {
			continue
		}
		seen[a.Name] = true
		b = append(b, ' ')
		switch a.Name.Space {
		case "":
		case NSXML:
			b = append(b, "xml:"...)
		default:
			i := 0
			for i < len(prefixes) && prefixes[i] != a.Name.Space {
				i++
			}
			if i == len(prefixes) {
				prefixes = append(prefixes, a.Name.Space)
				b = append(b, "xmlns:ns"...)
				b = strconv.AppendInt(b, int64(i), 10)
				b = append(b, `="`...)
				b = appendEscaped(b, a.Name.Space)
				b = append(b, `" `...)
			}
			b = append(b, "ns"...)
			b = strconv.AppendInt(b, int64(i), 10)
			b = append(b, ':')
		}
		b = append(b, a.Name.Local...)
		b = append(b, `="`...)
		b = appendEscaped(b, a.Value)
		b = append(b, '"')
	}
	return b, nil
}

// checkName refuses what a namespace-aware parser (the server's) would
// reject even though encoding/xml accepts it.
func checkName(n xml.Name) error {
	switch {
	case n.Local == "" || strings.ContainsRune(n.Local, ':') || !nameStart(n.Local):
		return cleanErr("bad name " + strconv.Quote(n.Local))
	case n.Space == NSXMLNS, n.Space == "xmlns":
		return cleanErr("name " + strconv.Quote(n.Local) + " in the reserved xmlns namespace")
	}
	return nil
}

// nameStart reports whether a local name may begin a name: encoding/xml
// checks a prefixed name as a whole, so "p:0" passes, but "0" alone does
// not. The decoder itself decides, so its tables are the ones applied.
func nameStart(local string) bool {
	if c := local[0]; c == '_' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' {
		return true
	}
	_, err := xml.NewDecoder(strings.NewReader("<" + local + "/>")).Token()
	return err == nil
}
