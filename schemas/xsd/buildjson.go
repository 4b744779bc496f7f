package xsd

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Build is the inverse of Render: it writes the XML document of one of the
// schema's global elements from the JSON of its rendering (a command sent
// as JSON). The rules are Render's, read backwards (see the package
// documentation): object keys become child elements in the order the
// content model first mentions them, "@name" keys attributes, "#text" the
// text of simple or mixed content; values are written in the lexical form
// of their simple type; an element that may repeat takes an array, always
// (even of one), and one that may not never does. So for every x that
// Build accepts and whose document is valid, Render(Build(x)) == x: Build
// refuses what Render would not give back (a string that is not in the
// whitespace-normalized form of its type, a number given as a string, an
// empty array, a missing "#text" of simple or mixed content...).
//
// element is the root's local name; "" picks the one global element of
// the main schema that data fits: the only one it maps to or, if it maps
// to several, the only one of those whose document is also valid (else
// DetailAmbiguousElement, naming the candidates; past maxElementGuesses
// global elements, element is required). The root
// gets the schema's targetNamespace as default namespace; unqualified
// local elements are written in no namespace. What Build does not check is
// left to validation, which the caller runs on the result: required
// elements and attributes, occurrence bounds, facets, the order of an
// xs:choice inside a repeated sequence.
//
// Errors: a *MappingError naming the JSON path of the key it could not map
// and why, or ErrFreed.
func (s *Schema) Build(element string, data []byte, lim BuildLimits) ([]byte, error) {
	s.mu.RLock()
	m := s.model
	s.mu.RUnlock()
	if m == nil {
		return nil, ErrFreed
	}
	lim = lim.withDefaults()
	if len(data) > lim.MaxBytes {
		return nil, &MappingError{Path: "data", Reason: fmt.Sprintf("longer than %d bytes", lim.MaxBytes)}
	}
	d := json.NewDecoder(bytes.NewReader(data))
	d.UseNumber()
	var x any
	if err := d.Decode(&x); err != nil {
		return nil, &MappingError{Path: "data", Reason: "not JSON: " + err.Error()}
	}
	if d.More() {
		return nil, &MappingError{Path: "data", Reason: "more than one JSON value"}
	}
	obj, ok := x.(map[string]any)
	if !ok {
		return nil, &MappingError{Path: "data", Reason: "must be a JSON object"}
	}
	if element != "" {
		if !slices.Contains(s.globals, element) {
			return nil, &MappingError{Detail: DetailUnknownElement, Path: "element",
				Reason: fmt.Sprintf("%q is not a global element of the schema (it has %s)", element, strings.Join(s.globals, ", "))}
		}
		return buildRoot(m, s.tns, element, obj, lim)
	}
	if len(s.globals) == 1 {
		return buildRoot(m, s.tns, s.globals[0], obj, lim)
	}
	if len(s.globals) > maxElementGuesses {
		return nil, &MappingError{Detail: DetailAmbiguousElement, Path: "element",
			Reason: fmt.Sprintf("the schema has %d global elements: name one", len(s.globals))}
	}
	// The elements data maps to; if several, those whose document is
	// also valid.
	var fits, docs = []string{}, [][]byte{}
	for _, name := range s.globals {
		if doc, err := buildRoot(m, s.tns, name, obj, lim); err == nil {
			fits, docs = append(fits, name), append(docs, doc)
		}
	}
	if len(fits) > 1 {
		var valid []string
		var out []byte
		for i, doc := range docs {
			if s.Validate(doc, Limits{MaxBytes: lim.MaxBytes, MaxDepth: lim.MaxDepth}) == nil {
				valid, out = append(valid, fits[i]), doc
			}
		}
		if len(valid) == 1 {
			return out, nil
		}
		if len(valid) > 1 {
			fits = valid
		}
	}
	var out []byte
	if len(fits) == 1 {
		out = docs[0]
	}
	switch len(fits) {
	case 1:
		return out, nil
	case 0:
		return nil, &MappingError{Detail: DetailAmbiguousElement, Path: "element",
			Reason: fmt.Sprintf("data fits none of the global elements (%s): name one to see why", strings.Join(s.globals, ", "))}
	}
	return nil, &MappingError{Detail: DetailAmbiguousElement, Path: "element",
		Reason: fmt.Sprintf("data fits several global elements (%s): name one", strings.Join(fits, ", "))}
}

