package schemas

import (
	"errors"

	"github.com/iotgate/iotgate"
	"github.com/iotgate/iotgate/schemas/xsd"
)

// refusals gives each way schemas/xsd refuses a document, by the
// ValidationError's Detail ("" is a document that is not well-formed or not
// valid), its detail in iotgate's vocabulary and its client-facing message.
var refusals = map[string]struct{ detail, message string }{
	"":                     {"", "document does not match its schema"},
	xsd.DetailTooLarge:     {iotgate.DetailTooLarge, "document too large"},
	xsd.DetailTooDeep:      {iotgate.DetailTooDeep, "document nested too deeply"},
	xsd.DetailDoctype:      {iotgate.DetailDoctypeForbidden, "DOCTYPE not allowed"},
	xsd.DetailPatternValue: {iotgate.DetailPatternValueTooLong, "value too long for its pattern"},
	xsd.DetailPatternCost:  {iotgate.DetailPatternTooCostly, "value too costly to check against its pattern"},
}

// mappings gives each detail of an *xsd.MappingError its iotgate detail.
var mappings = map[string]string{
	xsd.DetailNotMappable:      iotgate.DetailJSONNotMappable,
	xsd.DetailAmbiguousElement: iotgate.DetailJSONElementAmbiguous,
	xsd.DetailUnknownElement:   iotgate.DetailJSONElementUnknown,
}

// fromXSD turns an error of schemas/xsd into an *iotgate.Error; it is the
// only place that does. refused is the code of a content refusal (a schema
// that does not compile, a document that is not valid): unprocessable for
// the content of a request, which was well formed (clients must be able to
// tell it from invalid: HTTP 422 versus 400). The issues are the Fields and
// the error wraps the *xsd.CompileError or *xsd.ValidationError. A
// document's issues (line, path, message) are also in the client-visible
// message: a device needs them to know what to fix, and they say nothing
// about iotgate itself. ErrFreed is unavailable; anything else (libxml2
// failing) is internal.
func fromXSD(err error, refused string) error {
	var ce *xsd.CompileError
	var ve *xsd.ValidationError
	var me *xsd.MappingError
	switch {
	case errors.As(err, &me):
		return &iotgate.Error{Code: iotgate.EUnprocessable, Detail: mappings[me.Code()],
			Message: "data has no XML form in the schema: " + me.Path + ": " + me.Reason,
			Fields:  iotgate.MappingIssue{Path: me.Path, Reason: me.Reason}, Err: err}
	case errors.As(err, &ce) && ce.Detail == xsd.DetailTooComplex:
		return &iotgate.Error{Code: refused, Detail: iotgate.DetailSchemaTooComplex, Message: ce.Issues[0].Message, Fields: ce.Issues, Err: err}
	case errors.As(err, &ce):
		return &iotgate.Error{Code: refused, Message: "schema does not compile", Fields: ce.Issues, Err: err}
	case errors.As(err, &ve):
		r, ok := refusals[ve.Detail]
		if !ok {
			r = refusals[""]
		}
		return &iotgate.Error{Code: refused, Detail: r.detail, Message: r.message + ve.Summary(), Fields: ve.Issues, Err: err}
	case errors.Is(err, xsd.ErrFreed):
		return &iotgate.Error{Code: iotgate.EUnavailable, Message: "schema no longer available", Err: err}
	default:
		return &iotgate.Error{Code: iotgate.EInternal, Err: err}
	}
}
