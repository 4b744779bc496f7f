package xsd

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/iotgate/iotgate/schemas/examples"
)

func readFile(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustCompile(t testing.TB, src []byte, opts CompileOptions) *Schema {
	t.Helper()
	s, err := Compile(src, opts)
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	t.Cleanup(s.Free)
	return s
}

// registry serves the test schemas by namespace, like the schema registry.
func registry(t testing.TB) func(string) ([]byte, bool) {
	t.Helper()
	units := readFile(t, "render/units.xsd")
	return func(ns string) ([]byte, bool) {
		if ns == "urn:test:units" {
			return units, true
		}
		return examples.ByNamespace(ns)
	}
}

func compileIssuesOf(t *testing.T, err error) []CompileIssue {
	t.Helper()
	if err == nil {
		t.Fatal("Compile succeeded, want an error")
	}
	var ce *CompileError
	if !errors.As(err, &ce) {
		t.Fatalf("error %v: want a *CompileError", err)
	}
	if len(ce.Issues) == 0 {
		t.Fatal("CompileError without issues")
	}
	for _, is := range ce.Issues {
		if strings.TrimSpace(is.Message) == "" {
			t.Fatalf("issue with an empty message: %+v", ce.Issues)
		}
	}
	return ce.Issues
}

func validationIssuesOf(t *testing.T, err error) (*ValidationError, []ValidationIssue) {
	t.Helper()
	if err == nil {
		t.Fatal("got no error, want a validation error")
	}
	var ve *ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("error %v: want a *ValidationError", err)
	}
	if len(ve.Issues) == 0 {
		t.Fatal("ValidationError without issues")
	}
	for _, is := range ve.Issues {
		if strings.TrimSpace(is.Message) == "" {
			t.Fatalf("issue with an empty message: %+v", ve.Issues)
		}
	}
	return ve, ve.Issues
}

const xsHead = `<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema" targetNamespace="urn:t" xmlns="urn:t">`