// maxElementGuesses bounds the global elements Build tries when element
// is not given: past it, the client must name one.
const maxElementGuesses = 16

// BuildLimits bounds the cost of Build.
type BuildLimits struct {
	// MaxBytes bounds both the JSON read and the XML written. Zero means
	// DefaultMaxBytes.
	MaxBytes int
	// MaxDepth bounds element nesting (the root is depth 1). Zero means
	// DefaultMaxDepth.
	MaxDepth int
	// MaxKeys bounds the keys and array items of the data, all levels
	// together. Zero means DefaultMaxBuildKeys.
	MaxKeys int
}

// DefaultMaxBuildKeys is the default BuildLimits.MaxKeys.
const DefaultMaxBuildKeys = 10000

func (l BuildLimits) withDefaults() BuildLimits {
	if l.MaxBytes <= 0 {
		l.MaxBytes = DefaultMaxBytes
	}
	if l.MaxDepth <= 0 {
		l.MaxDepth = DefaultMaxDepth
	}
	if l.MaxKeys <= 0 {
		l.MaxKeys = DefaultMaxBuildKeys
	}
	return l
}

// Details of a *MappingError, part of iotgate's API like the others.
const (
	// DetailNotMappable: a key or value of the data has no XML form in
	// the schema (unknown key, wrong type, array for an element that does
	// not repeat...).
	DetailNotMappable = "json_not_mappable"
	// DetailAmbiguousElement: no element was named and the data fits none
	// or several of the schema's global elements.
	DetailAmbiguousElement = "json_element_ambiguous"
	// DetailUnknownElement: the element named is not a global element of
	// the schema.
	DetailUnknownElement = "json_element_unknown"
)

// MappingError says why JSON data has no XML form in the schema.
type MappingError struct {
	// Detail is one of the Detail* constants above ("" means
	// DetailNotMappable).
	Detail string
	// Path is the JSON path of the offending key, from the data
	// ("data.target", "data.point[2].@unit"), or "element".
	Path   string
	Reason string
}

func (e *MappingError) Error() string { return "xsd: " + e.Path + ": " + e.Reason }

// Code returns e's detail code.
func (e *MappingError) Code() string {
	if e.Detail == "" {
		return DetailNotMappable
	}
	return e.Detail
}

// IsMappingError reports whether err is a *MappingError.
func IsMappingError(err error) bool {
	var me *MappingError
	return errors.As(err, &me)
}

// jbuilder writes one document.
type jbuilder struct {
	m    *model
	lim  BuildLimits
	keys int
	out  []byte
}

func buildRoot(m *model, tns, name string, obj map[string]any, lim BuildLimits) ([]byte, error) {
	el := m.globals[qname{tns, name}]
	if el == nil {
		return nil, &MappingError{Detail: DetailUnknownElement, Path: "element", Reason: fmt.Sprintf("no global element %q", name)}
	}
	b := &jbuilder{m: m, lim: lim, out: make([]byte, 0, 256)}
	var v any = obj
	if el.complex == nil {
		// Render writes a root of simple type as {"#text": value}.
		t, ok := obj["#text"]
		if !ok || len(obj) != 1 {
			return nil, b.fail("data", fmt.Sprintf("element %s has a simple type: data must be {\"#text\": value}", name))
		}
		v = t
	}
	if err := b.element(el, "", v, "data", 1); err != nil {
		return nil, err
	}
	return b.out, nil
}

func (b *jbuilder) fail(path, reason string) error {
	return &MappingError{Path: path, Reason: reason}
}

