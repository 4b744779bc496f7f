package xsd

import (
	"runtime"
	"testing"

	"github.com/iotgate/iotgate/schemas/examples"
)

// Run: go test ./schemas/xsd -run '^$' -bench . -benchmem
//
// validations/s is per core: for the Parallel variants it is divided by
// GOMAXPROCS.

func benchSchema(b *testing.B) (*Schema, []byte) {
	b.Helper()
	s := mustCompile(b, examples.Thermostat(), CompileOptions{})
	doc := readFile(b, "thermostat/ok-reading.xml") // 268 bytes
	return s, doc
}

func perCore(b *testing.B, parallel bool) {
	n := float64(b.N) / b.Elapsed().Seconds()
	if parallel {
		n /= float64(runtime.GOMAXPROCS(0))
	}
	b.ReportMetric(n, "validations/s/core")
}

func BenchmarkValidate(b *testing.B) {
	s, doc := benchSchema(b)
	b.SetBytes(int64(len(doc)))
	b.ReportAllocs()
	for b.Loop() {
		if err := s.Validate(doc, Limits{}); err != nil {
			b.Fatal(err)
		}
	}
	perCore(b, false)
}

func BenchmarkValidateParallel(b *testing.B) {
	s, doc := benchSchema(b)
	b.SetBytes(int64(len(doc)))
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := s.Validate(doc, Limits{}); err != nil {
				b.Error(err)
				return
			}
		}
	})
	perCore(b, true)
}

// BenchmarkValidateFreshContexts is what Validate would cost without the
// worker pool: a new validation and parser context per call.
func BenchmarkValidateFreshContexts(b *testing.B) {
	s, doc := benchSchema(b)
	b.SetBytes(int64(len(doc)))
	b.ReportAllocs()
	for b.Loop() {
		w := newWorker(s.c.schema)
		if st, _, _ := w.validate(doc, s.c.lengths, Limits{}.withDefaults(), false); st != stOK {
			b.Fatal(st)
		}
		w.free()
	}
	perCore(b, false)
}

func BenchmarkValidateInvalid(b *testing.B) {
	s, _ := benchSchema(b)
	doc := readFile(b, "thermostat/bad-too-hot.xml")
	b.ReportAllocs()
	for b.Loop() {
		if err := s.Validate(doc, Limits{}); err == nil {
			b.Fatal("valid")
		}
	}
	perCore(b, false)
}

func BenchmarkRender(b *testing.B) {
	s, doc := benchSchema(b)
	b.SetBytes(int64(len(doc)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Render(doc); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRenderParallel(b *testing.B) {
	s, doc := benchSchema(b)
	b.SetBytes(int64(len(doc)))
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := s.Render(doc); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

func BenchmarkValidateAndRender(b *testing.B) {
	s, doc := benchSchema(b)
	b.SetBytes(int64(len(doc)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.ValidateAndRender(doc, Limits{}); err != nil {
			b.Fatal(err)
		}
	}
	perCore(b, false)
}

func BenchmarkValidateAndRenderParallel(b *testing.B) {
	s, doc := benchSchema(b)
	b.SetBytes(int64(len(doc)))
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := s.ValidateAndRender(doc, Limits{}); err != nil {
				b.Error(err)
				return
			}
		}
	})
	perCore(b, true)
}

// BenchmarkValidateThenRender is the two-step alternative to
// ValidateAndRender: it parses the document twice.
func BenchmarkValidateThenRender(b *testing.B) {
	s, doc := benchSchema(b)
	b.SetBytes(int64(len(doc)))
	b.ReportAllocs()
	for b.Loop() {
		if err := s.Validate(doc, Limits{}); err != nil {
			b.Fatal(err)
		}
		if _, err := s.Render(doc); err != nil {
			b.Fatal(err)
		}
	}
	perCore(b, false)
}

func BenchmarkCompile(b *testing.B) {
	src := examples.Thermostat()
	b.ReportAllocs()
	for b.Loop() {
		s, err := Compile(src, CompileOptions{})
		if err != nil {
			b.Fatal(err)
		}
		s.Free()
	}
}
