package xsd

import (
	"os"
	"strings"
	"testing"
)

func TestFieldKind(t *testing.T) {
	for _, tt := range []struct {
		file string
		path []string
		want FieldKind
	}{
		{"thermostat.xsd", []string{"temperature"}, FieldNumber},
		{"thermostat.xsd", []string{"humidity"}, FieldNumber},
		{"thermostat.xsd", []string{"@seq"}, FieldNumber},
		{"thermostat.xsd", []string{"@unit"}, FieldString},
		{"thermostat.xsd", []string{"mode"}, FieldString},
		{"thermostat.xsd", []string{"battery"}, FieldBoolean},
		{"thermostat.xsd", []string{"heating"}, FieldBoolean},
		{"thermostat.xsd", []string{"nope"}, FieldUnknown},
		{"thermostat.xsd", []string{"temperature", "x"}, FieldUnknown},
		{"thermostat.xsd", []string{"@unit", "x"}, FieldUnknown},
		{"multisensor.xsd", []string{"sensor"}, FieldArray},
		{"multisensor.xsd", []string{"sensor", "value"}, FieldArray},
		{"multisensor.xsd", []string{"samples"}, FieldObject},
		{"multisensor.xsd", []string{"samples", "v"}, FieldArray},
		{"multisensor.xsd", []string{"samples", "@sensor"}, FieldString},
		{"multisensor.xsd", []string{"note", "#text"}, FieldString},
		{"multisensor.xsd", []string{"note", "@lang"}, FieldString},
		{"multisensor.xsd", []string{"@uptime"}, FieldNumber},
		{"multisensor.xsd", []string{"#text"}, FieldUnknown},
	} {
		t.Run(tt.file+"/"+join(tt.path), func(t *testing.T) {
			src, err := os.ReadFile("../examples/" + tt.file)
			if err != nil {
				t.Fatal(err)
			}
			s, err := Compile(src, CompileOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Free()
			if got := s.FieldKind(tt.path); got != tt.want {
				t.Errorf("FieldKind(%q) = %s, want %s", tt.path, got, tt.want)
			}
		})
	}
}

func join(p []string) string {
	s := ""
	for i, k := range p {
		if i > 0 {
			s += "."
		}
		s += k
	}
	return s
}

func TestScalarFields(t *testing.T) {
	for _, tt := range []struct {
		file       string
		depth, max int
		want       string
	}{
		{"thermostat.xsd", 16, 100, "@at @seq @unit battery heating humidity mode target temperature"},
		{"multisensor.xsd", 16, 100, "@node @uptime note.#text note.@lang samples.@sensor"},
		{"multisensor.xsd", 1, 100, "@node @uptime"},
		{"thermostat.xsd", 16, 3, "@at @seq @unit"},
	} {
		t.Run(tt.file, func(t *testing.T) {
			src, err := os.ReadFile("../examples/" + tt.file)
			if err != nil {
				t.Fatal(err)
			}
			s, err := Compile(src, CompileOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Free()
			var got []string
			for _, p := range s.ScalarFields(tt.depth, tt.max) {
				got = append(got, join(p))
				if k := s.FieldKind(p); k == FieldObject || k == FieldArray || k == FieldUnknown {
					t.Errorf("%s is %s, not a scalar", join(p), k)
				}
			}
			if g := strings.Join(got, " "); g != tt.want {
				t.Errorf("ScalarFields = %s\nwant           %s", g, tt.want)
			}
		})
	}
}
