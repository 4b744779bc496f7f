package xsd

import (
	"slices"
	"strings"
)

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
func (b *builder) seqMerge(dst, src map[string]*particle) { b.merge(dst, src, false) }

// choiceMerge adds src to dst as alternatives: a name in both still
// occurs once, unless either alternative repeats it.
func (b *builder) choiceMerge(dst, src map[string]*particle) { b.merge(dst, src, true) }

// merge adds src to dst. The names new to dst are numbered after those
// already there, in src's order: positions stay relative to the content
// model being built, even for a named group resolved once for another
// type.
func (b *builder) merge(dst, src map[string]*particle, choice bool) {
	var added []*particle
	for name, p := range src {
		if q, ok := dst[name]; ok {
			q.rep = q.rep || p.rep || !choice
		} else {
			np := &particle{el: p.el, rep: p.rep, pos: p.pos, seq: p.seq}
			dst[name] = np
			added = append(added, np)
		}
	}
	slices.SortFunc(added, func(x, y *particle) int { return x.pos - y.pos })
	for _, p := range added {
		p.pos = b.nextPos()
	}
}

// nextPos numbers the particles in the order content models mention them.
func (b *builder) nextPos() int {
	b.pos++
	return b.pos
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
	seqLike := false // a group ref whose group is a sequence
	switch n.local {
	case "element":
		el := b.element(n)
		if el.name != "" {
			out[el.name] = &particle{el: el, pos: b.nextPos()}
		}
		if ref, ok := n.attr("ref"); ok {
			if q, ok := n.qname(ref); ok {
				b.addMembers(out, q, map[qname]bool{q: true})
			}
		}
	case "sequence", "all":
		for _, k := range n.kids {
			b.seqMerge(out, b.content(k))
		}
	case "choice":
		for _, k := range n.kids {
			b.choiceMerge(out, b.content(k))
		}
	case "group":
		if ref, ok := n.attr("ref"); ok {
			if q, ok := n.qname(ref); ok {
				if g := b.groups[q]; g != nil {
					b.seqMerge(out, b.group(g))
					seqLike = g.child("sequence") != nil
				}
			}
		}
	case "any":
		out[wildKey] = &particle{}
	}
	if repeats(n) {
		seq := 0
		if (seqLike || n.local == "sequence") && len(out) > 1 {
			b.seqs++
			seq = b.seqs
		}
		for _, p := range out {
			p.rep = true
			if seq != 0 {
				p.seq = seq
			}
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
			b.seqMerge(m, b.content(k))
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
			out[el.name] = &particle{el: el, pos: b.nextPos()}
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
		name, ns, t := b.attributeDecl(n)
		if name == "" {
			return
		}
		if use, _ := n.attr("use"); strings.TrimSpace(use) == "prohibited" {
			delete(ct.attrs, name)
			delete(ct.attrNS, name)
			return
		}
		ct.setAttr(name, ns, t)
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
		ct.copyAttrs(b.attrGroup(g))
	}
}

// attrGroup resolves an attribute group once, into the attributes of a
// complex type of its own.
func (b *builder) attrGroup(g *xnode) *complexType {
	if m, ok := b.ragroup[g]; ok {
		return m
	}
	tmp := newComplex()
	b.ragroup[g] = tmp // a circular group sees a partial result
	for _, k := range g.kids {
		b.attribute(tmp, k)
	}
	return tmp
}

// setAttr declares attribute name of type t, in namespace ns ("" for
// unqualified).
func (ct *complexType) setAttr(name, ns string, t *simpleType) {
	ct.attrs[name] = t
	if ns != "" {
		if ct.attrNS == nil {
			ct.attrNS = map[string]string{}
		}
		ct.attrNS[name] = ns
	} else {
		delete(ct.attrNS, name)
	}
}

// copyAttrs declares the attributes of c (a base type, a group) in ct.
func (ct *complexType) copyAttrs(c *complexType) {
	for name, t := range c.attrs {
		ct.setAttr(name, c.attrNS[name], t)
	}
}

// attributeDecl returns an attribute's local name, namespace ("" when
// unqualified) and type.
func (b *builder) attributeDecl(n *xnode) (string, string, *simpleType) {
	if ref, ok := n.attr("ref"); ok {
		q, ok := n.qname(ref)
		if !ok {
			return "", "", nil
		}
		if g := b.attrs[q]; g != nil && g != n {
			_, _, t := b.attributeDecl(g)
			return q.local, q.ns, t
		}
		return q.local, q.ns, strPreserve
	}
	name, _ := n.attr("name")
	ns := ""
	if n.doc != nil {
		form, _ := n.attr("form")
		switch form = strings.TrimSpace(form); {
		case b.attrs[qname{n.doc.tns, name}] == n, form == "qualified",
			form == "" && n.doc.attrQualified:
			ns = n.doc.tns // global, or a qualified local
		}
	}
	t := strPreserve
	if v, ok := n.attr("type"); ok {
		if s, _ := b.typeByName(n, v); s != nil {
			t = s
		}
	} else if k := n.child("simpleType"); k != nil {
		t = b.simple(k)
	}
	return name, ns, t
}

// setOrder sets ct.order from its particles' positions.
func (ct *complexType) setOrder() {
	ct.order = make([]string, 0, len(ct.kids))
	for name := range ct.kids {
		ct.order = append(ct.order, name)
	}
	slices.SortFunc(ct.order, func(x, y string) int { return ct.kids[x].pos - ct.kids[y].pos })
}
