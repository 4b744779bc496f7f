package xsd

import (
	"encoding/json"
	"fmt"
	"strconv"
)

// JSONSchemaDraft is the JSON Schema dialect JSONSchema writes.
const JSONSchemaDraft = "https://json-schema.org/draft/2020-12/schema"

// JSONSchema returns a JSON Schema (draft 2020-12) of the JSON this schema's
// documents render to, which is also the JSON Build takes: one $defs entry
// per global element of the main schema (by its local name), describing
// the rendering of a document with that root (a reading's data, a command's
// data), and the document itself accepting any of them. The mapping is
// Render's:
//
//   - an element of simple type is its value: "number" for the numeric
//     types (or a string among INF, -INF and NaN for float and double),
//     "boolean", else "string"; enumerations become enum (the rendered
//     values), minInclusive, maxInclusive, minExclusive and maxExclusive of
//     numeric types minimum, maximum, exclusiveMinimum, exclusiveMaximum;
//     xs:pattern is not translated (XSD and JSON Schema regular
//     expressions differ): the description says so;
//   - an element of complex type is an object: "@name" properties for its
//     attributes, "#text" (required) for simple or mixed content, a
//     property per child element, an array (minItems 1) for a child that
//     may repeat; additionalProperties is false unless the content has a
//     wildcard (xs:any, xs:anyAttribute is not tracked: attributes stay
//     closed); which children are required is left to the XSD;
//   - a nillable element also accepts null; an untyped one (xs:anyType)
//     accepts anything;
//   - each complex type is one $defs entry ("type:N", not an XML name, so
//     no element's entry takes it), which recursive types refer back to.
//
// Errors: ErrFreed.
func (s *Schema) JSONSchema() (json.RawMessage, error) {
	s.mu.RLock()
	m := s.model
	s.mu.RUnlock()
	if m == nil {
		return nil, ErrFreed
	}
	g := &jsgen{types: map[*complexType]string{}, defs: map[string]any{}}
	var roots []any
	for _, name := range s.globals {
		el := m.globals[qname{s.tns, name}]
		if el == nil {
			continue
		}
		var v any
		if el.complex == nil {
			// Render writes a root of simple type as {"#text": value}.
			v = map[string]any{"type": "object", "required": []string{"#text"},
				"properties":           map[string]any{"#text": g.element(el)},
				"additionalProperties": false}
		} else {
			v = g.element(el)
		}
		g.defs[name] = v
		roots = append(roots, map[string]any{"$ref": "#/$defs/" + name})
	}
	doc := map[string]any{
		"$schema": JSONSchemaDraft,
		"title":   "JSON rendering of the documents of " + strconv.Quote(s.tns),
		"description": "Generated from the XSD: each $defs entry named after a global element is the JSON of a document with that root " +
			"(a reading's data, a command's data). xs:pattern facets are not translated; required child elements and occurrence bounds are left to the XSD.",
		"$defs": g.defs,
	}
	if len(roots) > 0 {
		doc["anyOf"] = roots
	}
	return json.Marshal(doc)
}

type jsgen struct {
	types map[*complexType]string
	defs  map[string]any
}

func (g *jsgen) element(el *element) any {
	var v any
	switch {
	case el.complex != nil:
		v = map[string]any{"$ref": "#/$defs/" + g.complex(el.complex)}
	case el.simple != nil:
		v = simpleSchema(el.simple)
	default:
		v = map[string]any{}
	}
	if el.nillable {
		v = map[string]any{"anyOf": []any{v, map[string]any{"type": "null"}}}
	}
	return v
}

// complex returns the $defs name of ct's schema, writing it the first time.
func (g *jsgen) complex(ct *complexType) string {
	if name, ok := g.types[ct]; ok {
		return name
	}
	name := fmt.Sprintf("type:%d", len(g.types)+1)
	g.types[ct] = name // before the children: types may be recursive
	props := map[string]any{}
	var required []string
	for a, t := range ct.attrs {
		if t == nil {
			t = strPreserve
		}
		props["@"+a] = simpleSchema(t)
	}
	switch {
	case ct.text != nil:
		props["#text"], required = simpleSchema(ct.text), []string{"#text"}
	case ct.mixed:
		props["#text"], required = map[string]any{"type": "string"}, []string{"#text"}
	}
	for k, p := range ct.kids {
		v := g.element(p.el)
		if p.rep {
			v = map[string]any{"type": "array", "items": v, "minItems": 1}
		}
		props[k] = v
	}
	def := map[string]any{"type": "object", "properties": props}
	if required != nil {
		def["required"] = required
	}
	if !ct.wild {
		def["additionalProperties"] = false
	}
	g.defs[name] = def
	return name
}

// simpleSchema is the JSON Schema of the rendered values of t.
func simpleSchema(t *simpleType) map[string]any {
	v := map[string]any{}
	switch t.kind {
	case kindNumber:
		v["type"] = "number"
		for _, f := range [...]struct{ facet, kw string }{{t.minIncl, "minimum"}, {t.maxIncl, "maximum"},
			{t.minExcl, "exclusiveMinimum"}, {t.maxExcl, "exclusiveMaximum"}} {
			if n, ok := jsonNumber(collapseSpace(f.facet)); ok {
				v[f.kw] = n
			}
		}
	case kindBool:
		v["type"] = "boolean"
	default:
		v["type"] = "string"
	}
	if t.enum != nil {
		vals := make([]any, 0, len(t.enum))
		for _, e := range t.enum {
			vals = append(vals, json.RawMessage(appendTyped(nil, t, e)))
		}
		v["enum"] = vals
		delete(v, "type") // an enum of a number type may hold strings (INF)
	}
	if t.pattern {
		v["description"] = "Also matches an XSD pattern, not translated."
	}
	if t.kind == kindNumber && t.float && t.enum == nil {
		return map[string]any{"anyOf": []any{v, map[string]any{"type": "string", "enum": []string{"INF", "-INF", "NaN"}}}}
	}
	return v
}
