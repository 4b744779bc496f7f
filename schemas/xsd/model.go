package xsd

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
)

// The model is a Go-side summary of a schema, used only to render documents
// to JSON: for each element, which children may repeat and the JSON type of
// its text and attribute values. It is built once at Compile time from the
// XSD source (and the sources of imported schemas) with encoding/xml, rather
// than by walking libxml2's compiled schema: those are private structures
// (schemasInternals.h says so) that change between libxml2 versions, and the
// Go model keeps rendering free of cgo calls.
//
// It resolves named and anonymous simple and complex types, element and
// attribute refs, model groups and attribute groups, complex type extension
// and restriction (complex and simple content), substitution groups and
// wildcards. Anything it cannot resolve renders untyped (strings).

// modelSource is one schema document: the main one or an imported one.
type modelSource struct {
	ns  string
	src []byte
}

type valueKind uint8

const (
	kindString valueKind = iota
	kindNumber
	kindBool
)

// wsMode is the XSD whiteSpace facet: how text is normalized before use.
type wsMode uint8

const (
	wsPreserve wsMode = iota
	wsReplace
	wsCollapse
)

// simpleType is what rendering needs of an XSD simple type.
type simpleType struct {
	kind valueKind
	ws   wsMode
	// pattern: values are matched against an xs:pattern facet (of this
	// type, a base, a list's item type or a union's member).
	pattern bool
}

// complexType is what rendering needs of an XSD complex type.
type complexType struct {
	text    *simpleType // type of the text for simple content, else nil
	mixed   bool
	attrs   map[string]*simpleType // by local name
	kids    map[string]*particle   // child elements by local name
	wild    bool                   // an xs:any allows other elements
	wildRep bool                   // ... more than once
}

// particle is a child element as its parent's content model allows it.
type particle struct {
	el  *element
	rep bool // may occur more than once: rendered as an array, always
}

// element is a resolved element declaration. Both types nil means anyType:
// the element renders untyped.
type element struct {
	name     string
	simple   *simpleType
	complex  *complexType
	nillable bool
}

type qname struct{ ns, local string }

// model is the compiled rendering model of a schema. Read-only once built.
type model struct {
	globals map[qname]*element
	byLocal map[string]*element // first global element of each local name
	types   map[string]typeRef  // named types by local name, for xsi:type
}

type typeRef struct {
	simple  *simpleType
	complex *complexType
}

// Limits of the model builder: documents are bounded by MaxSchemaBytes, but
// the XSD tree is walked recursively and content models are expanded.
const (
	maxSchemaDepth = 128
	maxModelSteps  = 1 << 20
)

var (
	strPreserve = &simpleType{kind: kindString, ws: wsPreserve}
	strReplace  = &simpleType{kind: kindString, ws: wsReplace}
	strCollapse = &simpleType{kind: kindString, ws: wsCollapse}
	numberType  = &simpleType{kind: kindNumber, ws: wsCollapse}
	boolType    = &simpleType{kind: kindBool, ws: wsCollapse}
)

// builtin maps an XSD built-in simple type to its rendering type.
func builtin(local string) *simpleType {
	switch local {
	case "decimal", "float", "double", "integer", "nonPositiveInteger", "negativeInteger",
		"long", "int", "short", "byte", "nonNegativeInteger", "unsignedLong", "unsignedInt",
		"unsignedShort", "unsignedByte", "positiveInteger":
		return numberType
	case "boolean":
		return boolType
	case "string", "anySimpleType":
		return strPreserve
	case "normalizedString":
		return strReplace
	default: // token and its derivatives, dates, URIs, QNames, binary...
		return strCollapse
	}
}

// ---- XSD document tree -------------------------------------------------------

// xnode is an element of an XSD document in the XSD namespace (others, and
// annotations, are skipped when parsing).
type xnode struct {
	local string
	line  int
	attrs []xml.Attr // un-namespaced attributes
	scope *nsScope
	kids  []*xnode
}

// nsScope holds the namespace prefixes declared on one element, for
// resolving QName-valued attributes (type="tns:Foo").
type nsScope struct {
	parent *nsScope
	m      map[string]string
}

const xmlNS = "http://www.w3.org/XML/1998/namespace"

func (s *nsScope) lookup(prefix string) (string, bool) {
	if prefix == "xml" {
		return xmlNS, true
	}
	for ; s != nil; s = s.parent {
		if v, ok := s.m[prefix]; ok {
			return v, true
		}
	}
	return "", prefix == "" // no default namespace: unqualified
}

