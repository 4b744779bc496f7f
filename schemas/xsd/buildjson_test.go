package xsd

import (
	"encoding/json"
	"encoding/xml"
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/iotgate/iotgate/schemas/examples"
)

// rootName returns the local name of doc's root element.
func rootName(t testing.TB, doc []byte) string {
	t.Helper()
	d := xml.NewDecoder(strings.NewReader(strings.TrimPrefix(string(doc), "\ufeff")))
	for {
		tok, err := d.Token()
		if err != nil {
			t.Fatalf("no root element: %v", err)
		}
		if se, ok := tok.(xml.StartElement); ok {
			return se.Name.Local
		}
	}
}

// roundTripDocs are valid documents covering the rendering rules.
func roundTripDocs(t testing.TB) []struct {
	name string
	s    *Schema
	doc  string
} {
	rs := mustCompile(t, readFile(t, "render/render.xsd"), CompileOptions{Imports: registry(t)})
	thermo := mustCompile(t, examples.Thermostat(), CompileOptions{})
	multi := mustCompile(t, examples.Multisensor(), CompileOptions{})
	return []struct {
		name string
		s    *Schema
		doc  string
	}{
		{"Empty", rs, renderDoc + `/>`},
		{"TypedAttributes", rs, renderDoc + ` count="+0012" ts="99" ok="1"/>`},
		{"Numbers", rs, renderDoc + `><int>-7</int><dec>+1.50</dec><dbl>1.5E3</dbl><flt>-INF</flt><big>18446744073709551615</big></doc>`},
		{"NaN", rs, renderDoc + `><dbl>NaN</dbl></doc>`},
		{"Booleans", rs, renderDoc + `><bool>1</bool><bool> false </bool></doc>`},
		{"DerivedTypes", rs, renderDoc + `><switch>true</switch><level>7</level></doc>`},
		{"WhiteSpace", rs, renderDoc + `><str> a  b </str><tok>  a	 b </tok></doc>`},
		{"ListAndUnion", rs, renderDoc + `><tags> a b  c</tags><either>1.5</either></doc>`},
		{"Extension", rs, renderDoc + `><item version="2" active="true"><id>5</id><label>x</label></item></doc>`},
		{"ExtensionSingle", rs, renderDoc + `><one><id>1</id></one></doc>`},
		{"NameTwiceInSequence", rs, renderDoc + `><twice><x>1</x><x>2</x></twice></doc>`},
		{"SubstitutionGroup", rs, renderDoc + `><celsius>20.5</celsius><on>true</on></doc>`},
		{"SimpleContent", rs, renderDoc + `><temp unit="C">21.5</temp></doc>`},
		{"Mixed", rs, renderDoc + `><text> Hello <em>big</em></text></doc>`},
		{"Nil", rs, renderDoc + `><maybe xsi:nil="true"/></doc>`},
		{"ImportedType", rs, renderDoc + `><qty unit="kg">2.5</qty><u:meta><u:rev>3</u:rev></u:meta></doc>`},
		{"EmptyComplex", rs, renderDoc + `><empty ts="5"/></doc>`},
		{"RootScalar", rs, `<scalar xmlns="urn:test:render"> 3.25 </scalar>`},
		{"Escapes", rs, renderDoc + `><str><![CDATA[a<b]]> &amp; "q" &#13;</str></doc>`},
		{"ThermostatReading", thermo, string(readFile(t, "thermostat/ok-reading.xml"))},
		{"ThermostatReadingMin", thermo, string(readFile(t, "thermostat/ok-reading-min.xml"))},
		{"ThermostatState", thermo, string(readFile(t, "thermostat/ok-state.xml"))},
		{"ThermostatGet", thermo, string(readFile(t, "thermostat/ok-get.xml"))},
		{"ThermostatSetMode", thermo, string(readFile(t, "thermostat/ok-set-mode.xml"))},
		{"ThermostatSetTarget", thermo, string(readFile(t, "thermostat/ok-set-target.xml"))},
		{"MultisensorReport", multi, string(readFile(t, "multisensor/ok-report.xml"))},
		{"RepeatingChoice", rs, renderDoc + `><a>1</a><b>x</b><a>2</a></doc>`},
		{"RepeatingGroup", rs, renderDoc + `><k>x</k><v>1</v><k>y</k><v>2.5</v></doc>`},
		{"MultisensorReportOne", multi, string(readFile(t, "multisensor/ok-report-one.xml"))},
		{"MultisensorReportOneSample", multi, `<report xmlns="urn:example:multisensor" node="n"><sensor id="s"><value>1</value></sensor>` +
			`<samples sensor="s"><at>2024-05-01T11:50:00Z</at><v>1.5</v></samples></report>`},
	}
}

