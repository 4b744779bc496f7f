package xsd

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/iotgate/iotgate/schemas/examples"
)

// Seeds: every testdata document plus the hostile payloads of
// hostile_test.go (with harmless addresses). Run one fuzzer for a while with
// for example: go test ./schemas/xsd -run '^$' -fuzz FuzzValidate -fuzztime 60s

func addSeeds(f *testing.F, pattern string, extra ...string) {
	f.Helper()
	files, _ := filepath.Glob(filepath.Join("testdata", pattern))
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	for _, s := range extra {
		f.Add([]byte(s))
	}
}

var hostileSeeds = []string{
	laughs + `<reading xmlns="urn:example:thermostat"><temperature>20</temperature><mode>&lol9;</mode></reading>`,
	`<!DOCTYPE reading [<!ENTITY e SYSTEM "file:///etc/passwd">]><reading>&e;</reading>`,
	`<!DOCTYPE r [<!ENTITY % p SYSTEM "http://127.0.0.1:9/x">%p;]><r/>`,
	`<!DOCTYPE r SYSTEM "http://127.0.0.1:9/r.dtd"><r/>`,
	`<reading xmlns="urn:example:thermostat" xmlns:xi="http://www.w3.org/2001/XInclude"><xi:include href="/etc/passwd" parse="text"/></reading>`,
	strings.Repeat("<a>", 300) + strings.Repeat("</a>", 300),
}

// checkErr asserts a refusal is one of the package's errors, with issues.
func checkErr(t *testing.T, err error) {
	t.Helper()
	if errors.Is(err, ErrFreed) {
		t.Fatalf("unexpected ErrFreed: %v", err)
	}
	var ve *ValidationError
	var ce *CompileError
	switch {
	case errors.As(err, &ve):
		for _, is := range ve.Issues {
			if is.Message == "" {
				t.Fatalf("empty message in %+v", ve.Issues)
			}
		}
	case errors.As(err, &ce):
		for _, is := range ce.Issues {
			if is.Message == "" {
				t.Fatalf("empty message in %+v", ce.Issues)
			}
		}
	default:
		t.Fatalf("error %v (%T) carries no issues", err, err)
	}
}

func mustMarshal(t *testing.T, v any) {
	t.Helper()
	if _, err := json.Marshal(v); err != nil {
		t.Fatalf("rendered value does not marshal: %v (%#v)", err, v)
	}
}

func FuzzValidate(f *testing.F) {
	addSeeds(f, "thermostat/*.xml", hostileSeeds...)
	s, err := Compile(examples.Thermostat(), CompileOptions{})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(s.Free)
	f.Fuzz(func(t *testing.T, doc []byte) {
		verr := s.Validate(doc, Limits{})
		m, vrerr := s.ValidateAndRender(doc, Limits{})
		if (verr == nil) != (vrerr == nil) {
			t.Fatalf("Validate: %v, but ValidateAndRender: %v", verr, vrerr)
		}
		if verr != nil {
			checkErr(t, verr)
			return
		}
		mustMarshal(t, m)
		// Render parses with encoding/xml, which refuses some documents
		// libxml2 accepts (other encodings, XML 1.0 5th edition names);
		// when both succeed they must agree.
		if r, err := s.Render(doc); err == nil {
			a, _ := json.Marshal(m)
			b, _ := json.Marshal(r)
			if string(a) != string(b) {
				t.Fatalf("ValidateAndRender %s != Render %s", a, b)
			}
		}
	})
}

func FuzzRender(f *testing.F) {
	addSeeds(f, "*/*.xml", hostileSeeds...)
	f.Add([]byte(`<doc xmlns="urn:test:render"><item version="1"><id>1</id></item><temp unit="C"> 1.5 </temp><text>a<em>b</em>c</text></doc>`))
	rs, err := Compile(readFile(f, "render/render.xsd"), CompileOptions{Imports: registry(f)})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(rs.Free)
	f.Fuzz(func(t *testing.T, doc []byte) {
		m, err := rs.Render(doc)
		if err != nil {
			checkErr(t, err)
			return
		}
		mustMarshal(t, m)
		if m, err := rs.ValidateAndRender(doc, Limits{}); err == nil {
			mustMarshal(t, m)
		} else {
			checkErr(t, err)
		}
	})
}

func FuzzCompile(f *testing.F) {
	addSeeds(f, "render/*.xsd")
	for _, name := range []string{"thermostat.xsd", "multisensor.xsd"} {
		b, _ := examples.FS.ReadFile(name)
		f.Add(b)
	}
	f.Add([]byte(xsOpen + `<xs:include schemaLocation="http://127.0.0.1:9/x.xsd"/>` + xsBody))
	f.Add([]byte(xsOpen + `<xs:import namespace="urn:test:units" schemaLocation="file:///etc/passwd"/>` + xsBody))
	f.Add([]byte(`<!DOCTYPE xs:schema [<!ENTITY e SYSTEM "file:///etc/passwd">]>` + xsOpen + xsBody))
	f.Add([]byte(xsOpen + `<xs:element name="r"><xs:complexType><xs:sequence minOccurs="2" maxOccurs="5"><xs:element name="a" maxOccurs="unbounded"/></xs:sequence></xs:complexType></xs:element></xs:schema>`))
	imports := registry(f)
	docs := [][]byte{
		readFile(f, "thermostat/ok-reading.xml"),
		[]byte(`<r xmlns="urn:h"><a>1</a></r>`),
	}
	f.Fuzz(func(t *testing.T, src []byte) {
		s, err := Compile(src, CompileOptions{Imports: imports, MaxSchemaBytes: 64 << 10})
		if err != nil {
			checkErr(t, err)
			return
		}
		defer s.Free()
		for _, d := range docs {
			if m, err := s.ValidateAndRender(d, Limits{}); err == nil {
				mustMarshal(t, m)
			}
			if m, err := s.Render(d); err == nil {
				mustMarshal(t, m)
			}
		}
	})
}
