package xsd

import (
	"slices"
	"strings"
	"sync"
)

// renderer writes the JSON of a document from a stream of events,
// whichever parser produced them, with no intermediate map: each finished
// value is written into vals, and an element's object is assembled from
// its members' spans when it ends. The bytes are those json.Marshal gives
// for the equivalent map[string]any: keys sorted bytewise, repeated keys as
// arrays in document order, strings escaped HTML-safe (jsonString).
type renderer struct {
	m       *model
	stack   []frame
	members []member // of the open elements, each frame's from its mstart
	vals    []byte   // finished values; members point into it
	tmp     []byte   // an object being assembled
	result  span     // the document's object once the root has ended
	done    bool
}

type frame struct {
	name   string
	el     *element     // declaration, nil if unknown
	ct     *complexType // effective complex type (xsi:type may change it)
	st     *simpleType  // effective simple type
	rep    bool         // repeats in its parent: an array even alone
	hasObj bool         // has attributes or child elements
	isNil  bool
	text   string
	mstart int // its members: members[mstart:]
	vstart int // its members' values: vals[vstart:]
}

// member is one key of an object and its finished value, vals[v.a:v.b].
type member struct {
	key string
	rep bool
	v   span
}

type span struct{ a, b int }

var rendererPool = sync.Pool{New: func() any { return new(renderer) }}

// newRenderer takes a renderer from the pool; release returns it.
func newRenderer(m *model) *renderer {
	r := rendererPool.Get().(*renderer)
	r.m = m
	return r
}

// maxPooledBytes keeps a rare huge document's buffers out of the pool.
const maxPooledBytes = 64 << 10

func (r *renderer) release() {
	if cap(r.vals) > maxPooledBytes || cap(r.tmp) > maxPooledBytes {
		return
	}
	clear(r.stack[:cap(r.stack)])
	clear(r.members[:cap(r.members)])
	*r = renderer{stack: r.stack[:0], members: r.members[:0], vals: r.vals[:0], tmp: r.tmp[:0]}
	rendererPool.Put(r)
}

// json returns a copy of the rendered document, or nil if it is not
// complete.
func (r *renderer) json() []byte {
	if !r.done || len(r.stack) != 0 {
		return nil
	}
	return slices.Clone(r.vals[r.result.a:r.result.b])
}

func (r *renderer) depth() int { return len(r.stack) }

func (r *renderer) path() string {
	var b strings.Builder
	for _, f := range r.stack {
		b.WriteByte('/')
		b.WriteString(f.name)
	}
	return b.String()
}

func (r *renderer) start(ns, local string) {
	f := frame{name: local, mstart: len(r.members), vstart: len(r.vals)}
	if n := len(r.stack); n == 0 {
		f.el = r.m.globals[qname{ns, local}]
		if f.el == nil {
			f.el = r.m.byLocal[local] // unvalidated document: best effort
		}
	} else {
		p := &r.stack[n-1]
		p.hasObj = true
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
	f.hasObj = true
	a := len(r.vals)
	var t *simpleType
	if f.ct != nil {
		t = f.ct.attrs[local]
	}
	r.vals = appendTyped(r.vals, t, value)
	r.members = append(r.members, member{key: "@" + local, v: span{a, len(r.vals)}})
}

func (r *renderer) text(s string) {
	f := &r.stack[len(r.stack)-1]
	if f.text == "" || isBlank(f.text) && f.textTrimmed() {
		// A blank prefix of text that is only used trimmed changes
		// nothing: dropping it saves concatenating the indentation
		// between child elements.
		f.text = s
	} else {
		f.text += s
	}
}

// textTrimmed reports whether f's text can only be used trimmed (or not at
// all), whatever else is met before its end (see value).
func (f *frame) textTrimmed() bool {
	return f.isNil || f.ct != nil && f.ct.text == nil || f.ct == nil && f.st == nil && f.hasObj
}

func (r *renderer) end() {
	n := len(r.stack) - 1
	f := r.stack[n]
	r.stack[n] = frame{} // drop references for the GC
	r.stack = r.stack[:n]
	v, isObj := r.value(&f)
	r.members = r.members[:f.mstart]
	if n == 0 {
		if !isObj {
			// {"#text": v}: the value moves after its key.
			r.tmp = append(append(r.tmp[:0], `{"#text":`...), r.vals[v.a:v.b]...)
			r.tmp = append(r.tmp, '}')
			r.vals = append(r.vals[:v.a], r.tmp...)
			v.b = len(r.vals)
		}
		r.result, r.done = v, true
		return
	}
	r.members = append(r.members, member{key: f.name, rep: f.rep, v: v})
}

// value writes the JSON value of a finished element at vals[f.vstart:],
// over its members' values, and reports whether it is an object.
func (r *renderer) value(f *frame) (span, bool) {
	switch {
	case f.isNil:
		if f.hasObj {
			return r.object(f, "", nil), true // attributes of a nil element survive
		}
		return r.scalar(f, `null`), false
	case f.ct != nil:
		switch {
		case f.ct.text != nil:
			return r.object(f, f.text, f.ct.text), true
		case f.ct.mixed || !isBlank(f.text): // !mixed: text where none is allowed
			return r.object(f, trimSpace(f.text), strPreserve), true
		}
		return r.object(f, "", nil), true
	case f.st != nil:
		if !f.hasObj {
			r.vals = appendTyped(r.vals[:f.vstart], f.st, f.text)
			return span{f.vstart, len(r.vals)}, false
		}
		if !isBlank(f.text) {
			return r.object(f, f.text, f.st), true
		}
		return r.object(f, "", nil), true
	default: // unknown element: untyped
		if !f.hasObj {
			r.vals = AppendJSONString(r.vals[:f.vstart], f.text)
			return span{f.vstart, len(r.vals)}, false
		}
		if !isBlank(f.text) {
			return r.object(f, trimSpace(f.text), strPreserve), true
		}
		return r.object(f, "", nil), true
	}
}

func (r *renderer) scalar(f *frame, lit string) span {
	r.vals = append(r.vals[:f.vstart], lit...)
	return span{f.vstart, len(r.vals)}
}

// object writes f's members, plus a "#text" member of type textType if it
// is not nil, as a JSON object.
func (r *renderer) object(f *frame, text string, textType *simpleType) span {
	if textType != nil {
		a := len(r.vals)
		r.vals = appendTyped(r.vals, textType, text)
		r.members = append(r.members, member{key: "#text", v: span{a, len(r.vals)}})
	}
	ms := r.members[f.mstart:]
	// Stable: a repeated key keeps its values in document order.
	slices.SortStableFunc(ms, func(a, b member) int { return strings.Compare(a.key, b.key) })
	b := append(r.tmp[:0], '{')
	for i := 0; i < len(ms); {
		j := i + 1
		for j < len(ms) && ms[j].key == ms[i].key {
			j++
		}
		if i > 0 {
			b = append(b, ',')
		}
		b = AppendJSONString(b, ms[i].key)
		b = append(b, ':')
		arr := j-i > 1 || ms[i].rep
		if arr {
			b = append(b, '[')
		}
		for k := i; k < j; k++ {
			if k > i {
				b = append(b, ',')
			}
			b = append(b, r.vals[ms[k].v.a:ms[k].v.b]...)
		}
		if arr {
			b = append(b, ']')
		}
		i = j
	}
	b = append(b, '}')
	r.tmp = b
	r.vals = append(r.vals[:f.vstart], b...)
	return span{f.vstart, len(r.vals)}
}
