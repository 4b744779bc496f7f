package xsd

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"strconv"
	"strings"
)

// CostLimits bounds what compiling a schema may cost, checked on the
// schema's source before libxml2 sees it. libxml2 builds one automaton per
// content model and makes it deterministic in super-linear time (a sequence
// of N optional elements: 16 ms at N=200, 0.3 s at 400, 2.9 s at 800, 35 s
// at 2,000), and the compile is a cgo call that cannot be cancelled. What
// the counts miss, a trial compile under CPU and memory limits catches
// (EnableTrialCompiles).
type CostLimits struct {
	// MaxModelParticles bounds the particles (element, any, sequence,
	// choice, all, group reference) of one complex type's content model,
	// with group references, base types of extensions and substitution
	// groups expanded as libxml2 expands them. Zero means
	// DefaultMaxModelParticles.
	MaxModelParticles int
	// MaxParticles bounds the sum of that over all content models of a
	// schema document. Zero means DefaultMaxParticles.
	MaxParticles int
	// MaxDeclarations bounds element declarations plus the attribute uses
	// of every complex type (attribute groups and base types expanded).
	// Zero means DefaultMaxDeclarations.
	MaxDeclarations int
	// MaxNodes bounds the elements of a schema document, of any namespace,
	// annotations included. Zero means DefaultMaxNodes.
	MaxNodes int
}

// Defaults of CostLimits, measured on a 2-core AMD EPYC: at
// DefaultMaxModelParticles optional elements in one sequence, libxml2
// compiles in ~0.15 s; 10,000 attribute declarations or global elements
// take ~0.2 s.
const (
	DefaultMaxModelParticles = 300
	DefaultMaxParticles      = 2000
	DefaultMaxDeclarations   = 5000
	DefaultMaxNodes          = 10000
)

func (l CostLimits) withDefaults() CostLimits {
	if l.MaxModelParticles <= 0 {
		l.MaxModelParticles = DefaultMaxModelParticles
	}
	if l.MaxParticles <= 0 {
		l.MaxParticles = DefaultMaxParticles
	}
	if l.MaxDeclarations <= 0 {
		l.MaxDeclarations = DefaultMaxDeclarations
	}
	if l.MaxNodes <= 0 {
		l.MaxNodes = DefaultMaxNodes
	}
	return l
}

// tooComplex is a refusal by a cost limit.
func tooComplex(line int, format string, args ...any) *CompileError {
	return &CompileError{Detail: DetailTooComplex, Issues: []CompileIssue{{Line: line,
		Message: "schema too complex: " + fmt.Sprintf(format, args...)}}}
}

// checkCost refuses src when it is over a cost limit, in linear time.
// Anything malformed is left to libxml2, which reports it better.
func checkCost(src []byte, lim CostLimits) *CompileError {
	lim = lim.withDefaults()
	if line, over := attributeFlood(src); over {
		return tooComplex(line, "an element has more than %d attributes", MaxAttributes)
	}
	if ce := checkNodes(src, lim.MaxNodes); ce != nil {
		return ce
	}
	root, err := parseXSD(src)
	if err != nil {
		return nil
	}
	return newCoster(root).check(lim)
}

// checkNodes counts the elements of src and their nesting, of every
// namespace (parseXSD skips others and annotations).
func checkNodes(src []byte, maxNodes int) *CompileError {
	d := xml.NewDecoder(bytes.NewReader(src))
	d.Strict = true
	d.CharsetReader = charsetReader
	nodes, depth := 0, 0
	for {
		tok, err := d.RawToken()
		if err != nil {
			return nil // the end, or malformed: libxml2 says it better
		}
		switch tok.(type) {
		case xml.StartElement:
			nodes++
			depth++
			line, _ := d.InputPos()
			if nodes > maxNodes {
				return tooComplex(line, "more than %d elements", maxNodes)
			}
			if depth > maxSchemaDepth {
				return tooComplex(line, "elements nested deeper than %d", maxSchemaDepth)
			}
		case xml.EndElement:
			depth--
		}
	}
}

// coster counts what libxml2 builds from one schema document. Groups,
// attribute groups and base types are resolved by local name within the
// document (a reference into an imported schema counts as one): it is an
// estimate of the work, not a resolution of the schema.
type coster struct {
	root                   *xnode
	groups, agroups, types map[string]*xnode
	subst                  map[string]int // head -> members, transitively
	memo                   map[*xnode]int
	amemo                  map[*xnode]int
	busy                   map[*xnode]bool
}

func newCoster(root *xnode) *coster {
	c := &coster{root: root, groups: map[string]*xnode{}, agroups: map[string]*xnode{}, types: map[string]*xnode{},
		subst: map[string]int{}, memo: map[*xnode]int{}, amemo: map[*xnode]int{}, busy: map[*xnode]bool{}}
	heads := map[string][]string{}
	for _, k := range root.kids {
		name, _ := k.attr("name")
		switch k.local {
		case "group":
			c.groups[name] = k
		case "attributeGroup":
			c.agroups[name] = k
		case "complexType":
			c.types[name] = k
		case "element":
			if sg, ok := k.attr("substitutionGroup"); ok {
				for _, h := range strings.Fields(sg) {
					heads[localOf(h)] = append(heads[localOf(h)], name)
				}
			}
		}
	}
	// Members of members count too; seen stops cycles.
	for h := range heads {
		seen := map[string]bool{h: true}
		stack := []string{h}
		for len(stack) > 0 {
			x := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			for _, m := range heads[x] {
				if !seen[m] {
					seen[m] = true
					stack = append(stack, m)
				}
			}
		}
		c.subst[h] = len(seen) - 1
	}
	return c
}

