package xsd

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/iotgate/iotgate/schemas/examples"
)

func toJSON(t testing.TB, v any) string {
	t.Helper()
	if raw, ok := v.(json.RawMessage); ok {
		// Re-encoded below without HTML escaping, as the map is.
		d := json.NewDecoder(bytes.NewReader(raw))
		d.UseNumber()
		if err := d.Decode(&v); err != nil {
			t.Fatalf("json: %v", err)
		}
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b) // map keys come out sorted
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		t.Fatalf("json: %v", err)
	}
	return strings.TrimSuffix(b.String(), "\n")
}

func compactJSON(t testing.TB, s string) string {
	t.Helper()
	var b bytes.Buffer
	if err := json.Compact(&b, []byte(s)); err != nil {
		t.Fatalf("bad expected JSON %s: %v", s, err)
	}
	return b.String()
}

func mustRender(t testing.TB, s *Schema, doc []byte) map[string]any {
	t.Helper()
	m, err := s.Render(doc)
	if err != nil {
		t.Fatalf("Render: %v", err)
	}
	return m
}

const renderDoc = `<doc xmlns="urn:test:render" xmlns:u="urn:test:units" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"`

// TestRender checks each rendering rule on valid documents, through both
// Render (encoding/xml) and ValidateAndRender (libxml2): they must agree.
func TestRender(t *testing.T) {
	rs := mustCompile(t, readFile(t, "render/render.xsd"), CompileOptions{Imports: registry(t)})
	thermo := mustCompile(t, examples.Thermostat(), CompileOptions{})
	multi := mustCompile(t, examples.Multisensor(), CompileOptions{})

	for _, tc := range []struct {
		name string
		s    *Schema
		doc  string
		want string
	}{
		{"RootIsTheObject", rs, renderDoc + `/>`, `{}`},
		{"TypedAttributes", rs, renderDoc + ` count="+0012" ts="99" ok="1"/>`,
			`{"@count":12,"@ok":true,"@ts":99}`},
		{"Numbers", rs, renderDoc + `><int>-7</int><dec>+1.50</dec><dbl>1.5E3</dbl><flt>-INF</flt><big>18446744073709551615</big></doc>`,
			`{"big":18446744073709551615,"dbl":1.5E3,"dec":1.50,"flt":"-INF","int":-7}`},
		{"NumberLexicalForms", rs, renderDoc + `><int>007</int><dec>.5</dec><dbl>5.</dbl></doc>`,
			`{"dbl":5,"dec":0.5,"int":7}`},
		{"NaNStaysString", rs, renderDoc + `><dbl>NaN</dbl></doc>`, `{"dbl":"NaN"}`},
		{"BooleansAndMaxOccurs", rs, renderDoc + `><bool>1</bool><bool> false </bool></doc>`,
			`{"bool":[true,false]}`},
		{"ArrayEvenWhenOne", rs, renderDoc + `><bool>0</bool></doc>`, `{"bool":[false]}`},
		{"NumberWhiteSpace", rs, renderDoc + `><dec> 1.5 </dec><dbl>
2</dbl></doc>`, `{"dbl":2,"dec":1.5}`},
		{"DerivedTypes", rs, renderDoc + `><switch>true</switch><level>7</level></doc>`,
			`{"level":7,"switch":true}`},
		{"WhiteSpace", rs, renderDoc + `><str> a  b </str><tok>  a	 b </tok><coll>x
  y</coll></doc>`, `{"coll":"x y","str":" a  b ","tok":"a b"}`},
		{"ListAndUnionStayStrings", rs, renderDoc + `><tags> a b  c</tags><either>1.5</either></doc>`,
			`{"either":"1.5","tags":"a b c"}`},
		{"ExtensionRepeated", rs, renderDoc + `><item version="2" active="true"><id>5</id><label>x</label></item></doc>`,
			`{"item":[{"@active":true,"@version":2,"id":5,"label":"x"}]}`},
		{"ExtensionSingle", rs, renderDoc + `><one><id>1</id></one></doc>`, `{"one":{"id":1}}`},
		{"XsiType", rs, renderDoc + `><base xsi:type="Extended" active="1" version="3"><id>1</id><label>x</label></base></doc>`,
			`{"base":{"@active":true,"@version":3,"id":1,"label":"x"}}`},
		{"NameTwiceInSequence", rs, renderDoc + `><twice><x>1</x><x>2</x></twice></doc>`, `{"twice":{"x":[1,2]}}`},
		{"NameInTwoChoiceBranches", thermo, `<set xmlns="urn:example:thermostat"><target>20</target><mode>heat</mode></set>`,
			`{"mode":"heat","target":20}`},
		{"RepeatingChoice", rs, renderDoc + `><a>1</a><b>x</b><a>2</a></doc>`, `{"a":[1,2],"b":["x"]}`},
		{"RepeatingGroup", rs, renderDoc + `><k>x</k><v>1</v><k>y</k><v>2.5</v></doc>`,
			`{"k":["x","y"],"v":[1,2.5]}`},
		{"SubstitutionGroup", rs, renderDoc + `><celsius>20.5</celsius><on>true</on></doc>`,
			`{"celsius":[20.5],"on":[true]}`},
		{"SimpleContent", rs, renderDoc + `><temp unit="C">21.5</temp></doc>`, `{"temp":{"#text":21.5,"@unit":"C"}}`},
		{"SimpleContentStableShape", rs, renderDoc + `><temp>21.5</temp></doc>`, `{"temp":{"#text":21.5}}`},
		{"Mixed", rs, renderDoc + `><text> Hello <em>big</em> world </text></doc>`,
			`{"text":{"#text":"Hello  world","em":["big"]}}`},
		{"Nil", rs, renderDoc + `><maybe xsi:nil="true"/></doc>`, `{"maybe":null}`},
		{"ImportedType", rs, renderDoc + `><qty unit="kg">2.5</qty><u:meta><u:rev>3</u:rev></u:meta></doc>`,
			`{"meta":{"rev":3},"qty":{"#text":2.5,"@unit":"kg"}}`},
		{"Wildcard", rs, renderDoc + `><ext><u:flag>1</u:flag><u:meta><u:rev>1</u:rev></u:meta><u:flag>0</u:flag></ext></doc>`,
			`{"ext":{"flag":[true,false],"meta":[{"rev":1}]}}`},
		{"AnyTypeUntyped", rs, renderDoc + `><anything a="1"><x>1</x><x>2</x>text<y> sp </y></anything></doc>`,
			`{"anything":{"#text":"text","@a":"1","x":["1","2"],"y":" sp "}}`},
		{"EmptyComplex", rs, renderDoc + `><empty ts="5"/></doc>`, `{"empty":{"@ts":5}}`},
		{"EmptyComplexNoAttributes", rs, renderDoc + `><empty/></doc>`, `{"empty":{}}`},
		{"XsiAttributesDropped", rs, renderDoc + ` xsi:schemaLocation="urn:test:render render.xsd"/>`, `{}`},
		{"RootScalar", rs, `<scalar xmlns="urn:test:render"> 3.25 </scalar>`, `{"#text":3.25}`},
		{"Prefixes", rs, `<r:doc xmlns:r="urn:test:render"><r:int>1</r:int></r:doc>`, `{"int":1}`},
		{"CDATAAndEntities", rs, renderDoc + `><str><![CDATA[a<b]]> &amp; &#99;</str></doc>`, `{"str":"a<b & c"}`},
		{"ThermostatReading", thermo, string(readFile(t, "thermostat/ok-reading.xml")),
			`{"@at":"2024-05-01T12:00:00Z","@seq":42,"@unit":"C","battery":true,"humidity":40.2,"mode":"heat","target":22.00,"temperature":21.5}`},
		{"ThermostatState", thermo, string(readFile(t, "thermostat/ok-state.xml")),
			`{"heating":true,"mode":"heat","target":21,"temperature":19.75}`},
		{"ThermostatGet", thermo, string(readFile(t, "thermostat/ok-get.xml")), `{}`},
		{"ByteOrderMark", thermo, "\ufeff" + string(readFile(t, "thermostat/ok-set-mode.xml")), `{"mode":"cool"}`},
		{"MultisensorReport", multi, string(readFile(t, "multisensor/ok-report.xml")), `{
			"@node":"attic-7","@uptime":86400,
			"note":{"#text":"window open","@lang":"en"},
			"samples":{"@sensor":"t1","at":["2024-05-01T11:50:00Z","2024-05-01T11:55:00Z"],"v":[21.25,21.5]},
			"sensor":[
				{"@id":"t1","@kind":"temperature","ok":true,"unit":"C","value":21.5},
				{"@id":"h1","@kind":"humidity","value":4.02E1}]}`},
		{"MultisensorOneSensor", multi, string(readFile(t, "multisensor/ok-report-one.xml")),
			`{"@node":"n1","sensor":[{"@id":"s","value":"INF"}]}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := compactJSON(t, tc.want)
			got, err := tc.s.Render([]byte(tc.doc))
			if err != nil {
				t.Fatalf("Render: %v", err)
			}
			if js := toJSON(t, got); js != want {
				t.Errorf("Render:\n got %s\nwant %s", js, want)
			}
			raw, err := tc.s.ValidateAndRender([]byte(tc.doc), Limits{})
			if err != nil {
				t.Fatalf("ValidateAndRender: %v", err)
			}
			if js := toJSON(t, raw); js != want {
				t.Errorf("ValidateAndRender:\n got %s\nwant %s", js, want)
			}
		})
	}
}

// TestRenderUnvalidated covers documents Render meets without validation:
// it never drops data and never fails on values that do not fit their type.
func TestRenderUnvalidated(t *testing.T) {
	rs := mustCompile(t, readFile(t, "render/render.xsd"), CompileOptions{Imports: registry(t)})
	for _, tc := range []struct{ name, doc, want string }{
		{"KeyTwiceBecomesArray", renderDoc + `><int>1</int><int>2</int></doc>`, `{"int":[1,2]}`},
		{"LocalNameCollision", renderDoc + ` xmlns:o="urn:other"><o:str>1</o:str><str>x</str></doc>`, `{"str":["1","x"]}`},
		{"AttributeCollision", renderDoc + ` xmlns:o="urn:other" o:ok="x" ok="1"/>`, `{"@ok":["x",true]}`},
		{"BadNumberStaysString", renderDoc + `><int>twelve</int><bool>yes</bool></doc>`, `{"bool":["yes"],"int":"twelve"}`},
		{"EmptyNumber", renderDoc + `><dec/></doc>`, `{"dec":""}`},
		{"UnknownChild", renderDoc + `><zzz q="1">v</zzz></doc>`, `{"zzz":{"#text":"v","@q":"1"}}`},
		{"UnknownRoot", `<what a="1"><b>2</b></what>`, `{"@a":"1","b":"2"}`},
		{"RootByLocalName", `<doc xmlns="urn:elsewhere"><int>3</int></doc>`, `{"int":3}`},
		{"SimpleWithAttribute", renderDoc + `><int q="1">5</int></doc>`, `{"int":{"#text":5,"@q":"1"}}`},
		{"Latin1", "<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?>" + renderDoc + "><str>caf\xe9</str></doc>", `{"str":"café"}`},
		{"AttributeNormalization", renderDoc + "><anything a=\"x\ty\nz\"/></doc>", `{"anything":{"@a":"x y z"}}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := rs.Render([]byte(tc.doc))
			if err != nil {
				t.Fatalf("Render: %v", err)
			}
			if js, want := toJSON(t, got), compactJSON(t, tc.want); js != want {
				t.Errorf("got %s, want %s", js, want)
			}
		})
	}

	for _, tc := range []struct{ name, doc, detail, msg string }{
		{"ErrDoctype", `<!DOCTYPE doc [<!ENTITY a "b">]><doc>&a;</doc>`, DetailDoctype, "DOCTYPE"},
		{"ErrUnknownEntity", `<doc>&a;</doc>`, "", "entity"},
		{"ErrTwoRoots", `<doc/><doc/>`, "", "after the document element"},
		{"ErrTextOutside", `<doc/>junk`, "", "outside the document element"},
		{"ErrMalformed", `<doc><a></doc>`, "", "element <a> closed by </doc>"},
		{"ErrTooDeep", strings.Repeat("<a>", 40) + strings.Repeat("</a>", 40), DetailTooDeep, "exceeds 32"},
		{"ErrTooLarge", "<a>" + strings.Repeat("x", DefaultMaxBytes) + "</a>", DetailTooLarge, "over the limit"},
		{"ErrEmpty", "", "", "empty"},
		{"ErrNoRoot", "<!-- nothing -->", "", "no document element"},
		{"ErrUTF16", `<?xml version="1.0" encoding="UTF-16"?><doc/>`, "", "UTF-16"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := rs.Render([]byte(tc.doc))
			de, issues := validationIssuesOf(t, err)
			if de.Detail != tc.detail || !strings.Contains(issues[0].Message, tc.msg) {
				t.Errorf("got detail %q, issues %+v; want detail %q and a message with %q", de.Detail, issues, tc.detail, tc.msg)
			}
		})
	}
}