func (n *xnode) attr(name string) (string, bool) {
	for _, a := range n.attrs {
		if a.Name.Local == name {
			return a.Value, true
		}
	}
	return "", false
}

func (n *xnode) child(local string) *xnode {
	for _, k := range n.kids {
		if k.local == local {
			return k
		}
	}
	return nil
}

// qname resolves a QName value in n's scope.
func (n *xnode) qname(v string) (qname, bool) {
	v = strings.TrimSpace(v)
	prefix, local, found := strings.Cut(v, ":")
	if !found {
		prefix, local = "", v
	}
	ns, ok := n.scope.lookup(prefix)
	return qname{ns, local}, ok && local != ""
}

// parseXSD parses an XSD document into its tree of XSD elements.
func parseXSD(src []byte) (*xnode, error) {
	d := xml.NewDecoder(bytes.NewReader(src))
	d.Strict = true
	d.CharsetReader = charsetReader
	var stack []*xnode
	var root *xnode
	scope := (*nsScope)(nil)
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		switch t := tok.(type) {
		case xml.Directive:
			return nil, errors.New("DOCTYPE is not allowed")
		case xml.StartElement:
			if len(stack) == 0 && root != nil {
				return nil, errors.New("more than one root element")
			}
			if t.Name.Space != xsdNS || t.Name.Local == "annotation" {
				if len(stack) == 0 {
					return nil, fmt.Errorf("the root element must be xs:schema in namespace %s", xsdNS)
				}
				if err := d.Skip(); err != nil {
					return nil, err
				}
				continue
			}
			if len(stack) >= maxSchemaDepth {
				return nil, fmt.Errorf("schema nested deeper than %d elements", maxSchemaDepth)
			}
			line, _ := d.InputPos()
			n := &xnode{local: t.Name.Local, line: line, scope: scope}
			var decl map[string]string
			for _, a := range t.Attr {
				switch {
				case a.Name.Space == "xmlns":
					if decl == nil {
						decl = map[string]string{}
					}
					decl[a.Name.Local] = a.Value
				case a.Name.Space == "" && a.Name.Local == "xmlns":
					if decl == nil {
						decl = map[string]string{}
					}
					decl[""] = a.Value
				case a.Name.Space == "":
					n.attrs = append(n.attrs, a)
				}
			}
			if decl != nil {
				n.scope = &nsScope{parent: scope, m: decl}
			}
			scope = n.scope
			if len(stack) == 0 {
				if n.local != "schema" {
					return nil, fmt.Errorf("the root element must be xs:schema in namespace %s", xsdNS)
				}
				root = n
			} else {
				p := stack[len(stack)-1]
				p.kids = append(p.kids, n)
			}
			stack = append(stack, n)
		case xml.EndElement:
			if len(stack) == 0 {
				return nil, errors.New("unexpected end element")
			}
			stack = stack[:len(stack)-1]
			if len(stack) > 0 {
				scope = stack[len(stack)-1].scope
			} else {
				scope = nil
			}
		}
	}
	if root == nil {
		return nil, errors.New("no xs:schema element")
	}
	return root, nil
}

// ---- resolution ----------------------------------------------------------------

type builder struct {
	elems    map[qname]*xnode
	types    map[qname]*xnode
	groups   map[qname]*xnode
	agroups  map[qname]*xnode
	attrs    map[qname]*xnode
	subst    map[qname][]qname // substitution group head -> direct members
	relem    map[*xnode]*element
	rsimple  map[*xnode]*simpleType
	rcomplex map[*xnode]*complexType
	rgroup   map[*xnode]map[string]*particle
	ragroup  map[*xnode]map[string]*simpleType
	steps    int
}

var errTooComplex = errors.New("schema too complex to build its JSON rendering model")

// patternRef is an xs:pattern facet of a schema document.
type patternRef struct {
	value string
	line  int
	ns    string // target namespace of its document
	main  bool   // in the main document (else in an imported one)
}

// collectPatterns appends the xs:pattern facets under n.
func collectPatterns(n *xnode, ns string, main bool, out []patternRef) []patternRef {
	if n.local == "pattern" {
		if v, ok := n.attr("value"); ok {
			out = append(out, patternRef{value: v, line: n.line, ns: ns, main: main})
		}
	}
	for _, k := range n.kids {
		out = collectPatterns(k, ns, main, out)
	}
	return out
}