func localOf(qn string) string {
	_, local, found := strings.Cut(strings.TrimSpace(qn), ":")
	if !found {
		return strings.TrimSpace(qn)
	}
	return local
}

// check walks every complex type of the document.
func (c *coster) check(lim CostLimits) *CompileError {
	var total, decls int
	var walk func(n *xnode) *CompileError
	walk = func(n *xnode) *CompileError {
		switch n.local {
		case "element":
			decls++
		case "complexType":
			p := c.model(n)
			if p > lim.MaxModelParticles {
				return tooComplex(n.line, "the content model of %s has %d particles (groups, base types and "+
					"substitution groups expanded), over the limit of %d", typeName(n), p, lim.MaxModelParticles)
			}
			if total += p; total > lim.MaxParticles {
				return tooComplex(n.line, "the content models add up to more than %d particles (groups, base types "+
					"and substitution groups expanded)", lim.MaxParticles)
			}
			decls += c.attrUses(n)
		}
		if decls > lim.MaxDeclarations {
			return tooComplex(n.line, "more than %d element declarations and attribute uses "+
				"(attribute groups and base types expanded)", lim.MaxDeclarations)
		}
		for _, k := range n.kids {
			if ce := walk(k); ce != nil {
				return ce
			}
		}
		return nil
	}
	return walk(c.root)
}

// maxCount keeps expanded counts from overflowing (groups referencing a
// group twice, nested, double at each level).
const maxCount = 1 << 40

func add(a, b int) int { return min(a+b, maxCount) }

func typeName(n *xnode) string {
	if name, ok := n.attr("name"); ok {
		return "complex type " + strconv.Quote(name)
	}
	return "an anonymous complex type"
}

// model returns the particles of complex type ct's content model.
func (c *coster) model(ct *xnode) int {
	if v, ok := c.memo[ct]; ok {
		return v
	}
	if c.busy[ct] {
		return 0 // a circular definition, which libxml2 refuses
	}
	c.busy[ct] = true
	n := 0
	for _, k := range ct.kids {
		switch k.local {
		case "complexContent":
			for _, d := range k.kids {
				if d.local != "extension" && d.local != "restriction" {
					continue
				}
				for _, p := range d.kids {
					n = add(n, c.particles(p))
				}
				// An extension appends its particles to its base's.
				if b, ok := d.attr("base"); ok && d.local == "extension" {
					if bt := c.types[localOf(b)]; bt != nil {
						n = add(n, c.model(bt))
					}
				}
			}
		default:
			n = add(n, c.particles(k))
		}
	}
	delete(c.busy, ct)
	c.memo[ct] = n
	return n
}

// particles returns the particles of p, an element of a content model.
func (c *coster) particles(p *xnode) int {
	switch p.local {
	case "element":
		n := 1
		if r, ok := p.attr("ref"); ok {
			n = add(n, c.subst[localOf(r)])
		}
		return n
	case "any":
		return 1
	case "sequence", "choice", "all":
		n := 1
		for _, k := range p.kids {
			n = add(n, c.particles(k))
		}
		return n
	case "group":
		r, ok := p.attr("ref")
		if !ok {
			return 0
		}
		g := c.groups[localOf(r)]
		if g == nil {
			return 1
		}
		if v, ok := c.memo[g]; ok {
			return add(1, v)
		}
		if c.busy[g] {
			return 1
		}
		c.busy[g] = true
		n := 0
		for _, k := range g.kids {
			n = add(n, c.particles(k))
		}
		delete(c.busy, g)
		c.memo[g] = n
		return add(1, n)
	}
	return 0
}

// attrUses returns the attribute uses of n (a complex type, an extension
// or restriction, or an attribute group).
func (c *coster) attrUses(n *xnode) int {
	if v, ok := c.amemo[n]; ok {
		return v
	}
	if c.busy[n] {
		return 0
	}
	c.busy[n] = true
	u := 0
	for _, k := range n.kids {
		switch k.local {
		case "attribute", "anyAttribute":
			u = add(u, 1)
		case "attributeGroup":
			if r, ok := k.attr("ref"); ok {
				if g := c.agroups[localOf(r)]; g != nil {
					u = add(u, c.attrUses(g))
				}
			}
		case "complexContent", "simpleContent":
			for _, d := range k.kids {
				if d.local != "extension" && d.local != "restriction" {
					continue
				}
				u = add(u, c.attrUses(d))
				if b, ok := d.attr("base"); ok {
					if bt := c.types[localOf(b)]; bt != nil {
						u = add(u, c.attrUses(bt))
					}
				}
			}
		}
	}
	delete(c.busy, n)
	c.amemo[n] = u
	return u
}
