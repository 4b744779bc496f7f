package xsd

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"time"
)

// enableSandbox turns the pattern sandbox on for one test.
func enableSandbox(t *testing.T, o SandboxOptions) *sandboxPool {
	t.Helper()
	if raceEnabled {
		o.Memory = -1 // the race detector maps terabytes
	}
	EnablePatternSandbox(o)
	t.Cleanup(DisablePatternSandbox)
	return sandbox.Load()
}

// slowSchema's pattern backtracks for seconds on a value of
// DefaultMaxPatternValue characters (BenchmarkPatternWorstCase:
// Xa*a*a*a*b, 2.4 s per value, 9.2 s for a document at
// DefaultMaxPatternTotal).
const slowSchema = `<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema" targetNamespace="urn:p" xmlns="urn:p" elementFormDefault="qualified">
  <xs:simpleType name="P"><xs:restriction base="xs:string"><xs:pattern value="Xa*a*a*a*b"/></xs:restriction></xs:simpleType>
  <xs:element name="r"><xs:complexType><xs:sequence><xs:element name="v" type="P" maxOccurs="unbounded"/></xs:sequence></xs:complexType></xs:element>
</xs:schema>`

func slowDoc() []byte {
	value := "X" + strings.Repeat("a", DefaultMaxPatternValue-2) + "!"
	return []byte(`<r xmlns="urn:p">` + strings.Repeat(`<v>`+value+`</v>`, DefaultMaxPatternTotal/DefaultMaxPatternValue) + `</r>`)
}

// TestSandboxSameAnswers checks that a document validated in a child gets
// exactly the answer (JSON or error) it gets in the process.
func TestSandboxSameAnswers(t *testing.T) {
	s := mustCompile(t, []byte(patternSchema), CompileOptions{})
	doc := func(inner string, attrs ...string) []byte {
		return []byte(`<r xmlns="urn:p" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"` + strings.Join(attrs, "") + `>` + inner + `</r>`)
	}
	docs := map[string][]byte{
		"OK":            doc(`<id>ID-abc;</id><ids>ID-a; ID-b;</ids><either>12</either><tagged k="x">Zaab</tagged><free>x</free>`, ` code="Zab"`),
		"ErrPattern":    doc(`<id>ID-abc</id>`),
		"ErrAttribute":  doc(``, ` code="nope"`),
		"ErrTooLong":    doc(`<id>ID-` + strings.Repeat("a", 300) + `;</id>`),
		"ErrMalformed":  []byte(`<r xmlns="urn:p"><id>`),
		"ErrDoctype":    []byte(`<!DOCTYPE r><r xmlns="urn:p"/>`),
		"ErrOtherRoot":  []byte(`<x xmlns="urn:p"/>`),
		"OKXsiType":     doc(`<free xsi:type="Z">Zaaa</free>`),
		"ErrXsiPattern": doc(`<free xsi:type="Z">Y</free>`),
	}
	type answer struct {
		json string
		err  string
	}
	in := map[string]answer{}
	for name, d := range docs {
		j, err := s.ValidateAndRender(d, Limits{})
		in[name] = answer{string(j), errText(err)}
	}
	p := enableSandbox(t, SandboxOptions{Timeout: 5 * time.Second})
	for name, d := range docs {
		t.Run(name, func(t *testing.T) {
			j, err := s.ValidateAndRender(d, Limits{})
			if got := (answer{string(j), errText(err)}); got != in[name] {
				t.Errorf("in a child: %+v\nin the process: %+v", got, in[name])
			}
			if strings.HasPrefix(name, "OK") != (err == nil) {
				t.Errorf("err = %v", err)
			}
		})
	}
	if len(p.slots) == 0 {
		t.Error("no child was started")
	}
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	var ve *ValidationError
	if errors.As(err, &ve) {
		return ve.Detail + ve.Summary()
	}
	return err.Error()
}

