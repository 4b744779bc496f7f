package xsd

/*
#cgo pkg-config: libxml-2.0
#include <stdlib.h>
#include "libxml.h"
*/
import "C"

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unsafe"
)

// Everything that talks to libxml2 directly lives in this file and in
// libxml.c; the rest of the package speaks Go.

const xsdNS = "http://www.w3.org/2001/XMLSchema"

func init() {
	// Installs the refusing entity loader and silences libxml2's global
	// error output before any document can be parsed.
	C.iot_init()
}

// rawIssue is an issue as libxml2 reported it.
type rawIssue struct {
	Line    int
	Path    string
	Message string
}

// collect copies the issues out of a C collector, adding a final note when
// some were dropped.
func collect(e *C.iot_errs) []rawIssue {
	n := int(e.n)
	out := make([]rawIssue, 0, n+1)
	if n > 0 && e.items == nil {
		n = 0 // cannot happen: n counts stored items
	}
	items := unsafe.Slice(e.items, n)
	for i := range items {
		it := &items[i]
		out = append(out, rawIssue{
			Line:    int(it.line),
			Path:    C.GoString(&it.path[0]),
			Message: C.GoString(&it.msg[0]),
		})
	}
	if d := int(e.dropped); d > 0 {
		out = append(out, rawIssue{Message: "and " + strconv.Itoa(d) + " more issues"})
	}
	return out
}

// newErrs allocates a zeroed collector in C memory: C stores a C pointer
// in it, which cgo's rules allow in Go memory, but C memory keeps it simple.
func newErrs() *C.iot_errs {
	return (*C.iot_errs)(C.calloc(1, C.size_t(unsafe.Sizeof(C.iot_errs{}))))
}

func freeErrs(e *C.iot_errs) {
	C.iot_errs_release(e)
	C.free(unsafe.Pointer(e))
}

// cBytes returns a C view of b for the duration of a cgo call. b must not be
// empty. Passing a []byte's backing array is allowed: it holds no pointers.
func cBytes(b []byte) (*C.char, C.int) {
	return (*C.char)(unsafe.Pointer(&b[0])), C.int(len(b))
}

// parseDoc parses an XML document safely (no DOCTYPE, no entities, no
// network, no file). It returns nil and the issues when that fails.
func parseDoc(src []byte) (C.xmlDocPtr, int, []rawIssue) {
	e := newErrs()
	defer freeErrs(e)
	var status C.int
	p, n := cBytes(src)
	doc := C.iot_parse_schema_doc(p, n, e, &status)
	if doc == nil {
		return nil, int(status), collect(e)
	}
	return doc, int(status), nil
}

func freeDoc(doc C.xmlDocPtr) {
	if doc != nil {
		C.xmlFreeDoc(doc)
	}
}

// schemaRef is a top-level xs:import, xs:include, xs:redefine or xs:override
// of a schema document.
type schemaRef struct {
	kind  string
	line  int
	ns    string
	hasNS bool
	node  C.xmlNodePtr
}

// inspectSchemaDoc returns the target namespace and the references to other
// schema documents of a parsed schema document; ok is false when the root is
// not xs:schema.
func inspectSchemaDoc(doc C.xmlDocPtr) (tns string, refs []schemaRef, ok bool) {
	root := C.xmlDocGetRootElement(doc)
	if root == nil || !isXSD(root, "schema") {
		return "", nil, false
	}
	tns, _ = nodeAttr(root, "targetNamespace")
	for n := root.children; n != nil; n = n.next {
		if n._type != C.XML_ELEMENT_NODE || n.ns == nil || C.GoString((*C.char)(unsafe.Pointer(n.ns.href))) != xsdNS {
			continue
		}
		name := C.GoString((*C.char)(unsafe.Pointer(n.name)))
		switch name {
		case "import", "include", "redefine", "override":
			r := schemaRef{kind: name, line: int(C.iot_node_line(n)), node: n}
			r.ns, r.hasNS = nodeAttr(n, "namespace")
			refs = append(refs, r)
		}
	}
	return tns, refs, true
}