// TestBuildRoundTrip renders valid documents, builds them back from their
// rendering (naming the root, then letting Build pick it) and checks the
// built document is valid and renders the same.
func TestBuildRoundTrip(t *testing.T) {
	for _, tc := range roundTripDocs(t) {
		t.Run(tc.name, func(t *testing.T) {
			want := mustRender(t, tc.s, []byte(tc.doc))
			data, err := json.Marshal(want)
			if err != nil {
				t.Fatal(err)
			}
			for _, el := range []string{rootName(t, []byte(tc.doc)), ""} {
				got, err := tc.s.Build(el, data, BuildLimits{})
				if err != nil {
					var me *MappingError
					if el == "" && errors.As(err, &me) && me.Code() == DetailAmbiguousElement {
						continue // several elements fit: naming one is required
					}
					t.Fatalf("Build(%q, %s): %v", el, data, err)
				}
				if err := tc.s.Validate(got, Limits{}); err != nil {
					t.Fatalf("Build(%q) gave an invalid document %s: %v", el, got, err)
				}
				if back := mustRender(t, tc.s, got); !reflect.DeepEqual(back, want) {
					t.Errorf("Render(Build(%q)) of %s:\n got %v\nwant %v", el, got, back, want)
				}
			}
		})
	}
}

// TestBuildXML checks the XML Build writes: schema order, namespaces,
// lexical forms.
func TestBuildXML(t *testing.T) {
	rs := mustCompile(t, readFile(t, "render/render.xsd"), CompileOptions{Imports: registry(t)})
	thermo := mustCompile(t, examples.Thermostat(), CompileOptions{})
	for _, tc := range []struct {
		name, el, data, want string
		s                    *Schema
	}{
		{"SchemaOrder", "reading", `{"mode":"heat","temperature":21.5,"@seq":4,"@unit":"C","@at":"2024-05-01T12:00:00Z","battery":true}`,
			`<reading xmlns="urn:example:thermostat" at="2024-05-01T12:00:00Z" seq="4" unit="C"><temperature>21.5</temperature><mode>heat</mode><battery>true</battery></reading>`, thermo},
		{"PickedElement", "", `{"target":21.5}`, `<set xmlns="urn:example:thermostat"><target>21.5</target></set>`, thermo},
		{"Escaped", "doc", `{"str":"a<b&\"c\r"}`, `<doc xmlns="urn:test:render"><str>a&lt;b&amp;"c&#xD;</str></doc>`, rs},
		{"Nil", "doc", `{"maybe":null}`, `<doc xmlns="urn:test:render"><maybe xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:nil="true"/></doc>`, rs},
		{"OtherNamespace", "doc", `{"meta":{"rev":3}}`, `<doc xmlns="urn:test:render"><meta xmlns="urn:test:units"><rev>3</rev></meta></doc>`, rs},
		{"RepeatedSequenceInterleaved", "doc", `{"k":["x","y","z"],"v":[1,2]}`,
			`<doc xmlns="urn:test:render"><k>x</k><v>1</v><k>y</k><v>2</v><k>z</k></doc>`, rs},
		{"RootScalar", "scalar", `{"#text":3.25}`, `<scalar xmlns="urn:test:render">3.25</scalar>`, rs},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.s.Build(tc.el, []byte(tc.data), BuildLimits{})
			if err != nil {
				t.Fatalf("Build: %v", err)
			}
			if string(got) != tc.want {
				t.Errorf("Build:\n got %s\nwant %s", got, tc.want)
			}
		})
	}
}

