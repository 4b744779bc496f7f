package xsd

import (
	"context"
	"fmt"
	"runtime"
	"strconv"
)

// Compile parses and compiles an XSD from a user. src is hostile input:
//
//   - it must be at most opts.MaxSchemaBytes, checked before parsing;
//
//   - a DOCTYPE is refused before any entity is read;
//
//   - xs:include, xs:redefine and xs:override are refused: a registered
//     schema is one document (split it into namespaces and import them);
//
//   - xs:import is resolved by its namespace attribute only, through
//     opts.Imports, transitively (at most MaxImports schemas); schemaLocation
//     is ignored. An import whose namespace Imports does not know is an error;
//
//   - an xs:pattern that libxml2 would match in more than linear time is
//     refused (see checkPatterns): its backtracking matcher makes patterns
//     such as a*a*a*b take minutes on one crafted 64 KiB value.
//
//   - its cost is bounded: a schema over opts.Cost (counted on its source,
//     imports each on their own) is refused with DetailTooComplex before
//     libxml2 sees it; once EnableTrialCompiles was called, libxml2 compiles
//     it first in a child process under CPU and memory limits (trial.go);
//     and compiles run at most one per core.
//
// Nothing is ever fetched from the network or read from a file. On failure
// it returns a *CompileError with libxml2's messages and their lines (a
// problem in an imported schema names that schema and its line in the
// message).
//
// The returned Schema holds C memory: call Free when done with it.
func Compile(src []byte, opts CompileOptions) (*Schema, error) {
	return CompileContext(context.Background(), src, opts)
}

// CompileContext is Compile, waiting for a compile slot and running the
// trial compile only as long as ctx lasts (it then returns ctx's error).
func CompileContext(ctx context.Context, src []byte, opts CompileOptions) (*Schema, error) {
	release, err := acquireCompile(ctx)
	if err != nil {
		return nil, err
	}
	defer release()
	return compile(ctx, src, opts, true)
}

// compile is Compile; probe false skips the probing of patterns, for the
// benchmarks that measure what the length limits alone bound.
func compile(ctx context.Context, src []byte, opts CompileOptions, probe bool) (*Schema, error) {
	limit := opts.MaxSchemaBytes
	if limit <= 0 {
		limit = DefaultMaxSchemaBytes
	}
	if limit > maxDocBytes {
		limit = maxDocBytes
	}
	if len(src) == 0 {
		return nil, compileErr([]CompileIssue{{Message: "schema is empty"}})
	}
	if len(src) > limit {
		return nil, compileErr([]CompileIssue{{Message: fmt.Sprintf(
			"schema is %d bytes, over the limit of %d", len(src), limit)}})
	}
	if ce := checkCost(src, opts.Cost); ce != nil {
		return nil, ce
	}
	c := &compiler{opts: opts, max: limit, byNS: map[string]*imported{}}
	defer c.free()

	doc, _, raw := parseDoc(src)
	if doc == nil {
		return nil, compileErr(compileIssues(raw))
	}
	keepDoc := false
	defer func() {
		if !keepDoc {
			freeDoc(doc)
		}
	}()
	tns, refs, ok := inspectSchemaDoc(doc)
	if !ok {
		return nil, compileErr([]CompileIssue{{Line: 1,
			Message: "the root element must be xs:schema in namespace " + xsdNS}})
	}
	c.mainNS = tns
	c.rewrite(refs, 0, "")
	if c.tooComplex != nil {
		return nil, c.tooComplex
	}
	if len(c.issues) > 0 {
		return nil, compileErr(c.issues)
	}
	if opts.Stored {
		probe = false
	} else if o := trialOpts.Load(); o != nil {
		// The trial probes the patterns too: one probe match of a bad
		// enough pattern can take minutes, and nothing can stop it here.
		if err := c.trial(ctx, o, src); err != nil {
			return nil, err
		}
		probe = false
	}

	table := newImportTable(c.entries)
	defer table.free()
	cs, raw, refused := compileDoc(doc, table)
	if cs == nil {
		return nil, compileErr(compileFailure(raw, refused))
	}

	srcs := make([]modelSource, 0, 1+len(c.order))
	srcs = append(srcs, modelSource{ns: tns, src: src})
	for _, ns := range c.order {
		srcs = append(srcs, modelSource{ns: ns, src: c.byNS[ns].src})
	}
	b, err := buildModel(srcs)
	if err != nil {
		freeSchema(cs)
		return nil, compileErr([]CompileIssue{{Message: err.Error()}})
	}
	if b.patternChecks > MaxPatternChecks {
		freeSchema(cs)
		return nil, tooComplex(0, "a value may be matched against %d xs:pattern facets (one per derivation step "+
			"that has some, every member of a union), over the limit of %d", b.patternChecks, MaxPatternChecks)
	}
	if probe {
		if issues := checkPatterns(b.patterns); len(issues) > 0 {
			freeSchema(cs)
			return nil, compileErr(issues)
		}
	}

	keepDoc = true
	s := &Schema{
		c:       &cschema{schema: cs, doc: doc, pool: make(chan *worker, runtime.GOMAXPROCS(0)), lengths: newLengths(b)},
		model:   b.model,
		tns:     tns,
		globals: b.globals,
	}
	if len(b.patterns) > 0 {
		s.box = &boxed{id: boxIDs.Add(1), srcs: srcs, cost: opts.Cost, max: opts.MaxSchemaBytes}
	}
	// Safety net for a Schema dropped without Free.
	s.cleanup = runtime.AddCleanup(s, func(c *cschema) { c.free() }, s.c)
	return s, nil
}

