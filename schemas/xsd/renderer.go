package xsd

import (
	"strings"
)

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