func isXSD(n C.xmlNodePtr, local string) bool {
	return n._type == C.XML_ELEMENT_NODE && n.ns != nil &&
		C.GoString((*C.char)(unsafe.Pointer(n.ns.href))) == xsdNS &&
		C.GoString((*C.char)(unsafe.Pointer(n.name))) == local
}

// nodeAttr returns the value of the un-namespaced attribute name.
func nodeAttr(n C.xmlNodePtr, name string) (string, bool) {
	cn := C.CString(name)
	defer C.free(unsafe.Pointer(cn))
	v := C.xmlGetNoNsProp(n, (*C.xmlChar)(unsafe.Pointer(cn)))
	if v == nil {
		return "", false
	}
	defer C.iot_xfree(unsafe.Pointer(v))
	return C.GoString((*C.char)(unsafe.Pointer(v))), true
}

// setSchemaLocation points an xs:import at uri, or removes its
// schemaLocation when uri is empty.
func setSchemaLocation(n C.xmlNodePtr, uri string) {
	cn := C.CString("schemaLocation")
	defer C.free(unsafe.Pointer(cn))
	if uri == "" {
		C.xmlUnsetProp(n, (*C.xmlChar)(unsafe.Pointer(cn)))
		return
	}
	cv := C.CString(uri)
	defer C.free(unsafe.Pointer(cv))
	C.xmlSetProp(n, (*C.xmlChar)(unsafe.Pointer(cn)), (*C.xmlChar)(unsafe.Pointer(cv)))
}

// dumpDoc serializes doc into C memory, to be served by the entity loader.
func dumpDoc(doc C.xmlDocPtr) (*C.char, C.int, bool) {
	var out *C.char
	var n C.int
	if C.iot_dump_doc(doc, &out, &n) != 0 {
		return nil, 0, false
	}
	return out, n, true
}

// importTable is the in-memory table the entity loader serves from during
// one compile, in C memory as the cgo pointer rules require.
type importTable struct {
	items *C.iot_import
	n     int
}

type importEntry struct {
	uri  string
	data *C.char // from dumpDoc, freed with iot_xfree
	n    C.int
}

func newImportTable(entries []importEntry) importTable {
	if len(entries) == 0 {
		return importTable{}
	}
	size := C.size_t(len(entries)) * C.size_t(unsafe.Sizeof(C.iot_import{}))
	items := (*C.iot_import)(C.calloc(1, size))
	s := unsafe.Slice(items, len(entries))
	for i, e := range entries {
		s[i].uri = C.CString(e.uri)
		s[i].data = e.data
		s[i].len = e.n
	}
	return importTable{items: items, n: len(entries)}
}

func (t importTable) free() {
	if t.items == nil {
		return
	}
	for _, it := range unsafe.Slice(t.items, t.n) {
		C.free(unsafe.Pointer(it.uri))
	}
	C.free(unsafe.Pointer(t.items))
}

// compileDoc compiles a parsed, rewritten schema document. The document must
// outlive the returned schema (libxml2 keeps pointers into a document it was
// handed), so the caller frees it only after xmlSchemaFree.
func compileDoc(doc C.xmlDocPtr, t importTable) (C.xmlSchemaPtr, []rawIssue, int) {
	e := newErrs()
	defer freeErrs(e)
	var refused C.int
	s := C.iot_compile(doc, t.items, C.int(t.n), e, &refused)
	if s == nil {
		issues := collect(e)
		if len(issues) == 0 {
			issues = append(issues, rawIssue{Message: "schema does not compile"})
		}
		return nil, issues, int(refused)
	}
	return s, nil, int(refused)
}

func freeSchema(s C.xmlSchemaPtr) {
	if s != nil {
		C.xmlSchemaFree(s)
	}
}

// worker wraps a C validation worker.
type worker struct{ w *C.iot_worker }

