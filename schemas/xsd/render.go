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

	"github.com/iotgate/iotgate"
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
// accepted. Errors are a *iotgate.Error with code iotgate.EInvalid wrapping a
// *ValidationError, or iotgate.EUnavailable wrapping ErrFreed.
func (s *Schema) Render(doc []byte) (map[string]any, error) {
	s.mu.RLock()
	m := s.model
	s.mu.RUnlock()
	if m == nil {
		return nil, freedErr()
	}
	lim := Limits{}.withDefaults()
	if err := checkSize(doc, lim); err != nil {
		return nil, err
	}
	return renderXML(m, doc, lim)
}

// ValidateAndRender validates doc and renders it in one pass over libxml2's
// parse (the ingest hot path: the document is parsed once, not once per
// step). Errors are those of Validate; the result is the same as Render's.
func (s *Schema) ValidateAndRender(doc []byte, lim Limits) (map[string]any, error) {
	flat, m, err := s.run(doc, lim, true)
	if err != nil {
		return nil, err
	}
	out, err := renderFlat(m, flat)
	if err != nil {
		return nil, &iotgate.Error{Code: iotgate.EInternal, Err: err}
	}
	return out, nil
}

// renderXML renders with encoding/xml (used by Render).
func renderXML(m *model, doc []byte, lim Limits) (map[string]any, error) {
	// encoding/xml would return a UTF-8 byte order mark as text.
	doc = bytes.TrimPrefix(doc, []byte("\xef\xbb\xbf"))
	d := xml.NewDecoder(bytes.NewReader(doc))
	d.Strict = true
	d.CharsetReader = charsetReader
	r := renderer{m: m}
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
			return nil, validationErr("", []ValidationIssue{{Line: line, Path: r.path(), Message: msg}})
		}
		switch t := tok.(type) {
		case xml.StartElement:
			if depth == 0 && seenRoot {
				return nil, validationErr("", []ValidationIssue{{Line: line,
					Message: "extra content after the document element"}})
			}
			seenRoot = true
			depth++
			if depth > lim.MaxDepth {
				return nil, validationErr(DetailTooDeep, []ValidationIssue{{Line: line,
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
					return nil, validationErr("", []ValidationIssue{{Line: line,
						Message: "text outside the document element"}})
				}
				continue
			}
			r.text(string(t))
		case xml.Directive:
			return nil, validationErr(DetailDoctype, []ValidationIssue{{Line: line,
				Message: "DOCTYPE is not allowed (no DTDs, no entities)"}})
		}
	}
	if r.result == nil {
		return nil, validationErr("", []ValidationIssue{{Message: "no document element"}})
	}
	return r.result, nil
}

// renderer builds the JSON value of a document from a stream of events,
// whichever parser produced them.
type renderer struct {
	m      *model
	stack  []frame
	result map[string]any
}

type frame struct {
	name  string
	el    *element     // declaration, nil if unknown
	ct    *complexType // effective complex type (xsi:type may change it)
	st    *simpleType  // effective simple type
	rep   bool         // repeats in its parent: appended to an array
	obj   map[string]any
	text  string
	isNil bool
}

func (r *renderer) path() string {
	var b strings.Builder
	for _, f := range r.stack {
		b.WriteByte('/')
		b.WriteString(f.name)
	}
	return b.String()
}

func (r *renderer) start(ns, local string) {
	f := frame{name: local}
	if n := len(r.stack); n == 0 {
		f.el = r.m.globals[qname{ns, local}]
		if f.el == nil {
			f.el = r.m.byLocal[local] // unvalidated document: best effort
		}
	} else {
		p := &r.stack[n-1]
		if p.obj == nil {
			p.obj = make(map[string]any, 4)
		}
		if p.ct != nil {
			if k := p.ct.kids[local]; k != nil {
				f.el, f.rep = k.el, k.rep
			} else if p.ct.wild {
				f.el, f.rep = r.m.globals[qname{ns, local}], p.ct.wildRep
			}
		}
	}
	if f.el != nil {
		f.ct, f.st = f.el.complex, f.el.simple
	}
	r.stack = append(r.stack, f)
}

