package xsd

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"
)

// xsiNS is the XML Schema instance namespace: its attributes (xsi:type,
// xsi:nil, xsi:schemaLocation...) steer validation and never become keys.
const xsiNS = "http://www.w3.org/2001/XMLSchema-instance"

// Render turns a document of this schema into JSON-ready values, following
// the rules in the package documentation. It does not validate: use it for
// documents validated before (stored readings), and ValidateAndRender on
// ingest. The document is parsed in Go with encoding/xml under
// DefaultMaxBytes and DefaultMaxDepth, refusing any DOCTYPE and any entity
// but the five predefined ones; UTF-8, US-ASCII and ISO-8859-1 encodings are
// accepted. Errors are a *ValidationError, or ErrFreed.
//
// The values are those of the JSON ValidateAndRender writes, decoded with
// json.Number for numbers: Render serves stored readings and tests, not
// the ingest path.
func (s *Schema) Render(doc []byte) (map[string]any, error) {
	s.mu.RLock()
	m := s.model
	s.mu.RUnlock()
	if m == nil {
		return nil, ErrFreed
	}
	lim := Limits{}.withDefaults()
	if err := checkSize(doc, lim); err != nil {
		return nil, err
	}
	r := newRenderer(m)
	defer r.release()
	if err := walkXML(doc, lim, r); err != nil {
		return nil, err
	}
	out := r.json()
	if out == nil {
		return nil, validationErr("", []ValidationIssue{{Message: "no document element"}})
	}
	d := json.NewDecoder(bytes.NewReader(out))
	d.UseNumber()
	var v map[string]any
	if err := d.Decode(&v); err != nil {
		return nil, fmt.Errorf("xsd: decode rendering: %w", err)
	}
	return v, nil
}

// ValidateAndRender validates doc and renders it in one pass over libxml2's
// parse (the ingest hot path: the document is parsed once, not once per
// step). Errors are those of Validate; the result is the same as Render's.
// The JSON is written straight from libxml2's records, with no map and no
// json.Marshal; its bytes are those json.Marshal gives for the equivalent
// map[string]any (checked against such a map builder by the tests).
func (s *Schema) ValidateAndRender(doc []byte, lim Limits) (json.RawMessage, error) {
	flat, m, err := s.run(doc, lim, true)
	if err != nil {
		return nil, err
	}
	r := newRenderer(m)
	defer r.release()
	if err := walkFlat(flat, r); err != nil {
		return nil, err
	}
	out := r.json()
	if out == nil {
		return nil, errFlat
	}
	return out, nil
}

// events receives a document from a parser: renderer writes its JSON.
type events interface {
	start(ns, local string)
	attr(ns, local, value string)
	text(s string)
	end()
	depth() int
	path() string
}

// walkXML parses doc with encoding/xml and feeds it to r (used by Render).
func walkXML(doc []byte, lim Limits, r events) error {
	// encoding/xml would return a UTF-8 byte order mark as text.
	doc = bytes.TrimPrefix(doc, []byte("\xef\xbb\xbf"))
	d := xml.NewDecoder(bytes.NewReader(doc))
	d.Strict = true
	d.CharsetReader = charsetReader
	depth := 0
	seenRoot := false
	var attrs []xml.Attr
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		line, _ := d.InputPos()
		if err != nil {
			var se *xml.SyntaxError
			msg := err.Error()
			if errors.As(err, &se) {
				msg, line = se.Msg, se.Line
			}
			return validationErr("", []ValidationIssue{{Line: line, Path: r.path(), Message: msg}})
		}
		switch t := tok.(type) {
		case xml.StartElement:
			if depth == 0 && seenRoot {
				return validationErr("", []ValidationIssue{{Line: line,
					Message: "extra content after the document element"}})
			}
			seenRoot = true
			depth++
			if depth > lim.MaxDepth {
				return validationErr(DetailTooDeep, []ValidationIssue{{Line: line,
					Path:    r.path() + "/" + t.Name.Local,
					Message: fmt.Sprintf("element nesting exceeds %d levels", lim.MaxDepth)}})
			}
			r.start(t.Name.Space, t.Name.Local)
			// xsi:* first: xsi:type changes how the other attributes are typed.
			attrs = attrs[:0]
			for _, a := range t.Attr {
				if a.Name.Space == "xmlns" || (a.Name.Space == "" && a.Name.Local == "xmlns") {
					continue // a namespace declaration, not an attribute
				}
				if a.Name.Space == xsiNS {
					r.attr(a.Name.Space, a.Name.Local, a.Value)
				} else {
					attrs = append(attrs, a)
				}
			}
			for _, a := range attrs {
				// XML attribute-value normalization, which encoding/xml
				// leaves out (libxml2 does it).
				r.attr(a.Name.Space, a.Name.Local, normalizeAttr(a.Value))
			}
		case xml.EndElement:
			depth--
			r.end()
		case xml.CharData:
			if depth == 0 {
				if !isBlank(string(t)) {
					return validationErr("", []ValidationIssue{{Line: line,
						Message: "text outside the document element"}})
				}
				continue
			}
			r.text(string(t))
		case xml.Directive:
			return validationErr(DetailDoctype, []ValidationIssue{{Line: line,
				Message: "DOCTYPE is not allowed (no DTDs, no entities)"}})
		}
	}
	if !seenRoot {
		return validationErr("", []ValidationIssue{{Message: "no document element"}})
	}
	return nil
}

// charsetReader lets encoding/xml read the single-byte encodings devices
// commonly declare; anything else (UTF-16...) is refused.
func charsetReader(label string, in io.Reader) (io.Reader, error) {
	switch strings.ToLower(strings.TrimSpace(label)) {
	case "us-ascii", "ascii", "iso-8859-1", "iso8859-1", "latin1", "latin-1", "l1":
		b, err := io.ReadAll(in)
		if err != nil {
			return nil, err
		}
		out := make([]byte, 0, len(b)+len(b)/8)
		for _, c := range b {
			out = utf8.AppendRune(out, rune(c))
		}
		return bytes.NewReader(out), nil
	}
	return nil, fmt.Errorf("unsupported encoding %q (use UTF-8)", label)
}
