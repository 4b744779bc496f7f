package schemas

import (
	"errors"
	"testing"

	"github.com/iotgate/iotgate"
	"github.com/iotgate/iotgate/schemas/xsd"
)

// TestFromXSD checks the one translation of schemas/xsd's errors: the
// codes, details and messages clients see, and that the cause is kept.
func TestFromXSD(t *testing.T) {
	issue := []xsd.ValidationIssue{{Line: 2, Path: "/reading", Message: "Missing child element(s)."}}
	summary := "; line 2: /reading: Missing child element(s)."
	failed := errors.New("xsd: libxml2 validation failed (status -1)")
	tests := []struct {
		name    string
		err     error
		refused string
		code    string
		detail  string
		msg     string
	}{
		{"Compile", &xsd.CompileError{Issues: []xsd.CompileIssue{{Line: 1, Message: "bad"}}}, iotgate.EUnprocessable,
			iotgate.EUnprocessable, "", "schema does not compile"},
		{"CompileStored", &xsd.CompileError{Issues: []xsd.CompileIssue{{Message: "bad"}}}, iotgate.EInvalid,
			iotgate.EInvalid, "", "schema does not compile"},
		{"NotValid", &xsd.ValidationError{Issues: issue}, iotgate.EUnprocessable,
			iotgate.EUnprocessable, "", "document does not match its schema" + summary},
		{"TooLarge", &xsd.ValidationError{Detail: xsd.DetailTooLarge, Issues: issue}, iotgate.EUnprocessable,
			iotgate.EUnprocessable, "too_large", "document too large" + summary},
		{"TooDeep", &xsd.ValidationError{Detail: xsd.DetailTooDeep, Issues: issue}, iotgate.EUnprocessable,
			iotgate.EUnprocessable, "too_deep", "document nested too deeply" + summary},
		{"Doctype", &xsd.ValidationError{Detail: xsd.DetailDoctype, Issues: issue}, iotgate.EUnprocessable,
			iotgate.EUnprocessable, "doctype_forbidden", "DOCTYPE not allowed" + summary},
		{"PatternValue", &xsd.ValidationError{Detail: xsd.DetailPatternValue, Issues: issue}, iotgate.EUnprocessable,
			iotgate.EUnprocessable, "pattern_value_too_long", "value too long for its pattern" + summary},
		{"PatternCost", &xsd.ValidationError{Detail: xsd.DetailPatternCost, Issues: issue}, iotgate.EUnprocessable,
			iotgate.EUnprocessable, "pattern_too_costly", "value too costly to check against its pattern" + summary},
		{"Freed", xsd.ErrFreed, iotgate.EUnprocessable, iotgate.EUnavailable, "", "schema no longer available"},
		{"Failed", failed, iotgate.EUnprocessable, iotgate.EInternal, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := fromXSD(tt.err, tt.refused)
			var de *iotgate.Error
			if !errors.As(err, &de) {
				t.Fatalf("fromXSD = %#v, want an *iotgate.Error", err)
			}
			if de.Code != tt.code || de.Detail != tt.detail || de.Message != tt.msg {
				t.Errorf("fromXSD = code %q detail %q message %q, want %q %q %q", de.Code, de.Detail, de.Message, tt.code, tt.detail, tt.msg)
			}
			if !errors.Is(err, tt.err) {
				t.Errorf("fromXSD = %v does not wrap %v", err, tt.err)
			}
			var ve *xsd.ValidationError
			if errors.As(tt.err, &ve) {
				if fields, ok := de.Fields.([]xsd.ValidationIssue); !ok || len(fields) != len(ve.Issues) {
					t.Errorf("Fields = %#v, want the issues", de.Fields)
				}
			}
			var ce *xsd.CompileError
			if errors.As(tt.err, &ce) {
				if fields, ok := de.Fields.([]xsd.CompileIssue); !ok || len(fields) != len(ce.Issues) {
					t.Errorf("Fields = %#v, want the issues", de.Fields)
				}
			}
		})
	}
}