// built is what buildModel returns.
type built struct {
	model    *model
	globals  []string     // the main schema's global element names
	patterns []patternRef // every xs:pattern, main schema first
	// patternElems and patternAttrs are the local names of the elements
	// and attributes whose values are matched against a pattern.
	patternElems, patternAttrs []string
}

// buildModel builds the rendering model of srcs[0] with the imported
// schemas srcs[1:]. Its globals leave abstract elements out: they cannot be
// document roots.
func buildModel(srcs []modelSource) (built, error) {
	b := &builder{
		elems: map[qname]*xnode{}, types: map[qname]*xnode{}, groups: map[qname]*xnode{},
		agroups: map[qname]*xnode{}, attrs: map[qname]*xnode{}, subst: map[qname][]qname{},
		relem: map[*xnode]*element{}, rsimple: map[*xnode]*simpleType{},
		rcomplex: map[*xnode]*complexType{}, rgroup: map[*xnode]map[string]*particle{},
		ragroup: map[*xnode]map[string]*simpleType{},
	}
	var globalOrder []qname
	var typeOrder []qname
	var names []string
	var patterns []patternRef
	for i, s := range srcs {
		root, err := parseXSD(s.src)
		if err != nil {
			if i == 0 {
				return built{}, fmt.Errorf("schema: %w", err)
			}
			return built{}, fmt.Errorf("imported schema %q: %w", s.ns, err)
		}
		tns, _ := root.attr("targetNamespace")
		patterns = collectPatterns(root, tns, i == 0, patterns)
		for _, k := range root.kids {
			name, ok := k.attr("name")
			if !ok {
				continue
			}
			q := qname{tns, name}
			switch k.local {
			case "element":
				if _, dup := b.elems[q]; !dup {
					b.elems[q] = k
					globalOrder = append(globalOrder, q)
					if i == 0 && !isTrue(k.attr("abstract")) {
						names = append(names, name) // abstract ones are never roots
					}
				}
			case "simpleType", "complexType":
				if _, dup := b.types[q]; !dup {
					b.types[q] = k
					typeOrder = append(typeOrder, q)
				}
			case "group":
				b.groups[q] = k
			case "attributeGroup":
				b.agroups[q] = k
			case "attribute":
				b.attrs[q] = k
			}
		}
	}
	for _, q := range globalOrder {
		n := b.elems[q]
		v, ok := n.attr("substitutionGroup")
		if !ok {
			continue
		}
		// XSD 1.1 allows a list of heads.
		for _, h := range strings.Fields(v) {
			if hq, ok := n.qname(h); ok {
				b.subst[hq] = append(b.subst[hq], q)
			}
		}
	}
	m := &model{
		globals: make(map[qname]*element, len(globalOrder)),
		byLocal: make(map[string]*element, len(globalOrder)),
		types:   make(map[string]typeRef, len(typeOrder)),
	}
	for _, q := range globalOrder {
		el := b.element(b.elems[q])
		m.globals[q] = el
		if _, ok := m.byLocal[q.local]; !ok {
			m.byLocal[q.local] = el
		}
	}
	for _, q := range typeOrder {
		if _, ok := m.types[q.local]; ok {
			continue
		}
		n := b.types[q]
		if n.local == "simpleType" {
			m.types[q.local] = typeRef{simple: b.simple(n)}
		} else {
			m.types[q.local] = typeRef{complex: b.complex(n)}
		}
	}
	if b.steps > maxModelSteps {
		return built{}, errTooComplex
	}
	out := built{model: m, globals: names, patterns: patterns}
	if len(patterns) > 0 {
		out.patternElems, out.patternAttrs = b.patternNames()
	}
	return out, nil
}

// patternNames returns the local names of the elements and attributes
// declared with a type that has a pattern, sorted.
func (b *builder) patternNames() (elems, attrs []string) {
	es, as := map[string]bool{}, map[string]bool{}
	for _, e := range b.relem {
		if e.simple != nil && e.simple.pattern || e.complex != nil && e.complex.text != nil && e.complex.text.pattern {
			es[e.name] = true
		}
	}
	for _, ct := range b.rcomplex {
		for name, t := range ct.attrs {
			if t != nil && t.pattern {
				as[name] = true
			}
		}
	}
	return slices.Sorted(maps.Keys(es)), slices.Sorted(maps.Keys(as))
}