func newWorker(s C.xmlSchemaPtr) *worker {
	w := C.iot_worker_new(s)
	if w == nil {
		return nil
	}
	return &worker{w: w}
}

func (w *worker) free() { C.iot_worker_free(w.w) }

// Outcomes of validate, mirroring the IOT_* codes in libxml.h.
const (
	stOK       = 0
	stMalform  = 1
	stDoctype  = 2
	stTooDeep  = 3
	stInvalid  = 4
	stTooLong  = 5
	stGaveUp   = 6
	stNoMem    = -1
	stInternal = -2
)

// validate parses and validates doc; with flatten it also returns the
// document flattened into records (see flat.go) as one Go string.
func (w *worker) validate(doc []byte, lengths *C.iot_lengths, lim Limits, flatten bool) (status int, flat string, issues []rawIssue) {
	p, n := cBytes(doc)
	fl := C.int(0)
	if flatten {
		fl = 1
	}
	status = int(C.iot_validate(w.w, p, n, C.int(lim.MaxDepth), fl, lengths, C.long(lim.MaxPatternValue), C.long(lim.MaxPatternTotal)))
	if status != stOK {
		return status, "", collect(&w.w.e)
	}
	if flatten && w.w.out_len > 0 {
		// One copy into Go memory; size_t, so no C.int truncation.
		flat = strings.Clone(unsafe.String((*byte)(unsafe.Pointer(w.w.out)), int(w.w.out_len)))
	}
	return stOK, flat, nil
}

// cschema owns the libxml2 side of a Schema. It is separate from Schema so
// that a GC cleanup can free it without keeping the Schema reachable.
type cschema struct {
	schema C.xmlSchemaPtr
	doc    C.xmlDocPtr
	// pool keeps validation workers (a validation context plus a parser
	// context each) for reuse; bounded and drained by free, unlike a
	// sync.Pool, which would drop C memory on the floor.
	pool chan *worker
	// lengths names the values checked against patterns (nil: none).
	lengths *C.iot_lengths
}

// newLengths returns the C table of the values b's patterns check, nil
// when the schema has no pattern. When the model could not tell which
// values a pattern applies to, every value is bounded.
func newLengths(b built) *C.iot_lengths {
	if len(b.patterns) == 0 {
		return nil
	}
	all := C.int(0)
	if len(b.patternElems)+len(b.patternAttrs) == 0 {
		all = 1
	}
	// xsi:type may give any element a named type with a pattern.
	l := C.iot_lengths_new(all, 1, C.long(b.patternChecks))
	if l == nil {
		return nil
	}
	add := func(names map[string]int, kind string) {
		ck := C.CString(kind)
		defer C.free(unsafe.Pointer(ck))
		for name, checks := range names {
			cn := C.CString(name)
			C.iot_lengths_add(l, cn, ck, C.long(checks))
			C.free(unsafe.Pointer(cn))
		}
	}
	add(b.patternElems, "e")
	add(b.patternAttrs, "a")
	return l
}

func (c *cschema) get() (*worker, error) {
	select {
	case w := <-c.pool:
		return w, nil
	default:
	}
	w := newWorker(c.schema)
	if w == nil {
		return nil, fmt.Errorf("xsd: cannot allocate a validation context")
	}
	return w, nil
}

func (c *cschema) put(w *worker) {
	select {
	case c.pool <- w:
	default:
		w.free()
	}
}

func (c *cschema) free() {
	for {
		select {
		case w := <-c.pool:
			w.free()
			continue
		default:
		}
		break
	}
	freeSchema(c.schema)
	freeDoc(c.doc) // after the schema, which points into it
	C.iot_lengths_free(c.lengths)
	c.schema, c.doc, c.lengths = nil, nil, nil
}

// importScheme must match IOT_IMPORT_SCHEME in libxml.h: the only URIs the
// entity loader serves (from the current compile's table).
const importScheme = "iotgate-ns:"

func freeCString(p *C.char) {
	if p != nil {
		C.iot_xfree(unsafe.Pointer(p))
	}
}

