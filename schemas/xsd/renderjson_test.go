package xsd

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/iotgate/iotgate/schemas/examples"
)

// The renderer writes JSON itself; these tests hold its bytes to those of
// json.Marshal on the map the old renderer built (refRenderer), on every
// testdata document, the documents below, and fuzzed ones.

// jsonDocs are documents of render.xsd that reach the rules the testdata
// files do not: escaping, repeats, collisions, nil, xsi:type, mixed text.
var jsonDocs = []string{
	renderDoc + `/>`,
	renderDoc + ` count="+0012" ts="99" ok="1"/>`,
	renderDoc + `><int>-7</int><dec>+1.50</dec><dbl>1.5E3</dbl><flt>-INF</flt><big>18446744073709551615</big></doc>`,
	renderDoc + `><str>&lt;b&gt; &amp; "q" \ ` + "\u2028\u2029\u00e9\u20ac\U0001F600" + `&#9;&#10;&#13;&#x7f;</str><tok>  a   b  </tok></doc>`,
	renderDoc + `><bool>1</bool><bool>false</bool><bool>yes</bool><switch>true</switch></doc>`,
	renderDoc + `><item version="1" active="0"><id>1</id></item><item><id>2</id><label>&lt;x&gt;</label></item></doc>`,
	renderDoc + `><one version="007"><id>+3</id></one><base><id>4</id></base></doc>`,
	renderDoc + `><temp unit="C"> 1.5 </temp><text>a<em>b</em> c <em>d</em></text></doc>`,
	renderDoc + `><maybe xsi:nil="true"/></doc>`,
	renderDoc + `><maybe xsi:nil="1" q="x"/></doc>`,
	renderDoc + `><anything xsi:type="xs:int" xmlns:xs="http://www.w3.org/2001/XMLSchema">12</anything></doc>`,
	renderDoc + `><base xsi:type="Extended" version="2" active="true"><id>9</id><label>l</label></base></doc>`,
	renderDoc + `><twice><x>1</x><y>2</y><x>3</x></twice><empty/></doc>`,
	renderDoc + `><tags> a  b c </tags><either>auto</either><either>1.0</either><coll>  x  y </coll><level>7</level></doc>`,
	renderDoc + `><ext><o:z xmlns:o="urn:other" a="1">t</o:z><o:z xmlns:o="urn:other">u</o:z></ext></doc>`,
	renderDoc + `><int>1</int><int>2</int></doc>`,
	renderDoc + ` xmlns:o="urn:other"><o:str>1</o:str><str>x</str></doc>`,
	renderDoc + ` xmlns:o="urn:other" o:ok="x" ok="1"/>`,
	renderDoc + `><int>twelve</int><bool>yes</bool><dec/></doc>`,
	renderDoc + `><zzz q="1">v</zzz><zzz/><Zzz>w</Zzz><a>1</a><_>2</_><a-b>3</a-b><a.b>4</a.b></doc>`,
	`<what a="1"><b>2</b></what>`,
	`<what>  just text &amp; more  </what>`,
	`<doc xmlns="urn:elsewhere"><int>3</int></doc>`,
	renderDoc + `><int q="1">5</int></doc>`,
	"<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?>" + renderDoc + "><str>caf\xe9 \xa0</str></doc>",
	renderDoc + "><anything a=\"x\ty\nz\" b=\"&lt;&amp;&gt;\"/></doc>",
	`<scalar xmlns="urn:test:render">  +1.0 </scalar>`,
	`<scalar xmlns="urn:test:render" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:nil="true"/>`,
}

// jsonSchemas are the schemas the documents are rendered with.
func jsonSchemas(t testing.TB) []*Schema {
	t.Helper()
	ss := []*Schema{
		mustCompile(t, readFile(t, "render/render.xsd"), CompileOptions{Imports: registry(t)}),
		mustCompile(t, examples.Thermostat(), CompileOptions{}),
		mustCompile(t, examples.Multisensor(), CompileOptions{}),
	}
	t.Cleanup(func() {
		for _, s := range ss {
			s.Free()
		}
	})
	return ss
}

