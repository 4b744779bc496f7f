package xsd

import (
	"bytes"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"sync"
)

// Defaults applied to zero (or negative) limits.
const (
	DefaultMaxSchemaBytes = 1 << 20  // 1 MiB per schema document
	DefaultMaxBytes       = 64 << 10 // 64 KiB per reading
	DefaultMaxDepth       = 32       // element nesting of a reading
	// DefaultMaxPatternValue and DefaultMaxPatternTotal bound the values
	// a schema's xs:pattern facets check (see Limits): at these, the
	// worst patterns known cost tens of milliseconds per value (see
	// BenchmarkPatternWorstCase).
	DefaultMaxPatternValue = 256
	DefaultMaxPatternTotal = 1024
)

// Fixed limits.
const (
	// MaxImports bounds the schemas one compile may pull in through
	// CompileOptions.Imports, transitively.
	MaxImports = 32
	// MaxAttributes bounds the attributes (namespace declarations included)
	// of one element of a reading, checked before parsing: libxml2 2.9
	// checks for duplicate attributes in quadratic time (a 64 KiB start tag
	// with 7,000 attributes costs ~300 ms to parse).
	MaxAttributes = 256
	// MaxPatternChecks bounds the xs:pattern facets one value may be
	// matched against: Limits.MaxPatternValue and MaxPatternTotal bound
	// the characters matched, and libxml2 matches them once per
	// derivation step with a pattern and per union member.
	MaxPatternChecks = 4

	// maxParserDepth is libxml2's own nesting limit without XML_PARSE_HUGE
	// (which we never set): a larger MaxDepth is clamped to it.
	maxParserDepth = 256
	// maxDocBytes keeps sizes within libxml2's int lengths.
	maxDocBytes = 1 << 30
)

// CompileOptions tunes Compile.
type CompileOptions struct {
	// MaxSchemaBytes bounds the size of the schema document and of each
	// imported one. Zero means DefaultMaxSchemaBytes.
	MaxSchemaBytes int
	// Imports resolves an xs:import by namespace to the source of another
	// registered schema whose targetNamespace it is ("" for a schema without
	// one). It is the only way a schema reaches another document:
	// schemaLocation is ignored, and nothing is ever read from a file or the
	// network. Nil means imports are refused. It is called during Compile
	// only, from the calling goroutine.
	Imports func(namespace string) ([]byte, bool)
	// Cost bounds what the compile may cost, checked on each document's
	// source before libxml2 sees it; zero fields mean their defaults.
	Cost CostLimits
	// Stored says the source was accepted by an earlier Compile (a
	// registered version compiled again at start or after eviction):
	// the pattern probe and the trial compile, which it already passed
	// and which cost milliseconds to seconds, are skipped. Cost is still
	// checked.
	Stored bool
}

// Limits bounds a reading before and while it is parsed.
type Limits struct {
	// MaxBytes is checked before parsing. Zero means DefaultMaxBytes.
	MaxBytes int
	// MaxDepth bounds element nesting (the root is depth 1); the parser is
	// stopped as soon as it is exceeded. Zero means DefaultMaxDepth; values
	// above 256 (libxml2's own limit) act as 256.
	MaxDepth int
	// MaxPatternValue bounds, in characters, an element's text or an
	// attribute's value that the schema matches against an xs:pattern,
	// and MaxPatternTotal all of them in one document, a value counting
	// once per facet it is matched against (at most MaxPatternChecks).
	// libxml2 matches patterns by backtracking, in time polynomial in the
	// value's length (Za*a*a*b: 25 ms at 256 characters, 1.6 s at 1024)
	// or, up to its push budget, exponential; the compile-time probe
	// catches the usual slow shapes, not every one. So lengths are checked
	// on the parsed document, before libxml2 matches anything, and a value
	// over them is refused with the element or attribute and the limit:
	// a document costs at most MaxPatternTotal/MaxPatternValue matches of
	// MaxPatternValue characters. One such match is bounded by libxml2's
	// push budget, not by the length: 0.5-2.4 s for small patterns
	// (BenchmarkPatternWorstCase), more for patterns with many
	// alternatives per state, which the probe refuses. Zero means
	// DefaultMaxPatternValue and DefaultMaxPatternTotal.
	MaxPatternValue int
	MaxPatternTotal int
}

