package api

import (
	"encoding/json"
	"errors"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/labstack/echo/v4"

	"github.com/iotgate/iotgate"
	"github.com/iotgate/iotgate/schemas"
)

var schemaKeys = []string{"name", "version", "description", "target_namespace", "global_elements", "imports", "created_at"}

func TestSchemas(t *testing.T) {
	createBody := func(name, xsd string) string {
		b, _ := json.Marshal(CreateSchemaRequest{Name: name, XSD: xsd, Description: "kitchen"})
		return string(b)
	}
	tests := []apiCase{
		{name: "CreateOK", method: http.MethodPost, target: "/v1/schemas", body: createBody("thermostat", "<xs:schema/>"), status: http.StatusCreated,
			check: func(t *testing.T, rec *httptest.ResponseRecorder) {
				if loc := rec.Header().Get(echo.HeaderLocation); loc != "/v1/schemas/thermostat/versions/3" {
					t.Errorf("Location = %q", loc)
				}
				wantKeys(t, rec.Body.Bytes(), schemaKeys...)
				got := decode[Schema](t, rec)
				want := Schema{Name: "thermostat", Version: 3, Description: "kitchen", TargetNamespace: "urn:example:thermostat",
					GlobalElements: []string{"reading", "state"}, CreatedAt: testTime,
					Imports: map[string]SchemaRef{"urn:example:units": {Name: "units", Version: 1}}}
				if !schemaEqual(got, want) {
					t.Errorf("schema = %+v, want %+v", got, want)
				}
			}},
		{name: "CreateBadJSON", method: http.MethodPost, target: "/v1/schemas", body: `{"name":`, status: http.StatusBadRequest, code: "invalid"},
		{name: "CreateWrongType", method: http.MethodPost, target: "/v1/schemas", body: `{"name":1,"xsd":"x"}`, status: http.StatusBadRequest, code: "invalid"},
		{name: "CreateNoBody", method: http.MethodPost, target: "/v1/schemas", ctype: echo.MIMEApplicationJSON, status: http.StatusBadRequest, code: "invalid"},
		{name: "CreateMissingName", method: http.MethodPost, target: "/v1/schemas", body: `{"xsd":"<xs:schema/>"}`, status: http.StatusBadRequest, code: "invalid", message: "name is required",
			check: func(t *testing.T, rec *httptest.ResponseRecorder) {
				var got struct{ Details []FieldError }
				if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil || len(got.Details) != 1 || got.Details[0].Field != "name" {
					t.Errorf("details = %+v (%v), want one about name", got.Details, err)
				}
			}},
		{name: "CreateMissingXSD", method: http.MethodPost, target: "/v1/schemas", body: `{"name":"x"}`, status: http.StatusBadRequest, code: "invalid", message: "xsd is required"},
		{name: "CreateBadName", method: http.MethodPost, target: "/v1/schemas", body: createBody("Not/A Name", "<xs:schema/>"), status: http.StatusBadRequest, code: "invalid", message: "lowercase"},
		{name: "CreateNotJSON", method: http.MethodPost, target: "/v1/schemas", body: "name=x", ctype: "text/plain", status: http.StatusUnsupportedMediaType, code: "unsupported_media_type"},
		{name: "CreateDoesNotCompile", method: http.MethodPost, target: "/v1/schemas", body: createBody("broken", brokenXSD), status: http.StatusUnprocessableEntity, code: "unprocessable", message: "schema does not compile",
			check: func(t *testing.T, rec *httptest.ResponseRecorder) {
				var got struct {
					Details []CompileIssue `json:"details"`
				}
				if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
					t.Fatal(err)
				}
				want := []CompileIssue{{Line: compileIssues[0].Line, Message: compileIssues[0].Message}, {Line: 0, Message: compileIssues[1].Message}}
				if !slices.Equal(got.Details, want) {
					t.Errorf("details = %+v, want %+v", got.Details, want)
				}
				if rec.Header().Get(echo.HeaderLocation) != "" {
					t.Errorf("Location set on an error")
				}
			}},

		{name: "List", target: "/v1/schemas", status: http.StatusOK,
			check: func(t *testing.T, rec *httptest.ResponseRecorder) {
				wantKeys(t, rec.Body.Bytes(), "items")
				got := decode[SchemaList](t, rec)
				if len(got.Items) != 2 || got.Items[0].Name != "multisensor" || got.Items[0].Version != 1 ||
					got.Items[1].Name != "thermostat" || got.Items[1].Version != 2 {
					t.Errorf("items = %+v, want the latest version of each", got.Items)
				}
			}},
		{name: "Latest", target: "/v1/schemas/thermostat", status: http.StatusOK,
			check: func(t *testing.T, rec *httptest.ResponseRecorder) {
				wantKeys(t, rec.Body.Bytes(), "name", "version", "description", "target_namespace", "global_elements", "created_at")
				if got := decode[Schema](t, rec); got.Version != 2 {
					t.Errorf("version = %d, want the latest, 2", got.Version)
				}
			}},
		{name: "LatestNotFound", target: "/v1/schemas/nope", status: http.StatusNotFound, code: "not_found", message: "nope"},
		{name: "Versions", target: "/v1/schemas/thermostat/versions", status: http.StatusOK,
			check: func(t *testing.T, rec *httptest.ResponseRecorder) {
				got := decode[SchemaList](t, rec)
				if len(got.Items) != 2 || got.Items[0].Version != 1 || got.Items[1].Version != 2 {
					t.Errorf("items = %+v, want versions 1 and 2", got.Items)
				}
			}},
		{name: "VersionsNotFound", target: "/v1/schemas/nope/versions", status: http.StatusNotFound, code: "not_found"},
		{name: "Version", target: "/v1/schemas/thermostat/versions/1", status: http.StatusOK,
			check: func(t *testing.T, rec *httptest.ResponseRecorder) {
				if got := decode[Schema](t, rec); got.Name != "thermostat" || got.Version != 1 || got.CreatedAt != testTime {
					t.Errorf("schema = %+v", got)
				}
				if strings.Contains(rec.Body.String(), "xs:schema") {
					t.Errorf("JSON carries the XSD: %s", rec.Body.String())
				}
			}},
		{name: "VersionNotFound", target: "/v1/schemas/thermostat/versions/9", status: http.StatusNotFound, code: "not_found"},
		{name: "VersionNotANumber", target: "/v1/schemas/thermostat/versions/latest", status: http.StatusBadRequest, code: "invalid", message: "version must be a positive integer"},
		{name: "VersionZero", target: "/v1/schemas/thermostat/versions/0", status: http.StatusBadRequest, code: "invalid"},
		{name: "VersionNegative", target: "/v1/schemas/thermostat/versions/-1", status: http.StatusBadRequest, code: "invalid"},
		{name: "XSD", target: "/v1/schemas/thermostat/versions/2/xsd", status: http.StatusOK,
			check: func(t *testing.T, rec *httptest.ResponseRecorder) {
				if ct := rec.Header().Get(echo.HeaderContentType); !strings.HasPrefix(ct, "application/xml") {
					t.Errorf("Content-Type = %q, want application/xml", ct)
				}
				if got, want := rec.Body.String(), "<xs:schema targetNamespace='urn:example:thermostat'/>"; got != want {
					t.Errorf("body = %q, want %q", got, want)
				}
			}},
		{name: "XSDNotFound", target: "/v1/schemas/thermostat/versions/9/xsd", status: http.StatusNotFound, code: "not_found",
			check: func(t *testing.T, rec *httptest.ResponseRecorder) {
				if ct := rec.Header().Get(echo.HeaderContentType); !strings.HasPrefix(ct, echo.MIMEApplicationJSON) {
					t.Errorf("error Content-Type = %q, want JSON", ct)
				}
			}},
		{name: "JSONSchema", target: "/v1/schemas/thermostat/versions/2/json-schema", status: http.StatusOK,
			check: func(t *testing.T, rec *httptest.ResponseRecorder) {
				if ct := rec.Header().Get(echo.HeaderContentType); ct != "application/schema+json" {
					t.Errorf("Content-Type = %q, want application/schema+json", ct)
				}
				wantKeys(t, rec.Body.Bytes(), "$schema", "title")
			}},
		{name: "JSONSchemaNotFound", target: "/v1/schemas/thermostat/versions/9/json-schema", status: http.StatusNotFound, code: "not_found"},
		{name: "JSONSchemaBadVersion", target: "/v1/schemas/thermostat/versions/x/json-schema", status: http.StatusBadRequest, code: "invalid"},
		{name: "Delete", method: http.MethodDelete, target: "/v1/schemas/thermostat/versions/2", status: http.StatusNoContent,
			check: func(t *testing.T, rec *httptest.ResponseRecorder) {
				if rec.Body.Len() != 0 {
					t.Errorf("body = %q, want none", rec.Body.String())
				}
			}},
		{name: "DeleteUsed", method: http.MethodDelete, target: "/v1/schemas/thermostat/versions/1", status: http.StatusConflict, code: "conflict", message: "used by devices"},
		{name: "DeleteNotFound", method: http.MethodDelete, target: "/v1/schemas/thermostat/versions/7", status: http.StatusNotFound, code: "not_found"},
		{name: "DeleteBadVersion", method: http.MethodDelete, target: "/v1/schemas/thermostat/versions/x", status: http.StatusBadRequest, code: "invalid"},
		{name: "MethodNotAllowed", method: http.MethodPut, target: "/v1/schemas/thermostat", status: http.StatusMethodNotAllowed, code: "method_not_allowed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg := newFakeSchemas()
			reg.add("thermostat", 2)
			reg.add("multisensor", 1)
			reg.used[schemas.Ref{Name: "thermostat", Version: 1}] = true
			tt.run(t, newAPI(t, reg, nil))
		})
	}

	t.Run("ListEmpty", func(t *testing.T) {
		rec := apiCase{target: "/v1/schemas", status: http.StatusOK}.run(t, newAPI(t, newFakeSchemas(), nil))
		if got := strings.TrimSpace(rec.Body.String()); got != `{"items":[]}` {
			t.Errorf("body = %s, want {\"items\":[]}", got)
		}
	})

	t.Run("ErrInternal", func(t *testing.T) {
		reg := newFakeSchemas()
		reg.err = errors.New("pq: connection to 10.0.0.1 refused")
		rec := apiCase{target: "/v1/schemas", status: http.StatusInternalServerError, code: "internal", message: "internal error"}.run(t, newAPI(t, reg, nil))
		if strings.Contains(rec.Body.String(), "10.0.0.1") {
			t.Errorf("body leaks the cause: %s", rec.Body.String())
		}
	})

	t.Run("NotRegisteredWithoutRegistry", func(t *testing.T) {
		apiCase{target: "/v1/schemas", status: http.StatusNotFound, code: "not_found"}.run(t, newAPI(t, nil, nil))
	})
}

