package iotgate

import (
	"testing"

	"mellium.im/xmpp/jid"
)

// slowBareJID is BareJID by the full rules alone.
func slowBareJID(s string) (string, bool) {
	j, err := jid.Parse(s)
	if err != nil {
		return "", false
	}
	return j.Bare().String(), true
}

func TestBareJID(t *testing.T) {
	tests := []struct {
		in, want string
		plain    bool // read without the full rules
		err      bool
	}{
		{in: "dev-1@iot.example.com/r1", want: "dev-1@iot.example.com", plain: true},
		{in: "dev_1.a@example.com", want: "dev_1.a@example.com", plain: true},
		{in: "example.com", want: "example.com", plain: true},
		{in: "d@127.0.0.1/x y", want: "d@127.0.0.1"},
		{in: "Dev@Example.COM/R", want: "dev@example.com"},
		{in: "d@example.com./r", want: "d@example.com"},
		{in: "d@xn--bcher-kva.example/r", want: "d@bücher.example"},
		{in: "dév@example.com", want: "dév@example.com"},
		{in: "d@example.com/", err: true},
		{in: "@example.com", err: true},
		{in: "a\"b@example.com", err: true},
		{in: "d@exa mple.com", err: true},
		{in: "d@-x.com", err: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			_, plain := plainBareJID(tt.in)
			if plain != tt.plain {
				t.Errorf("plainBareJID(%q) ok = %v, want %v", tt.in, plain, tt.plain)
			}
			got, err := BareJID(tt.in)
			if (err != nil) != tt.err {
				t.Fatalf("BareJID(%q) error = %v, want error %v", tt.in, err, tt.err)
			}
			if got != tt.want {
				t.Errorf("BareJID(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

// FuzzBareJID: whatever the fast path reads, the full rules accept and
// read the same.
func FuzzBareJID(f *testing.F) {
	for _, s := range []string{"a@b/c", "dev-1@iot.example.com/r1", "x.y_z@1.2.3.4/ab~!", "a@b--c.d", "a@xn--e.f", "b.c"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, ok := plainBareJID(s)
		if !ok {
			return
		}
		want, valid := slowBareJID(s)
		if !valid {
			t.Fatalf("plainBareJID(%q) = %q, but the full rules refuse it", s, got)
		}
		if got != want {
			t.Fatalf("plainBareJID(%q) = %q, full rules %q", s, got, want)
		}
	})
}

func BenchmarkBareJID(b *testing.B) {
	for _, s := range []string{"dev-0042@iot.example.com/sim", "Dev-0042@iot.example.com/sim"} {
		b.Run(s, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := BareJID(s); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