// element writes el with value v; parentNS is the default namespace in
// scope (the root has none).
func (b *jbuilder) element(el *element, parentNS string, v any, path string, depth int) error {
	if depth > b.lim.MaxDepth {
		return b.fail(path, fmt.Sprintf("nested deeper than %d elements", b.lim.MaxDepth))
	}
	b.keys++
	if b.keys > b.lim.MaxKeys {
		return b.fail(path, fmt.Sprintf("more than %d keys and items", b.lim.MaxKeys))
	}
	b.out = append(b.out, '<')
	b.out = append(b.out, el.name...)
	if el.ns != parentNS {
		b.out = append(b.out, ` xmlns="`...)
		b.out = appendEscaped(b.out, el.ns, true)
		b.out = append(b.out, '"')
	}
	if v == nil {
		if !el.nillable {
			return b.fail(path, "null for an element that is not nillable")
		}
		b.out = append(b.out, ` xmlns:xsi="`+xsiNS+`" xsi:nil="true"/>`...)
		return b.size(path)
	}
	var err error
	switch {
	case el.complex != nil:
		err = b.complex(el, v, path, depth)
	case el.simple != nil:
		b.out = append(b.out, '>')
		err = b.text(el.simple, v, path)
		b.closeTag(el.name)
	default: // anyType: Render gives its text, untyped
		s, ok := v.(string)
		if !ok {
			return b.fail(path, "element "+el.name+" is untyped (xs:anyType): only a string value maps to it")
		}
		b.out = append(b.out, '>')
		err = b.text(strPreserve, s, path)
		b.closeTag(el.name)
	}
	if err != nil {
		return err
	}
	return b.size(path)
}

func (b *jbuilder) closeTag(name string) {
	b.out = append(b.out, "</"...)
	b.out = append(b.out, name...)
	b.out = append(b.out, '>')
}

func (b *jbuilder) size(path string) error {
	if len(b.out) > b.lim.MaxBytes {
		return b.fail(path, fmt.Sprintf("the XML built exceeds %d bytes", b.lim.MaxBytes))
	}
	return nil
}