func (r *renderer) attr(ns, local, value string) {
	f := &r.stack[len(r.stack)-1]
	if ns == xsiNS {
		switch local {
		case "nil":
			f.isNil = isTrue(value, true)
		case "type":
			// By local name: the prefix's namespace is not tracked here.
			_, l, found := strings.Cut(strings.TrimSpace(value), ":")
			if !found {
				l = strings.TrimSpace(value)
			}
			if t, ok := r.m.types[l]; ok {
				f.ct, f.st = t.complex, t.simple
			} else if b := builtin(l); l != "" {
				f.ct, f.st = nil, b
			}
		}
		return
	}
	var v any = value
	if f.ct != nil {
		if t := f.ct.attrs[local]; t != nil {
			v = typed(t, value)
		}
	}
	if f.obj == nil {
		f.obj = make(map[string]any, 4)
	}
	insert(f.obj, "@"+local, v, false)
}

func (r *renderer) text(s string) {
	f := &r.stack[len(r.stack)-1]
	if f.text == "" {
		f.text = s
	} else {
		f.text += s
	}
}

func (r *renderer) end() {
	n := len(r.stack) - 1
	f := &r.stack[n]
	v := f.value()
	name, rep := f.name, f.rep
	r.stack[n] = frame{} // drop references for the GC
	r.stack = r.stack[:n]
	if n == 0 {
		obj, ok := v.(map[string]any)
		if !ok {
			obj = map[string]any{"#text": v}
		}
		r.result = obj
		return
	}
	insert(r.stack[n-1].obj, name, v, rep)
}

// value is the JSON value of a finished element.
func (f *frame) value() any {
	switch {
	case f.isNil:
		if f.obj != nil {
			return f.obj // attributes of a nil element survive
		}
		return nil
	case f.ct != nil:
		obj := f.obj
		if obj == nil {
			obj = make(map[string]any, 1)
		}
		switch {
		case f.ct.text != nil:
			obj["#text"] = typed(f.ct.text, f.text)
		case f.ct.mixed:
			obj["#text"] = trimSpace(f.text)
		case !isBlank(f.text):
			obj["#text"] = trimSpace(f.text) // text where none is allowed
		}
		return obj
	case f.st != nil:
		if f.obj == nil {
			return typed(f.st, f.text)
		}
		if !isBlank(f.text) {
			f.obj["#text"] = typed(f.st, f.text)
		}
		return f.obj
	default: // unknown element: untyped
		if f.obj == nil {
			return f.text
		}
		if !isBlank(f.text) {
			f.obj["#text"] = trimSpace(f.text)
		}
		return f.obj
	}
}

// insert sets obj[key] = v; repeating elements are appended to an array,
// and a key met twice becomes an array rather than losing a value.
func insert(obj map[string]any, key string, v any, rep bool) {
	old, exists := obj[key]
	switch {
	case rep:
		arr, _ := old.([]any)
		if exists && arr == nil {
			arr = []any{old}
		}
		obj[key] = append(arr, v)
	case !exists:
		obj[key] = v
	default:
		if arr, ok := old.([]any); ok {
			obj[key] = append(arr, v)
		} else {
			obj[key] = []any{old, v}
		}
	}
}

// typed converts text to the JSON value of its simple type: json.Number
// for numeric types, bool for boolean, else the (whitespace-normalized)
// string. Text that is not a lexically valid value stays a string.
func typed(t *simpleType, s string) any {
	switch t.ws {
	case wsReplace:
		s = replaceSpace(s)
	case wsCollapse:
		s = collapseSpace(s)
	}
	switch t.kind {
	case kindNumber:
		if n, ok := jsonNumber(s); ok {
			return n
		}
	case kindBool:
		switch s {
		case "true", "1":
			return true
		case "false", "0":
			return false
		}
	}
	return s
}

// jsonNumber converts an XSD decimal, integer, float or double lexical
// value into a JSON number, keeping every digit: "+1.50" -> 1.50,
// ".5" -> 0.5, "5." -> 5, "007" -> 7, "1E3" -> 1E3. INF, -INF and NaN have
// no JSON form: ok is false and they stay strings. So does a number that
// PostgreSQL's jsonb can't hold (see pgNumeric), such as the valid
// xs:double 1e-20000: stored as a number it would fail the reading's
// commit, and its batch with it.
func jsonNumber(s string) (json.Number, bool) {
	i, n := 0, len(s)
	neg := false
	if i < n && (s[i] == '+' || s[i] == '-') {
		neg = s[i] == '-'
		i++
	}
	intStart := i
	for i < n && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	intPart := s[intStart:i]
	frac := ""
	hasDot := false
	if i < n && s[i] == '.' {
		hasDot = true
		i++
		fs := i
		for i < n && s[i] >= '0' && s[i] <= '9' {
			i++
		}
		frac = s[fs:i]
	}
	if intPart == "" && frac == "" {
		return "", false
	}
	exp := ""
	if i < n && (s[i] == 'e' || s[i] == 'E') {
		es := i
		i++
		if i < n && (s[i] == '+' || s[i] == '-') {
			i++
		}
		ds := i
		for i < n && s[i] >= '0' && s[i] <= '9' {
			i++
		}
		if i == ds {
			return "", false
		}
		exp = s[es:i]
	}
	if i != n {
		return "", false
	}
	if !pgNumeric(intPart, frac, exp) {
		return "", false
	}
	trimmed := strings.TrimLeft(intPart, "0")
	if trimmed == "" {
		trimmed = "0"
	}
	// Fast path: already a canonical JSON number, no allocation.
	if s[0] != '+' && trimmed == intPart && (!hasDot || frac != "") {
		return json.Number(s), true
	}
	var b strings.Builder
	b.Grow(len(s) + 1)
	if neg {
		b.WriteByte('-')
	}
	b.WriteString(trimmed)
	if frac != "" {
		b.WriteByte('.')
		b.WriteString(frac)
	}
	b.WriteString(exp)
	return json.Number(b.String()), true
}

