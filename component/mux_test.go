package component

import (
	"context"
	"testing"
)

func TestMuxServe(t *testing.T) {
	m := newMux("iot.localhost")
	var got string
	m.handle(KindIQ, TypeGet, NSPing, "ping", func(_ context.Context, _ *session, st *Stanza, q Element) {
		got = st.ID + " " + q.Name.Local
	})
	tests := []struct {
		name string
		st   Stanza
		want string // "" when no handler may run
	}{
		{"OK", Stanza{Kind: KindIQ, Type: TypeGet, ID: "1", To: "iot.localhost", Inner: []byte(`<ping xmlns='urn:xmpp:ping'/>`)}, "1 ping"},
		{"OtherType", Stanza{Kind: KindIQ, Type: TypeSet, ID: "2", To: "iot.localhost", Inner: []byte(`<ping xmlns='urn:xmpp:ping'/>`)}, ""},
		{"OtherKind", Stanza{Kind: KindMessage, Type: TypeGet, ID: "3", To: "iot.localhost", Inner: []byte(`<ping xmlns='urn:xmpp:ping'/>`)}, ""},
		{"ToOtherJID", Stanza{Kind: KindIQ, Type: TypeGet, ID: "4", To: "x@iot.localhost", Inner: []byte(`<ping xmlns='urn:xmpp:ping'/>`)}, ""},
		{"ToDomainUnnormalized", Stanza{Kind: KindIQ, Type: TypeGet, ID: "5", To: "IOT.localhost", Inner: []byte(`<ping xmlns='urn:xmpp:ping'/>`)}, "5 ping"},
		{"OtherNamespace", Stanza{Kind: KindIQ, Type: TypeGet, ID: "6", To: "iot.localhost", Inner: []byte(`<ping xmlns='urn:example:ping'/>`)}, ""},
		{"TwoChildren", Stanza{Kind: KindIQ, Type: TypeGet, ID: "7", To: "iot.localhost", Inner: []byte(`<ping xmlns='urn:xmpp:ping'/><ping xmlns='urn:xmpp:ping'/>`)}, ""},
		{"NoChild", Stanza{Kind: KindIQ, Type: TypeGet, ID: "8", To: "iot.localhost"}, ""},
		{"Malformed", Stanza{Kind: KindIQ, Type: TypeGet, ID: "9", To: "iot.localhost", Inner: []byte(`<ping xmlns='urn:xmpp:ping'>`)}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got = ""
			served := m.serve(context.Background(), nil, &tt.st)
			if served != (tt.want != "") || got != tt.want {
				t.Errorf("serve = %v, handler saw %q; want %q", served, got, tt.want)
			}
		})
	}
}