func TestCompile(t *testing.T) {
	t.Run("Examples", func(t *testing.T) {
		for _, tc := range []struct {
			name, ns string
			src      []byte
			globals  string
		}{
			{"Thermostat", examples.ThermostatNS, examples.Thermostat(), "reading set get state"},
			{"Multisensor", examples.MultisensorNS, examples.Multisensor(), "report"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				s := mustCompile(t, tc.src, CompileOptions{})
				if got := s.TargetNamespace(); got != tc.ns {
					t.Errorf("TargetNamespace() = %q, want %q", got, tc.ns)
				}
				if got := strings.Join(s.GlobalElements(), " "); got != tc.globals {
					t.Errorf("GlobalElements() = %q, want %q", got, tc.globals)
				}
			})
		}
	})

	t.Run("GlobalElementsSkipAbstract", func(t *testing.T) {
		s := mustCompile(t, readFile(t, "render/render.xsd"), CompileOptions{Imports: registry(t)})
		if got := strings.Join(s.GlobalElements(), " "); got != "celsius on doc scalar" {
			t.Errorf("GlobalElements() = %q, want the non-abstract ones of the main schema", got)
		}
	})

	t.Run("UsualPatterns", func(t *testing.T) {
		// Must not be taken for slow ones (see probe.go).
		for _, p := range []string{
			`[^@]+@[^\.]+\..+`, `[a-zA-Z0-9._%+-]+@[a-zA-Z0-9.-]+\.[a-zA-Z]{2,}`, `(\d{1,3}\.){3}\d{1,3}`,
			`\s*\S+\s*`, `[a-z]+(-[a-z]+)*`, `([a-z0-9]+\.)*[a-z0-9]+`, `(\+|-)?\d+(\.\d+)?`, `.*foo.*`,
			`[A-Za-z0-9+/]*={0,2}`, `\p{L}+( \p{L}+)*`, `[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`,
			`\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})?`, `([A-Za-z]+ ?)*`, `[^,]*(,[^,]*)*`,
			`(\S+\s*)*`, `[A-Z]{2}[0-9]{2}[A-Z0-9]{1,30}`, `(ab|a)*c`, `(\w|\d)*!`, `[^<>&]*`,
		} {
			mustCompile(t, []byte(xsHead+`<xs:simpleType name="p"><xs:restriction base="xs:string"><xs:pattern value="`+
				strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(p)+`"/></xs:restriction></xs:simpleType></xs:schema>`), CompileOptions{})
		}
	})

	t.Run("ImportByNamespace", func(t *testing.T) {
		var asked []string
		imports := registry(t)
		s := mustCompile(t, readFile(t, "render/render.xsd"), CompileOptions{
			Imports: func(ns string) ([]byte, bool) {
				asked = append(asked, ns)
				return imports(ns)
			},
		})
		if strings.Join(asked, ",") != "urn:test:units" {
			t.Errorf("Imports called with %q, want urn:test:units once", asked)
		}
		doc := `<doc xmlns="urn:test:render" xmlns:u="urn:test:units"><qty unit="kg">2.5</qty><u:meta><u:rev>3</u:rev></u:meta></doc>`
		if err := s.Validate([]byte(doc), Limits{}); err != nil {
			t.Fatalf("Validate: %v", err)
		}
		bad := `<doc xmlns="urn:test:render"><qty>2.5</qty></doc>` // unit is required by the imported type
		_, issues := validationIssuesOf(t, s.Validate([]byte(bad), Limits{}))
		if !strings.Contains(issues[0].Message, "unit") {
			t.Errorf("issues %+v: want one about the missing unit attribute", issues)
		}
	})

	t.Run("ImportTransitive", func(t *testing.T) {
		a := []byte(xsHead + `<xs:import namespace="urn:b"/><xs:element name="a" xmlns:b="urn:b" type="b:B"/></xs:schema>`)
		b := []byte(`<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema" targetNamespace="urn:b" xmlns:c="urn:c">
<xs:import namespace="urn:c" schemaLocation="c.xsd"/>
<xs:complexType name="B"><xs:sequence><xs:element name="c" type="c:C"/></xs:sequence></xs:complexType></xs:schema>`)
		c := []byte(`<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema" targetNamespace="urn:c" xmlns:t="urn:t">
<xs:import namespace="urn:t"/>
<xs:simpleType name="C"><xs:restriction base="xs:int"/></xs:simpleType></xs:schema>`)
		srcs := map[string][]byte{"urn:b": b, "urn:c": c}
		s := mustCompile(t, a, CompileOptions{Imports: func(ns string) ([]byte, bool) {
			v, ok := srcs[ns]
			return v, ok
		}})
		// B has no elementFormDefault: its local element c is unqualified.
		got, err := s.ValidateAndRender([]byte(`<a xmlns="urn:t"><c xmlns="">7</c></a>`), Limits{})
		if err != nil {
			t.Fatal(err)
		}
		if js := toJSON(t, got); js != `{"c":7}` {
			t.Errorf("got %s", js)
		}
	})

	for _, tc := range []struct {
		name string
		src  string
		opts CompileOptions
		line int    // of the first issue; -1: do not check
		msg  string // in the first issue's message
	}{
		{"ErrEmpty", "", CompileOptions{}, 0, "empty"},
		{"ErrTooLarge", xsHead + "</xs:schema>", CompileOptions{MaxSchemaBytes: 10}, 0, "over the limit of 10"},
		{"ErrMalformed", xsHead + "\n<xs:element name=\"a\">\n</xs:schema>", CompileOptions{}, 3, "mismatch"},
		{"ErrNotASchema", "<schema/>", CompileOptions{}, 1, "xs:schema"},
		{"ErrUnresolvedType", xsHead + "\n<xs:element name=\"a\" type=\"Nope\"/></xs:schema>", CompileOptions{}, 2, "does not resolve"},
		{"ErrBadFacet", xsHead + "\n<xs:simpleType name=\"x\"><xs:restriction base=\"xs:decimal\">\n<xs:minInclusive value=\"abc\"/></xs:restriction></xs:simpleType></xs:schema>", CompileOptions{}, 3, "abc"},
		{"ErrDuplicate", xsHead + "\n<xs:element name=\"a\"/>\n<xs:element name=\"a\"/></xs:schema>", CompileOptions{}, 3, "already"},
		{"ErrUnknownElement", xsHead + "\n<xs:elemnt name=\"a\"/></xs:schema>", CompileOptions{}, 2, "content is not valid"},
		{"ErrInclude", xsHead + "\n<xs:include schemaLocation=\"other.xsd\"/></xs:schema>", CompileOptions{}, 2, "xs:include is not supported"},
		{"ErrRedefine", xsHead + "\n<xs:redefine schemaLocation=\"other.xsd\"/></xs:schema>", CompileOptions{}, 2, "xs:redefine is not supported"},
		{"ErrImportsDisabled", xsHead + "\n<xs:import namespace=\"urn:example:thermostat\"/></xs:schema>", CompileOptions{}, 2, "imports are not enabled"},
		{"ErrUnknownImport", xsHead + "\n<xs:import namespace=\"urn:nope\" schemaLocation=\"nope.xsd\"/></xs:schema>",
			CompileOptions{Imports: examples.ByNamespace}, 2, `namespace "urn:nope": no registered schema`},
		{"ErrImportOwnNamespace", xsHead + "\n<xs:import namespace=\"urn:t\"/></xs:schema>",
			CompileOptions{Imports: examples.ByNamespace}, 2, "must not match"},
		{"ErrDoctype", "<!DOCTYPE xs:schema>\n" + xsHead + "</xs:schema>", CompileOptions{}, 1, "DOCTYPE"},
		{"ErrSlowPatternExponential", xsHead + "\n<xs:simpleType name=\"p\"><xs:restriction base=\"xs:string\">\n<xs:pattern value=\"(a|aa)*b\"/></xs:restriction></xs:simpleType></xs:schema>",
			CompileOptions{}, 3, "more than linear time"},
		{"ErrSlowPatternCubic", xsHead + "\n<xs:element name=\"e\"><xs:simpleType><xs:restriction base=\"xs:string\">\n\n<xs:pattern value=\"x*x*x*y\"/></xs:restriction></xs:simpleType></xs:element></xs:schema>",
			CompileOptions{}, 4, `"x*x*x*y"`},
		{"ErrSlowPatternQuadratic", xsHead + "\n<xs:simpleType name=\"p\"><xs:restriction base=\"xs:string\"><xs:pattern value=\".*@.*\"/></xs:restriction></xs:simpleType></xs:schema>",
			CompileOptions{}, 2, "[^@]*@.*"},
		{"ErrImportedSlowPattern", xsHead + "\n<xs:import namespace=\"urn:slow\"/></xs:schema>",
			CompileOptions{Imports: func(string) ([]byte, bool) {
				return []byte(`<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema" targetNamespace="urn:slow"><xs:simpleType name="p"><xs:restriction base="xs:string"><xs:pattern value="\d*\d*x"/></xs:restriction></xs:simpleType></xs:schema>`), true
			}}, 0, `in imported schema "urn:slow", line 1`},
		{"ErrImportedBroken", xsHead + "\n<xs:import namespace=\"urn:broken\"/></xs:schema>",
			CompileOptions{Imports: func(string) ([]byte, bool) { return []byte("<xs:schema"), true }}, 2, "in imported schema"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Compile([]byte(tc.src), tc.opts)
			issues := compileIssuesOf(t, err)
			if tc.line >= 0 && issues[0].Line != tc.line {
				t.Errorf("line = %d, want %d (issues %+v)", issues[0].Line, tc.line, issues)
			}
			if !strings.Contains(issues[0].Message, tc.msg) {
				t.Errorf("message %q, want it to contain %q (issues %+v)", issues[0].Message, tc.msg, issues)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	thermo := mustCompile(t, examples.Thermostat(), CompileOptions{})
	multi := mustCompile(t, examples.Multisensor(), CompileOptions{})
	schemas := map[string]*Schema{"thermostat": thermo, "multisensor": multi}

	t.Run("OK", func(t *testing.T) {
		for dir, s := range schemas {
			files, _ := filepath.Glob(filepath.Join("testdata", dir, "ok-*.xml"))
			if len(files) == 0 {
				t.Fatalf("no testdata for %s", dir)
			}
			for _, f := range files {
				t.Run(dir+"/"+filepath.Base(f), func(t *testing.T) {
					doc, _ := os.ReadFile(f)
					if err := s.Validate(doc, Limits{}); err != nil {
						t.Errorf("Validate: %v", err)
					}
				})
			}
		}
	})

	attrs := func(n int, value string) []byte {
		var b strings.Builder
		b.WriteString("<!-- " + strings.Repeat("=", 300) + " -->\n<reading xmlns=\"urn:example:thermostat\"")
		for i := 0; i < n; i++ {
			fmt.Fprintf(&b, " a%d='%s'", i, value)
		}
		b.WriteString("><![CDATA[" + strings.Repeat("=", 300) + "]]></reading>")
		return []byte(b.String())
	}
	deep := func(n int) []byte {
		return []byte(`<reading xmlns="urn:example:thermostat">` + strings.Repeat("<x>", n-1) + strings.Repeat("</x>", n-1) + `</reading>`)
	}
	for _, tc := range []struct {
		name   string
		s      *Schema
		doc    []byte
		lim    Limits
		detail string
		line   int
		path   string
		msg    string
	}{
		{"ErrTooHot", thermo, readFile(t, "thermostat/bad-too-hot.xml"), Limits{}, "", 2, "/reading/temperature", "greater than the maximum"},
		{"ErrAttribute", thermo, readFile(t, "thermostat/bad-unit.xml"), Limits{}, "", 1, "/reading/@unit", "not an element of the set"},
		{"ErrMissingChild", thermo, readFile(t, "thermostat/bad-missing-mode.xml"), Limits{}, "", 1, "/reading", "Missing child element"},
		{"ErrWrongNamespace", thermo, readFile(t, "thermostat/bad-wrong-namespace.xml"), Limits{}, "", 1, "/reading", "No matching global declaration"},
		{"ErrNotWellFormed", thermo, readFile(t, "thermostat/bad-not-wellformed.xml"), Limits{}, "", 2, "/reading/temperature", "mismatch"},
		{"ErrRepeatedPath", multi, readFile(t, "multisensor/bad-sensor-value.xml"), Limits{}, "", 3, "/report/sensor[2]/value", "xs:double"},
		{"ErrUnique", multi, readFile(t, "multisensor/bad-duplicate-id.xml"), Limits{}, "", 3, "/report/sensor[2]", "Duplicate key-sequence"},
		{"ErrNoSensor", multi, readFile(t, "multisensor/bad-no-sensor.xml"), Limits{}, "", 1, "/report", "Missing child element"},
		{"ErrEmpty", thermo, nil, Limits{}, "", 0, "", "empty"},
		{"ErrNotXML", thermo, []byte("hello"), Limits{}, "", 1, "", "Start tag expected"},
		{"ErrUndefinedEntity", thermo, []byte(`<reading xmlns="urn:example:thermostat">&foo;</reading>`), Limits{}, "", 1, "/reading", "foo"},
		{"ErrTooLarge", thermo, readFile(t, "thermostat/ok-reading.xml"), Limits{MaxBytes: 100}, DetailTooLarge, 0, "", "over the limit of 100"},
		{"ErrTooLargeDefault", thermo, []byte("<reading>" + strings.Repeat(" ", DefaultMaxBytes) + "</reading>"), Limits{}, DetailTooLarge, 0, "", "65536"},
		{"ErrTooManyAttributes", thermo, attrs(MaxAttributes+1, "v"), Limits{}, DetailTooLarge, 2, "", "more than 256 attributes"},
		{"ErrAttributesCountedRight", thermo, attrs(MaxAttributes-1, "x=y>z"), Limits{}, "", 2, "/reading/@a0", "attribute 'a0' is not allowed"},
		{"ErrTooDeep", thermo, deep(5), Limits{MaxDepth: 4}, DetailTooDeep, 1, "/reading/x/x/x/x", "exceeds 4 levels"},
		{"ErrTooDeepDefault", thermo, deep(DefaultMaxDepth + 1), Limits{}, DetailTooDeep, 1, "", "exceeds 32 levels"},
		{"ErrDoctype", thermo, []byte("<?xml version=\"1.0\"?>\n<!DOCTYPE reading>\n<reading/>"), Limits{}, DetailDoctype, 2, "", "DOCTYPE"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			de, issues := validationIssuesOf(t, tc.s.Validate(tc.doc, tc.lim))
			if de.Detail != tc.detail {
				t.Errorf("Detail = %q, want %q", de.Detail, tc.detail)
			}
			got := issues[0]
			if got.Line != tc.line || (tc.path != "" && got.Path != tc.path) || !strings.Contains(got.Message, tc.msg) {
				t.Errorf("first issue = %+v, want line %d, path %q, message containing %q (all: %+v)",
					got, tc.line, tc.path, tc.msg, issues)
			}
		})
	}

	t.Run("DepthAtLimit", func(t *testing.T) {
		// Depth 4 passes the depth check (and then fails validation on <x>).
		_, issues := validationIssuesOf(t, thermo.Validate(deep(4), Limits{MaxDepth: 4}))
		if strings.Contains(issues[0].Message, "nesting") {
			t.Errorf("depth 4 refused with MaxDepth 4: %+v", issues)
		}
	})

	t.Run("ManyIssuesCapped", func(t *testing.T) {
		var b strings.Builder
		b.WriteString(`<report xmlns="urn:example:multisensor" node="n">`)
		for i := 0; i < 100; i++ {
			fmt.Fprintf(&b, `<sensor id="s%d"><value>x</value></sensor>`, i)
		}
		b.WriteString(`</report>`)
		_, issues := validationIssuesOf(t, multi.Validate([]byte(b.String()), Limits{}))
		last := issues[len(issues)-1]
		if len(issues) > 20 || !strings.Contains(last.Message, "more issues") {
			t.Errorf("%d issues, last %+v: want at most 20 ending with a count of the rest", len(issues), last)
		}
	})
}

func TestFree(t *testing.T) {
	s, err := Compile(examples.Thermostat(), CompileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	doc := readFile(t, "thermostat/ok-reading.xml")
	if err := s.Validate(doc, Limits{}); err != nil {
		t.Fatal(err)
	}
	s.Free()
	s.Free() // idempotent
	for name, err := range map[string]error{
		"Validate":          s.Validate(doc, Limits{}),
		"Render":            second(s.Render(doc)),
		"ValidateAndRender": second(s.ValidateAndRender(doc, Limits{})),
	} {
		if !errors.Is(err, ErrFreed) {
			t.Errorf("%s after Free: %v, want ErrFreed", name, err)
		}
	}
}

func second[T any](_ T, err error) error { return err }

// TestConcurrent validates from many goroutines (run with -race), then
// frees the schema while they still run: every call either works or
// returns ErrFreed.
func TestConcurrent(t *testing.T) {
	s, err := Compile(examples.Thermostat(), CompileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Free()
	good := readFile(t, "thermostat/ok-reading.xml")
	bad := readFile(t, "thermostat/bad-too-hot.xml")
	want := toJSON(t, mustRender(t, s, good))
	const goroutines, rounds = 16, 200
	var wg sync.WaitGroup
	errc := make(chan error, goroutines)
	for g := 0; g < goroutines; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < rounds; i++ {
				switch (g + i) % 3 {
				case 0:
					if err := s.Validate(good, Limits{}); err != nil {
						errc <- fmt.Errorf("valid doc: %v", err)
						return
					}
				case 1:
					var ve *ValidationError
					if err := s.Validate(bad, Limits{}); !errors.As(err, &ve) || ve.Issues[0].Path != "/reading/temperature" {
						errc <- fmt.Errorf("invalid doc: %v", err)
						return
					}
				case 2:
					m, err := s.ValidateAndRender(good, Limits{})
					if err != nil {
						errc <- err
						return
					}
					if got := toJSON(t, m); got != want {
						errc <- fmt.Errorf("rendered %s, want %s", got, want)
						return
					}
				}
			}
		}(g)
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}

	t.Run("FreeWhileValidating", func(t *testing.T) {
		s, err := Compile(examples.Thermostat(), CompileOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		start := make(chan struct{})
		for g := 0; g < 8; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				for i := 0; i < 300; i++ {
					err := s.Validate(good, Limits{})
					if err != nil && !errors.Is(err, ErrFreed) {
						t.Errorf("Validate: %v", err)
						return
					}
				}
			}()
		}
		close(start)
		s.Free()
		wg.Wait()
	})
}