// compiler resolves one compile's imports into an in-memory table.
type compiler struct {
	opts    CompileOptions
	max     int
	mainNS  string
	byNS    map[string]*imported
	order   []string // namespaces in the order they were imported
	entries []importEntry
	issues  []CompileIssue
	// tooComplex is the first imported schema over opts.Cost.
	tooComplex *CompileError
}

// imported is one schema pulled in through CompileOptions.Imports.
type imported struct {
	uri string
	src []byte
}

func (c *compiler) free() {
	for _, e := range c.entries {
		freeCString(e.data)
	}
}

func (c *compiler) fail(line int, format string, args ...any) {
	c.issues = append(c.issues, CompileIssue{Line: line, Message: fmt.Sprintf(format, args...)})
}

// rewrite checks the schema references of one document and points each
// xs:import at the synthetic URI of its namespace. origin is the line of the
// top-level import being followed (0 for the main document); where names
// the imported schema being processed ("" for the main document).
func (c *compiler) rewrite(refs []schemaRef, origin int, where string) {
	for _, r := range refs {
		line := r.line
		prefix := ""
		if where != "" {
			line = origin
			prefix = fmt.Sprintf("in imported schema %q, line %d: ", where, r.line)
		}
		if r.kind != "import" {
			c.fail(line, "%sxs:%s is not supported: a schema is one document and may only "+
				"xs:import other registered schemas by namespace", prefix, r.kind)
			continue
		}
		uri := c.resolve(r.ns, line, prefix)
		setSchemaLocation(r.node, uri)
	}
}

// resolve returns the synthetic URI serving namespace ns, fetching and
// preparing that schema on first use; "" means "no location" (the
// namespace is the main schema's own, or resolution failed).
func (c *compiler) resolve(ns string, line int, prefix string) string {
	if ns == c.mainNS {
		// Only legal from an imported schema importing back; libxml2
		// finds the main schema by namespace (and reports the error if a
		// schema imports its own namespace).
		return ""
	}
	if im, ok := c.byNS[ns]; ok {
		return im.uri
	}
	if c.opts.Imports == nil {
		c.fail(line, "%sxs:import of namespace %q: imports are not enabled", prefix, ns)
		return ""
	}
	if len(c.byNS) >= MaxImports {
		c.fail(line, "%sxs:import of namespace %q: more than %d imported schemas", prefix, ns, MaxImports)
		return ""
	}
	src, ok := c.opts.Imports(ns)
	if !ok {
		c.fail(line, "%sxs:import of namespace %q: no registered schema has this target namespace", prefix, ns)
		return ""
	}
	if len(src) == 0 || len(src) > c.max {
		c.fail(line, "%sxs:import of namespace %q: imported schema is empty or over %d bytes", prefix, ns, c.max)
		return ""
	}
	if ce := checkCost(src, c.opts.Cost); ce != nil {
		if c.tooComplex == nil {
			for i := range ce.Issues {
				ce.Issues[i].Message = fmt.Sprintf("%sin imported schema %q, line %d: %s", prefix, ns, ce.Issues[i].Line, ce.Issues[i].Message)
				ce.Issues[i].Line = line
			}
			c.tooComplex = ce
		}
		return ""
	}
	im := &imported{uri: importScheme + strconv.Itoa(len(c.byNS)), src: src}
	// Registered before recursing, so that import cycles terminate.
	c.byNS[ns] = im
	c.order = append(c.order, ns)

	doc, _, raw := parseDoc(src)
	if doc == nil {
		for _, r := range raw {
			c.fail(line, "in imported schema %q, line %d: %s", ns, r.Line, r.Message)
		}
		return ""
	}
	defer freeDoc(doc)
	tns, refs, ok := inspectSchemaDoc(doc)
	switch {
	case !ok:
		c.fail(line, "%sxs:import of namespace %q: imported document is not an xs:schema", prefix, ns)
		return ""
	case tns != ns:
		c.fail(line, "%sxs:import of namespace %q: imported schema has targetNamespace %q", prefix, ns, tns)
		return ""
	}
	c.rewrite(refs, line, ns)
	data, n, ok := dumpDoc(doc)
	if !ok {
		c.fail(line, "%sxs:import of namespace %q: out of memory", prefix, ns)
		return ""
	}
	c.entries = append(c.entries, importEntry{uri: im.uri, data: data, n: n})
	return im.uri
}

// compileFailure is the issues of a compile that failed with refused
// external resources.
func compileFailure(raw []rawIssue, refused int) []CompileIssue {
	issues := compileIssues(raw)
	if refused > 0 {
		issues = append(issues, CompileIssue{Message: strconv.Itoa(refused) +
			" external resource(s) refused: schemas may only import registered schemas by namespace"})
	}
	return issues
}
