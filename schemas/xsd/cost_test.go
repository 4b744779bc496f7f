package xsd

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/iotgate/iotgate/schemas/examples"
)

// Shapes that make libxml2's compile slow, as measured (see CostLimits).

// optionalSequence is a sequence of n optional elements: 35 s to compile
// at n=2,000.
func optionalSequence(n int) []byte {
	var b strings.Builder
	b.WriteString(xsOpen + `<xs:element name="r"><xs:complexType><xs:sequence>`)
	for i := range n {
		fmt.Fprintf(&b, `<xs:element name="e%d" type="xs:string" minOccurs="0"/>`, i)
	}
	b.WriteString(`</xs:sequence></xs:complexType></xs:element></xs:schema>`)
	return []byte(b.String())
}

// attributeFloodSchema has n attributes on xs:schema (quadratic parse).
func attributeFloodSchema(n int) []byte {
	var b strings.Builder
	b.WriteString(`<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema"`)
	for i := range n {
		fmt.Fprintf(&b, ` a%d="x"`, i)
	}
	b.WriteString(`>` + xsBody)
	return []byte(b.String())
}

// repeat returns n copies of format filled with the index.
func repeat(n int, format string) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, format, i)
	}
	return b.String()
}

func TestCostLimits(t *testing.T) {
	for _, tc := range []struct {
		name string
		src  []byte
		cost CostLimits
		msg  string // in the refusal; "" for a schema that compiles
	}{
		{"Thermostat", examples.Thermostat(), CostLimits{}, ""},
		{"Multisensor", examples.Multisensor(), CostLimits{}, ""},
		{"AtTheLimit", optionalSequence(DefaultMaxModelParticles - 1), CostLimits{}, ""},
		{"ErrOptionalSequence2000", optionalSequence(2000), CostLimits{}, "has 2001 particles"},
		{"ErrOverTheLimit", optionalSequence(DefaultMaxModelParticles), CostLimits{}, "over the limit of 300"},
		{"ErrOwnLimit", examples.Thermostat(), CostLimits{MaxModelParticles: 3}, "over the limit of 3"},
		{"ErrAttributeFlood", attributeFloodSchema(20000), CostLimits{}, "more than 256 attributes"},
		{"ErrNodes", []byte(xsOpen + repeat(10001, `<xs:element name="e%d" type="xs:string"/>`) + `</xs:schema>`),
			CostLimits{}, "more than 10000 elements"},
		{"ErrNodesInAnnotations", []byte(xsOpen + `<xs:annotation><xs:appinfo>` + repeat(10001, `<x%d/>`) +
			`</xs:appinfo></xs:annotation>` + xsBody), CostLimits{}, "more than 10000 elements"},
		{"ErrDepth", []byte(xsOpen + `<xs:annotation><xs:appinfo>` + strings.Repeat(`<x>`, 200) + strings.Repeat(`</x>`, 200) +
			`</xs:appinfo></xs:annotation>` + xsBody), CostLimits{}, "nested deeper than 128"},
		// A group is copied into each content model that refers to it.
		{"ErrGroupRefs", []byte(xsOpen + `<xs:group name="g"><xs:sequence>` + repeat(60, `<xs:element name="e%d" type="xs:string" minOccurs="0"/>`) +
			`</xs:sequence></xs:group><xs:element name="r"><xs:complexType><xs:sequence>` + strings.Repeat(`<xs:group ref="g"/>`, 5) +
			`</xs:sequence></xs:complexType></xs:element></xs:schema>`), CostLimits{}, "has 311 particles"},
		// Nested groups double at each level: counted without overflow.
		{"ErrGroupDoubling", []byte(xsOpen + `<xs:group name="g0"><xs:sequence><xs:element name="a" type="xs:string"/></xs:sequence></xs:group>` +
			doublingGroups(80) +
			`<xs:element name="r"><xs:complexType><xs:group ref="g80"/></xs:complexType></xs:element></xs:schema>`), CostLimits{}, "over the limit of 300"},
		// An extension appends its particles to its base's.
		{"ErrExtension", []byte(xsOpen + `<xs:complexType name="B"><xs:sequence>` + repeat(200, `<xs:element name="b%d" type="xs:string" minOccurs="0"/>`) +
			`</xs:sequence></xs:complexType><xs:complexType name="D"><xs:complexContent><xs:extension base="B"><xs:sequence>` +
			repeat(200, `<xs:element name="d%d" type="xs:string" minOccurs="0"/>`) + `</xs:sequence></xs:extension></xs:complexContent></xs:complexType>` +
			xsBody), CostLimits{}, `content model of complex type "D" has 402 particles`},
		// A reference to a substitution group's head is a choice of its members.
		{"ErrSubstitutionGroup", []byte(xsOpen + `<xs:element name="h" type="xs:string"/>` +
			repeat(400, `<xs:element name="m%d" type="xs:string" substitutionGroup="h"/>`) +
			`<xs:element name="r"><xs:complexType><xs:sequence><xs:element ref="h" maxOccurs="unbounded"/></xs:sequence></xs:complexType></xs:element></xs:schema>`),
			CostLimits{}, "has 402 particles"},
		{"ErrTotal", []byte(xsOpen + repeat(8, `<xs:complexType name="T%d"><xs:sequence>`+
			strings.Repeat(`<xs:element name="e" type="xs:string"/>`, 299)+`</xs:sequence></xs:complexType>`) + xsBody),
			CostLimits{}, "add up to more than 2000 particles"},
		// An attribute group is copied into each type that refers to it.
		{"ErrAttributeGroups", []byte(xsOpen + `<xs:attributeGroup name="a">` + repeat(1000, `<xs:attribute name="a%d" type="xs:string"/>`) +
			`</xs:attributeGroup>` + repeat(6, `<xs:complexType name="T%d"><xs:attributeGroup ref="a"/></xs:complexType>`) + xsBody),
			CostLimits{}, "more than 5000 element declarations and attribute uses"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var s *Schema
			var err error
			// Generous: a refusal is a linear scan of at most 1 MiB.
			within(t, 10*time.Second, func() { s, err = Compile(tc.src, CompileOptions{Cost: tc.cost, Imports: examples.ByNamespace}) })
			if tc.msg == "" {
				if err != nil {
					t.Fatalf("Compile: %v", err)
				}
				s.Free()
				return
			}
			checkTooComplex(t, err, tc.msg)
		})
	}
}