// step counts work; false once the budget is spent (buildModel then fails),
// so that a hostile schema cannot make model building explode.
func (b *builder) step() bool {
	b.steps++
	return b.steps <= maxModelSteps
}

func newComplex() *complexType {
	return &complexType{attrs: map[string]*simpleType{}, kids: map[string]*particle{}}
}

func isTrue(v string, ok bool) bool {
	v = strings.TrimSpace(v)
	return ok && (v == "true" || v == "1")
}

// repeats reports whether a particle's maxOccurs is above 1.
func repeats(n *xnode) bool {
	v, ok := n.attr("maxOccurs")
	if !ok {
		return false
	}
	v = strings.TrimSpace(v)
	if v == "unbounded" {
		return true
	}
	v = strings.TrimLeft(v, "0")
	if v == "" {
		return false
	}
	for _, c := range v {
		if c < '0' || c > '9' {
			return false
		}
	}
	return v != "1"
}

// typeByName resolves a type QName used in n.
func (b *builder) typeByName(n *xnode, v string) (*simpleType, *complexType) {
	q, ok := n.qname(v)
	if !ok {
		return nil, nil
	}
	if q.ns == xsdNS {
		if q.local == "anyType" {
			return nil, nil
		}
		return builtin(q.local), nil
	}
	t := b.types[q]
	switch {
	case t == nil:
		return nil, nil
	case t.local == "simpleType":
		return b.simple(t), nil
	default:
		return nil, b.complex(t)
	}
}

func (b *builder) element(n *xnode) *element {
	if e, ok := b.relem[n]; ok {
		return e
	}
	if !b.step() {
		return &element{}
	}
	if ref, ok := n.attr("ref"); ok {
		q, ok := n.qname(ref)
		var e *element
		if g := b.elems[q]; ok && g != nil {
			e = b.element(g)
		} else {
			e = &element{name: q.local}
		}
		b.relem[n] = e
		return e
	}
	name, _ := n.attr("name")
	e := &element{name: name, nillable: isTrue(n.attr("nillable"))}
	b.relem[n] = e // before resolving the type: types may be recursive
	if t, ok := n.attr("type"); ok {
		e.simple, e.complex = b.typeByName(n, t)
	} else if k := n.child("simpleType"); k != nil {
		e.simple = b.simple(k)
	} else if k := n.child("complexType"); k != nil {
		e.complex = b.complex(k)
	} else if sg, ok := n.attr("substitutionGroup"); ok {
		// No type: the head's type.
		if f := strings.Fields(sg); len(f) > 0 {
			if q, ok := n.qname(f[0]); ok {
				if h := b.elems[q]; h != nil {
					he := b.element(h)
					e.simple, e.complex = he.simple, he.complex
				}
			}
		}
	}
	return e
}

func (b *builder) simple(n *xnode) *simpleType {
	if st, ok := b.rsimple[n]; ok {
		return st
	}
	st := &simpleType{kind: kindString, ws: wsPreserve}
	b.rsimple[n] = st
	if !b.step() {
		return st
	}
	for _, k := range n.kids {
		switch k.local {
		case "restriction":
			base := strPreserve
			if v, ok := k.attr("base"); ok {
				if s, c := b.typeByName(k, v); s != nil {
					base = s
				} else if c != nil && c.text != nil {
					base = c.text
				}
			} else if kk := k.child("simpleType"); kk != nil {
				base = b.simple(kk)
			}
			*st = *base
			applyWhiteSpace(st, k)
			st.pattern = st.pattern || k.child("pattern") != nil
		case "list":
			*st = *strCollapse
			st.pattern = b.anyPattern(k, "itemType")
		case "union":
			*st = *strPreserve
			st.pattern = b.anyPattern(k, "memberTypes")
		}
	}
	return st
}

// anyPattern reports whether a list's item type or a union's member types
// (named in attr, or inline) have a pattern.
func (b *builder) anyPattern(n *xnode, attr string) bool {
	v, _ := n.attr(attr)
	for _, name := range strings.Fields(v) {
		if s, _ := b.typeByName(n, name); s != nil && s.pattern {
			return true
		}
	}
	for _, k := range n.kids {
		if k.local == "simpleType" && b.simple(k).pattern {
			return true
		}
	}
	return false
}

