package component

import (
	"bytes"
	"encoding/xml"
	"reflect"
	"strings"
	"testing"

	"mellium.im/xmpp/stanza"
)

func TestAppendXML(t *testing.T) {
	tests := []struct {
		name string
		st   Stanza
		want string
	}{
		{"Empty", Stanza{Kind: KindIQ, ID: "1", Type: TypeResult}, `<iq id="1" type="result"/>`},
		{"Escaped", Stanza{Kind: KindMessage, To: `a"b<c>&'@x`, Inner: []byte(`<body>hi</body>`)},
			`<message to="a&quot;b&lt;c&gt;&amp;&apos;@x"><body>hi</body></message>`},
		{"ControlCharsDropped", Stanza{Kind: KindPresence, Lang: "en\x00\x1b"}, "<presence xml:lang=\"en\uFFFD\uFFFD\"/>"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := string(tt.st.AppendXML(nil)); got != tt.want {
				t.Errorf("got  %s\nwant %s", got, tt.want)
			}
		})
	}
}

func TestErrorReplyRoundTrip(t *testing.T) {
	req := &Stanza{Kind: KindIQ, Type: TypeSet, ID: "x", From: "d@localhost/r", To: "iot.localhost"}
	rep := req.ErrorReply(stanza.Modify, stanza.BadRequest, `line 3: <temp> "too" hot & bad`)
	if rep.To != req.From || rep.From != req.To || rep.ID != "x" || rep.Type != TypeError {
		t.Fatalf("reply addressing wrong: %+v", rep)
	}
	// What we write must parse back into the same error.
	back := &Stanza{Kind: KindIQ, Type: TypeError, Inner: rep.Inner}
	se, ok := back.StanzaError()
	if !ok {
		t.Fatalf("error did not parse back: %s", rep.Inner)
	}
	if se.Type != stanza.Modify || se.Condition != stanza.BadRequest || ErrorText(se) != `line 3: <temp> "too" hot & bad` {
		t.Errorf("got %+v", se)
	}
	if err := xml.Unmarshal(rep.AppendXML(nil), new(any)); err != nil {
		t.Errorf("reply is not well-formed: %v", err)
	}
}

func TestChildren(t *testing.T) {
	tests := []struct {
		name    string
		inner   string
		want    []string // local names
		wantErr bool
	}{
		{"None", ``, nil, false},
		{"Whitespace", "  \n ", nil, false},
		{"TextAndElems", `hello<a/>x<b xmlns='urn:b'><c/></b>`, []string{"a", "b"}, false},
		{"Doctype", `<!DOCTYPE x [<!ENTITY e "boom">]><a>&e;</a>`, nil, true},
		{"UndefinedEntity", `<a>&xxe;</a>`, nil, true},
		{"Broken", `<a><b></a>`, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := &Stanza{Inner: []byte(tt.inner)}
			kids, err := st.Children()
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if tt.wantErr {
				return
			}
			var got []string
			for _, k := range kids {
				got = append(got, k.Name.Local)
				if !bytes.HasPrefix(k.Raw, []byte("<"+k.Name.Local)) || !bytes.HasSuffix(k.Raw, []byte(">")) {
					t.Errorf("raw of %s = %q", k.Name.Local, k.Raw)
				}
			}
			if strings.Join(got, ",") != strings.Join(tt.want, ",") {
				t.Errorf("children = %v, want %v", got, tt.want)
			}
		})
	}
}

func FuzzChildren(f *testing.F) {
	for _, s := range []string{``, `<a/>`, `<a xmlns='urn:x'><b c='d'>t</b></a><e/>`, `<!DOCTYPE a><a/>`, `<a>&amp;&lt;</a>`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, inner []byte) {
		st := &Stanza{Inner: inner}
		kids, err := st.Children()
		if err != nil {
			return
		}
		for _, k := range kids {
			if !bytes.Contains(inner, k.Raw) {
				t.Fatalf("raw child %q is not part of the input", k.Raw)
			}
		}
	})
}

