package main

import (
	"strings"
	"testing"
)

func TestModRestResult(t *testing.T) {
	for _, tt := range []struct {
		name   string
		answer string
		ok     bool
	}{
		{"Result", `<iq id='a' type='result' from='cmd0@localhost/r'><state xmlns='urn:example:thermostat'/></iq>`, true},
		{"ResultDoubleQuotes", `<iq type="result" id="a"/>`, true},
		{"ErrStanzaError", `<iq id='a' type='error'><error type='cancel'><not-allowed xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>`, false},
		// A result deeper in the answer is not the IQ's type.
		{"ErrResultInPayload", `<iq id='a' type='error'><x type='result'/></iq>`, false},
		{"ErrNotIQ", `{"type":"result"}`, false},
		{"ErrEmpty", ``, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if err := modRestResult([]byte(tt.answer)); (err == nil) != tt.ok {
				t.Errorf("modRestResult(%q) = %v, want ok %v", tt.answer, err, tt.ok)
			}
		})
	}
}

func TestModRestIQ(t *testing.T) {
	for _, tt := range []struct {
		name, to, want string
	}{
		{"Plain", "cmd0@localhost/abc", `<iq type="set" to="cmd0@localhost/abc">` + commandPayload + `</iq>`},
		{"Escaped", `a&b@localhost/"<`, `<iq type="set" to="a&amp;b@localhost/&#34;&lt;">`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := string(modRestIQ(tt.to)); !strings.HasPrefix(got, tt.want) {
				t.Errorf("modRestIQ(%q) = %q, want it to start with %q", tt.to, got, tt.want)
			}
		})
	}
}