func (l Limits) withDefaults() Limits {
	if l.MaxBytes <= 0 {
		l.MaxBytes = DefaultMaxBytes
	}
	if l.MaxBytes > maxDocBytes {
		l.MaxBytes = maxDocBytes
	}
	if l.MaxDepth <= 0 {
		l.MaxDepth = DefaultMaxDepth
	}
	if l.MaxDepth > maxParserDepth {
		l.MaxDepth = maxParserDepth
	}
	if l.MaxPatternValue <= 0 {
		l.MaxPatternValue = DefaultMaxPatternValue
	}
	if l.MaxPatternTotal <= 0 {
		l.MaxPatternTotal = DefaultMaxPatternTotal
	}
	return l
}

// Schema is a compiled XSD: it validates documents and renders them to JSON.
// All methods are safe for concurrent use. Free releases its libxml2 memory;
// afterwards Validate, ValidateAndRender and Render return ErrFreed
// (wrapped), while TargetNamespace and GlobalElements keep answering.
type Schema struct {
	mu      sync.RWMutex // read-held by calls into libxml2, held by Free
	c       *cschema     // nil once freed
	model   *model
	cleanup runtime.Cleanup
	tns     string
	globals []string
	// box, for a schema with xs:pattern facets, is what a sandbox child
	// needs to validate its documents (see sandbox.go).
	box *boxed
}

// TargetNamespace returns the schema's targetNamespace ("" if none).
func (s *Schema) TargetNamespace() string { return s.tns }

// GlobalElements returns the local names of the schema's top-level element
// declarations, in document order, leaving out abstract ones and those of
// imported schemas: the root elements a document of this schema may have.
func (s *Schema) GlobalElements() []string {
	return append([]string(nil), s.globals...)
}

// Free releases the compiled schema. It waits for validations in flight;
// later calls of Validate, ValidateAndRender and Render return ErrFreed.
// Free is idempotent. A Schema
// that is never freed is released by the garbage collector, eventually: call
// Free when replacing a schema, as C memory does not pressure the GC.
func (s *Schema) Free() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.c == nil {
		return
	}
	s.cleanup.Stop()
	s.c.free()
	s.c = nil
	s.model = nil
}

// Validate checks doc against the schema. It returns nil, or a
// *ValidationError (over Limits.MaxBytes or MaxAttributes, too deep,
// DOCTYPE, not well-formed, or invalid against the schema), or ErrFreed, or
// another error when libxml2 fails (out of memory).
func (s *Schema) Validate(doc []byte, lim Limits) error {
	_, _, err := s.run(doc, lim, false)
	return err
}

// run validates doc, returning the flattened document when flatten is set,
// and the model to render it with (read under the same lock as the C state).
func (s *Schema) run(doc []byte, lim Limits, flatten bool) (string, *model, error) {
	lim = lim.withDefaults()
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.c == nil {
		return "", nil, ErrFreed
	}
	if err := checkSize(doc, lim); err != nil {
		return "", nil, err
	}
	if err := checkAttributes(doc); err != nil {
		return "", nil, err
	}
	var status int
	var flat string
	var raw []rawIssue
	var err error
	if p := sandbox.Load(); p != nil && s.box != nil {
		status, flat, raw, err = p.validate(s.box, doc, lim, flatten)
		if errors.Is(err, errTimeout) {
			return "", nil, validationErr(DetailPatternCost, []ValidationIssue{{Message: "checking the document against the schema's " +
				"xs:pattern facets took more than " + p.opts.Timeout.String() + " (the patterns backtrack on these values): " +
				"shorten the values, or simplify the schema's patterns"}})
		}
	} else {
		status, flat, raw, err = s.local(doc, lim, flatten)
	}
	if err != nil {
		return "", nil, err
	}
	if err := statusErr(status, raw); err != nil {
		return "", nil, err
	}
	return flat, s.model, nil
}

