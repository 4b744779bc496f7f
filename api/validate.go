package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"reflect"
	"strings"

	"github.com/go-playground/validator/v10"
	"github.com/labstack/echo/v4"

	"github.com/iotgate/iotgate"
)

// FieldError says what is wrong with one field of a request: the details
// of a 400 response to a request that failed validation.
type FieldError struct {
	// Field is the JSON path of the field, for example "labels.room".
	Field string `json:"field" example:"name"`
	// Rule is the validation rule that failed (validate tag).
	Rule string `json:"rule" example:"max"`
	// Param is the rule's parameter, if any.
	Param string `json:"param,omitempty" example:"64"`
	// Message is the rule in words.
	Message string `json:"message" example:"must be at most 64 characters long"`
}

// structValidator plugs go-playground/validator into echo (c.Validate),
// naming fields by their JSON names.
type structValidator struct{ v *validator.Validate }

func newValidator() *structValidator {
	v := validator.New(validator.WithRequiredStructEnabled())
	v.RegisterTagNameFunc(func(f reflect.StructField) string {
		for _, tag := range []string{"json", "query", "param", "form"} {
			name, _, _ := strings.Cut(f.Tag.Get(tag), ",")
			if name == "-" {
				return ""
			}
			if name != "" {
				return name
			}
		}
		return f.Name
	})
	return &structValidator{v: v}
}

// Validate checks i's validate tags. A failure is a *iotgate.Error with
// code EInvalid and a []FieldError as Fields; anything else (i is not a
// struct) is a programming error, reported as internal.
func (sv *structValidator) Validate(i any) error {
	err := sv.v.Struct(i)
	if err == nil {
		return nil
	}
	var ve validator.ValidationErrors
	if errors.As(err, &ve) {
		r := invalidRequest(ve)
		return &iotgate.Error{Code: iotgate.EInvalid, Message: r.Message, Fields: r.Details, Err: err}
	}
	return fmt.Errorf("validate %T: %w", i, err)
}

// bind decodes the request's JSON body into v (see jsonBinder) and
// validates it. Its errors are what the error handler turns into 400, 413
// and 415 responses.
func bind(c echo.Context, v any) error {
	if err := c.Bind(v); err != nil {
		return err
	}
	return c.Validate(v)
}

// invalidRequest describes validation errors as a response body.
func invalidRequest(ve validator.ValidationErrors) ErrorResponse {
	fields := make([]FieldError, 0, len(ve))
	for _, fe := range ve {
		fields = append(fields, FieldError{
			Field:   fieldPath(fe),
			Rule:    fe.Tag(),
			Param:   fe.Param(),
			Message: ruleMessage(fe),
		})
	}
	msg := "invalid request"
	if len(fields) == 1 {
		msg = "invalid request: " + fields[0].Field + " " + fields[0].Message
	}
	return ErrorResponse{Code: iotgate.EInvalid, Message: msg, Details: fields}
}

// fieldPath turns "createDevice.labels[room]" into "labels.room": the
// top-level struct's name means nothing to clients.
func fieldPath(fe validator.FieldError) string {
	ns := fe.Namespace()
	if _, rest, ok := strings.Cut(ns, "."); ok {
		ns = rest
	}
	r := strings.NewReplacer("[", ".", "]", "")
	return r.Replace(ns)
}

// ruleMessage says in words what rule fe broke, for the common rules.
func ruleMessage(fe validator.FieldError) string {
	p := fe.Param()
	var unit string
	switch fe.Kind() {
	case reflect.String:
		unit = " characters long"
	case reflect.Slice, reflect.Array, reflect.Map:
		unit = " items"
	}
	switch fe.Tag() {
	case "required", "required_with", "required_without", "required_if", "required_unless":
		return "is required"
	case "min", "gte":
		if unit != "" {
			return "must be at least " + p + unit
		}
		return "must be at least " + p
	case "max", "lte":
		if unit != "" {
			return "must be at most " + p + unit
		}
		return "must be at most " + p
	case "gt":
		return "must be greater than " + p
	case "lt":
		return "must be less than " + p
	case "len":
		if unit != "" {
			return "must be exactly " + p + unit
		}
		return "must be " + p
	case "oneof":
		return "must be one of: " + strings.Join(strings.Fields(p), ", ")
	case "excluded_with", "excluded_without":
		return "must not be set together with " + p
	}
	if p != "" {
		return fmt.Sprintf("must satisfy %s=%s", fe.Tag(), p)
	}
	return "must be a valid " + fe.Tag()
}