// probePattern matches an XSD pattern with libxml2 against each input,
// stopping at the first match slower than limit. It returns the worst CPU
// time of one match and the total spent; ok is false if the pattern does
// not compile.
func probePattern(pattern string, inputs []string, limit time.Duration) (worst, total time.Duration, ok bool) {
	cp := C.CString(pattern)
	defer C.free(unsafe.Pointer(cp))
	arr := (**C.char)(C.calloc(C.size_t(len(inputs)), C.size_t(unsafe.Sizeof((*C.char)(nil)))))
	defer C.free(unsafe.Pointer(arr))
	s := unsafe.Slice(arr, len(inputs))
	for i, in := range inputs {
		s[i] = C.CString(in)
	}
	defer func() {
		for _, p := range s {
			C.free(unsafe.Pointer(p))
		}
	}()
	var totalUS C.long
	w := C.iot_probe_pattern(cp, arr, C.int(len(inputs)), C.long(limit.Microseconds()), &totalUS)
	if w < 0 {
		return 0, time.Duration(totalUS) * time.Microsecond, false
	}
	return time.Duration(w) * time.Microsecond, time.Duration(totalUS) * time.Microsecond, true
}

// trial runs the trial compile of the main document src with the
// imports resolved so far (all of them: a failed one stops the compile
// before).
func (c *compiler) trial(ctx context.Context, o *TrialOptions, src []byte) error {
	docs := []trialDoc{{data: src, src: src}}
	for _, e := range c.entries {
		docs = append(docs, trialDoc{uri: e.uri, data: C.GoBytes(unsafe.Pointer(e.data), e.n)})
	}
	for _, ns := range c.order {
		for k := range docs[1:] {
			if d := &docs[1+k]; d.uri == c.byNS[ns].uri {
				d.ns, d.src = ns, c.byNS[ns].src
			}
		}
	}
	return trialCompile(ctx, o, docs)
}

// trialCompileHere is the child's side of a trial compile: docs[0] is the
// main document's source, the others the imports as the parent prepared
// them. After compiling, it probes the patterns (probe.go). It returns nil when
// they compile, else the issues. Its C memory is left to the exit.
func trialCompileHere(docs []trialDoc) []CompileIssue {
	doc, _, raw := parseDoc(docs[0].data)
	if doc == nil {
		return compileIssues(raw)
	}
	// The parent's rewrite of the main document's imports, again.
	uris := map[string]string{}
	entries := make([]importEntry, 0, len(docs)-1)
	for _, d := range docs[1:] {
		uris[d.ns] = d.uri
		entries = append(entries, importEntry{uri: d.uri, data: (*C.char)(C.CBytes(d.data)), n: C.int(len(d.data))})
	}
	_, refs, _ := inspectSchemaDoc(doc)
	for _, r := range refs {
		setSchemaLocation(r.node, uris[r.ns])
	}
	cs, raw, refused := compileDoc(doc, newImportTable(entries))
	if cs == nil {
		return compileFailure(raw, refused)
	}
	tns, _, _ := inspectSchemaDoc(doc)
	srcs := []modelSource{{ns: tns, src: docs[0].src}}
	for _, d := range docs[1:] {
		srcs = append(srcs, modelSource{ns: d.ns, src: d.src})
	}
	b, err := buildModel(srcs)
	if err != nil {
		return nil // the parent reports it
	}
	if issues := checkPatterns(b.patterns); len(issues) > 0 {
		return issues
	}
	return nil
}

// outOfMemory tells a compile that failed for want of memory: libxml2 says
// so, or its collector could not even store the issues (only a count of
// dropped ones came back).
func outOfMemory(issues []CompileIssue) bool {
	stored := 0
	for _, is := range issues {
		if strings.Contains(strings.ToLower(is.Message), "memory") {
			return true
		}
		if !strings.HasSuffix(is.Message, " more issues") {
			stored++
		}
	}
	return stored == 0
}
