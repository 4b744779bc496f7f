package api

import (
	"errors"
	"fmt"
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

// bind decodes the request (path parameters, query, JSON body, as echo's
// binder does) into v and validates it. Its errors are what the error
// handler turns into 400, 413 and 415 responses.
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