// PostgreSQL's numeric (which jsonb keeps numbers as) holds at most
// 131072 digits before the decimal point and 16383 after it, counting the
// digits as written: 1e-16383 fits, 1.0e-16383 and 10e-16384 do not.
const (
	pgMaxPower = 131071 // the highest power of ten of a digit
	pgMaxScale = 16383  // digits after the point
	// maxExpDigits bounds the exponents worth reading: PostgreSQL refuses
	// any beyond ±(2^31/2) whatever the digits.
	maxExpDigits = 9
)

// pgNumeric reports whether PostgreSQL 15's numeric accepts a number of
// these integer digits, fraction digits and exponent ("" or e/E, a sign
// and digits), checked against PostgreSQL itself in
// postgres (TestNumbersPostgresTakes).
func pgNumeric(intPart, frac, exp string) bool {
	e := 0
	if exp != "" {
		ds := exp[1:]
		neg := ds[0] == '-'
		if ds[0] == '+' || ds[0] == '-' {
			ds = ds[1:]
		}
		ds = strings.TrimLeft(ds, "0")
		if len(ds) > maxExpDigits {
			return false
		}
		for i := 0; i < len(ds); i++ {
			e = e*10 + int(ds[i]-'0')
		}
		if neg {
			e = -e
		}
	}
	if len(frac)-e > pgMaxScale {
		return false
	}
	// The power of ten of the first significant digit; a zero has none.
	if ip := strings.TrimLeft(intPart, "0"); ip != "" {
		return len(ip)-1+e <= pgMaxPower
	}
	if k := strings.IndexFunc(frac, func(r rune) bool { return r != '0' }); k >= 0 {
		return -(k+1)+e <= pgMaxPower
	}
	return true
}

func isXMLSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

func isBlank(s string) bool {
	for i := 0; i < len(s); i++ {
		if !isXMLSpace(s[i]) {
			return false
		}
	}
	return true
}

func trimSpace(s string) string {
	i, j := 0, len(s)
	for i < j && isXMLSpace(s[i]) {
		i++
	}
	for j > i && isXMLSpace(s[j-1]) {
		j--
	}
	return s[i:j]
}

// replaceSpace is the XSD "replace" normalization: tab, CR, LF to space.
func replaceSpace(s string) string {
	if strings.IndexAny(s, "\t\r\n") < 0 {
		return s
	}
	return strings.Map(func(r rune) rune {
		if r == '\t' || r == '\r' || r == '\n' {
			return ' '
		}
		return r
	}, s)
}

// collapseSpace is the XSD "collapse" normalization: replace, then squeeze
// runs of spaces and trim.
func collapseSpace(s string) string {
	t := trimSpace(s)
	clean := true
	for i := 0; i < len(t); i++ {
		if c := t[i]; c != ' ' && isXMLSpace(c) || c == ' ' && i+1 < len(t) && t[i+1] == ' ' {
			clean = false
			break
		}
	}
	if clean {
		return t
	}
	var b strings.Builder
	b.Grow(len(t))
	space := false
	for i := 0; i < len(t); i++ {
		if isXMLSpace(t[i]) {
			space = true
			continue
		}
		if space {
			b.WriteByte(' ')
			space = false
		}
		b.WriteByte(t[i])
	}
	return b.String()
}

// normalizeAttr is XML attribute-value normalization of literal whitespace.
// encoding/xml has already resolved character references, so a "&#10;"
// becomes a space too here, where libxml2 would keep a newline.
func normalizeAttr(s string) string { return replaceSpace(s) }

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
