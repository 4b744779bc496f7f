package openapi_test

import (
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/go-openapi/loads"
	"github.com/go-openapi/strfmt"
	"github.com/go-openapi/validate"
	"github.com/swaggo/swag"

	"github.com/iotgate/iotgate/api/openapi"
)

// check validates doc as a Swagger 2.0 description, strictly: the JSON
// schema of Swagger 2.0 and go-openapi's semantic checks (unique operation
// IDs, path parameters declared, $refs that resolve, defaults and examples
// that fit their schema). Warnings count as problems too: a client generator
// that validates first may refuse what this one only warns about.
func check(t *testing.T, doc *loads.Document) []string {
	t.Helper()
	errs, warns := validate.NewSpecValidator(doc.Schema(), strfmt.Default).Validate(doc)
	var problems []string
	for _, e := range errs.Errors {
		problems = append(problems, "error: "+e.Error())
	}
	for _, w := range warns.Errors {
		problems = append(problems, "warning: "+w.Error())
	}
	return problems
}

// analyzed loads a description given as JSON.
func analyzed(t *testing.T, raw []byte) *loads.Document {
	t.Helper()
	doc, err := loads.Analyzed(json.RawMessage(raw), "")
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	return doc
}

// mutated is swagger.json after edit has changed its decoded form.
func mutated(t *testing.T, edit func(t *testing.T, d map[string]any)) *loads.Document {
	t.Helper()
	raw, err := os.ReadFile("swagger.json")
	if err != nil {
		t.Fatal(err)
	}
	var d map[string]any
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatal(err)
	}
	edit(t, d)
	raw, err = json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	return analyzed(t, raw)
}

// param is the parameter named name of the operation method path in d.
func param(t *testing.T, d map[string]any, path, method, name string) map[string]any {
	t.Helper()
	op := d["paths"].(map[string]any)[path].(map[string]any)[method].(map[string]any)
	for _, p := range op["parameters"].([]any) {
		if p := p.(map[string]any); p["name"] == name {
			return p
		}
	}
	t.Fatalf("%s %s has no parameter %q", method, path, name)
	return nil
}

// TestValid checks that every form of the description iotgate ships is a
// valid Swagger 2.0 document (the files in this package and the one served
// at /swagger/doc.json), and that the check catches the mistakes that once
// made client generators refuse it.
func TestValid(t *testing.T) {
	tests := []struct {
		name string
		doc  func(t *testing.T) *loads.Document
		// want is empty for a valid description, else a text that one of
		// the problems reported must contain.
		want string
	}{
		{name: "OK/swagger.json", doc: func(t *testing.T) *loads.Document {
			doc, err := loads.Spec("swagger.json")
			if err != nil {
				t.Fatal(err)
			}
			return doc
		}},
		{name: "OK/swagger.yaml", doc: func(t *testing.T) *loads.Document {
			doc, err := loads.Spec("swagger.yaml")
			if err != nil {
				t.Fatal(err)
			}
			return doc
		}},
		{name: "OK/served", doc: func(t *testing.T) *loads.Document {
			b, err := openapi.Description()
			if err != nil {
				t.Fatal(err)
			}
			return analyzed(t, b)
		}},
		// swag's template writes "host": "" when no @host is set, which
		// Swagger 2.0 forbids: Description drops it.
		{name: "ErrEmptyHost", want: "host", doc: func(t *testing.T) *loads.Document {
			s, err := swag.ReadDoc(openapi.SwaggerInfo.InstanceName())
			if err != nil {
				t.Fatal(err)
			}
			return analyzed(t, []byte(s))
		}},
		// Swagger 2.0 allows example only in a body's schema; a path or
		// query parameter's goes in x-example.
		{name: "ErrExampleOnPathParameter", want: "example", doc: func(t *testing.T) *loads.Document {
			return mutated(t, func(t *testing.T, d map[string]any) {
				param(t, d, "/v1/devices/{jid}", "get", "jid")["example"] = "thermo1@example.com"
			})
		}},
		{name: "ErrExampleOnQueryParameter", want: "example", doc: func(t *testing.T) *loads.Document {
			return mutated(t, func(t *testing.T, d map[string]any) {
				param(t, d, "/v1/devices", "get", "schema")["example"] = "thermostat"
			})
		}},
		{name: "ErrUnresolvedRef", want: "api.NoSuchThing", doc: func(t *testing.T) *loads.Document {
			return mutated(t, func(t *testing.T, d map[string]any) {
				op := d["paths"].(map[string]any)["/v1/devices/{jid}"].(map[string]any)["get"].(map[string]any)
				op["responses"].(map[string]any)["200"].(map[string]any)["schema"] = map[string]any{"$ref": "#/definitions/api.NoSuchThing"}
			})
		}},
		{name: "ErrPathParameterUndeclared", want: "jid", doc: func(t *testing.T) *loads.Document {
			return mutated(t, func(t *testing.T, d map[string]any) {
				op := d["paths"].(map[string]any)["/v1/devices/{jid}"].(map[string]any)["get"].(map[string]any)
				var kept []any
				for _, p := range op["parameters"].([]any) {
					if p.(map[string]any)["name"] != "jid" {
						kept = append(kept, p)
					}
				}
				op["parameters"] = kept
			})
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			problems := check(t, tt.doc(t))
			if tt.want == "" {
				if len(problems) > 0 {
					t.Errorf("the description is not valid Swagger 2.0 (%d problems; fix the annotations in api/ and run make docs):\n%s",
						len(problems), strings.Join(problems, "\n"))
				}
				return
			}
			for _, p := range problems {
				if strings.Contains(p, tt.want) {
					return
				}
			}
			t.Errorf("got problems %q, want one that mentions %q", problems, tt.want)
		})
	}
}

// TestNoParameterExample keeps examples of non-body parameters in
// x-example, where Swagger 2.0 tools read them (swag writes example for
// the example(...) attribute; the annotations use extensions(x-example=...)).
func TestNoParameterExample(t *testing.T) {
	raw, err := os.ReadFile("swagger.json")
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Paths map[string]map[string]struct {
			Parameters []map[string]any `json:"parameters"`
		} `json:"paths"`
	}
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatal(err)
	}
	withExample := 0
	for path, ops := range d.Paths {
		for method, op := range ops {
			for _, p := range op.Parameters {
				if p["in"] == "body" {
					continue
				}
				if _, ok := p["example"]; ok {
					t.Errorf("%s %s: parameter %v has example; annotate it with extensions(x-example=...)", method, path, p["name"])
				}
				if _, ok := p["x-example"]; ok {
					withExample++
				}
			}
		}
	}
	if withExample == 0 {
		t.Errorf("no parameter has an x-example; the annotations lost their examples")
	}
}
