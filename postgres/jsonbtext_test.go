package postgres

import (
	"encoding/json"
	"testing"
)

// FuzzStoredJSON: whatever the input, StoredJSON doesn't panic, and what
// it gives is valid JSON that it gives back unchanged (PostgreSQL's
// output read as jsonb prints the same). That it is PostgreSQL's output
// is held by TestStoredJSONMatchesPostgres (integration).
func FuzzStoredJSON(f *testing.F) {
	for _, s := range []string{`{}`, `{"temperature": 21.50, "mode": "heat", "@unit": "C"}`, `[1e5, -0, 1.50e1, "\u003c"]`, `{"a": 1, "a": 2}`, `"\ud83d\ude00"`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		out, ok := StoredJSON(in)
		if !ok {
			return
		}
		if !json.Valid(out) {
			t.Fatalf("%q gave invalid JSON %q", in, out)
		}
		again, ok := StoredJSON(out)
		if !ok || string(again) != string(out) {
			t.Fatalf("%q gave %q, which gives %q (ok %v)", in, out, again, ok)
		}
	})
}

func TestStoredJSON(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{`{"temperature":21.50,"mode":"heat","@unit":"C"}`, `{"mode": "heat", "@unit": "C", "temperature": 21.50}`},
		{`[1.50e1,1E5,1e-3,-0.0,-0]`, `[15.0, 100000, 0.001, 0.0, 0]`},
		{`"\u003ca\u003e\u0026\/\u0001"`, `"<a>&/\u0001"`},
	} {
		if got, ok := StoredJSON([]byte(tt.in)); !ok || string(got) != tt.want {
			t.Errorf("%s: got %s (ok %v), want %s", tt.in, got, ok, tt.want)
		}
	}
}