// renderXMLJSON is Render's rendering before it is decoded into a map.
func renderXMLJSON(s *Schema, doc []byte) ([]byte, error) {
	r := newRenderer(s.model)
	defer r.release()
	if err := walkXML(doc, Limits{}.withDefaults(), r); err != nil {
		return nil, err
	}
	return r.json(), nil
}

// checkSameJSON renders doc both ways through libxml2 and through
// encoding/xml, and fails unless the renderer's bytes are the reference's.
func checkSameJSON(t *testing.T, s *Schema, doc []byte) {
	t.Helper()
	want, ok := refJSON(t, s, doc, Limits{})
	got, err := s.ValidateAndRender(doc, Limits{})
	if ok != (err == nil) {
		t.Fatalf("reference ok=%v, ValidateAndRender: %v", ok, err)
	}
	if ok && !bytes.Equal(got, want) {
		t.Fatalf("ValidateAndRender of %q:\n got %s\nwant %s", doc, got, want)
	}
	want, werr := refXMLJSON(s, doc)
	got, err = renderXMLJSON(s, doc)
	if (werr == nil) != (err == nil) || (err == nil && got == nil) {
		t.Fatalf("reference: %v; renderer: %v (%q)", werr, err, got)
	}
	if err == nil && !bytes.Equal(got, want) {
		t.Fatalf("encoding/xml rendering of %q:\n got %s\nwant %s", doc, got, want)
	}
}

func testdataDocs(t testing.TB) [][]byte {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("testdata", "*", "*.xml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no testdata documents: %v", err)
	}
	var docs [][]byte
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		docs = append(docs, b)
	}
	for _, d := range jsonDocs {
		docs = append(docs, []byte(d))
	}
	return docs
}

func TestRenderJSONMatchesMap(t *testing.T) {
	ss := jsonSchemas(t)
	valid := 0
	for _, doc := range testdataDocs(t) {
		for _, s := range ss {
			checkSameJSON(t, s, doc)
			if _, ok := refJSON(t, s, doc, Limits{}); ok {
				valid++
			}
		}
	}
	// The comparison is only worth something if many documents render.
	if valid < 20 {
		t.Errorf("only %d documents valid", valid)
	}
}

func TestAppendJSONString(t *testing.T) {
	for _, s := range []string{
		"", "plain", `"quoted" \back\ /slash`, "<b>&amp;</b>", "\x00\x01\x08\x0c\x1f\x7f",
		"\t\n\r", "\u2028\u2029", "caf\u00e9 \u20ac \U0001F600", "bad\xff\xfeutf8", "\xed\xa0\x80", "\xf4\x90\x80\x80",
		"truncated \xe2\x82", "\ufffd", "\xc0\xaf",
	} {
		want, _ := json.Marshal(s)
		if got := AppendJSONString(nil, s); !bytes.Equal(got, want) {
			t.Errorf("AppendJSONString(%q) = %s, json.Marshal gives %s", s, got, want)
		}
	}
}

// FuzzRenderJSON compares the renderer's bytes with the reference's on
// fuzzed documents, with each schema. Run it with:
// go test ./schemas/xsd -run '^$' -fuzz FuzzRenderJSON -fuzztime 60s
func FuzzRenderJSON(f *testing.F) {
	addSeeds(f, "*/*.xml", hostileSeeds...)
	for _, d := range jsonDocs {
		f.Add([]byte(d))
	}
	ss := jsonSchemas(f)
	f.Fuzz(func(t *testing.T, doc []byte) {
		for _, s := range ss {
			checkSameJSON(t, s, doc)
		}
	})
}

func FuzzJSONString(f *testing.F) {
	for _, s := range []string{"", "a<b>&c", "\u2028\x00\xff", `"\`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want, _ := json.Marshal(s)
		if got := AppendJSONString(nil, s); !bytes.Equal(got, want) {
			t.Fatalf("AppendJSONString(%q) = %s, json.Marshal gives %s", s, got, want)
		}
	})
}
