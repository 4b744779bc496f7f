//go:build integration

package main

import (
	"context"
	"encoding/json"
	"encoding/xml"
	"strings"
	"testing"
	"time"

	"github.com/iotgate/iotgate/internal/device"
)

// TestE2EJSONCommands sends commands as JSON data to a simulated device
// through real Prosody and PostgreSQL: the device receives the XML the
// schema builds (namespace, elements in schema order, typed values), and
// the answer comes back as JSON. Data with no XML form is refused before
// anything is sent, and the schema's JSON Schema is served.
func TestE2EJSONCommands(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	e := newCommandsEnv(t, ctx, "prosody")
	g := e.g
	thermo := e.register("jsonthermo")
	got := make(chan string, 10)
	e.online("jsonthermo", func(iq device.IQ) device.Reply {
		got <- iq.Payload
		return thermostat(iq)
	})
	received := func(t *testing.T) string {
		t.Helper()
		select {
		case p := <-got:
			return p
		case <-time.After(10 * time.Second):
			t.Fatal("the device received no command")
			return ""
		}
	}

	t.Run("BuiltSentAnswered", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			body map[string]any
		}{
			{"ElementNamed", map[string]any{"element": "set", "data": map[string]any{"mode": "heat", "target": 21.5, "@unit": "C"}}},
			{"ElementPicked", map[string]any{"data": map[string]any{"mode": "heat", "target": 21.5, "@unit": "C"}}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				a := g.command(thermo, tc.body)
				if a.status != 200 || a.cmd.Status != "succeeded" {
					t.Fatalf("answer %d %s %+v", a.status, a.code, a.cmd)
				}
				if a.cmd.Response == nil || a.cmd.Response.Data["target"] != 21.5 || a.cmd.Response.Data["heating"] != true {
					t.Errorf("response = %+v, want the state as JSON", a.cmd.Response)
				}
				p := received(t)
				var set struct {
					XMLName xml.Name
					Unit    string `xml:"unit,attr"`
					Target  string `xml:"target"`
					Mode    string `xml:"mode"`
				}
				if err := xml.Unmarshal([]byte(p), &set); err != nil {
					t.Fatalf("device received %q: %v", p, err)
				}
				if set.XMLName.Space != "urn:example:thermostat" || set.XMLName.Local != "set" || set.Unit != "C" || set.Target != "21.5" || set.Mode != "heat" {
					t.Errorf("device received %q, want set{unit C, target 21.5, mode heat}", p)
				}
				if strings.Index(p, "<target") > strings.Index(p, "<mode") {
					t.Errorf("device received %q: target after mode, want schema order", p)
				}
			})
		}
	})

	t.Run("NotMappable", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			body map[string]any
			code string
		}{
			{"WrongType", map[string]any{"element": "set", "data": map[string]any{"target": "warm"}}, "json_not_mappable"},
			{"UnknownKey", map[string]any{"element": "set", "data": map[string]any{"colour": "red"}}, "json_not_mappable"},
			{"UnknownElement", map[string]any{"element": "reboot", "data": map[string]any{}}, "json_element_unknown"},
			{"NotValid", map[string]any{"element": "set", "data": map[string]any{"target": 999}}, "unprocessable"},
			{"PayloadAndData", map[string]any{"payload": setTarget("20"), "data": map[string]any{"target": 20}}, "invalid"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				a := g.command(thermo, tc.body)
				if a.code != tc.code || a.status/100 != 4 {
					t.Errorf("answer %d %s, want 4xx %s", a.status, a.code, tc.code)
				}
			})
		}
		select {
		case p := <-got:
			t.Errorf("the device received %q from a refused command", p)
		case <-time.After(200 * time.Millisecond):
		}
	})

	t.Run("JSONSchema", func(t *testing.T) {
		var doc struct {
			Schema string                     `json:"$schema"`
			Defs   map[string]json.RawMessage `json:"$defs"`
		}
		if code := g.do("GET", "/v1/schemas/thermostat/versions/1/json-schema", nil, &doc); code != 200 {
			t.Fatalf("GET json-schema: %d", code)
		}
		for _, el := range []string{"reading", "set", "get", "state"} {
			if doc.Defs[el] == nil {
				t.Errorf("no $defs entry for %s: %+v", el, doc)
			}
		}
		if doc.Schema != "https://json-schema.org/draft/2020-12/schema" {
			t.Errorf("$schema = %q", doc.Schema)
		}
		if code := g.do("GET", "/v1/schemas/thermostat/versions/9/json-schema", nil, nil); code != 404 {
			t.Errorf("GET json-schema of a missing version: %d, want 404", code)
		}
	})
}
