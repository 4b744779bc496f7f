package component

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/iotgate/iotgate"
)

func TestAppendCleanElement(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"Plain", `<set xmlns="urn:t"><target>21.5</target></set>`, `<set xmlns="urn:t"><target>21.5</target></set>`},
		{"Comment", `<set xmlns="urn:t"><!--x--><target>21.5</target></set>`, `<set xmlns="urn:t"><target>21.5</target></set>`},
		{"PI", `<set xmlns="urn:t"><?php x?><target>1</target></set>`, `<set xmlns="urn:t"><target>1</target></set>`},
		{"Declaration", "<?xml version='1.0'?>\n<set xmlns='urn:t'/>\n", `<set xmlns="urn:t"/>`},
		{"CDATA", `<a xmlns="urn:t"><![CDATA[]]]]><![CDATA[><!--]]></a>`, `<a xmlns="urn:t">]]&gt;&lt;!--</a>`},
		{"Prefixes", `<p:a xmlns:p="urn:t" xmlns:q="urn:q" q:x="1" y="'"><q:b/><c/></p:a>`,
			`<a xmlns="urn:t" xmlns:ns0="urn:q" ns0:x="1" y="&apos;"><b xmlns="urn:q"/><c xmlns=""/></a>`},
		{"NoNamespace", `<a><b/></a>`, `<a xmlns=""><b/></a>`},
		{"XMLLang", `<a xmlns="urn:t" xml:lang="en"/>`, `<a xmlns="urn:t" xml:lang="en"/>`},
		{"DuplicateAfterResolution", `<a xmlns="urn:t" xmlns:p="urn:q" xmlns:r="urn:q" p:x="1" r:x="2"/>`, `<a xmlns="urn:t" xmlns:ns0="urn:q" ns0:x="1"/>`},
		{"Escapes", "<a xmlns='urn:t' v='&lt;&#9;'>&amp;&#13;</a>", `<a xmlns="urn:t" v="&lt;&#x9;">&amp;&#xD;</a>`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := AppendCleanElement(nil, []byte(tt.in))
			if err != nil || string(got) != tt.want {
				t.Errorf("got %s, %v; want %s", got, err, tt.want)
			}
		})
	}

	for _, in := range []string{"", " ", "text", "<a/><b/>", "<a>", "<!DOCTYPE a><a/>", "<a><!DOCTYPE b></a>", "<a/>x",
		`<a xmlns:x="http://www.w3.org/XML/1998/namespace"><x:b/></a>`, `<xmlns:a/>`, `<a:b:c xmlns:a="urn:a"/>`} {
		t.Run("Refused", func(t *testing.T) {
			if got, err := AppendCleanElement(nil, []byte(in)); iotgate.ErrorCode(err) != iotgate.EInvalid {
				t.Errorf("%q: got %s, %v; want invalid", in, got, err)
			}
		})
	}
}

// FuzzAppendCleanElement checks that whatever the serializer accepts comes
// out as one element that parses to the same tokens, minus comments and
// processing instructions, and carries none.
// Run longer with: go test ./component -run '^$' -fuzz FuzzAppendCleanElement -fuzztime 60s
func FuzzAppendCleanElement(f *testing.F) {
	for _, s := range []string{
		`<set xmlns="urn:example:thermostat"><!--x--><target>21.5</target></set>`,
		`<a xmlns="urn:t"><?pi x?><![CDATA[]]]]><![CDATA[>]]></a>`,
		`<p:a xmlns:p="urn:t" xmlns:q="urn:q" q:x="1" xml:lang="en"><q:b/><c>t&amp;</c></p:a>`,
		"<?xml version='1.0'?><a/>",
		`<a xmlns:p="u" xmlns:r="u" p:x="1" r:x="2"/>`,
		`<a><!DOCTYPE b></a>`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		out, err := AppendCleanElement(nil, in)
		if err != nil {
			return
		}
		if bytes.Contains(out, []byte("<!--")) || bytes.Contains(out, []byte("<?")) || bytes.Contains(out, []byte("<!")) {
			t.Fatalf("%q: output %q carries a comment, PI or directive", in, out)
		}
		want, err := cleanTokens(in)
		if err != nil {
			t.Fatalf("%q accepted, but does not parse: %v", in, err)
		}
		got, err := cleanTokens(out)
		if err != nil {
			t.Fatalf("%q: output %q does not parse: %v", in, out, err)
		}
		if !slices.Equal(got, want) {
			t.Fatalf("%q: output %q\n got tokens %q\nwant tokens %q", in, out, got, want)
		}
		// Namespace-aware parsers must agree: an element in the stream's
		// namespace would not be what the device was sent.
		if got, _ := AppendCleanElement(nil, out); !bytes.Equal(got, out) {
			t.Fatalf("%q: not stable: %q then %q", in, out, got)
		}
	})
}

// cleanTokens lists what of a document reaches a device: elements with
// their resolved names and attributes (declarations and repeats left out),
// and text (adjacent runs joined, outside the element ignored).
func cleanTokens(b []byte) ([]string, error) {
	d := newSafeDecoder(bytes.NewReader(b))
	var out []string
	var text strings.Builder
	depth := 0
	flush := func() {
		if text.Len() > 0 {
			out = append(out, "text "+text.String())
			text.Reset()
		}
	}
	for {
		tok, err := d.Token()
		if errors.Is(err, io.EOF) {
			flush()
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		switch t := tok.(type) {
		case xml.StartElement:
			flush()
			depth++
			s := "start {" + t.Name.Space + "}" + t.Name.Local
			seen := map[xml.Name]bool{}
			var attrs []string
			for _, a := range t.Attr {
				if a.Name.Space == "xmlns" || a.Name.Space == "" && a.Name.Local == "xmlns" || seen[a.Name] {
					continue
				}
				seen[a.Name] = true
				attrs = append(attrs, fmt.Sprintf("{%s}%s=%q", a.Name.Space, a.Name.Local, a.Value))
			}
			slices.Sort(attrs)
			out = append(out, s+" "+strings.Join(attrs, " "))
		case xml.EndElement:
			flush()
			depth--
			out = append(out, "end {"+t.Name.Space+"}"+t.Name.Local)
		case xml.CharData:
			if depth > 0 {
				text.Write(t)
			}
		}
	}
}
