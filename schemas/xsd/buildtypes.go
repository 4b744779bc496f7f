package xsd

import (
	"strings"
)

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
			applyFacets(st, k)
			if k.child("pattern") != nil {
				st.pattern, st.checks = true, add(st.checks, 1)
			}
		case "list":
			*st = *strCollapse
			st.enum = nil
			st.checks = b.patternChecks(k, "itemType") // per item
			st.pattern = st.checks > 0
		case "union":
			*st = *strPreserve
			st.checks = b.patternChecks(k, "memberTypes")
			st.pattern = st.checks > 0
		}
	}
	return st
}

// patternChecks returns the pattern checks of a list's item type or of all
// a union's member types (named in attr, or inline) together.
func (b *builder) patternChecks(n *xnode, attr string) int {
	checks := 0
	v, _ := n.attr(attr)
	for _, name := range strings.Fields(v) {
		if s, _ := b.typeByName(n, name); s != nil {
			checks = add(checks, s.checks)
		}
	}
	for _, k := range n.kids {
		if k.local == "simpleType" {
			checks = add(checks, b.simple(k).checks)
		}
	}
	return checks
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
			b.seqMerge(ct.kids, b.content(k))
		case "attribute", "attributeGroup", "anyAttribute":
			b.attribute(ct, k)
		}
	}
	ct.mixed = mixed
	ct.takeWildcard()
	ct.setOrder()
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
			ct.copyAttrs(c)
		}
	}
	if d.local == "restriction" {
		if k := d.child("simpleType"); k != nil {
			text = b.simple(k)
		}
		cp := *text
		applyWhiteSpace(&cp, d)
		if d.child("pattern") != nil {
			cp.pattern, cp.checks = true, add(cp.checks, 1)
		}
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
			ct.copyAttrs(c)
			// A restriction restates the content; an extension is the
			// base's content followed by its own (a sequence of the two).
			if d.local == "extension" {
				for name, p := range c.kids {
					ct.kids[name] = &particle{el: p.el, rep: p.rep, pos: p.pos, seq: p.seq}
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
			b.seqMerge(ct.kids, b.content(k))
		default:
			b.attribute(ct, k)
		}
	}
	return baseMixed
}

// applyFacets records a restriction's enumeration and bounds facets for
// the JSON Schema: an enumeration replaces the base's, bounds tighten it.
func applyFacets(st *simpleType, restriction *xnode) {
	var enum []string
	for _, k := range restriction.kids {
		v, ok := k.attr("value")
		if !ok {
			continue
		}
		switch k.local {
		case "enumeration":
			enum = append(enum, v)
		case "minInclusive":
			st.minIncl = v
		case "maxInclusive":
			st.maxIncl = v
		case "minExclusive":
			st.minExcl = v
		case "maxExclusive":
			st.maxExcl = v
		}
	}
	if enum != nil {
		st.enum = enum
	}
}