// TestBuildRefusals checks each impossible mapping names its key and code.
func TestBuildRefusals(t *testing.T) {
	rs := mustCompile(t, readFile(t, "render/render.xsd"), CompileOptions{Imports: registry(t)})
	thermo := mustCompile(t, examples.Thermostat(), CompileOptions{})
	for _, tc := range []struct {
		name, el, data string
		s              *Schema
		lim            BuildLimits
		code, path     string
	}{
		{"UnknownKey", "set", `{"target":20,"colour":"red"}`, thermo, BuildLimits{}, DetailNotMappable, "data.colour"},
		{"UnknownAttribute", "set", `{"@x":"1"}`, thermo, BuildLimits{}, DetailNotMappable, "data.@x"},
		{"WrongTypeNumber", "set", `{"target":"20"}`, thermo, BuildLimits{}, DetailNotMappable, "data.target"},
		{"WrongTypeWord", "set", `{"target":"warm"}`, thermo, BuildLimits{}, DetailNotMappable, "data.target"},
		{"WrongTypeBoolString", "reading", `{"battery":"yes"}`, thermo, BuildLimits{}, DetailNotMappable, "data.battery"},
		{"WrongTypeString", "set", `{"mode":1}`, thermo, BuildLimits{}, DetailNotMappable, "data.mode"},
		{"WrongTypeObject", "set", `{"target":{"a":1}}`, thermo, BuildLimits{}, DetailNotMappable, "data.target"},
		{"ArrayNotRepeated", "set", `{"target":[20]}`, thermo, BuildLimits{}, DetailNotMappable, "data.target"},
		{"RepeatedNotArray", "doc", `{"bool":true}`, rs, BuildLimits{}, DetailNotMappable, "data.bool"},
		{"EmptyArray", "doc", `{"bool":[]}`, rs, BuildLimits{}, DetailNotMappable, "data.bool"},
		{"NestedArray", "doc", `{"bool":[[true]]}`, rs, BuildLimits{}, DetailNotMappable, "data.bool[0]"},
		{"NotNormalized", "doc", `{"tok":" a "}`, rs, BuildLimits{}, DetailNotMappable, "data.tok"},
		{"BadXMLChar", "doc", `{"str":"a\u0001"}`, rs, BuildLimits{}, DetailNotMappable, "data.str"},
		{"AttributeLineBreak", "doc", `{"@count":"1\n"}`, rs, BuildLimits{}, DetailNotMappable, "data.@count"},
		{"NullNotNillable", "set", `{"target":null}`, thermo, BuildLimits{}, DetailNotMappable, "data.target"},
		{"SimpleContentNoText", "doc", `{"temp":{"@unit":"C"}}`, rs, BuildLimits{}, DetailNotMappable, "data.temp"},
		{"TextNotAllowed", "set", `{"#text":"x"}`, thermo, BuildLimits{}, DetailNotMappable, "data.#text"},
		{"NumberOutOfRange", "doc", `{"dbl":1e-20000}`, rs, BuildLimits{}, DetailNotMappable, "data.dbl"},
		{"NotAnObject", "set", `[1]`, thermo, BuildLimits{}, DetailNotMappable, "data"},
		{"NotJSON", "set", `{`, thermo, BuildLimits{}, DetailNotMappable, "data"},
		{"UnknownElement", "nope", `{}`, thermo, BuildLimits{}, DetailUnknownElement, "element"},
		{"Ambiguous", "", `{"#text":5}`, rs, BuildLimits{}, DetailAmbiguousElement, "element"},
		{"FitsNone", "", `{"zzz":1}`, thermo, BuildLimits{}, DetailAmbiguousElement, "element"},
		{"TooManyKeys", "doc", `{"bool":[true,true,true,true]}`, rs, BuildLimits{MaxKeys: 3}, DetailNotMappable, "data.bool[2]"},
		{"TooLarge", "doc", `{"str":"` + strings.Repeat("x", 200) + `"}`, rs, BuildLimits{MaxBytes: 100}, DetailNotMappable, "data"},
		{"TooLargeBuilt", "doc", `{"str":"` + strings.Repeat("&", 30) + `"}`, rs, BuildLimits{MaxBytes: 100}, DetailNotMappable, "data.str"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.s.Build(tc.el, []byte(tc.data), tc.lim)
			var me *MappingError
			if !errors.As(err, &me) {
				t.Fatalf("Build = %s, %v; want a *MappingError", got, err)
			}
			if me.Code() != tc.code || me.Path != tc.path || me.Reason == "" {
				t.Errorf("Build: code %q path %q (%v); want code %q path %q", me.Code(), me.Path, err, tc.code, tc.path)
			}
		})
	}
}

