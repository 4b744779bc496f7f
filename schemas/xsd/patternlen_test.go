package xsd

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// patternSchema has pattern-restricted values in every place a pattern can
// reach a value: an element's simple type (through a derived type), a
// list's item type, a union's member, simple content, an attribute, a
// reference to a global element, and a named type that only xsi:type gives
// to an element.
const patternSchema = `<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema" targetNamespace="urn:p" xmlns="urn:p" elementFormDefault="qualified">
  <xs:simpleType name="ID"><xs:restriction base="xs:string"><xs:pattern value="ID-\w*;"/></xs:restriction></xs:simpleType>
  <xs:simpleType name="ShortID"><xs:restriction base="ID"><xs:maxLength value="100000"/></xs:restriction></xs:simpleType>
  <xs:simpleType name="Z"><xs:restriction base="xs:string"><xs:pattern value="Za*b?"/></xs:restriction></xs:simpleType>
  <xs:simpleType name="IDs"><xs:list itemType="ID"/></xs:simpleType>
  <xs:simpleType name="IDOrInt"><xs:union memberTypes="ID xs:int"/></xs:simpleType>
  <xs:element name="gid" type="ID"/>
  <xs:element name="r"><xs:complexType><xs:sequence>
    <xs:element name="id" type="ShortID" minOccurs="0"/>
    <xs:element name="ids" type="IDs" minOccurs="0"/>
    <xs:element name="either" type="IDOrInt" minOccurs="0"/>
    <xs:element name="tagged" minOccurs="0"><xs:complexType><xs:simpleContent>
      <xs:extension base="Z"><xs:attribute name="k" type="xs:string"/></xs:extension></xs:simpleContent></xs:complexType></xs:element>
    <xs:element ref="gid" minOccurs="0"/>
    <xs:element name="free" type="xs:string" minOccurs="0" maxOccurs="unbounded"/>
  </xs:sequence><xs:attribute name="code" type="Z"/></xs:complexType></xs:element>
</xs:schema>`

func TestPatternValueLength(t *testing.T) {
	s := mustCompile(t, []byte(patternSchema), CompileOptions{})
	long := func(n int) string { return strings.Repeat("a", n) }
	doc := func(inner string, attrs ...string) []byte {
		return []byte(`<r xmlns="urn:p" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"` + strings.Join(attrs, "") + `>` + inner + `</r>`)
	}
	for _, tc := range []struct {
		name string
		doc  []byte
		lim  Limits
		// msg is in the issue of a refusal ("" for valid).
		msg string
	}{
		{"OK", doc(`<id>ID-abc;</id><free>`+long(5000)+`</free>`, ` code="Zab"`), Limits{}, ""},
		{"AtTheLimit", doc(`<id>ID-` + long(252) + `;</id>`), Limits{}, ""},
		{"ErrElement", doc(`<id>ID-` + long(253) + `;</id>`), Limits{}, "element id is 257 characters, over the limit of 256"},
		{"ErrCharactersNotBytes", doc(`<id>ID-` + strings.Repeat("é", 253) + `;</id>`), Limits{}, "element id is 257 characters"},
		{"ErrTextSplitByComments", doc(`<id>ID-` + long(200) + `<!---->` + long(53) + `;</id>`), Limits{}, "element id is 257 characters"},
		{"ErrList", doc(`<ids>ID-a; ID-` + long(300) + `;</ids>`), Limits{}, "element ids"},
		{"ErrUnion", doc(`<either>ID-` + long(300) + `;</either>`), Limits{}, "element either"},
		{"ErrSimpleContent", doc(`<tagged k="x">Z` + long(300) + `</tagged>`), Limits{}, "element tagged"},
		{"ErrAttribute", doc(``, ` code="Z`+long(300)+`"`), Limits{}, "attribute code"},
		{"ErrElementRef", doc(`<gid>ID-` + long(300) + `;</gid>`), Limits{}, "element gid"},
		{"ErrXsiType", doc(`<free xsi:type="Z">Z` + long(300) + `</free>`), Limits{}, "element free"},
		{"ErrTotal", doc(`<id>ID-`+long(210)+`;</id><ids>ID-`+long(210)+`;</ids><either>ID-`+long(210)+`;</either><tagged>Z`+long(210)+`</tagged>`, ` code="Z`+long(210)+`"`),
			Limits{}, "add up to more than 1024 characters"},
		{"ErrOwnLimit", doc(`<id>ID-` + long(20) + `;</id>`), Limits{MaxPatternValue: 10}, "over the limit of 10"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			within(t, 5*time.Second, func() { _, err = s.ValidateAndRender(tc.doc, tc.lim) })
			if tc.msg == "" {
				if err != nil {
					t.Fatalf("refused: %v %+v", err, issuesText(err))
				}
				return
			}
			var ve *ValidationError
			if !errors.As(err, &ve) || ve.Detail != DetailPatternValue {
				t.Fatalf("err = %v, want detail %s", err, DetailPatternValue)
			}
			if got := issuesText(err); !strings.Contains(got, tc.msg) {
				t.Errorf("issues %q, want %q", got, tc.msg)
			}
		})
	}
}

