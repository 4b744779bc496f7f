package api

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/labstack/echo/v4"
)

// TestBinderStrict: every JSON endpoint refuses a body in another media
// type (415) and a field it does not know (400 naming it) instead of
// ignoring them, and still takes a well-formed JSON body.
func TestBinderStrict(t *testing.T) {
	endpoints := []struct {
		name, method, target, body string
		ok                         int
	}{
		{"CreateDevice", http.MethodPost, "/v1/devices", `{"jid":"new@example.com","schema":"thermostat","name":"Kitchen"}`, http.StatusCreated},
		{"UpdateDevice", http.MethodPatch, "/v1/devices/thermo1%40example.com", `{"name":"Hall"}`, http.StatusOK},
		{"CreateSchema", http.MethodPost, "/v1/schemas", `{"name":"boiler","xsd":"<xs:schema/>"}`, http.StatusCreated},
		{"SendCommand", http.MethodPost, "/v1/devices/thermo1%40example.com/commands", `{"payload":"<x/>","mode":"async"}`, http.StatusAccepted},
		{"CreateToken", http.MethodPost, "/v1/tokens", `{"name":"ops","scopes":["devices:read"]}`, http.StatusCreated},
	}
	attacks := []struct {
		name   string
		ctype  string
		body   func(ok string) string
		status int
		code   string
		msg    string
		field  string
	}{
		{"UnknownField", "application/json", func(ok string) string { return strings.TrimSuffix(ok, "}") + `,"bogus":1}` },
			http.StatusBadRequest, "invalid", `unknown field "bogus"`, "bogus"},
		{"MisspeltField", "application/json", func(ok string) string { return `{"lables":{"room":"x"},` + strings.TrimPrefix(ok, "{") },
			http.StatusBadRequest, "invalid", `unknown field "lables"`, "lables"},
		{"TwoValues", "application/json", func(ok string) string { return ok + ok },
			http.StatusBadRequest, "invalid", "one JSON value", ""},
		{"XML", "application/xml", func(string) string { return `<device><jid>new@example.com</jid><name>x</name></device>` },
			http.StatusUnsupportedMediaType, "unsupported_media_type", "application/json", ""},
		{"Form", "application/x-www-form-urlencoded", func(string) string { return `jid=new%40example.com&name=x&schema=thermostat&payload=x` },
			http.StatusUnsupportedMediaType, "unsupported_media_type", "application/json", ""},
		{"Multipart", "multipart/form-data; boundary=x", func(string) string {
			return "--x\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\nx\r\n--x--\r\n"
		},
			http.StatusUnsupportedMediaType, "unsupported_media_type", "application/json", ""},
		{"TextPlainJSON", "text/plain", func(ok string) string { return ok },
			http.StatusUnsupportedMediaType, "unsupported_media_type", "application/json", ""},
		{"NoContentType", "", func(ok string) string { return ok },
			http.StatusUnsupportedMediaType, "unsupported_media_type", "application/json", ""},
	}
	for _, ep := range endpoints {
		t.Run(ep.name+"/OK", func(t *testing.T) {
			for _, ct := range []string{"application/json", "application/json; charset=utf-8"} {
				s, _ := accessFixture(Config{}, slog.New(slog.DiscardHandler))
				rec := doBody(t, s, ep.method, ep.target, ct, ep.body)
				if rec.Code != ep.ok {
					t.Errorf("Content-Type %s: status = %d, want %d (%s)", ct, rec.Code, ep.ok, rec.Body)
				}
			}
		})
		for _, at := range attacks {
			t.Run(ep.name+"/"+at.name, func(t *testing.T) {
				s, _ := accessFixture(Config{}, slog.New(slog.DiscardHandler))
				rec := doBody(t, s, ep.method, ep.target, at.ctype, at.body(ep.body))
				if rec.Code != at.status {
					t.Fatalf("status = %d, want %d (%s)", rec.Code, at.status, rec.Body)
				}
				got := decode[ErrorResponse](t, rec)
				if got.Code != at.code || !strings.Contains(got.Message, at.msg) {
					t.Errorf("body = %+v, want code %q and a message with %q", got, at.code, at.msg)
				}
				if at.field != "" && !strings.Contains(rec.Body.String(), `"field":"`+at.field+`"`) {
					t.Errorf("details do not name field %q: %s", at.field, rec.Body)
				}
			})
		}
	}
}

// TestBinderTypeError: a value of the wrong JSON type is named by its
// field and the type wanted.
func TestBinderTypeError(t *testing.T) {
	s, _ := accessFixture(Config{}, slog.New(slog.DiscardHandler))
	rec := doBody(t, s, http.MethodPost, "/v1/devices", "application/json", `{"jid":"new@example.com","schema":"thermostat","name":3}`)
	if rec.Code != http.StatusBadRequest {
		t.Fatalf("status = %d (%s)", rec.Code, rec.Body)
	}
	got := decode[ErrorResponse](t, rec)
	if want := "invalid request: name must be a JSON string, not number"; got.Code != "invalid" || got.Message != want {
		t.Errorf("body = %+v, want message %q", got, want)
	}
}

// doBody sends body with Content-Type ctype (none when empty), as the
// admin.
func doBody(t *testing.T, h http.Handler, method, target, ctype, body string) *httptest.ResponseRecorder {
	t.Helper()
	var header []string
	if ctype != "" {
		header = []string{"Content-Type", ctype}
	}
	return do(t, h, method, target, strings.NewReader(body), header...)
}

// FuzzJSONBinder: whatever the body and its Content-Type, the binder
// answers 200, 400 or 415 with the error body, never a 500.
func FuzzJSONBinder(f *testing.F) {
	for _, seed := range []struct{ ctype, body string }{
		{"application/json", `{"name":"t1","kind":"sensor"}`},
		{"application/json", `{"name":"t1","bogus":1}`},
		{"application/json", `{"name":"t1"}{"name":"t2"}`},
		{"application/json", `{"labels":{"a":1}}`},
		{"application/json; charset=utf-8", `{"name":`},
		{"application/xml", `<x/>`},
		{"application/x-www-form-urlencoded", `name=x`},
		{"", `{}`},
		{"application/json", ``},
	} {
		f.Add(seed.ctype, seed.body)
	}
	s, _ := newTestServer(f, Config{}, nil)
	s.echo.POST("/bind", func(c echo.Context) error {
		var req testRequest
		if err := bind(c, &req); err != nil {
			return err
		}
		return c.JSON(http.StatusOK, req)
	})
	f.Fuzz(func(t *testing.T, ctype, body string) {
		rec := doBody(t, s, http.MethodPost, "/bind", ctype, body)
		switch rec.Code {
		case http.StatusOK:
		case http.StatusBadRequest, http.StatusUnsupportedMediaType:
			var e ErrorResponse
			if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Code == "" || e.Message == "" {
				t.Errorf("error body %q: %v", rec.Body, err)
			}
		default:
			t.Errorf("Content-Type %q, body %q: status %d (%s)", ctype, body, rec.Code, rec.Body)
		}
	})
}
