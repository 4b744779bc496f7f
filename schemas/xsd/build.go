package xsd

import (
	"errors"
	"fmt"
	"strings"
)

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
	ragroup  map[*xnode]*complexType
	steps    int
	pos      int // last particle position given (nextPos)
	seqs     int // last repeated sequence numbered (particle.seq)
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
	// and attributes whose values are matched against a pattern, with the
	// most pattern facets one value is matched against.
	patternElems, patternAttrs map[string]int
	// patternChecks is the most xs:pattern facets one value may be
	// matched against.
	patternChecks int
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
		ragroup: map[*xnode]*complexType{},
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
		for _, st := range b.rsimple {
			out.patternChecks = max(out.patternChecks, st.checks)
		}
		for _, ct := range b.rcomplex {
			if ct.text != nil {
				out.patternChecks = max(out.patternChecks, ct.text.checks)
			}
		}
	}
	return out, nil
}

// patternNames returns the local names of the elements and attributes
// declared with a type that has a pattern, each with the most pattern
// facets a value of that name is matched against.
func (b *builder) patternNames() (elems, attrs map[string]int) {
	elems, attrs = map[string]int{}, map[string]int{}
	for _, e := range b.relem {
		checks := 0
		if e.simple != nil {
			checks = e.simple.checks
		} else if e.complex != nil && e.complex.text != nil {
			checks = e.complex.text.checks
		}
		if checks > 0 {
			elems[e.name] = max(elems[e.name], checks)
		}
	}
	for _, ct := range b.rcomplex {
		for name, t := range ct.attrs {
			if t != nil && t.checks > 0 {
				attrs[name] = max(attrs[name], t.checks)
			}
		}
	}
	return elems, attrs
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
			e = &element{name: q.local, ns: q.ns}
		}
		b.relem[n] = e
		return e
	}
	name, _ := n.attr("name")
	e := &element{name: name, nillable: isTrue(n.attr("nillable"))}
	if n.doc != nil {
		form, _ := n.attr("form")
		switch form = strings.TrimSpace(form); {
		case b.elems[qname{n.doc.tns, name}] == n, form == "qualified",
			form == "" && n.doc.qualified:
			e.ns = n.doc.tns // global, or a qualified local
		}
	}
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