// issuesText is the issues of a validation error, as text.
func issuesText(err error) string {
	var ve *ValidationError
	if !errors.As(err, &ve) {
		return ""
	}
	return fmt.Sprint(ve.Issues)
}

// BenchmarkPatternWorstCase measures a validation at the length limits
// with patterns that backtrack badly, compiled without the probe (which
// refuses most of them now that it tries their literal prefix; a pattern
// it lets through is logged): one value of MaxPatternValue characters
// that fails at its last one, and a document of such values adding up to
// MaxPatternTotal. It is what the length limits alone bound a validation
// to.
//
//	go test -run '^$' -bench BenchmarkPatternWorstCase -benchtime 3x ./schemas/xsd/
func BenchmarkPatternWorstCase(b *testing.B) {
	for _, tc := range []struct{ name, pattern, prefix string }{
		{"Za*a*a*b", `Za*a*a*b`, "Z"},
		{"ID-w*w*w*;", `ID-\w*\w*\w*;`, "ID-"},
		{"Xa*a*a*a*b", `Xa*a*a*a*b`, "X"},
		{"X(a|aa)*b", `X(a|aa)*b`, "X"},
		{"X(a*)*b", `X(a*)*b`, "X"},
		{"X[a-z]*x6_0", `X[a-z]*[a-z]*[a-z]*[a-z]*[a-z]*[a-z]*0`, "X"},
		{"Za*x8b", `Za*a*a*a*a*a*a*a*b`, "Z"},
		{"Z(a|a)*b", `Z(a|a)*b`, "Z"},
		{"Z(a{1,9}){1,9}b", `Z(a{1,9}){1,9}b`, "Z"},
		{"Z((a*)*)*b", `Z((a*)*)*b`, "Z"},
	} {
		src := `<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema" targetNamespace="urn:p" xmlns="urn:p" elementFormDefault="qualified">
  <xs:simpleType name="P"><xs:restriction base="xs:string"><xs:pattern value="` + tc.pattern + `"/></xs:restriction></xs:simpleType>
  <xs:element name="r"><xs:complexType><xs:sequence><xs:element name="v" type="P" maxOccurs="unbounded"/></xs:sequence></xs:complexType></xs:element>
</xs:schema>`
		if _, err := Compile([]byte(src), CompileOptions{}); err == nil {
			b.Logf("%s: not caught by the probe", tc.name)
		}
		s, err := compile(context.Background(), []byte(src), CompileOptions{}, false)
		if err != nil {
			b.Fatal(err)
		}
		value := tc.prefix + strings.Repeat("a", DefaultMaxPatternValue-len(tc.prefix)-1) + "!"
		one := []byte(`<r xmlns="urn:p"><v>` + value + `</v></r>`)
		full := []byte(`<r xmlns="urn:p">` + strings.Repeat(`<v>`+value+`</v>`, DefaultMaxPatternTotal/DefaultMaxPatternValue) + `</r>`)
		for _, d := range []struct {
			name string
			doc  []byte
		}{{"OneValue", one}, {"Total", full}} {
			b.Run(tc.name+"/"+d.name, func(b *testing.B) {
				for b.Loop() {
					if err := s.Validate(d.doc, Limits{}); err == nil {
						b.Fatal("valid")
					}
				}
			})
		}
		s.Free()
	}
}

