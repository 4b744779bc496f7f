package component

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

const testStreamHeader = `<stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams' id='x'>`

// TestReadPlain checks which stanzas readPlain reads itself (plain) and
// that, plain or not, the stream gives what the decoder alone gives.
func TestReadPlain(t *testing.T) {
	long := strings.Repeat("v&amp;", 100) // tags over sharedTagMax
	tests := []struct {
		name   string
		stanza string
		plain  bool
	}{
		{"Reading", `<message from='a@b/c' to='iot.localhost' id='m1'><reading xmlns='urn:x'><v>21.5</v></reading></message>`, true},
		{"ReadingAndDelay", `<message from='a@b/c'><reading xmlns='urn:x' a='1'/><delay xmlns="urn:xmpp:delay" stamp='2024-01-01T00:00:00Z'/></message>`, true},
		{"IQSet", `<iq type='set' id='1' from='a@b/c' to='iot.localhost' xml:lang='en'><q xmlns='urn:q'/></iq>`, true},
		{"Presence", `<presence from='a@b/c'/>`, true},
		{"SpacesInTags", "<presence\tfrom = 'a@b/c' ><x\txmlns='urn:x' /></presence >", true},
		{"Entities", `<message from='a&amp;b@c/&lt;d&gt;' id='&apos;&quot;'><r xmlns='urn:r' a='&lt;&amp;'/>t&amp;t<s xmlns='urn:s'>x</s></message>`, true},
		{"UTF8", `<message from='ä@b/ç'><r xmlns='urn:r' a='日本'>𝄞</r></message>`, true},
		{"PrefixedChild", `<message><r xmlns='urn:r' xmlns:q='urn:q'><q:v q:a='1'/></r></message>`, true},
		{"UnknownPrefix", `<message><p:r/></message>`, true},
		{"NoAttrSpace", `<message from='a@b/c'id='1'/>`, true},
		{"NewLine", "<message from='a@b/c'>\n<r xmlns='urn:r'/></message>", false},
		{"CarriageReturn", "<message from='a\rb'/>", false},
		{"Comment", `<message><!-- x --><r xmlns='urn:r'/></message>`, false},
		{"CDATA", `<message><r xmlns='urn:r'><![CDATA[<a>]]></r></message>`, false},
		{"PI", `<message><?p x?></message>`, false},
		{"CharRef", `<message id='&#65;'/>`, false},
		{"CharRefText", `<message><r xmlns='urn:r'>&#0;</r></message>`, false},
		{"UnknownEntity", `<message><r xmlns='urn:r'>&nbsp;</r></message>`, false},
		{"NoSemicolon", `<message><r xmlns='urn:r'>&amp</r></message>`, false},
		{"BadUTF8", "<message><r xmlns='urn:r'>\xff</r></message>", false},
		{"BadChar", "<message><r xmlns='urn:r'>\x01</r></message>", false},
		{"BadCharAttr", "<message id='\x01'/>", false},
		{"Surrogate", "<message><r xmlns='urn:r'>\xed\xa0\x80</r></message>", false},
		{"NotAChar", "<message><r xmlns='urn:r'>\xef\xbf\xbe</r></message>", false},
		{"CDATAEnd", `<message><r xmlns='urn:r'>a]]>b</r></message>`, false},
		{"Mismatch", `<message><r xmlns='urn:r'></s></message>`, false},
		{"PrefixMismatch", `<message><p:r></q:r></message>`, false},
		{"TwoColons", `<message><a:b:c/></message>`, false},
		{"LTInAttr", `<message id='<'/>`, false},
		{"Unquoted", `<message id=1/>`, false},
		{"NoValue", `<message id/>`, false},
		{"NonASCIIName", `<message><ré xmlns='urn:r'/></message>`, false},
		{"DigitName", `<message><1a/></message>`, false},
		{"StanzaPrefix", `<message xmlns:p='urn:p'><p:r xmlns='urn:p'/></message>`, false},
		{"StanzaPrefixedAttr", `<message p:id='1'/>`, false},
		{"EmptyPrefixOnStanza", `<message xmlns:p=''><r xmlns='urn:r' p:a='1'/><s xmlns='urn:s'/></message>`, false},
		{"StreamError", `<stream:error><conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>`, false},
		{"OtherElement", `<foo/><presence/>`, false},
		{"PrefixedStanza", `<stream:message/>`, false},
		{"DuplicateAttr", `<message id='1' id='2'><r xmlns='a' xmlns='b'/></message>`, true},
		{"EmptyNamespace", `<message><r xmlns=''/></message>`, true},
		{"LargeTags", `<message from='a@b/c' junk='` + long + `'><r xmlns='urn:r' a='` + long + `'/></message>`, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fr := newFramer(strings.NewReader(tt.stanza), 1<<16, 64)
			f, err := fr.next()
			if err != nil {
				t.Fatal(err)
			}
			_, _, plain := readPlain(f.raw, f.start)
			if plain != tt.plain {
				t.Errorf("read plain = %v, want %v", plain, tt.plain)
			}
			diffStreams(t, []byte(tt.stanza), 1<<16, 64)
		})
	}
}