// applyWhiteSpace applies a restriction's whiteSpace facet, which can only
// tighten normalization.
func applyWhiteSpace(st *simpleType, restriction *xnode) {
	f := restriction.child("whiteSpace")
	if f == nil {
		return
	}
	v, _ := f.attr("value")
	ws := st.ws
	switch strings.TrimSpace(v) {
	case "replace":
		ws = wsReplace
	case "collapse":
		ws = wsCollapse
	}
	if ws > st.ws {
		st.ws = ws
	}
}

func (b *builder) complex(n *xnode) *complexType {
	if ct, ok := b.rcomplex[n]; ok {
		return ct
	}
	ct := newComplex()
	b.rcomplex[n] = ct // before the content: types may be recursive
	if !b.step() {
		return ct
	}
	mixed := isTrue(n.attr("mixed"))
	for _, k := range n.kids {
		switch k.local {
		case "simpleContent":
			b.simpleContent(ct, k)
		case "complexContent":
			if v, ok := k.attr("mixed"); ok {
				mixed = isTrue(v, ok)
			}
			if b.complexContent(ct, k) {
				mixed = true
			}
		case "sequence", "choice", "all", "group":
			seqMerge(ct.kids, b.content(k))
		case "attribute", "attributeGroup", "anyAttribute":
			b.attribute(ct, k)
		}
	}
	ct.mixed = mixed
	ct.takeWildcard()
	return ct
}

func derivation(n *xnode) *xnode {
	for _, k := range n.kids {
		if k.local == "extension" || k.local == "restriction" {
			return k
		}
	}
	return nil
}

func (b *builder) simpleContent(ct *complexType, n *xnode) {
	d := derivation(n)
	if d == nil {
		return
	}
	text := strPreserve
	if v, ok := d.attr("base"); ok {
		s, c := b.typeByName(d, v)
		switch {
		case s != nil:
			text = s
		case c != nil:
			if c.text != nil {
				text = c.text
			}
			for name, a := range c.attrs {
				ct.attrs[name] = a
			}
		}
	}
	if d.local == "restriction" {
		if k := d.child("simpleType"); k != nil {
			text = b.simple(k)
		}
		cp := *text
		applyWhiteSpace(&cp, d)
		cp.pattern = cp.pattern || d.child("pattern") != nil
		text = &cp
	}
	ct.text = text
	for _, k := range d.kids {
		b.attribute(ct, k)
	}
}

// complexContent fills ct from an extension or restriction of another
// complex type; it reports whether the base (of an extension) is mixed.
func (b *builder) complexContent(ct *complexType, n *xnode) (baseMixed bool) {
	d := derivation(n)
	if d == nil {
		return false
	}
	if v, ok := d.attr("base"); ok {
		if _, c := b.typeByName(d, v); c != nil {
			for name, a := range c.attrs {
				ct.attrs[name] = a
			}
			// A restriction restates the content; an extension is the
			// base's content followed by its own (a sequence of the two).
			if d.local == "extension" {
				for name, p := range c.kids {
					ct.kids[name] = &particle{el: p.el, rep: p.rep}
				}
				if c.wild {
					ct.kids[wildKey] = &particle{rep: c.wildRep}
				}
				baseMixed = c.mixed
			}
		}
	}
	for _, k := range d.kids {
		switch k.local {
		case "sequence", "choice", "all", "group":
			seqMerge(ct.kids, b.content(k))
		default:
			b.attribute(ct, k)
		}
	}
	return baseMixed
}

// wildKey stands for the xs:any wildcards of a content model while it is
// computed, so that they repeat by the same rules as elements. It is not
// an XML name, so no element can take it.
const wildKey = "\x00any"

// takeWildcard moves the wildcard pseudo-element into ct's wild flags.
func (ct *complexType) takeWildcard() {
	if p, ok := ct.kids[wildKey]; ok {
		ct.wild, ct.wildRep = true, p.rep
		delete(ct.kids, wildKey)
	}
}

// seqMerge adds src to dst as particles that follow each other: a name
// in both may occur in both places, so it repeats.
func seqMerge(dst, src map[string]*particle) {
	for name, p := range src {
		if q, ok := dst[name]; ok {
			q.rep = true
		} else {
			dst[name] = &particle{el: p.el, rep: p.rep}
		}
	}
}