func TestSamplePrefix(t *testing.T) {
	for _, tc := range []struct{ pattern, want string }{
		{`ID-\w*\w*\w*;`, "ID-"},
		{`Za*a*a*b`, "Z"},
		{`[I]D-\w*\w*;`, "ID-"},
		{`[A-Z]{2}\d-[a-z]*[a-z]*`, "AA0-"},
		{`\d+\.\d*`, "0"},
		{`x?y*`, ""},
		{`(ab)*c`, ""},
		{`[^a]bc`, ""},
		{`a[b-d-[c]]e*`, "ab"},
		{`\p{Lu}x`, "Ax"},
		{`\p{Nd}{2}\p{IsGreek}x`, "00"},
		{`\p{Lu`, ""},
		{`ab|cd`, "ab"},
		{`\.\-\\x*`, `.-\`},
		{`a{2}b{1,3}c`, "aab"},
		{`a{1000}b`, strings.Repeat("a", maxSamplePrefix)},
		{`(ID)-\w*\w*`, "ID-"},
		{`(ID|SN)-\d*`, "ID-"},
		{`(ab)+c`, "ab"},
		{`(a(b)[)]){2}d`, "ab)ab)d"},
		{`([A-Z]{2})-x*`, "AA-"},
		{`(a*b)c`, ""},
		{`(ab`, ""},
	} {
		if got := samplePrefix(tc.pattern); got != tc.want {
			t.Errorf("samplePrefix(%q) = %q, want %q", tc.pattern, got, tc.want)
		}
	}
}

// TestSlowPatternBehindPrefix checks that the compile-time probe sees
// past a pattern's fixed start and into repeated groups: these used to
// compile (their probes failed at the first character, or never repeated
// the group's text) and take seconds on one 2 KiB value.
func TestSlowPatternBehindPrefix(t *testing.T) {
	for _, p := range []string{`ID-\w*\w*\w*;`, `Za*a*a*b`, `[I]D-\w*\w*\w*;`, `[A-Z]{2}\d-[a-z]*[a-z]*[a-z]*!`, `X(a|aa)*b`, `(ID|SN)-\w*\w*\w*;`, `\p{Lu}D-\w*\w*\w*;`, `(abc|abcabc)*d`, `(abc)*(abc)*(abc)*(abc)*d`, `ID-(ab\.)+(ab\.)*;`} {
		t.Run(p, func(t *testing.T) {
			src := `<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema" targetNamespace="urn:p"><xs:simpleType name="P">` +
				`<xs:restriction base="xs:string"><xs:pattern value="` + p + `"/></xs:restriction></xs:simpleType></xs:schema>`
			_, err := Compile([]byte(src), CompileOptions{})
			if issues := compileIssuesOf(t, err); !strings.Contains(issues[0].Message, "more than linear time") {
				t.Errorf("issues %+v, want the pattern refused as slow", issues)
			}
			// A stored version passed the probe when it was registered:
			// compiling it again does not probe (the length limits still
			// hold at validation).
			s, err := Compile([]byte(src), CompileOptions{Stored: true})
			if err != nil {
				t.Fatalf("stored: %v, want compiled without the probe", err)
			}
			s.Free()
		})
	}
}

