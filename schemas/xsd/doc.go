// Package xsd compiles users' XML Schemas (XSD 1.0) and validates device
// readings against them with libxml2, safely and fast, and renders readings
// to JSON values typed by their schema.
//
// Schemas and readings are hostile input. The package binds libxml2 itself
// (cgo, libxml.c) so that:
//
//   - nothing is ever loaded from the network or a file: a process-wide
//     external entity loader refuses every URI; the only documents it serves
//     are imported schemas the caller supplied, from memory, during Compile;
//   - a DOCTYPE is refused, in schemas and readings alike, by stopping the
//     parser as soon as the DOCTYPE name is read, before any entity or
//     external subset is looked at (no XXE, no billion laughs);
//   - parse options never include NOENT, DTDLOAD or HUGE;
//   - sizes are checked before parsing (Limits.MaxBytes,
//     CompileOptions.MaxSchemaBytes, MaxAttributes per element) and element
//     nesting while parsing (Limits.MaxDepth);
//   - xs:pattern facets that libxml2's backtracking matcher would match in
//     more than linear time (a*a*a*b: minutes on one 64 KiB value) are
//     refused at Compile, by probing them, behind a sample of their fixed
//     start too (probe.go); and since a probe is a heuristic, the values a
//     pattern checks are bounded in length (Limits.MaxPatternValue, and
//     Limits.MaxPatternTotal for a document), checked on the parsed tree
//     before libxml2 matches anything;
//   - errors are collected per call by structured handlers on each parser
//     and validation context, with line, element path and libxml2's message;
//   - compiled schemas are freed explicitly (Schema.Free; a GC cleanup is a
//     safety net) and use after Free returns ErrFreed.
//
// Imports: a schema may xs:import another registered schema by namespace,
// resolved through CompileOptions.Imports; schemaLocation is ignored.
// xs:include, xs:redefine and xs:override are refused.
//
// Errors are the package's own: a *CompileError or a *ValidationError (with
// a Detail* constant for a refusal before validation), ErrFreed after Free,
// and any other error when libxml2 fails. Package schemas turns them into
// iotgate.Error values, in one place.
//
// # JSON rendering
//
// ValidateAndRender turns a document into JSON, written straight from
// libxml2's tree with keys sorted and strings escaped as encoding/json
// would for the equivalent map; Render gives that map[string]any (with
// json.Number numbers). Both use the schema to decide shapes and types:
//
//   - The result is the object of the root element's content: the root's
//     name is not a key. <reading unit="C"><temperature>21.5</temperature>
//     </reading> renders as {"@unit": "C", "temperature": 21.5}. A root of
//     simple type renders as {"#text": value}.
//   - Child elements become keys, by local name (namespaces are dropped).
//   - Attributes become keys prefixed with "@", by local name. Namespace
//     declarations and xsi:* attributes (xsi:type, xsi:nil,
//     xsi:schemaLocation...) are not rendered.
//   - An element of simple type becomes its value.
//   - An element of complex type becomes an object. With simple content
//     (text plus attributes) the text is under "#text", always, even when
//     no attribute is present, so that the shape is stable. With mixed
//     content the text (its pieces concatenated, surrounding whitespace
//     trimmed) is under "#text", always. Element-only and empty content
//     have no "#text".
//   - An element that the schema allows more than once is an array, always,
//     even with a single occurrence: maxOccurs > 1 or "unbounded" on the
//     element or on any enclosing sequence, choice, all or group reference
//     within its parent's type, or a name that can occur at two places of
//     a sequence (x, y?, x; an extension adds its particles after its
//     base's); a name in two branches of a choice occurs once. The same
//     goes for wildcard (xs:any) children. Absent optional elements are
//     absent keys (never null or []).
//   - Values are typed by the schema's simple types, for element text and
//     attributes alike, including user types derived by restriction (any
//     depth) from a built-in:
//     decimal, float, double and every integer type -> JSON number, as a
//     json.Number holding the lexical digits (exact: no float64 rounding,
//     "21.50" stays 21.50, a 20-digit unsignedLong stays exact), normalized
//     to valid JSON ("+1.5" -> 1.5, ".5" -> 0.5, "5." -> 5, "007" -> 7);
//     INF, -INF and NaN have no JSON number form and stay strings; so do
//     numbers PostgreSQL's jsonb can't hold, more than 131072 digits
//     before the decimal point or 16383 after it as written (1e-20000 is
//     a valid xs:double, "1e-20000" a string), so that every rendering
//     can be stored.
//     boolean -> true/false ("true"/"1", "false"/"0").
//     Everything else (string, token, dates, URIs, binary...) -> string.
//     Lists and unions -> string.
//   - Whitespace follows the type's whiteSpace facet: string keeps text as
//     is, normalizedString replaces tabs and newlines with spaces, every
//     other type (token, numbers, booleans, dates...) is collapsed.
//   - xsi:nil="true" renders as null (an object of its attributes if it has
//     any).
//   - Names are local names: if two children (or two attributes) of one
//     element share a local name across namespaces, or an element the
//     schema does not repeat occurs twice (only in documents that were not
//     validated), the values are gathered into an array in document order;
//     nothing is dropped.
//   - Elements the schema does not describe (anyType, lax wildcards without
//     a global declaration, or a document that does not match): untyped.
//     Text only: the text as is; with attributes or children: an object,
//     strings everywhere, "#text" if there is non-whitespace text.
//   - A value that does not fit its type (only possible without validation)
//     stays a string.
//
// Types come from a Go-side model of the XSD built at Compile time from the
// schema source (see model.go for why not libxml2's internals). It resolves
// named and anonymous types, element and attribute references, groups and
// attribute groups, complex type extension and restriction, substitution
// groups, wildcards and imported schemas; anything else renders untyped.
// xsi:type is honoured by the local name of the type.
//
// # JSON to XML, and JSON Schema
//
// Build is the inverse of the rendering, for commands sent as JSON: it
// writes a document from the JSON of its root's content, child elements in
// the order the content model first names them, and refuses (with a
// *MappingError naming the key's JSON path) whatever Render would not give
// back, so that Render(Build(x)) == x for every x it accepts whose
// document is valid (FuzzBuild, FuzzRenderBuild). JSONSchema describes the
// same JSON as a draft 2020-12 JSON Schema. Both say in their doc comments
// what they support.
//
// # Dependencies
//
// It imports no package of the project: its errors are its own.
package xsd