// FuzzStream feeds arbitrary server output to the stanza reader: it must
// return stanzas or errors, never panic or hang.
func FuzzStream(f *testing.F) {
	for _, s := range []string{
		`<message from='a@b/c' to='iot.localhost'><body>x</body></message>`,
		`<iq type='result' id='1'/><presence/>`,
		`<stream:error><conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>`,
		`<?pi x?><message/>`,
		`</stream:stream>`,
		`<message from='a@b/c'><reading xmlns='urn:x' a='1'><v>1</v></reading> text <delay xmlns='urn:xmpp:delay' stamp='2024-01-01T00:00:00Z'/></message>`,
		`<message xmlns:p='urn:p'><p:x/><y xmlns='urn:y'><p:z/></y></message>`,
		`<iq type='set' id='1'><q xmlns='urn:q'><![CDATA[<a>]]></q>&amp;<r/></iq>`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		prefix := `<stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams' id='x'>`
		s := newStream(nil, bytes.NewReader(append([]byte(prefix), data...)), 1<<16, 64)
		if err := s.readHeader(); err != nil {
			t.Fatal(err)
		}
		for range 1000 {
			st, err := s.next()
			if err != nil {
				return
			}
			// The children the stream noted are the ones a parse of
			// the payload finds.
			got, gotErr := st.Children()
			want, wantErr := (&Stanza{Inner: st.Inner}).Children()
			if (gotErr != nil) != (wantErr != nil) || !reflect.DeepEqual(got, want) {
				t.Fatalf("Children of %q = %v, %v; a fresh parse gives %v, %v", st.Inner, got, gotErr, want, wantErr)
			}
		}
	})
}

// TestStreamChildrenStandalone checks that the children the stream's
// decoder hands over without a second decoder (standalone) are exactly
// what a decoder of the payload alone finds, and that a reading's usual
// form takes that path.
func TestStreamChildrenStandalone(t *testing.T) {
	tests := []struct {
		name      string
		stanza    string
		wantKnown []bool // per child: read once, by the stream's decoder
	}{
		{"Reading", `<message from='a@b/c'><reading xmlns='urn:x'><v>1</v></reading></message>`, []bool{true}},
		{"ReadingAndDelay", `<message from='a@b/c'><reading xmlns='urn:x' a='1'/><delay xmlns="urn:xmpp:delay" stamp='2024-01-01T00:00:00Z'/></message>`, []bool{true, true}},
		{"OwnPrefix", `<message><p:r xmlns:p='urn:p'/></message>`, []bool{false}},
		{"PrefixOfTheStanza", `<message xmlns:p='urn:p'><p:r xmlns='urn:p'/></message>`, []bool{false}},
		{"DefaultOfTheStanza", `<message xmlns='urn:m'><r/></message>`, []bool{false}},
		{"DefaultOfTheStream", `<message><body>hi</body></message>`, []bool{false}},
		{"PrefixedAttr", `<message xmlns:p='urn:p'><r xmlns='urn:r' p:a='1'/></message>`, []bool{false}},
		{"XMLLang", `<message><r xmlns='urn:r' xml:lang='en'/></message>`, []bool{false}},
		{"DeclaresPrefix", `<message><r xmlns='urn:r' xmlns:q='urn:q'><q:v/></r></message>`, []bool{true}},
		{"EmptyDefault", `<message><r xmlns=''/></message>`, []bool{true}},
		{"Entities", `<message><r xmlns='urn:r' a='&lt;&amp;'/>text<s xmlns='urn:s'>x</s></message>`, []bool{true, true}},
	}
	prefix := `<stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams' id='x'>`
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStream(nil, strings.NewReader(prefix+tt.stanza), 1<<16, 64)
			if err := s.readHeader(); err != nil {
				t.Fatal(err)
			}
			st, err := s.next()
			if err != nil {
				t.Fatal(err)
			}
			var gotKnown []bool
			for _, sp := range st.kids.spans {
				gotKnown = append(gotKnown, sp.known)
			}
			if !reflect.DeepEqual(gotKnown, tt.wantKnown) {
				t.Errorf("read once = %v, want %v", gotKnown, tt.wantKnown)
			}
			got, gotErr := st.Children()
			want, wantErr := (&Stanza{Inner: st.Inner}).Children()
			if gotErr != nil || wantErr != nil || !reflect.DeepEqual(got, want) {
				t.Errorf("Children = %v, %v; a fresh parse gives %v, %v", got, gotErr, want, wantErr)
			}
		})
	}
}