// choiceMerge adds src to dst as alternatives: a name in both still
// occurs once, unless either alternative repeats it.
func choiceMerge(dst, src map[string]*particle) {
	for name, p := range src {
		if q, ok := dst[name]; ok {
			q.rep = q.rep || p.rep
		} else {
			dst[name] = &particle{el: p.el, rep: p.rep}
		}
	}
}

// content returns the elements a particle allows, each marked rep if it
// may occur more than once within the particle: the counts of a sequence
// (or all) add up, those of a choice take the larger, and a particle with
// maxOccurs > 1 makes everything in it repeat. The result is the caller's.
func (b *builder) content(n *xnode) map[string]*particle {
	out := map[string]*particle{}
	if !b.step() {
		return out
	}
	switch n.local {
	case "element":
		el := b.element(n)
		if el.name != "" {
			out[el.name] = &particle{el: el}
		}
		if ref, ok := n.attr("ref"); ok {
			if q, ok := n.qname(ref); ok {
				b.addMembers(out, q, map[qname]bool{q: true})
			}
		}
	case "sequence", "all":
		for _, k := range n.kids {
			seqMerge(out, b.content(k))
		}
	case "choice":
		for _, k := range n.kids {
			choiceMerge(out, b.content(k))
		}
	case "group":
		if ref, ok := n.attr("ref"); ok {
			if q, ok := n.qname(ref); ok {
				if g := b.groups[q]; g != nil {
					seqMerge(out, b.group(g))
				}
			}
		}
	case "any":
		out[wildKey] = &particle{}
	}
	if repeats(n) {
		for _, p := range out {
			p.rep = true
		}
	}
	return out
}

// group resolves a named model group once; its content is then copied into
// every type that refers to it (no re-expansion, so nesting stays linear).
func (b *builder) group(g *xnode) map[string]*particle {
	if m, ok := b.rgroup[g]; ok {
		return m
	}
	m := map[string]*particle{}
	b.rgroup[g] = m // a circular group sees a partial result, not a loop
	for _, k := range g.kids {
		switch k.local {
		case "sequence", "choice", "all":
			seqMerge(m, b.content(k))
		}
	}
	return m
}

// addMembers adds the members of head's substitution group, transitively:
// they stand in for the head, so they occur as often as it does.
func (b *builder) addMembers(out map[string]*particle, head qname, seen map[qname]bool) {
	for _, mq := range b.subst[head] {
		if seen[mq] || !b.step() {
			continue
		}
		seen[mq] = true
		el := b.element(b.elems[mq])
		if _, ok := out[el.name]; !ok && el.name != "" {
			out[el.name] = &particle{el: el}
		}
		b.addMembers(out, mq, seen)
	}
}

func (b *builder) attribute(ct *complexType, n *xnode) {
	if !b.step() {
		return
	}
	switch n.local {
	case "attribute":
		name, t := b.attributeDecl(n)
		if name == "" {
			return
		}
		if use, _ := n.attr("use"); strings.TrimSpace(use) == "prohibited" {
			delete(ct.attrs, name)
			return
		}
		ct.attrs[name] = t
	case "attributeGroup":
		ref, ok := n.attr("ref")
		if !ok {
			return
		}
		q, ok := n.qname(ref)
		g := b.agroups[q]
		if !ok || g == nil {
			return
		}
		for name, t := range b.attrGroup(g) {
			ct.attrs[name] = t
		}
	}
}

func (b *builder) attrGroup(g *xnode) map[string]*simpleType {
	if m, ok := b.ragroup[g]; ok {
		return m
	}
	tmp := newComplex()
	b.ragroup[g] = tmp.attrs // a circular group sees a partial result
	for _, k := range g.kids {
		b.attribute(tmp, k)
	}
	return tmp.attrs
}

// attributeDecl returns an attribute's local name and type.
func (b *builder) attributeDecl(n *xnode) (string, *simpleType) {
	if ref, ok := n.attr("ref"); ok {
		q, ok := n.qname(ref)
		if !ok {
			return "", nil
		}
		if g := b.attrs[q]; g != nil && g != n {
			_, t := b.attributeDecl(g)
			return q.local, t
		}
		return q.local, strPreserve
	}
	name, _ := n.attr("name")
	t := strPreserve
	if v, ok := n.attr("type"); ok {
		if s, _ := b.typeByName(n, v); s != nil {
			t = s
		}
	} else if k := n.child("simpleType"); k != nil {
		t = b.simple(k)
	}
	return name, t
}
