package xsd

import (
	"errors"
	"fmt"
	"strings"
)

// Details of a *ValidationError for documents refused before validation,
// so that clients can tell a limit from a schema mismatch. They are part of
// iotgate's API: package schemas maps them to iotgate's Detail* codes.
const (
	DetailTooLarge = "too_large"         // the document exceeds Limits.MaxBytes
	DetailTooDeep  = "too_deep"          // element nesting exceeds Limits.MaxDepth
	DetailDoctype  = "doctype_forbidden" // the document has a DOCTYPE
	// DetailPatternValue: a value checked against an xs:pattern exceeds
	// Limits.MaxPatternValue, or all of them Limits.MaxPatternTotal.
	DetailPatternValue = "pattern_value_too_long"
	// DetailPatternCost: libxml2 gave up matching a value against its
	// xs:pattern (its backtracking budget ran out).
	DetailPatternCost = "pattern_too_costly"
	// DetailTooComplex: a schema refused by a CostLimits count or by its
	// trial compile's CPU or memory limit (a *CompileError's Detail).
	DetailTooComplex = "schema_too_complex"
)

// ErrFreed is returned by every method of a Schema after Free: the caller
// raced with a schema replacement and should look the schema up again.
var ErrFreed = errors.New("xsd: schema freed")

// CompileIssue is one problem found in a schema: libxml2's message and the
// line of the schema document it refers to (0 when unknown).
type CompileIssue struct {
	Line    int    `json:"line"`
	Message string `json:"message"`
}

// CompileError lists why a schema does not compile. Its Issues are never
// empty.
type CompileError struct {
	// Detail is DetailTooComplex for a schema refused by a cost limit, ""
	// for a schema that is not valid.
	Detail string
	Issues []CompileIssue
}

func (e *CompileError) Error() string {
	var b strings.Builder
	b.WriteString("xsd: schema does not compile")
	for i, is := range e.Issues {
		if i == 3 {
			fmt.Fprintf(&b, "; and %d more", len(e.Issues)-i)
			break
		}
		if is.Line > 0 {
			fmt.Fprintf(&b, "; line %d: %s", is.Line, is.Message)
		} else {
			fmt.Fprintf(&b, "; %s", is.Message)
		}
	}
	return b.String()
}

// ValidationIssue is one problem found in a document: libxml2's message, the
// line, and the path of the element (or attribute, as "/@name") it refers
// to, built from local names with a 1-based [n] where a name repeats among
// siblings, for example "/report/sensor[2]/@id". Path is empty when unknown.
type ValidationIssue struct {
	Line    int    `json:"line"`
	Path    string `json:"path,omitempty"`
	Message string `json:"message"`
}

// ValidationError lists why a document was refused: not well-formed, a
// DOCTYPE, over a limit, or not valid against the schema. Its Issues are
// never empty.
type ValidationError struct {
	// Detail is a Detail* constant for a refusal before validation, ""
	// for a document that is not well-formed or not valid.
	Detail string
	Issues []ValidationIssue
}

func (e *ValidationError) Error() string {
	return "xsd: invalid document" + e.Summary()
}

// Summary lists the first three issues as "; line L: PATH: message", for
// messages shown to the sender of the document.
func (e *ValidationError) Summary() string {
	var b strings.Builder
	for i, is := range e.Issues {
		if i == 3 {
			fmt.Fprintf(&b, "; and %d more", len(e.Issues)-i)
			break
		}
		b.WriteString("; ")
		if is.Line > 0 {
			fmt.Fprintf(&b, "line %d: ", is.Line)
		}
		if is.Path != "" {
			b.WriteString(is.Path)
			b.WriteString(": ")
		}
		b.WriteString(is.Message)
	}
	return b.String()
}

func compileErr(issues []CompileIssue) error {
	if len(issues) == 0 {
		issues = []CompileIssue{{Message: "schema does not compile"}}
	}
	return &CompileError{Issues: issues}
}

func compileIssues(raw []rawIssue) []CompileIssue {
	out := make([]CompileIssue, 0, len(raw))
	for _, r := range raw {
		out = append(out, CompileIssue{Line: r.Line, Message: r.Message})
	}
	return out
}

func validationErr(detail string, issues []ValidationIssue) error {
	if len(issues) == 0 {
		issues = []ValidationIssue{{Message: "document is not valid"}}
	}
	return &ValidationError{Detail: detail, Issues: issues}
}

func validationIssues(raw []rawIssue) []ValidationIssue {
	out := make([]ValidationIssue, 0, len(raw))
	for _, r := range raw {
		if a := attrInMessage(r.Message); a != "" && r.Path != "" {
			r.Path += "/@" + a
		}
		out = append(out, ValidationIssue(r))
	}
	return out
}

// attrInMessage returns the attribute a libxml2 validation message is
// about. libxml2 reports attribute errors on the owner element (its error
// record keeps only element nodes), so the attribute is known only from the
// message, which reads "Element '{ns}e', attribute '{ns}a': ...".
func attrInMessage(msg string) string {
	if !strings.HasPrefix(msg, "Element '") {
		return ""
	}
	head, _, ok := strings.Cut(msg, "': ")
	if !ok {
		return ""
	}
	_, attr, ok := strings.Cut(head, "', attribute '")
	if !ok {
		return ""
	}
	if i := strings.LastIndexByte(attr, '}'); i >= 0 {
		attr = attr[i+1:]
	}
	return attr
}
