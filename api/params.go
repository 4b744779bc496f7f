package api

import (
	"fmt"
	"net/url"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/iotgate/iotgate"
)

// DefaultPageLimit is the page size of the list endpoints when the query
// has no limit; at most iotgate.MaxPageLimit may be asked for (the
// validate tags say max=1000: keep them equal).
const DefaultPageLimit = iotgate.DefaultPageLimit

// pathParam returns the path parameter name, unescaped.
//
// Echo matches routes on the request's raw (escaped) path whenever the URL
// has one, and then gives the parameter still escaped
// ("thermo1%40example.com"). When the raw path is empty, nothing in the
// path needed escaping and the parameter is already its value: unescaping
// it again would turn a literal "%25" into "%". Errors: invalid.
func pathParam(c echo.Context, name string) (string, error) {
	v := c.Param(name)
	if c.Request().URL.RawPath == "" {
		return v, nil
	}
	u, err := url.PathUnescape(v)
	if err != nil {
		return "", iotgate.Errorf(iotgate.EInvalid, "path parameter %s is not validly URL-escaped", name)
	}
	return u, nil
}

// versionParam returns the path parameter "version", a schema version.
// Errors: invalid.
func versionParam(c echo.Context) (int, error) {
	v, err := strconv.Atoi(c.Param("version"))
	if err != nil || v < 1 {
		return 0, iotgate.Errorf(iotgate.EInvalid, "version must be a positive integer, not %q", c.Param("version"))
	}
	return v, nil
}

// parseQuery parses the query of a list route into q, a pointer to a
// struct whose fields name their parameter in a query tag, then checks q's
// validate tags: the one place where the strings of a query become types
// (the services get typed filters). An absent or empty parameter leaves
// its field as the caller set it: the default. Each bad value is refused
// with a message naming the parameter (echo's binder only says what
// strconv said); parameters are read in field order, so the first bad
// one is named. Errors: invalid.
func parseQuery(c echo.Context, q any) error {
	v := reflect.ValueOf(q).Elem()
	params := c.QueryParams()
	for i := 0; i < v.NumField(); i++ {
		name := v.Type().Field(i).Tag.Get("query")
		if name == "" {
			continue
		}
		if err := setQueryField(v.Field(i), name, params[name]); err != nil {
			return err
		}
	}
	return c.Validate(q)
}

// setQueryField parses vs, the values of the query parameter name, into
// field. Errors: invalid.
func setQueryField(field reflect.Value, name string, vs []string) error {
	if p, ok := field.Addr().Interface().(*map[string]string); ok {
		labels, err := labelsQuery(vs)
		if err == nil && labels != nil {
			*p = labels
		}
		return err
	}
	if len(vs) == 0 || vs[0] == "" {
		return nil
	}
	s := vs[0]
	switch p := field.Addr().Interface().(type) {
	case *string:
		*p = s
	case *int:
		n, err := strconv.Atoi(s)
		if err != nil {
			return iotgate.Errorf(iotgate.EInvalid, "%s must be an integer, not %q", name, s)
		}
		*p = n
	case **time.Time:
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return iotgate.Errorf(iotgate.EInvalid, "%s must be an RFC 3339 time such as 2026-01-02T15:04:05Z, not %q", name, s)
		}
		*p = &t
	case **bool:
		var b bool
		switch s {
		case "true":
			b = true
		case "false":
			b = false
		default:
			return iotgate.Errorf(iotgate.EInvalid, "%s must be true or false, not %q", name, s)
		}
		*p = &b
	default:
		// A programming error: a query struct with a field of a type
		// this function does not know.
		panic(fmt.Sprintf("api: query parameter %s has unsupported type %s", name, field.Type()))
	}
	return nil
}

// labelsQuery parses label filters, each "key:value". Errors: invalid.
func labelsQuery(vs []string) (map[string]string, error) {
	if len(vs) == 0 {
		return nil, nil
	}
	labels := make(map[string]string, len(vs))
	for _, v := range vs {
		k, val, ok := strings.Cut(v, ":")
		if !ok || k == "" {
			return nil, iotgate.Errorf(iotgate.EInvalid, "label %q must be key:value, for example room:kitchen", v)
		}
		if _, dup := labels[k]; dup {
			return nil, iotgate.Errorf(iotgate.EInvalid, "label %q is given twice; a device has one value per label", k)
		}
		labels[k] = val
	}
	if err := iotgate.ValidateLabels(labels); err != nil {
		return nil, err
	}
	return labels, nil
}

// itemsOf converts a page of domain values into the items of a list
// response: never nil, so that an empty page is [] in JSON, not null.
func itemsOf[T, U any](in []T, conv func(T) U) []U {
	out := make([]U, 0, len(in))
	for _, v := range in {
		out = append(out, conv(v))
	}
	return out
}