// TestSandboxTimesOut validates documents that cost libxml2 seconds each
// (9.2 s in the process, BenchmarkPatternWorstCase) while another pattern
// schema's documents are validated: the slow ones are refused at the
// time budget, and the others are answered meanwhile.
func TestSandboxTimesOut(t *testing.T) {
	slow, err := Compile([]byte(slowSchema), CompileOptions{Stored: true}) // no probe
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(slow.Free)
	good := mustCompile(t, []byte(patternSchema), CompileOptions{})
	budget := 300 * time.Millisecond
	enableSandbox(t, SandboxOptions{Timeout: budget, Children: 2})

	var wg sync.WaitGroup
	stop := make(chan struct{})
	var worst time.Duration
	var goodErr error
	answered := 0
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			start := time.Now()
			_, err := good.ValidateAndRender([]byte(`<r xmlns="urn:p"><id>ID-abc;</id></r>`), Limits{})
			worst = max(worst, time.Since(start))
			if err != nil {
				goodErr = err
				return
			}
			answered++
		}
	}()
	const slowDocs = 4
	for i := range slowDocs {
		start := time.Now()
		err := slow.Validate(slowDoc(), Limits{})
		took := time.Since(start)
		var ve *ValidationError
		if !errors.As(err, &ve) || ve.Detail != DetailPatternCost || !strings.Contains(ve.Summary(), "took more than "+budget.String()) {
			t.Fatalf("slow document %d: err = %v, want %s", i, err, DetailPatternCost)
		}
		// Generous: the budget plus a child's start on a loaded machine,
		// far below the 9.2 s the document costs in the process.
		if took > 3*time.Second {
			t.Errorf("slow document %d answered after %v", i, took)
		}
	}
	close(stop)
	wg.Wait()
	if goodErr != nil {
		t.Fatalf("the other schema's document: %v", goodErr)
	}
	if answered == 0 || worst > 3*time.Second {
		t.Errorf("the other schema: %d documents answered meanwhile, worst %v", answered, worst)
	}
	t.Logf("other schema: %d documents answered while %d slow ones were cut, worst %v", answered, slowDocs, worst)
	// The slow schema's children were killed; the next document of the
	// other schema still gets its answer.
	if _, err := good.ValidateAndRender([]byte(`<r xmlns="urn:p"><id>ID-x;</id></r>`), Limits{}); err != nil {
		t.Fatal(err)
	}
}

// TestSandboxChildren checks the children's bookkeeping: a child that
// evicted a schema gets it again, and a child killed while idle is
// replaced without failing the document.
func TestSandboxChildren(t *testing.T) {
	defer func(n int) { childSchemas = n }(childSchemas)
	childSchemas = 1 // each child keeps one compiled schema
	p := enableSandbox(t, SandboxOptions{Timeout: 5 * time.Second, Children: 1})
	a := mustCompile(t, []byte(patternSchema), CompileOptions{})
	b := mustCompile(t, []byte(strings.ReplaceAll(slowSchema, "Xa*a*a*a*b", "X[a-z]+b")), CompileOptions{})
	for i := range 4 {
		if err := a.Validate([]byte(`<r xmlns="urn:p"><id>ID-x;</id></r>`), Limits{}); err != nil {
			t.Fatalf("round %d, schema a: %v", i, err)
		}
		if err := b.Validate([]byte(`<r xmlns="urn:p"><v>Xab</v></r>`), Limits{}); err != nil {
			t.Fatalf("round %d, schema b: %v", i, err)
		}
		if err := b.Validate([]byte(`<r xmlns="urn:p"><v>Xa</v></r>`), Limits{}); err == nil {
			t.Fatalf("round %d, schema b: invalid document accepted", i)
		}
	}
	c := <-p.idle
	c.cmd.Process.Kill()
	c.cmd.Wait()
	p.idle <- c
	if err := a.Validate([]byte(`<r xmlns="urn:p"><id>ID-x;</id></r>`), Limits{}); err != nil {
		t.Fatalf("after the child died: %v", err)
	}
}

// BenchmarkSandbox compares a pattern schema's validation in the process
// and in a child (the pipe round trip):
//
//	go test -run '^$' -bench BenchmarkSandbox ./schemas/xsd/
func BenchmarkSandbox(b *testing.B) {
	s, err := Compile([]byte(patternSchema), CompileOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Free()
	doc := []byte(`<r xmlns="urn:p"><id>ID-abc;</id><ids>ID-a; ID-b;</ids><tagged k="x">Zaab</tagged><free>x</free></r>`)
	run := func(b *testing.B) {
		for b.Loop() {
			if _, err := s.ValidateAndRender(doc, Limits{}); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("InProcess", run)
	EnablePatternSandbox(SandboxOptions{Memory: -1})
	defer DisablePatternSandbox()
	b.Run("Child", run)
	b.Run("ChildParallel", func(b *testing.B) {
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := s.ValidateAndRender(doc, Limits{}); err != nil {
					b.Fatal(err)
				}
			}
		})
	})
}
