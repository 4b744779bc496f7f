package device

import (
	"encoding/xml"
	"strings"
	"testing"
)

func TestPayload(t *testing.T) {
	for _, tt := range []struct{ name, stanza, want string }{
		{"Nested", `<iq xmlns="jabber:client" type="set" id="1"><set xmlns="urn:example:thermostat" unit="F"><target>71.6</target></set></iq>`,
			`<set xmlns="urn:example:thermostat" unit="F"><target>71.6</target></set>`},
		{"Prefixes", `<iq xmlns="jabber:client" type="set"><t:set xmlns:t="urn:t" xmlns:o="urn:o"><t:a o:x="1"/><o:b/></t:set></iq>`,
			`<set xmlns="urn:t"><a xmlns:_="urn:o" _:x="1"></a><b xmlns="urn:o"></b></set>`}, // encoding/xml picks its own prefixes
		{"NoNamespace", `<iq xmlns="jabber:client" type="set"><q xmlns="urn:q"><a xmlns=""/></q></iq>`,
			`<q xmlns="urn:q"><a xmlns=""></a></q>`},
		{"SkipsError", `<iq xmlns="jabber:client" type="error"><error type="cancel"/><q xmlns="urn:q"/></iq>`, `<q xmlns="urn:q"></q>`},
		{"Empty", `<iq xmlns="jabber:client" type="result"/>`, ``},
	} {
		t.Run(tt.name, func(t *testing.T) {
			d := xml.NewDecoder(strings.NewReader(tt.stanza))
			tok, err := d.Token()
			if err != nil {
				t.Fatal(err)
			}
			st, err := readStanza(tok.(xml.StartElement), d)
			if err != nil {
				t.Fatal(err)
			}
			got, err := st.payload()
			if err != nil || got != tt.want {
				t.Errorf("payload = %q, %v; want %q", got, err, tt.want)
			}
			// What we write reads back as the same elements.
			if got != "" {
				if err := xml.Unmarshal([]byte(got), new(struct{})); err != nil {
					t.Errorf("payload does not parse: %v", err)
				}
			}
		})
	}
}
