package api

import (
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/iotgate/iotgate"
)

// DefaultPageLimit is the page size of the list endpoints when the query
// has no limit; at most 1000 may be asked for.
const DefaultPageLimit = 100

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

// The query helpers below parse one query parameter each, so that a bad
// value is refused with a message naming the parameter (echo's binder only
// says what strconv said). Ranges are left to the validate tags of the
// request struct the value goes into.

// queryInt parses the integer query parameter name; def when absent.
// Errors: invalid.
func queryInt(c echo.Context, name string, def int) (int, error) {
	s := c.QueryParam(name)
	if s == "" {
		return def, nil
	}
	v, err := strconv.Atoi(s)
	if err != nil {
		return 0, iotgate.Errorf(iotgate.EInvalid, "%s must be an integer, not %q", name, s)
	}
	return v, nil
}

// queryTime parses the RFC 3339 time query parameter name; nil when absent.
// Errors: invalid.
func queryTime(c echo.Context, name string) (*time.Time, error) {
	s := c.QueryParam(name)
	if s == "" {
		return nil, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return nil, iotgate.Errorf(iotgate.EInvalid, "%s must be an RFC 3339 time such as 2026-01-02T15:04:05Z, not %q", name, s)
	}
	return &t, nil
}

// queryBool parses the boolean query parameter name ("true" or "false");
// nil when absent. Errors: invalid.
func queryBool(c echo.Context, name string) (*bool, error) {
	var v bool
	switch s := c.QueryParam(name); s {
	case "":
		return nil, nil
	case "true":
		v = true
	case "false":
		v = false
	default:
		return nil, iotgate.Errorf(iotgate.EInvalid, "%s must be true or false, not %q", name, s)
	}
	return &v, nil
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
