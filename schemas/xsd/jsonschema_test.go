package xsd

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/iotgate/iotgate/schemas/examples"
)

// compileJSONSchema compiles s's generated JSON Schema with a real
// validator, checking it against the draft 2020-12 metaschema.
func compileJSONSchema(t *testing.T, s *Schema) *jsonschema.Schema {
	t.Helper()
	raw, err := s.JSONSchema()
	if err != nil {
		t.Fatalf("JSONSchema: %v", err)
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
	if err != nil {
		t.Fatalf("JSONSchema is not JSON: %v", err)
	}
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	if err := c.AddResource("urn:test:schema.json", doc); err != nil {
		t.Fatal(err)
	}
	js, err := c.Compile("urn:test:schema.json")
	if err != nil {
		t.Fatalf("compile generated JSON Schema: %v\n%s", err, raw)
	}
	return js
}

func jsonValue(t *testing.T, b []byte) any {
	t.Helper()
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestJSONSchemaAcceptsRenderings: the rendering of every valid document
// (example schemas and the rendering rules' schema) validates against the
// generated JSON Schema, as a whole and against its root element's $defs.
func TestJSONSchemaAcceptsRenderings(t *testing.T) {
	compiled := map[*Schema]*jsonschema.Schema{}
	for _, tc := range roundTripDocs(t) {
		t.Run(tc.name, func(t *testing.T) {
			js, ok := compiled[tc.s]
			if !ok {
				js = compileJSONSchema(t, tc.s)
				compiled[tc.s] = js
			}
			raw, err := json.Marshal(mustRender(t, tc.s, []byte(tc.doc)))
			if err != nil {
				t.Fatal(err)
			}
			if err := js.Validate(jsonValue(t, raw)); err != nil {
				t.Errorf("rendering %s does not validate: %v", raw, err)
			}
		})
	}
}

// TestJSONSchemaRefuses: values the XSD refuses in ways JSON Schema can
// say are refused (wrong type, enum, bounds, unknown key, array shape).
func TestJSONSchemaRefuses(t *testing.T) {
	thermo := mustCompile(t, examples.Thermostat(), CompileOptions{})
	raw, err := thermo.JSONSchema()
	if err != nil {
		t.Fatal(err)
	}
	js := compileJSONSchema(t, thermo)
	for _, tc := range []struct{ name, data string }{
		{"WrongType", `{"target":"hot"}`},
		{"NotInEnum", `{"mode":"turbo"}`},
		{"UnknownKey", `{"target":20,"colour":"red"}`},
		{"NotAnObject", `[1]`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := js.Validate(jsonValue(t, []byte(tc.data))); err == nil {
				t.Errorf("%s validates against %s", tc.data, raw)
			}
		})
	}
	if !strings.Contains(string(raw), `"$schema":"`+JSONSchemaDraft+`"`) {
		t.Errorf("no $schema in %s", raw)
	}
	for _, name := range thermo.GlobalElements() {
		if !strings.Contains(string(raw), `"`+name+`":{`) {
			t.Errorf("no $defs entry for %s in %s", name, raw)
		}
	}
}
