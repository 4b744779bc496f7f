package xsd

import ()

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
	// checks is how many xs:pattern facets a value may be matched
	// against: libxml2 matches one per derivation step that has some,
	// and tries every member of a union (capped at maxCount).
	checks int
	// What the JSON Schema of the type says (jsonschema.go): the
	// enumeration of the nearest restriction that has one (lexical
	// values), the bounds facets, and whether INF, -INF and NaN (which
	// render as strings) are values.
	enum             []string
	minIncl, maxIncl string
	minExcl, maxExcl string
	float            bool
}

// complexType is what rendering needs of an XSD complex type.
type complexType struct {
	text  *simpleType // type of the text for simple content, else nil
	mixed bool
	attrs map[string]*simpleType // by local name
	// attrNS is the namespace of the qualified attributes (a reference to
	// a global attribute, or attributeFormDefault="qualified"), by local
	// name: Build writes them with a prefix. Rendering drops namespaces.
	attrNS  map[string]string
	kids    map[string]*particle // child elements by local name
	wild    bool                 // an xs:any allows other elements
	wildRep bool                 // ... more than once
	// order is the local names of kids in the order the content model
	// first mentions them: the order Build writes child elements in.
	order []string
}

// particle is a child element as its parent's content model allows it.
type particle struct {
	el  *element
	rep bool // may occur more than once: rendered as an array, always
	pos int  // where the content model first mentions it (see complexType.order)
	// seq identifies the repeated xs:sequence it is in (0: none): Build
	// interleaves the items of its members, as in <at/><v/><at/><v/>.
	seq int
}

// element is a resolved element declaration. Both types nil means anyType:
// the element renders untyped.
type element struct {
	name     string
	ns       string // namespace of its name: "" for an unqualified local element
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
	floatType   = &simpleType{kind: kindNumber, ws: wsCollapse, float: true}
	boolType    = &simpleType{kind: kindBool, ws: wsCollapse}
)

// builtin maps an XSD built-in simple type to its rendering type.
func builtin(local string) *simpleType {
	switch local {
	case "float", "double":
		return floatType
	case "decimal", "integer", "nonPositiveInteger", "negativeInteger",
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