func checkTooComplex(t *testing.T, err error, msg string) {
	t.Helper()
	var ce *CompileError
	if !errors.As(err, &ce) || ce.Detail != DetailTooComplex {
		t.Fatalf("err = %v, want a CompileError with detail %s", err, DetailTooComplex)
	}
	if !strings.Contains(ce.Error(), msg) {
		t.Errorf("error %q, want %q", ce.Error(), msg)
	}
}

// doublingGroups defines groups g1..gn, each referring twice to the one
// before it.
func doublingGroups(n int) string {
	var b strings.Builder
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&b, `<xs:group name="g%d"><xs:sequence><xs:group ref="g%d"/><xs:group ref="g%d"/></xs:sequence></xs:group>`, i, i-1, i-1)
	}
	return b.String()
}

// TestCostOfImports: an imported schema is counted on its own.
func TestCostOfImports(t *testing.T) {
	big := optionalSequence(2000)
	big = []byte(strings.Replace(string(big), `targetNamespace="urn:h" xmlns="urn:h"`, `targetNamespace="urn:big" xmlns="urn:big"`, 1))
	src := []byte(xsOpen + `<xs:import namespace="urn:big"/>` + xsBody)
	_, err := Compile(src, CompileOptions{Imports: func(ns string) ([]byte, bool) { return big, ns == "urn:big" }})
	checkTooComplex(t, err, `in imported schema "urn:big", line 1: schema too complex`)
}

// BenchmarkRefuseTooComplex: what refusing the measured shapes costs
// (libxml2 would take 35 s on the first).
//
//	go test -run '^$' -bench BenchmarkRefuseTooComplex ./schemas/xsd/
func BenchmarkRefuseTooComplex(b *testing.B) {
	for _, tc := range []struct {
		name string
		src  []byte
	}{
		{"OptionalSequence2000", optionalSequence(2000)},
		{"AttributeFlood20000", attributeFloodSchema(20000)},
	} {
		b.Run(tc.name, func(b *testing.B) {
			for b.Loop() {
				if _, err := Compile(tc.src, CompileOptions{}); err == nil {
					b.Fatal("compiled")
				}
			}
		})
	}
}

// enableTrials turns trial compiles on for one test.
func enableTrials(t *testing.T, cpu time.Duration) {
	before := trialOpts.Load()
	EnableTrialCompiles(TrialOptions{CPU: cpu})
	t.Cleanup(func() { trialOpts.Store(before) })
}