// diffStreams reads the stream header and data with the plain reader on and
// with the decoder alone, and fails unless both give the same stanzas and
// the same errors, in the same order.
func diffStreams(t *testing.T, data []byte, maxBytes, maxDepth int) {
	t.Helper()
	in := append([]byte(testStreamHeader), data...)
	fast := newStream(nil, bytes.NewReader(in), maxBytes, maxDepth)
	ref := newStream(nil, bytes.NewReader(in), maxBytes, maxDepth)
	ref.decodeAll = true
	if err := fast.readHeader(); err != nil {
		t.Fatal(err)
	}
	if err := ref.readHeader(); err != nil {
		t.Fatal(err)
	}
	for i := range 1000 {
		got, gotErr := fast.next()
		want, wantErr := ref.next()
		if g, w := fmt.Sprintf("%T %v", gotErr, gotErr), fmt.Sprintf("%T %v", wantErr, wantErr); g != w {
			t.Fatalf("stanza %d: error %s, the decoder alone gives %s", i, g, w)
		}
		if wantErr != nil {
			var gs, ws *skippedError
			if !errors.As(wantErr, &ws) {
				return
			}
			errors.As(gotErr, &gs)
			if (gs.st == nil) != (ws.st == nil) {
				t.Fatalf("stanza %d: skipped %v, the decoder alone %v", i, gs.st, ws.st)
			}
			if ws.st != nil {
				sameStanza(t, gs.st, ws.st)
			}
			continue
		}
		sameStanza(t, got, want)
	}
}

// sameStanza fails unless got and want have the same attributes, payload
// and children, and the children are those a fresh parse finds.
func sameStanza(t *testing.T, got, want *Stanza) {
	t.Helper()
	g := []string{got.Kind, got.ID, got.From, got.To, got.Type, got.Lang}
	w := []string{want.Kind, want.ID, want.From, want.To, want.Type, want.Lang}
	if !reflect.DeepEqual(g, w) || !bytes.Equal(got.Inner, want.Inner) {
		t.Fatalf("stanza %q %q, the decoder alone gives %q %q", g, got.Inner, w, want.Inner)
	}
	gotKids, gotErr := got.Children()
	wantKids, wantErr := want.Children()
	if fmt.Sprint(gotErr) != fmt.Sprint(wantErr) || !reflect.DeepEqual(gotKids, wantKids) {
		t.Fatalf("children of %q = %v, %v; the decoder alone gives %v, %v", got.Inner, gotKids, gotErr, wantKids, wantErr)
	}
	fresh, freshErr := (&Stanza{Inner: got.Inner}).Children()
	if fmt.Sprint(gotErr) != fmt.Sprint(freshErr) || !reflect.DeepEqual(gotKids, fresh) {
		t.Fatalf("children of %q = %v, %v; a fresh parse gives %v, %v", got.Inner, gotKids, gotErr, fresh, freshErr)
	}
}

// FuzzPlain is the differential test of readPlain: on any server output,
// the stream with the plain reader gives exactly what the decoder alone
// gives (stanzas, children, errors and their text), with the usual limits
// and with small ones. The seeds include the corpora of FuzzStream and
// FuzzChildren (in a message).
func FuzzPlain(f *testing.F) {
	for _, s := range []string{
		`<message from='a@b/c' to='iot.localhost' id='m1'><reading xmlns='urn:x'><v>21.5</v></reading></message>`,
		`<iq type='set' id='1' xml:lang='en'><q xmlns='urn:q' a='&lt;'>t&amp;</q></iq><presence/>`,
		`<message><r xmlns='urn:r' xmlns:q='urn:q'><q:v q:a='1'/></r> x <s xmlns=''/></message>`,
		"<message>\n<r/></message><message><r xmlns='a'>\xff</r></message>",
		`<message><r xmlns='urn:r'>a]]>b</r></message>`,
		`<message id='1'id='2'><a:b:c/></message>`,
	} {
		f.Add([]byte(s))
	}
	for _, dir := range []string{"FuzzStream", "FuzzChildren", "FuzzFramer", "FuzzPlain"} {
		for _, in := range corpus(f, filepath.Join("testdata", "fuzz", dir)) {
			if dir == "FuzzChildren" {
				in = append(append([]byte(`<message from='a@b/c'>`), in...), `</message>`...)
			}
			f.Add(in)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		diffStreams(t, data, 1<<16, 64)
		diffStreams(t, data, 64, 3)
	})
}

// corpus returns the []byte inputs of the go test fuzz files in dir.
func corpus(f *testing.F, dir string) [][]byte {
	f.Helper()
	files, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		f.Fatal(err)
	}
	var out [][]byte
	for _, e := range files {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			f.Fatal(err)
		}
		sc := bufio.NewScanner(bytes.NewReader(b))
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			line := sc.Text()
			if !strings.HasPrefix(line, "[]byte(") || !strings.HasSuffix(line, ")") {
				continue
			}
			s, err := strconv.Unquote(line[len("[]byte(") : len(line)-1])
			if err != nil {
				f.Fatalf("%s: %v", e.Name(), err)
			}
			out = append(out, []byte(s))
		}
	}
	return out
}