// FuzzBuild builds documents of render.xsd's doc (and of the element
// Build picks) from fuzzed JSON: whatever builds and validates must render
// back to the JSON it was built from. Run it for a while with
// go test ./schemas/xsd -run '^$' -fuzz FuzzBuild -fuzztime 60s
func FuzzBuild(f *testing.F) {
	rs, err := Compile(readFile(f, "render/render.xsd"), CompileOptions{Imports: registry(f)})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(rs.Free)
	for _, tc := range roundTripDocs(f) {
		if m, err := tc.s.Render([]byte(tc.doc)); err == nil {
			b, _ := json.Marshal(m)
			f.Add(string(b))
		}
	}
	f.Add(`{"str":"a\r\nb","tok":"x y","temp":{"#text":1,"@unit":"C"},"text":{"#text":"","em":["a"]}}`)
	f.Add(`{"#text":3.25}`)
	f.Fuzz(func(t *testing.T, data string) {
		for _, el := range []string{"doc", ""} {
			doc, err := rs.Build(el, []byte(data), BuildLimits{MaxBytes: 64 << 10})
			if err != nil {
				if !IsMappingError(err) {
					t.Fatalf("Build: %v (%T), want a *MappingError", err, err)
				}
				continue
			}
			if rs.Validate(doc, Limits{}) != nil {
				continue
			}
			got, err := rs.Render(doc)
			if err != nil {
				t.Fatalf("Render(%s): %v", doc, err)
			}
			want := decodeJSON(t, data)
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("Render(Build(%s)) = %v\nbuilt %s", data, got, doc)
			}
		}
	})
}

// FuzzRenderBuild renders valid fuzzed documents (of render.xsd and the
// example schemas), builds them back and checks the round trip: render ->
// build -> render gives the same JSON whenever the built document is
// valid.
func FuzzRenderBuild(f *testing.F) {
	var all []*Schema
	for _, tc := range roundTripDocs(f) {
		f.Add([]byte(tc.doc))
		if !slices.Contains(all, tc.s) {
			all = append(all, tc.s)
		}
	}
	f.Fuzz(func(t *testing.T, doc []byte) {
		for _, s := range all {
			if s.Validate(doc, Limits{}) != nil {
				continue
			}
			x, err := s.Render(doc)
			if err != nil {
				continue // encoding/xml refuses some documents libxml2 accepts
			}
			data, err := json.Marshal(x)
			if err != nil {
				t.Fatal(err)
			}
			built, err := s.Build(rootName(t, doc), data, BuildLimits{})
			if err != nil {
				if !IsMappingError(err) {
					t.Fatalf("Build: %v (%T), want a *MappingError", err, err)
				}
				continue
			}
			if s.Validate(built, Limits{}) != nil {
				continue // see Build: what validation alone catches
			}
			if got := mustRender(t, s, built); !reflect.DeepEqual(got, x) {
				t.Fatalf("Render(Build(Render(%s))) = %v, want %v\nbuilt %s", doc, got, x, built)
			}
		}
	})
}

func decodeJSON(t *testing.T, s string) map[string]any {
	t.Helper()
	d := json.NewDecoder(strings.NewReader(s))
	d.UseNumber()
	var m map[string]any
	if err := d.Decode(&m); err != nil {
		t.Fatalf("decode %s: %v", s, err)
	}
	return m
}

// TestBuildNamespaces: unqualified local elements go in no namespace,
// qualified attributes get a prefix; the documents validate and render
// back.
func TestBuildNamespaces(t *testing.T) {
	const head = `<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema" targetNamespace="urn:q" `
	const body = `><xs:element name="cmd"><xs:complexType><xs:sequence><xs:element name="x" type="xs:int"/></xs:sequence>` +
		`<xs:attribute name="id" type="xs:int"/><xs:attribute name="note" type="xs:string" form="unqualified"/></xs:complexType></xs:element></xs:schema>`
	for _, tc := range []struct {
		name, xsd, want string
	}{
		{"UnqualifiedLocals", head + body, `<cmd xmlns="urn:q" id="7" note="n"><x xmlns="">1</x></cmd>`},
		{"QualifiedLocals", head + `elementFormDefault="qualified" attributeFormDefault="qualified"` + body,
			`<cmd xmlns="urn:q" xmlns:a0="urn:q" a0:id="7" note="n"><x>1</x></cmd>`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := mustCompile(t, []byte(tc.xsd), CompileOptions{})
			data := `{"@id":7,"@note":"n","x":1}`
			got, err := s.Build("cmd", []byte(data), BuildLimits{})
			if err != nil {
				t.Fatalf("Build: %v", err)
			}
			if string(got) != tc.want {
				t.Errorf("Build:\n got %s\nwant %s", got, tc.want)
			}
			if err := s.Validate(got, Limits{}); err != nil {
				t.Fatalf("Validate(%s): %v", got, err)
			}
			if back := mustRender(t, s, got); !reflect.DeepEqual(back, decodeJSON(t, data)) {
				t.Errorf("Render(Build) = %v, want %s", back, data)
			}
		})
	}
}