func TestJSONNumber(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		ok       bool
	}{
		{"0", "0", true}, {"-0", "-0", true}, {"+5", "5", true}, {"007", "7", true}, {"-007.50", "-7.50", true},
		{".5", "0.5", true}, {"-.5", "-0.5", true}, {"5.", "5", true}, {"1e3", "1e3", true}, {"1.E-3", "1E-3", true},
		{"+1.5E+3", "1.5E+3", true}, {"123456789012345678901234567890", "123456789012345678901234567890", true},
		{"", "", false}, {".", "", false}, {"+", "", false}, {"1e", "", false}, {"1e+", "", false},
		{"INF", "", false}, {"NaN", "", false}, {"0x10", "", false}, {"1 2", "", false}, {"--1", "", false},
		{"-INF", "", false}, {"+INF", "", false},
		// What PostgreSQL's numeric can hold (16383 digits after the
		// point, 131072 before), as written: beyond, a string.
		{"1e-16383", "1e-16383", true}, {"1.5e-16382", "1.5e-16382", true}, {"0.0001e-16379", "0.0001e-16379", true},
		{"1e-20000", "", false}, {"1e-16384", "", false}, {"1.0e-16383", "", false}, {"10e-16384", "", false},
		{"1.55e-16382", "", false}, {"0e-20000", "", false}, {"0." + strings.Repeat("0", 16384), "", false},
		{"1e131071", "1e131071", true}, {"-1e131071", "-1e131071", true}, {"0.001e131074", "0.001e131074", true},
		{"00001e131071", "1e131071", true}, {"0e200000", "0e200000", true}, {"1E+000000000000000000003", "1E+000000000000000000003", true},
		{"1e131072", "", false}, {"0.001e131075", "", false}, {"1e200000", "", false}, {"1e99999999999", "", false},
		{"0e99999999999", "", false}, {strings.Repeat("9", 131073), "", false},
	} {
		got, ok := jsonNumber(tc.in)
		if ok != tc.ok || string(got) != tc.want {
			t.Errorf("jsonNumber(%q) = %q, %v; want %q, %v", tc.in, got, ok, tc.want, tc.ok)
		}
		if ok {
			if !json.Valid([]byte(got)) {
				t.Errorf("jsonNumber(%q) = %q: not valid JSON", tc.in, got)
			}
		}
	}
}
