package schemas_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"

	"github.com/iotgate/iotgate"
	"github.com/iotgate/iotgate/schemas"
	"github.com/iotgate/iotgate/schemas/examples"
)

// TestBuildCommand: the compiled schema builds commands from JSON, and its
// refusals are iotgate errors with the json_* details and the key's path.
func TestBuildCommand(t *testing.T) {
	ctx := context.Background()
	reg := schemas.NewRegistry(newMemStore(), schemas.Config{})
	if _, err := reg.Register(ctx, "thermostat", string(examples.Thermostat()), ""); err != nil {
		t.Fatal(err)
	}
	ps, _, err := reg.Compiled(ctx, "thermostat", 0)
	if err != nil {
		t.Fatal(err)
	}
	b, ok := ps.(iotgate.CommandBuilder)
	if !ok {
		t.Fatalf("%T is not an iotgate.CommandBuilder", ps)
	}
	for _, tc := range []struct {
		name, el, data string
		want           string
		detail, path   string
	}{
		{"OK", "set", `{"mode":"heat","target":21.5}`, `<set xmlns="urn:example:thermostat"><target>21.5</target><mode>heat</mode></set>`, "", ""},
		{"NotMappable", "set", `{"target":[1]}`, "", iotgate.DetailJSONNotMappable, "data.target"},
		{"Ambiguous", "", `{"#text":1}`, "", iotgate.DetailJSONElementAmbiguous, "element"},
		{"Unknown", "reboot", `{}`, "", iotgate.DetailJSONElementUnknown, "element"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := b.BuildCommand(tc.el, []byte(tc.data))
			if tc.detail == "" {
				if err != nil || string(got) != tc.want {
					t.Fatalf("BuildCommand = %s, %v; want %s", got, err, tc.want)
				}
				return
			}
			var e *iotgate.Error
			if !errors.As(err, &e) || e.Code != iotgate.EUnprocessable || e.Detail != tc.detail {
				t.Fatalf("BuildCommand = %s, %v; want unprocessable %s", got, err, tc.detail)
			}
			if mi, ok := e.Fields.(iotgate.MappingIssue); !ok || mi.Path != tc.path || mi.Reason == "" {
				t.Errorf("Fields = %#v, want the path %s and a reason", e.Fields, tc.path)
			}
		})
	}
}

// TestRegistryJSONSchema: the registry serves each version's JSON Schema;
// an unknown version is not_found.
func TestRegistryJSONSchema(t *testing.T) {
	ctx := context.Background()
	reg := schemas.NewRegistry(newMemStore(), schemas.Config{})
	if _, err := reg.Register(ctx, "thermostat", string(examples.Thermostat()), ""); err != nil {
		t.Fatal(err)
	}
	raw, err := reg.JSONSchema(ctx, "thermostat", 1)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Defs map[string]json.RawMessage `json:"$defs"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil || doc.Defs["set"] == nil || doc.Defs["reading"] == nil {
		t.Errorf("JSON Schema = %s (%v), want $defs for set and reading", raw, err)
	}
	if _, err := reg.JSONSchema(ctx, "thermostat", 7); iotgate.ErrorCode(err) != iotgate.ENotFound {
		t.Errorf("unknown version: %v, want not_found", err)
	}
}
