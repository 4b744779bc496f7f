package component

import (
	"bytes"
	"encoding/xml"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

const testHeader = `<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams' id='x'>`

// frames runs a framer over testHeader+data and returns the frames until
// the first error, copied.
func frames(t testing.TB, data string, max, maxDepth int, r func(io.Reader) io.Reader) ([]frame, error) {
	t.Helper()
	var in io.Reader = strings.NewReader(testHeader + data)
	if r != nil {
		in = r(in)
	}
	f := newFramer(in, max, maxDepth)
	h, err := f.readHeader()
	if err != nil {
		t.Fatalf("header: %v", err)
	}
	if !bytes.HasSuffix(h, []byte("id='x'>")) {
		t.Fatalf("header = %q", h)
	}
	var out []frame
	for {
		fr, err := f.next()
		if err != nil {
			return out, err
		}
		fr.raw = bytes.Clone(fr.raw)
		out = append(out, fr)
	}
}

func TestFramer(t *testing.T) {
	tests := []struct {
		name     string
		in       string
		max      int
		want     []string // raw of each frame
		over     []bool
		wantErr  error
		wantCond string // of an *xmlError
	}{
		{name: "Stanzas", in: ` <a/> <b x='>'>t</b>` + "\n" + `<c><d/></c></stream:stream>`, max: 100,
			want: []string{`<a/>`, `<b x='>'>t</b>`, `<c><d/></c>`}, wantErr: errPeerClosed},
		{name: "QuotesHideTags", in: `<a x="</a>" y='/>'><b z="'"/></a>`, max: 100,
			want: []string{`<a x="</a>" y='/>'><b z="'"/></a>`}, wantErr: io.EOF},
		{name: "CDATAHidesTags", in: `<a><![CDATA[</a><b>]]]]></a><c/>`, max: 100,
			want: []string{`<a><![CDATA[</a><b>]]]]></a>`, `<c/>`}, wantErr: io.EOF},
		{name: "CommentsAndPIsInside", in: `<a><!-- </a> --><?p </a> ?></a>`, max: 100,
			want: []string{`<a><!-- </a> --><?p </a> ?></a>`}, wantErr: io.EOF},
		{name: "OverKeepsStartTag", in: `<iq id='1' type='set'><r>` + strings.Repeat("x", 200) + `</r></iq><c/>`, max: 64,
			want: []string{`<iq id='1' type='set'/>`, `<c/>`}, over: []bool{true, false}, wantErr: io.EOF},
		{name: "OverStartTagTooLarge", in: `<iq id='` + strings.Repeat("x", 200) + `'><r/></iq><c/>`, max: 64,
			want: []string{``, `<c/>`}, over: []bool{true, false}, wantErr: io.EOF},
		{name: "OverSelfClosing", in: `<iq id='1' x='` + strings.Repeat("x", 200) + `'/><c/>`, max: 64,
			want: []string{``, `<c/>`}, over: []bool{true, false}, wantErr: io.EOF},
		{name: "Deep", in: `<a>` + strings.Repeat("<b>", 10) + strings.Repeat("</b>", 10) + `</a><c/>`, max: 1000,
			want: []string{`<a/>`, `<c/>`}, wantErr: io.EOF},
		{name: "CommentBetween", in: `<a/><!-- x --><b/>`, max: 100, want: []string{`<a/>`}, wantCond: "restricted-xml"},
		{name: "CDATABetween", in: `<a/><![CDATA[<b/>]]> <![CDATA[]]><c/>`, max: 100, want: []string{`<a/>`, `<c/>`}, wantErr: io.EOF},
		{name: "CDATABetweenOverLimit", in: `<a/><![CDATA[0123456789abcdefghij]]><c/>`, max: 8, want: []string{`<a/>`, `<c/>`}, wantErr: io.EOF},
		{name: "CommentBetweenFirst", in: `<!-- x --><b/>`, max: 100, wantCond: "restricted-xml"},
		{name: "PIBetween", in: `<a/><?x?>`, max: 100, want: []string{`<a/>`}, wantCond: "restricted-xml"},
		{name: "DoctypeInside", in: `<a><!DOCTYPE x></a>`, max: 100, wantCond: "restricted-xml"},
		{name: "Truncated", in: `<a><b>`, max: 100, wantErr: io.ErrUnexpectedEOF},
	}
	for _, tt := range tests {
		for _, mode := range []struct {
			name string
			r    func(io.Reader) io.Reader
		}{{"Whole", nil}, {"OneByte", iotest.OneByteReader}} {
			t.Run(tt.name+"/"+mode.name, func(t *testing.T) {
				got, err := frames(t, tt.in, tt.max, 5, mode.r)
				var xe *xmlError
				switch {
				case tt.wantCond != "":
					if !errors.As(err, &xe) || xe.cond != tt.wantCond {
						t.Errorf("err = %v, want %s", err, tt.wantCond)
					}
				case !errors.Is(err, tt.wantErr):
					t.Errorf("err = %v, want %v", err, tt.wantErr)
				}
				if len(got) != len(tt.want) {
					t.Fatalf("got %d frames, want %d: %+v", len(got), len(tt.want), got)
				}
				for i, fr := range got {
					if string(fr.raw) != tt.want[i] {
						t.Errorf("frame %d = %q, want %q", i, fr.raw, tt.want[i])
					}
					if tt.over != nil && fr.over != tt.over[i] {
						t.Errorf("frame %d over = %v, want %v", i, fr.over, tt.over[i])
					}
				}
			})
		}
	}
}

// xmlFrames is what encoding/xml says the top-level elements of
// testHeader+data+</stream:stream> are. ok is false when it refuses the
// input or the input holds what the framer refuses by design (directives
// anywhere, comments or PIs between elements).
func xmlFrames(data []byte) (raws [][]byte, ok bool) {
	in := append(append([]byte(testHeader), data...), "</stream:stream>"...)
	d := newSafeDecoder(bytes.NewReader(in))
	depth := -1
	for {
		off := d.InputOffset()
		tok, err := d.Token()
		if err != nil {
			return raws, false
		}
		switch t := tok.(type) {
		case xml.StartElement:
			depth++
			if depth == 0 {
				continue // the stream header
			}
			if err := skipNoDirective(d); err != nil {
				return raws, false
			}
			depth--
			raws = append(raws, in[off:d.InputOffset()])
		case xml.EndElement:
			if depth == 0 {
				return raws, t.Name.Local == "stream"
			}
		case xml.CharData:
		default:
			if depth == 0 {
				return raws, false
			}
		}
	}
}

func skipNoDirective(d *xml.Decoder) error {
	for depth := 1; depth > 0; {
		tok, err := d.Token()
		if err != nil {
			return err
		}
		switch tok.(type) {
		case xml.StartElement:
			depth++
		case xml.EndElement:
			depth--
		case xml.Directive:
			return errors.New("directive")
		}
	}
	return nil
}

// FuzzFramer checks the framer against encoding/xml: on input encoding/xml
// accepts, the framer finds the same elements; with small limits it finds
// elements of the same sizes and keeps no more than the limit; it never
// panics.
func FuzzFramer(f *testing.F) {
	for _, s := range []string{
		`<message from='a@b/c'><body>x</body></message>`,
		`<iq type='result' id='1'/><presence/>`,
		`<a x="</a>" y='/>'><![CDATA[</a>]]><!-- </a> --><?p ?></a>`,
		`<a><b><c><d><e><f/></e></d></c></b></a>`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		in := string(data) + "</stream:stream>"
		big, bigErr := frames(t, in, 1<<20, 1<<20, nil)
		small, _ := frames(t, in, 16, 3, iotest.HalfReader)
		for _, fr := range small {
			if len(fr.raw) > 16+1 { // +1: the '/' of a self-closed start tag
				t.Fatalf("kept %d bytes with a limit of 16", len(fr.raw))
			}
		}
		want, ok := xmlFrames(data)
		if !ok {
			return
		}
		if !errors.Is(bigErr, errPeerClosed) {
			t.Fatalf("framer: %v; encoding/xml accepts the input", bigErr)
		}
		if len(big) != len(want) || len(small) != len(want) {
			t.Fatalf("framer found %d (small limits: %d) elements, encoding/xml %d", len(big), len(small), len(want))
		}
		for i := range want {
			if !bytes.Equal(big[i].raw, want[i]) {
				t.Fatalf("element %d: framer %q, encoding/xml %q", i, big[i].raw, want[i])
			}
			if small[i].size != len(want[i]) {
				t.Fatalf("element %d: size %d with small limits, want %d", i, small[i].size, len(want[i]))
			}
		}
	})
}
