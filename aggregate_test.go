package iotgate

import (
	"strings"
	"testing"
)

func TestParseFieldPath(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want []string // nil: invalid
	}{
		{"temperature", []string{"temperature"}},
		{"@seq", []string{"@seq"}},
		{"sensor.value", []string{"sensor", "value"}},
		{"note.#text", []string{"note", "#text"}},
		{"", nil},
		{".a", nil},
		{"a.", nil},
		{"a..b", nil},
		{strings.Repeat("a.", 16) + "a", nil},
		{strings.Repeat("a", 257), nil},
	} {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseFieldPath(tt.in)
			if tt.want == nil {
				if ErrorCode(err) != EInvalid {
					t.Fatalf("ParseFieldPath(%q) = %q, %v; want invalid", tt.in, got, err)
				}
				return
			}
			if err != nil || strings.Join(got, "|") != strings.Join(tt.want, "|") {
				t.Fatalf("ParseFieldPath(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
			}
		})
	}
}

// FuzzParseFieldPath: a path accepted is within the bounds, has no empty
// key and prints back as it was written.
func FuzzParseFieldPath(f *testing.F) {
	for _, s := range []string{"temperature", "a.b.c", "@x", "note.#text", "a..b", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParseFieldPath(s)
		if err != nil {
			return
		}
		if len(p) == 0 || len(p) > MaxFieldPathDepth || len(s) > MaxFieldPathLen || p.String() != s {
			t.Fatalf("ParseFieldPath(%q) = %q", s, p)
		}
		for _, k := range p {
			if k == "" {
				t.Fatalf("ParseFieldPath(%q) has an empty key", s)
			}
		}
	})
}
