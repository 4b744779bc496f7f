package devices

import (
	"errors"
	"testing"

	"github.com/iotgate/iotgate"
)

// errDetail is the detail of err's *iotgate.Error, "" for none.
func errDetail(err error) string {
	var e *iotgate.Error
	if errors.As(err, &e) {
		return e.Detail + "/" + e.Code
	}
	if err != nil {
		return "other"
	}
	return ""
}

// FuzzPlainXML checks plainXML's shortcut (no "<!" and no "<?": nothing
// to refuse) against reading every token.
func FuzzPlainXML(f *testing.F) {
	for _, s := range []string{
		"<set xmlns='urn:t'><target>1</target></set>",
		"<?xml version='1.0'?><set/>",
		"<set><!--x--></set>",
		"<set><![CDATA[<!--]]></set>",
		"<!DOCTYPE set><set/>",
		"<set a='&lt;!--'>&lt;?x?&gt;</set>",
		"<set><?x?></set>",
		"<set a='<!--'/>",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, payload []byte) {
		if got, want := errDetail(plainXML(payload)), errDetail(plainXMLTokens(payload)); got != want {
			t.Errorf("plainXML(%q) = %q, reading every token %q", payload, got, want)
		}
	})
}

// BenchmarkPlainXML compares plainXML's shortcut with reading every token
// of a typical command payload.
func BenchmarkPlainXML(b *testing.B) {
	p := []byte(payload)
	for _, bm := range []struct {
		name string
		f    func([]byte) error
	}{{"Shortcut", plainXML}, {"Tokens", plainXMLTokens}} {
		b.Run(bm.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := bm.f(p); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