// local validates doc in this process, under s.mu held for reading.
func (s *Schema) local(doc []byte, lim Limits, flatten bool) (int, string, []rawIssue, error) {
	w, err := s.c.get()
	if err != nil {
		return 0, "", nil, err
	}
	status, flat, raw := w.validate(doc, s.c.lengths, lim, flatten)
	s.c.put(w)
	return status, flat, raw, nil
}

// statusErr is the error for a validation's status, nil for stOK.
func statusErr(status int, raw []rawIssue) error {
	switch status {
	case stOK:
		return nil
	case stDoctype:
		return validationErr(DetailDoctype, validationIssues(raw))
	case stTooDeep:
		return validationErr(DetailTooDeep, validationIssues(raw))
	case stTooLong:
		return validationErr(DetailPatternValue, validationIssues(raw))
	case stGaveUp:
		// The device's value and the schema's pattern together: the
		// device is told (it would retry a wait forever), the operator
		// sees the rejection.
		return validationErr(DetailPatternCost, []ValidationIssue{{Message: "libxml2 gave up matching a value against its xs:pattern " +
			"(the pattern backtracks too much on this value): shorten the value, or simplify the schema's pattern"}})
	case stMalform, stInvalid:
		return validationErr("", validationIssues(raw))
	default:
		return fmt.Errorf("xsd: libxml2 validation failed (status %d)", status)
	}
}

func checkSize(doc []byte, lim Limits) error {
	if len(doc) > lim.MaxBytes {
		return validationErr(DetailTooLarge, []ValidationIssue{{
			Message: "document is " + strconv.Itoa(len(doc)) + " bytes, over the limit of " +
				strconv.Itoa(lim.MaxBytes),
		}})
	}
	if len(doc) == 0 {
		return validationErr("", []ValidationIssue{{Message: "document is empty"}})
	}
	return nil
}

// checkAttributes refuses a document with an element of more than
// MaxAttributes attributes, by a linear scan before parsing.
func checkAttributes(doc []byte) error {
	if line, over := attributeFlood(doc); over {
		return validationErr(DetailTooLarge, []ValidationIssue{{
			Line:    line,
			Message: "an element has more than " + strconv.Itoa(MaxAttributes) + " attributes",
		}})
	}
	return nil
}

// attributeFlood reports the line of the first start tag of doc with more
// than MaxAttributes attributes, by a linear scan: libxml2 checks for
// duplicate attributes in quadratic time, in readings and schemas alike.
// Anything malformed is left to the parser.
func attributeFlood(doc []byte) (line int, over bool) {
	if bytes.Count(doc, []byte{'='}) <= MaxAttributes {
		return 0, false // fast path: not even that many '=' in the document
	}
	skip := func(i int, end string) int {
		k := bytes.Index(doc[i:], []byte(end))
		if k < 0 {
			return len(doc)
		}
		return i + k + len(end)
	}
	for i := 0; i < len(doc); {
		j := bytes.IndexByte(doc[i:], '<')
		if j < 0 {
			return 0, false
		}
		i += j + 1
		rest := doc[i:]
		switch {
		case bytes.HasPrefix(rest, []byte("!--")):
			i = skip(i, "-->")
		case bytes.HasPrefix(rest, []byte("![CDATA[")):
			i = skip(i, "]]>")
		case bytes.HasPrefix(rest, []byte("?")):
			i = skip(i, "?>")
		case bytes.HasPrefix(rest, []byte("!")), bytes.HasPrefix(rest, []byte("/")):
			i = skip(i, ">")
		default: // a start tag: count '=' outside quoted values
			count, start := 0, i
			var quote byte
		tag:
			for ; i < len(doc); i++ {
				switch c := doc[i]; {
				case quote != 0:
					if c == quote {
						quote = 0
					}
				case c == '"' || c == '\'':
					quote = c
				case c == '=':
					count++
				case c == '>':
					break tag
				}
			}
			if count > MaxAttributes {
				return bytes.Count(doc[:start], []byte{'\n'}) + 1, true
			}
		}
	}
	return 0, false
}