func TestTrialCompile(t *testing.T) {
	enableTrials(t, time.Second)
	t.Run("Normal", func(t *testing.T) {
		s := mustCompile(t, examples.Multisensor(), CompileOptions{Imports: examples.ByNamespace})
		if err := s.Validate([]byte(`<report xmlns="urn:example:multisensor"/>`), Limits{}); err == nil {
			t.Log("validated") // the point is that it compiled through the trial
		}
	})
	t.Run("WithImport", func(t *testing.T) {
		big := []byte(strings.Replace(string(optionalSequence(3)), `targetNamespace="urn:h" xmlns="urn:h"`, `targetNamespace="urn:i" xmlns="urn:i"`, 1))
		src := []byte(xsOpen + `<xs:import namespace="urn:i"/><xs:element name="x"><xs:complexType><xs:sequence>` +
			`<xs:element ref="i:r" xmlns:i="urn:i"/></xs:sequence></xs:complexType></xs:element></xs:schema>`)
		s := mustCompile(t, src, CompileOptions{Imports: func(ns string) ([]byte, bool) { return big, ns == "urn:i" }})
		if err := s.Validate([]byte(`<x xmlns="urn:h"><r xmlns="urn:i"><e1>v</e1></r></x>`), Limits{}); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("ErrInvalidSchema", func(t *testing.T) {
		src := []byte(xsOpen + `<xs:element name="r" type="nope"/></xs:schema>`)
		_, err := Compile(src, CompileOptions{})
		var ce *CompileError
		if !errors.As(err, &ce) || ce.Detail != "" || !strings.Contains(ce.Error(), "nope") || ce.Issues[0].Line != 1 {
			t.Fatalf("err = %#v", err)
		}
	})
	t.Run("ErrCPU", func(t *testing.T) {
		// Within the counts (raised here), 35 s of compiling: killed at
		// 1 s of CPU.
		cost := CostLimits{MaxModelParticles: 1 << 20, MaxParticles: 1 << 20}
		start := time.Now()
		var err error
		within(t, 30*time.Second, func() { _, err = Compile(optionalSequence(2000), CompileOptions{Cost: cost}) })
		checkTooComplex(t, err, "takes more than 1s of CPU time")
		t.Logf("refused after %v", time.Since(start))
	})
	t.Run("ErrMemory", func(t *testing.T) {
		if raceEnabled {
			// ThreadSanitizer's own allocator fails first, with its own
			// exit status (66), which a production binary never has.
			t.Skip("under the race detector")
		}
		EnableTrialCompiles(TrialOptions{CPU: time.Second, Memory: 1 << 20})
		defer EnableTrialCompiles(TrialOptions{CPU: time.Second})
		_, err := Compile(optionalSequence(290), CompileOptions{})
		checkTooComplex(t, err, "1 MiB of memory")
	})
	patternSchema := func(p string) []byte {
		return []byte(xsOpen + `<xs:simpleType name="P"><xs:restriction base="xs:string"><xs:pattern value="` + p +
			`"/></xs:restriction></xs:simpleType><xs:element name="r" type="P"/></xs:schema>`)
	}
	t.Run("ErrSlowPattern", func(t *testing.T) {
		// Probed in the child: its issue comes back as the child found it.
		_, err := Compile(patternSchema(`Za*a*a*b`), CompileOptions{})
		var ce *CompileError
		if !errors.As(err, &ce) || ce.Detail != "" || !strings.Contains(ce.Error(), "more than linear time") || ce.Issues[0].Line != 1 {
			t.Fatalf("err = %#v, want the pattern refused as slow, on line 1", err)
		}
	})
	t.Run("ErrProbeCPU", func(t *testing.T) {
		// One probe match of this pattern takes minutes (18 s on 256
		// characters): the probe, in the child, is killed with it.
		p := `Z` + strings.Repeat(`(a|b|c|d|e|f|g|h|i|j|k|l|m|n|o|p|q|r|s|t|u|v|w|x|y|a)*`, 6) + `0`
		var err error
		start := time.Now()
		within(t, 30*time.Second, func() { _, err = Compile(patternSchema(p), CompileOptions{}) })
		checkTooComplex(t, err, "probing its xs:pattern facets) takes more than 1s of CPU time")
		t.Logf("refused after %v", time.Since(start))
	})
	t.Run("ErrCanceled", func(t *testing.T) {
		cost := CostLimits{MaxModelParticles: 1 << 20, MaxParticles: 1 << 20}
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		var err error
		within(t, 20*time.Second, func() { _, err = CompileContext(ctx, optionalSequence(2000), CompileOptions{Cost: cost}) })
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err = %v, want the context's", err)
		}
	})
}

// TestCompileSlots: compiles wait for a slot, and give up with their
// context.
func TestCompileSlots(t *testing.T) {
	var releases []func()
	for range cap(compileSlots) {
		r, err := acquireCompile(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		releases = append(releases, r)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := CompileContext(ctx, examples.Thermostat(), CompileOptions{}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want to wait for a slot until the deadline", err)
	}
	for _, r := range releases {
		r()
	}
	s := mustCompile(t, examples.Thermostat(), CompileOptions{})
	_ = s
}

// TestPatternChecks: a value matched against a pattern at each of many
// derivation steps, or through many union members, multiplies the cost
// that the length limits bound: refused.
func TestPatternChecks(t *testing.T) {
	chain := func(n int) string {
		var b strings.Builder
		b.WriteString(`<xs:simpleType name="P0"><xs:restriction base="xs:string"><xs:pattern value="Za*b"/></xs:restriction></xs:simpleType>`)
		for i := 1; i < n; i++ {
			fmt.Fprintf(&b, `<xs:simpleType name="P%d"><xs:restriction base="P%d"><xs:pattern value="Za*b"/></xs:restriction></xs:simpleType>`, i, i-1)
		}
		return b.String()
	}
	for _, tc := range []struct {
		name, body, msg string
	}{
		{"Chain4", chain(4) + `<xs:element name="r" type="P3"/>`, ""},
		{"ErrChain5", chain(5) + `<xs:element name="r" type="P4"/>`, "matched against 5 xs:pattern facets"},
		{"TwoPatternsOneStep", `<xs:simpleType name="P"><xs:restriction base="xs:string"><xs:pattern value="a*"/><xs:pattern value="b*"/>` +
			strings.Repeat(`<xs:pattern value="c*"/>`, 10) + `</xs:restriction></xs:simpleType><xs:element name="r" type="P"/>`, ""},
		{"ErrUnion", chain(2) + `<xs:simpleType name="U"><xs:union memberTypes="P1 P1 P0"/></xs:simpleType><xs:element name="r" type="U"/>`,
			"matched against 5 xs:pattern facets"},
		{"ErrSimpleContent", chain(4) + `<xs:element name="r"><xs:complexType><xs:simpleContent><xs:restriction base="xs:anyType">` +
			`<xs:simpleType><xs:restriction base="P3"/></xs:simpleType><xs:pattern value="Z.*"/></xs:restriction></xs:simpleContent></xs:complexType></xs:element>`,
			"matched against 5 xs:pattern facets"},
		{"ErrNestedUnions", chain(1) + `<xs:simpleType name="U1"><xs:union memberTypes="P0 P0"/></xs:simpleType>` +
			`<xs:simpleType name="U2"><xs:union memberTypes="U1 U1"/></xs:simpleType><xs:simpleType name="U3"><xs:union memberTypes="U2 U2"/></xs:simpleType>` +
			`<xs:element name="r" type="U3"/>`, "matched against 8 xs:pattern facets"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Compile([]byte(xsOpen+tc.body+`</xs:schema>`), CompileOptions{})
			if tc.msg == "" {
				if err != nil {
					t.Logf("Compile: %v", err) // libxml2 may refuse the construct itself
					var ce *CompileError
					if errors.As(err, &ce) && ce.Detail == DetailTooComplex {
						t.Fatalf("refused as too complex: %v", err)
					}
					return
				}
				s.Free()
				return
			}
			checkTooComplex(t, err, tc.msg)
		})
	}
}

// BenchmarkCompileTrial: what a trial compile adds to a normal schema's
// (a child process started, compiling and probing; BenchmarkCompile is
// the in-process compile alone).
func BenchmarkCompileTrial(b *testing.B) {
	before := trialOpts.Load()
	EnableTrialCompiles(TrialOptions{})
	defer trialOpts.Store(before)
	src := examples.Thermostat()
	for b.Loop() {
		s, err := Compile(src, CompileOptions{})
		if err != nil {
			b.Fatal(err)
		}
		s.Free()
	}
}
