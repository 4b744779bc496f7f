package xsd

import (
	"maps"
	"slices"
	"strings"
)

// FieldKind is the JSON kind a field of the rendering has, by the schema.
type FieldKind string

// The kinds FieldKind returns.
const (
	FieldNumber  FieldKind = "number"
	FieldString  FieldKind = "string"
	FieldBoolean FieldKind = "boolean"
	FieldObject  FieldKind = "object"
	// FieldArray: the field, or an element on its way, may repeat, so
	// it renders as an array: it has no single value per document.
	FieldArray FieldKind = "array"
	// FieldUnknown: no root element of the schema has the field (or a
	// wildcard or untyped element is on its way).
	FieldUnknown FieldKind = "unknown"
)

// FieldKind returns the JSON kind of the field at path in the renderings
// of this schema's documents, path being the keys from the rendered
// object down (["temperature"], ["@unit"], ["sensor", "value"],
// ["note", "#text"]). A path is looked up under every root element the
// schema declares (GlobalElements); where it resolves under several, they
// must agree, or the field's kind is the first one that is not a number
// (so that a caller that needs numbers refuses it). A freed schema knows
// no field.
func (s *Schema) FieldKind(path []string) FieldKind {
	s.mu.RLock()
	m := s.model
	s.mu.RUnlock()
	if m == nil || len(path) == 0 {
		return FieldUnknown
	}
	kind := FieldUnknown
	for _, g := range s.globals {
		el := m.globals[qname{s.tns, g}]
		if el == nil {
			continue
		}
		k := fieldKind(el, path)
		switch {
		case k == FieldUnknown:
		case kind == FieldUnknown || kind == FieldNumber:
			kind = k
		}
	}
	return kind
}

// fieldKind walks path down from the root element el.
func fieldKind(el *element, path []string) FieldKind {
	for i, key := range path {
		last := i == len(path)-1
		ct := el.complex
		if ct == nil {
			// A simple-typed element renders as its value: no keys
			// under it.
			return FieldUnknown
		}
		switch {
		case key == "#text":
			if !last || ct.text == nil && !ct.mixed {
				return FieldUnknown
			}
			if ct.text == nil {
				return FieldString
			}
			return simpleKind(ct.text)
		case len(key) > 1 && key[0] == '@':
			t, ok := ct.attrs[key[1:]]
			if !ok || !last {
				return FieldUnknown
			}
			return simpleKind(t)
		}
		p := ct.kids[key]
		if p == nil || p.el == nil {
			return FieldUnknown
		}
		if p.rep {
			return FieldArray
		}
		el = p.el
	}
	switch {
	case el.complex != nil:
		return FieldObject
	case el.simple != nil:
		return simpleKind(el.simple)
	}
	return FieldUnknown // anyType: untyped
}

func simpleKind(t *simpleType) FieldKind {
	switch {
	case t == nil:
		return FieldString // an attribute without a type renders as a string
	case t.kind == kindNumber:
		return FieldNumber
	case t.kind == kindBool:
		return FieldBoolean
	}
	return FieldString
}

// ScalarFields returns the paths (as FieldKind takes them) of every field
// that holds a single scalar value (number, string or boolean) in the
// renderings of this schema's documents, under any root element, sorted
// and each once: the columns of a table of readings. Repeated elements
// (arrays) and what the schema does not type (wildcards, anyType) are
// left out; recursion stops at depth keys, and the list at max paths.
func (s *Schema) ScalarFields(depth, max int) [][]string {
	s.mu.RLock()
	m := s.model
	s.mu.RUnlock()
	if m == nil {
		return nil
	}
	seen := map[string]bool{}
	var out [][]string
	add := func(p []string) {
		k := strings.Join(p, "\x00")
		if !seen[k] && len(out) < max {
			seen[k] = true
			out = append(out, slices.Clone(p))
		}
	}
	var walk func(el *element, p []string)
	walk = func(el *element, p []string) {
		if len(out) >= max {
			return
		}
		if el.complex == nil {
			if el.simple != nil && len(p) > 0 {
				add(p)
			}
			return
		}
		if len(p) >= depth {
			return
		}
		ct := el.complex
		for _, a := range slices.Sorted(maps.Keys(ct.attrs)) {
			add(append(p, "@"+a))
		}
		if ct.text != nil || ct.mixed {
			add(append(p, "#text"))
		}
		for _, k := range slices.Sorted(maps.Keys(ct.kids)) {
			if kid := ct.kids[k]; kid.el != nil && !kid.rep {
				walk(kid.el, append(p, k))
			}
		}
	}
	for _, g := range s.globals {
		if el := m.globals[qname{s.tns, g}]; el != nil {
			walk(el, make([]string, 0, depth))
		}
	}
	slices.SortFunc(out, func(a, b []string) int { return slices.Compare(a, b) })
	return out
}