func schemaEqual(a, b Schema) bool {
	return a.Name == b.Name && a.Version == b.Version && a.Description == b.Description &&
		a.TargetNamespace == b.TargetNamespace && slices.Equal(a.GlobalElements, b.GlobalElements) &&
		a.CreatedAt.Equal(b.CreatedAt) && maps.Equal(a.Imports, b.Imports)
}

// TestCompileIssueMatchesXSD checks that the documented shape of a 422's
// details is what the xsd package's issues marshal to.
func TestCompileIssueMatchesXSD(t *testing.T) {
	b, err := json.Marshal(compileIssues[0])
	if err != nil {
		t.Fatal(err)
	}
	wantKeys(t, b, "line", "message")
	var got CompileIssue
	if err := json.Unmarshal(b, &got); err != nil || got.Line != compileIssues[0].Line || got.Message != compileIssues[0].Message {
		t.Errorf("CompileIssue = %+v, %v", got, err)
	}
}

// TestSwaggerDocumentsRegistries checks that the served OpenAPI description
// has the registry endpoints and renders a reading's data as an object.
func TestSwaggerDocumentsRegistries(t *testing.T) {
	rec := apiCase{target: "/swagger/doc.json", status: http.StatusOK}.run(t, newAPI(t, newFakeSchemas(), newFakeDevices()))
	var doc struct {
		Paths       map[string]map[string]json.RawMessage `json:"paths"`
		Definitions map[string]struct {
			Properties map[string]struct {
				Type string `json:"type"`
			} `json:"properties"`
		} `json:"definitions"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	for path, methods := range map[string][]string{
		"/v1/schemas":                                       {"get", "post"},
		"/v1/schemas/{name}":                                {"get"},
		"/v1/schemas/{name}/versions":                       {"get"},
		"/v1/schemas/{name}/versions/{version}":             {"get", "delete"},
		"/v1/schemas/{name}/versions/{version}/xsd":         {"get"},
		"/v1/schemas/{name}/versions/{version}/json-schema": {"get"},
		"/v1/devices":                                       {"get", "post"},
		"/v1/devices/{jid}":                                 {"get", "patch", "delete"},
		"/v1/devices/{jid}/state":                           {"get"},
		"/v1/devices/{jid}/readings":                        {"get"},
		"/v1/devices/{jid}/rejections":                      {"get"},
	} {
		for _, m := range methods {
			if _, ok := doc.Paths[path][m]; !ok {
				t.Errorf("doc.json has no %s %s; regenerate docs (see api/doc.go)", m, path)
			}
		}
	}
	if typ := doc.Definitions["api.Reading"].Properties["data"].Type; typ != "object" {
		t.Errorf("api.Reading.data has type %q, want object", typ)
	}
}

// TestSchemaWriteRate: beyond IOTGATE_SCHEMA_WRITE_RATE schema writes
// (registrations and deletions) a token gets 429 schema_write_rate with
// Retry-After; its reads and other tokens' writes go on. The rate (2 a
// minute) refills nothing during the test, however slow the machine.
func TestSchemaWriteRate(t *testing.T) {
	s, _ := accessFixture(Config{SchemaWriteRate: 2}, nil)
	body := `{"name":"thermostat","xsd":"<xs:schema/>"}`
	tests := []struct {
		name, method, target, secret string
		want                         int
	}{
		{"First", http.MethodPost, "/v1/schemas", testToken, http.StatusCreated},
		{"Second", http.MethodDelete, "/v1/schemas/thermostat/versions/2", testToken, http.StatusNoContent},
		{"OverRate", http.MethodPost, "/v1/schemas", testToken, http.StatusTooManyRequests},
		{"DeleteOverRate", http.MethodDelete, "/v1/schemas/thermostat/versions/1", testToken, http.StatusTooManyRequests},
		{"ReadsGoOn", http.MethodGet, "/v1/schemas", testToken, http.StatusOK},
		{"OtherToken", http.MethodPost, "/v1/schemas", scopeSecret(iotgate.ScopeSchemasWrite), http.StatusCreated},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var r io.Reader
			header := []string{echo.HeaderAuthorization, "Bearer " + tt.secret}
			if tt.method == http.MethodPost {
				r = strings.NewReader(body)
				header = append(header, echo.HeaderContentType, echo.MIMEApplicationJSON)
			}
			rec := do(t, s, tt.method, tt.target, r, header...)
			if rec.Code != tt.want {
				t.Fatalf("= %d, want %d (%s)", rec.Code, tt.want, rec.Body.String())
			}
			if tt.want != http.StatusTooManyRequests {
				return
			}
			if ra, err := strconv.Atoi(rec.Header().Get("Retry-After")); err != nil || ra < 1 || ra > 60 {
				t.Errorf("Retry-After = %q, want 1-60 whole seconds", rec.Header().Get("Retry-After"))
			}
			if er := decode[ErrorResponse](t, rec); er.Code != iotgate.DetailSchemaWriteRate {
				t.Errorf("code = %q, want %s", er.Code, iotgate.DetailSchemaWriteRate)
			}
		})
	}
}

// TestSchemaRefusals: the registry's refusals of a write reach the client
// as 409 with their code.
func TestSchemaRefusals(t *testing.T) {
	tests := []struct {
		name string
		err  error
		apiCase
	}{
		{name: "QuotaExceeded", err: schemas.ErrVersionQuota(10), apiCase: apiCase{method: http.MethodPost, target: "/v1/schemas",
			body: `{"name":"t","xsd":"<xs:schema/>"}`, status: http.StatusConflict, code: iotgate.DetailSchemaQuotaExceeded, message: "10 schema versions"}},
		{name: "InUse", err: &iotgate.Error{Code: iotgate.EConflict, Detail: iotgate.DetailSchemaInUse, Message: "schema units version 1 is imported by schema meter version 1"},
			apiCase: apiCase{method: http.MethodDelete, target: "/v1/schemas/units/versions/1", status: http.StatusConflict, code: iotgate.DetailSchemaInUse, message: "imported by schema meter version 1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg := newFakeSchemas()
			reg.err = tt.err
			tt.run(t, newAPI(t, reg, nil))
		})
	}
}

// TestSchemaOwner: a registration is counted against the token that made
// it (the per-token quota on schema versions).
func TestSchemaOwner(t *testing.T) {
	reg := newFakeSchemas()
	s := newAPI(t, reg, nil)
	apiCase{method: http.MethodPost, target: "/v1/schemas", body: `{"name":"t","xsd":"<xs:schema/>"}`, status: http.StatusCreated}.run(t, s)
	got, err := reg.Get(t.Context(), "t", 1)
	if err != nil || got.CreatedBy != "tok_test" {
		t.Fatalf("registered by %q (%v), want tok_test", got.CreatedBy, err)
	}
}