func (b *jbuilder) complex(el *element, v any, path string, depth int) error {
	ct := el.complex
	obj, ok := v.(map[string]any)
	if !ok {
		return b.fail(path, "element "+el.name+" has complex content: expected an object, not "+jsonTypeName(v))
	}
	keys := make([]string, 0, len(obj))
	for k := range obj {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var prefixes []string
	// Attributes first, in key order (their order does not matter).
	for _, k := range keys {
		name, isAttr := strings.CutPrefix(k, "@")
		if !isAttr {
			continue
		}
		kp := path + "." + k
		b.keys++
		if b.keys > b.lim.MaxKeys {
			return b.fail(kp, fmt.Sprintf("more than %d keys and items", b.lim.MaxKeys))
		}
		t, ok := ct.attrs[name]
		if !ok {
			return b.fail(kp, "element "+el.name+" has no attribute "+strconv.Quote(name))
		}
		if t == nil {
			t = strPreserve
		}
		lex, err := b.lexical(t, obj[k], kp)
		if err != nil {
			return err
		}
		if strings.ContainsAny(lex, "\t\r\n") {
			// Attribute-value normalization would turn them into spaces.
			return b.fail(kp, "an attribute value cannot hold tabs or line breaks")
		}
		b.out = append(b.out, ' ')
		if ns := ct.attrNS[name]; ns == xmlNS {
			b.out = append(b.out, "xml:"...)
		} else if ns != "" {
			// A prefix of its own per qualified attribute: they are rare.
			prefix := "a" + strconv.Itoa(len(prefixes))
			prefixes = append(prefixes, prefix)
			b.out = append(b.out, "xmlns:"+prefix+`="`...)
			b.out = appendEscaped(b.out, ns, true)
			b.out = append(b.out, `" `+prefix+":"...)
		}
		b.out = append(b.out, name...)
		b.out = append(b.out, `="`...)
		b.out = appendEscaped(b.out, lex, true)
		b.out = append(b.out, '"')
	}
	b.out = append(b.out, '>')
	text, hasText := obj["#text"]
	switch {
	case ct.text != nil:
		if !hasText {
			return b.fail(path, "element "+el.name+" has simple content: its value goes in \"#text\", which is missing")
		}
		if err := b.text(ct.text, text, path+".#text"); err != nil {
			return err
		}
	case ct.mixed:
		if !hasText {
			return b.fail(path, "element "+el.name+" has mixed content: \"#text\" is missing (use \"\" for none)")
		}
		s, ok := text.(string)
		if !ok {
			return b.fail(path+".#text", "mixed content text must be a string, not "+jsonTypeName(text))
		}
		if s != trimSpace(s) {
			return b.fail(path+".#text", "mixed content text is rendered trimmed: remove leading and trailing whitespace")
		}
		if err := b.text(strPreserve, s, path+".#text"); err != nil {
			return err
		}
	case hasText:
		return b.fail(path+".#text", "element "+el.name+" has no text content")
	}
	// Child elements: the content model's order, then wildcard ones. The
	// members of a repeated sequence present together are interleaved:
	// their first items, then their second items...
	for i := 0; i < len(ct.order); {
		k := ct.order[i]
		j := i + 1
		if seq := ct.kids[k].seq; seq != 0 {
			for j < len(ct.order) && ct.kids[ct.order[j]].seq == seq {
				j++
			}
		}
		if err := b.children(el, ct, ct.order[i:j], obj, path, depth); err != nil {
			return err
		}
		i = j
	}
	for _, k := range keys {
		if k != "" && k[0] == '@' || k == "#text" || ct.kids[k] != nil {
			continue
		}
		kp := path + "." + k
		g := b.m.byLocal[k]
		if !ct.wild || g == nil {
			return b.fail(kp, "element "+el.name+" has no child element "+strconv.Quote(k))
		}
		if err := b.child(el, &particle{el: g, rep: ct.wildRep}, k, obj[k], path, depth); err != nil {
			return err
		}
	}
	b.closeTag(el.name)
	return nil
}

// children writes the occurrences of child elements names of parent
// (one, or the members of a repeated sequence: interleaved).
func (b *jbuilder) children(parent *element, ct *complexType, names []string, obj map[string]any, path string, depth int) error {
	items := make([][]any, len(names))
	most := 0
	for n, k := range names {
		v, ok := obj[k]
		if !ok {
			continue
		}
		its, err := b.occurrences(ct.kids[k], k, v, path)
		if err != nil {
			return err
		}
		items[n] = its
		most = max(most, len(its))
	}
	for i := range most {
		for n, k := range names {
			if i >= len(items[n]) {
				continue
			}
			kp := path + "." + k
			if ct.kids[k].rep {
				kp += "[" + strconv.Itoa(i) + "]"
			}
			if err := b.element(ct.kids[k].el, parent.ns, items[n][i], kp, depth+1); err != nil {
				return err
			}
		}
	}
	return nil
}

// child writes the occurrences of child element p of parent.
func (b *jbuilder) child(parent *element, p *particle, key string, v any, path string, depth int) error {
	items, err := b.occurrences(p, key, v, path)
	if err != nil {
		return err
	}
	for i, item := range items {
		kp := path + "." + key
		if p.rep {
			kp += "[" + strconv.Itoa(i) + "]"
		}
		if err := b.element(p.el, parent.ns, item, kp, depth+1); err != nil {
			return err
		}
	}
	return nil
}

// occurrences returns the values of child element p's occurrences: the
// items of an array if it may repeat, else the value itself.
func (b *jbuilder) occurrences(p *particle, key string, v any, path string) ([]any, error) {
	kp := path + "." + key
	arr, isArr := v.([]any)
	switch {
	case p.rep && !isArr:
		return nil, b.fail(kp, "element "+key+" may repeat: its value must be an array (even of one)")
	case !p.rep && isArr:
		return nil, b.fail(kp, "element "+key+" occurs at most once: an array is not allowed")
	case !p.rep:
		return []any{v}, nil
	case len(arr) == 0:
		return nil, b.fail(kp, "an empty array has no XML form: leave the key out")
	}
	for i, item := range arr {
		if _, nested := item.([]any); nested {
			return nil, b.fail(kp+"["+strconv.Itoa(i)+"]", "arrays of arrays have no XML form")
		}
	}
	return arr, nil
}