// FuzzSamplePrefix holds samplePrefix to never panic and stay bounded on
// any pattern a schema may hold.
func FuzzSamplePrefix(f *testing.F) {
	for _, p := range []string{`ID-\w*`, `(a(b)[)]){2}d`, `[a-[b]]`, `\`, `(`, `[`, `a{`, `a{99999999999}`, `((((a))))`} {
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, p string) {
		if s := samplePrefix(p); len([]rune(s)) > maxSamplePrefix {
			t.Errorf("samplePrefix(%q) is %d characters", p, len([]rune(s)))
		}
	})
}

// TestRepeatedGroups checks which groups the probe repeats.
func TestRepeatedGroups(t *testing.T) {
	tests := []struct {
		pattern string
		want    []string
	}{
		{`(abc)*d`, []string{"abc"}},
		{`(abc|abcabc)+d`, []string{"abc"}},
		{`x(ab){2,}(cd)?`, []string{"ab"}},
		{`(a)*b`, nil},                // one character: runs of it are probed already
		{`\(ab\)*`, nil},              // escaped parentheses are no group
		{`[(]ab[)]*`, nil},            // nor parentheses in a class
		{`((ab)*c)*`, []string{"ab"}}, // the outer group starts optional: no sample
		{`(ab`, nil},
	}
	for _, tt := range tests {
		t.Run(tt.pattern, func(t *testing.T) {
			if got := repeatedGroups(tt.pattern); !slices.Equal(got, tt.want) {
				t.Errorf("repeatedGroups(%q) = %q, want %q", tt.pattern, got, tt.want)
			}
		})
	}
}

// TestStatusErr checks the error of each validation outcome; stGaveUp can't
// be reached on purpose once the probe refuses the patterns that cause it.
func TestStatusErr(t *testing.T) {
	tests := []struct {
		status int
		want   string // "": nil; "refused": a *ValidationError; "failed": another error
		detail string
	}{
		{stOK, "", ""},
		{stMalform, "refused", ""},
		{stInvalid, "refused", ""},
		{stDoctype, "refused", DetailDoctype},
		{stTooDeep, "refused", DetailTooDeep},
		{stTooLong, "refused", DetailPatternValue},
		{stGaveUp, "refused", DetailPatternCost},
		{-1, "failed", ""},
		{-2, "failed", ""},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.status), func(t *testing.T) {
			err := statusErr(tt.status, nil)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("statusErr = %v, want nil", err)
				}
				return
			}
			var ve *ValidationError
			refused := errors.As(err, &ve)
			if err == nil || refused != (tt.want == "refused") || (refused && ve.Detail != tt.detail) {
				t.Errorf("statusErr = %#v, want %s detail %q", err, tt.want, tt.detail)
			}
		})
	}
}

// TestPatternTotalWeighsChecks: a value matched against several pattern
// facets (derivation steps) counts once per facet in MaxPatternTotal, so
// that the total bounds the characters matched, not the characters sent.
func TestPatternTotalWeighsChecks(t *testing.T) {
	src := xsOpen + `<xs:simpleType name="P1"><xs:restriction base="xs:string"><xs:pattern value="Z.*"/></xs:restriction></xs:simpleType>
  <xs:simpleType name="P2"><xs:restriction base="P1"><xs:pattern value=".*z"/></xs:restriction></xs:simpleType>
  <xs:element name="r"><xs:complexType><xs:sequence>
    <xs:element name="one" type="P1" minOccurs="0" maxOccurs="unbounded"/>
    <xs:element name="two" type="P2" minOccurs="0" maxOccurs="unbounded"/>
  </xs:sequence><xs:attribute name="a" type="P2"/></xs:complexType></xs:element></xs:schema>`
	s := mustCompile(t, []byte(src), CompileOptions{})
	v := "Z" + strings.Repeat("a", 98) + "z" // 100 characters
	doc := func(inner string, attrs ...string) []byte {
		return []byte(`<r xmlns="urn:h"` + strings.Join(attrs, "") + `>` + inner + `</r>`)
	}
	lim := Limits{MaxPatternTotal: 400}
	for _, tc := range []struct {
		name string
		doc  []byte
		ok   bool
	}{
		{"FourMatchedOnce", doc(strings.Repeat(`<one>`+v+`</one>`, 4)), true},
		{"TwoMatchedTwice", doc(strings.Repeat(`<two>`+v+`</two>`, 2)), true},
		{"ErrThreeMatchedTwice", doc(strings.Repeat(`<two>`+v+`</two>`, 3)), false},
		{"AttributeAndOneMatchedTwice", doc(`<two>`+v+`</two>`, ` a="`+v+`"`), true},
		{"ErrAttributeAndTwo", doc(strings.Repeat(`<two>`+v+`</two>`, 2), ` a="`+v+`"`), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := s.Validate(tc.doc, lim)
			var ve *ValidationError
			switch {
			case tc.ok && err != nil:
				t.Fatalf("refused: %v", err)
			case !tc.ok && (!errors.As(err, &ve) || ve.Detail != DetailPatternValue || !strings.Contains(err.Error(), "add up to more than 400")):
				t.Fatalf("err = %v, want the total refused", err)
			}
		})
	}
}
