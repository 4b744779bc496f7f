package postgres

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/lib/pq"
)

// TestTextArray checks that textArray sends exactly what pq.Array of the
// same strings does, from strings and from JSON bytes.
func TestTextArray(t *testing.T) {
	tests := []struct {
		name  string
		items []string
	}{
		{"Empty", []string{}},
		{"One", []string{"a"}},
		{"EmptyItem", []string{"", "x", ""}},
		{"Quotes", []string{`{"celsius":21.5,"label":"a \"b\""}`, `"`, `""`}},
		{"Backslashes", []string{`\`, `a\\b`, `C:\dir\"x"`}},
		{"ArraySyntax", []string{"{a,b}", "NULL", "null", " spaced ", "a,b", "{}"}},
		{"XML", []string{`<reading xmlns='urn:x' a="1">&lt;<v>21.5</v></reading>`}},
		{"Unicode", []string{"grüße", "温度", "\u2028", "\x01\t\n\r"}},
		{"Long", []string{strings.Repeat(`ab"\`, 10000)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want, err := pq.Array(tt.items).Value()
			if err != nil {
				t.Fatal(err)
			}
			got, err := textArray[string](tt.items).Value()
			if err != nil || got != want {
				t.Errorf("textArray = %q, %v; pq.Array gives %q", got, err, want)
			}
			raw := make([]json.RawMessage, len(tt.items))
			for i, s := range tt.items {
				raw[i] = json.RawMessage(s)
			}
			got, err = textArray[json.RawMessage](raw).Value()
			if err != nil || got != want {
				t.Errorf("textArray of bytes = %q, %v; pq.Array gives %q", got, err, want)
			}
		})
	}
	if v, err := textArray[string](nil).Value(); v != nil || err != nil {
		t.Errorf("nil textArray = %v, %v; want nil (NULL)", v, err)
	}
}

// BenchmarkTextArray compares the arrays of a batch of readings' XML and
// JSON built by textArray and by pq.Array (with the copy of each JSON to
// a string that pq.Array needs).
// Run: go test ./postgres -run '^$' -bench TextArray -benchmem
func BenchmarkTextArray(b *testing.B) {
	const n = 200
	xmls := make([]string, n)
	data := make([]json.RawMessage, n)
	for i := range n {
		xmls[i] = `<reading xmlns='urn:example:thermo'><celsius>21.5</celsius><humidity>40</humidity><label>kitchen</label></reading>`
		data[i] = json.RawMessage(`{"celsius":21.5,"humidity":40,"label":"kitchen"}`)
	}
	b.Run("textArray", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := textArray[string](xmls).Value(); err != nil {
				b.Fatal(err)
			}
			if _, err := textArray[json.RawMessage](data).Value(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("pq.Array", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := pq.Array(xmls).Value(); err != nil {
				b.Fatal(err)
			}
			s := make([]string, n)
			for i, d := range data {
				s[i] = string(d)
			}
			if _, err := pq.Array(s).Value(); err != nil {
				b.Fatal(err)
			}
		}
	})
}
