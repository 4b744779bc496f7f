package xsd

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

// refRenderer is the map builder the renderer replaced on the ingest path
// (json.Marshal of its map was the stored JSON): the reference the
// renderer's bytes are compared with (TestRenderJSONMatchesMap,
// FuzzRenderJSON).
type refRenderer struct {
	m      *model
	stack  []refFrame
	result map[string]any
}

type refFrame struct {
	name  string
	el    *element     // declaration, nil if unknown
	ct    *complexType // effective complex type (xsi:type may change it)
	st    *simpleType  // effective simple type
	rep   bool         // repeats in its parent: appended to an array
	obj   map[string]any
	text  string
	isNil bool
}

func (r *refRenderer) depth() int { return len(r.stack) }

func (r *refRenderer) path() string {
	var b strings.Builder
	for _, f := range r.stack {
		b.WriteByte('/')
		b.WriteString(f.name)
	}
	return b.String()
}

func (r *refRenderer) start(ns, local string) {
	f := refFrame{name: local}
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

func (r *refRenderer) attr(ns, local, value string) {
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

func (r *refRenderer) text(s string) {
	f := &r.stack[len(r.stack)-1]
	if f.text == "" {
		f.text = s
	} else {
		f.text += s
	}
}

func (r *refRenderer) end() {
	n := len(r.stack) - 1
	f := &r.stack[n]
	v := f.value()
	name, rep := f.name, f.rep
	r.stack[n] = refFrame{} // drop references for the GC
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
func (f *refFrame) value() any {
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

// typed converts text to the JSON value of its simple type, as the map
// builder did: json.Number, bool or string.
func typed(t *simpleType, s string) any {
	v, k := typedValue(t, s)
	switch k {
	case jsonNum:
		return json.Number(v)
	case jsonBool:
		return v == "true"
	}
	return v
}

// refJSON is what the ingest path stored before: json.Marshal of the map
// built from libxml2's flattened document. ok is false if doc is refused.
func refJSON(t testing.TB, s *Schema, doc []byte, lim Limits) ([]byte, bool) {
	t.Helper()
	flat, m, err := s.run(doc, lim, true)
	if err != nil {
		return nil, false
	}
	r := &refRenderer{m: m}
	if err := walkFlat(flat, r); err != nil || r.result == nil {
		t.Fatalf("reference rendering: %v", err)
	}
	b, err := json.Marshal(r.result)
	if err != nil {
		t.Fatal(err)
	}
	return b, true
}

// refXMLJSON is json.Marshal of the map built from encoding/xml's parse
// (Render before).
func refXMLJSON(s *Schema, doc []byte) ([]byte, error) {
	r := &refRenderer{m: s.model}
	if err := walkXML(doc, Limits{}.withDefaults(), r); err != nil {
		return nil, err
	}
	if r.result == nil {
		return nil, errors.New("no document element")
	}
	return json.Marshal(r.result)
}