// jsonBinder is the API's echo.Binder: request bodies are JSON, decoded
// strictly. Echo's default binder also takes XML and form bodies and
// ignores unknown fields, so that a misspelt field ("lables") is silently
// dropped and a device registered without what its owner meant; here a
// body in another media type is refused with 415 and an unknown field
// with 400 naming it. Path and query parameters are not bound here:
// pathParam and parseQuery read them.
type jsonBinder struct{}

// Bind decodes the body of c's request into i. An empty body leaves i as
// it is (validation then says what is missing). Errors: invalid (400:
// not JSON, unknown field, wrong type, more than one value), echo's 415
// for another Content-Type, *http.MaxBytesError (413) for too large a body.
func (jsonBinder) Bind(i any, c echo.Context) error {
	req := c.Request()
	if req.ContentLength == 0 || req.Body == nil || req.Body == http.NoBody {
		return nil
	}
	mt, _, err := mime.ParseMediaType(req.Header.Get(echo.HeaderContentType))
	if err != nil || mt != echo.MIMEApplicationJSON {
		return echo.NewHTTPError(http.StatusUnsupportedMediaType, "request body must be JSON, with Content-Type: application/json")
	}
	dec := json.NewDecoder(req.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(i); err != nil {
		if errors.Is(err, io.EOF) {
			return nil // a chunked body with nothing in it
		}
		return decodeError(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return err
		}
		return iotgate.Errorf(iotgate.EInvalid, "request body must be one JSON value, with nothing after it")
	}
	return nil
}

// decodeError describes an error of encoding/json's Decode for clients.
func decodeError(err error) error {
	var (
		mbe *http.MaxBytesError
		se  *json.SyntaxError
		te  *json.UnmarshalTypeError
	)
	switch {
	case errors.As(err, &mbe):
		return err
	case errors.As(err, &se):
		return &iotgate.Error{Code: iotgate.EInvalid, Message: fmt.Sprintf("request body is not valid JSON (at byte %d)", se.Offset), Err: err}
	case errors.Is(err, io.ErrUnexpectedEOF):
		return &iotgate.Error{Code: iotgate.EInvalid, Message: "request body is not valid JSON (it ends too soon)", Err: err}
	case errors.As(err, &te) && te.Field != "":
		fe := FieldError{Field: te.Field, Rule: "type", Param: jsonKind(te.Type), Message: "must be a JSON " + jsonKind(te.Type) + ", not " + te.Value}
		return &iotgate.Error{Code: iotgate.EInvalid, Message: "invalid request: " + fe.Field + " " + fe.Message,
			Fields: []FieldError{fe}, Err: err}
	}
	// encoding/json has no error type for an unknown field, only this
	// message (stable since Go 1.10); its quoted name is the one detail.
	if name, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		field := strings.Trim(name, `"`)
		fe := FieldError{Field: field, Rule: "unknown", Message: "is not a field of this request"}
		return &iotgate.Error{Code: iotgate.EInvalid, Message: "invalid request: unknown field " + name,
			Fields: []FieldError{fe}, Err: err}
	}
	return &iotgate.Error{Code: iotgate.EInvalid, Message: "request body does not match the expected JSON", Err: err}
}

// jsonKind names the JSON type that decodes into t.
func jsonKind(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.String:
		return "string"
	case reflect.Bool:
		return "boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64,
		reflect.Float32, reflect.Float64:
		return "number"
	case reflect.Slice, reflect.Array:
		return "array"
	}
	return "object"
}
