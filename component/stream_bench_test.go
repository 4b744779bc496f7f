package component

import (
	"bytes"
	"fmt"
	"testing"
)

// BenchmarkStreamNext reads a stream of small stanzas, the ingest hot path:
// framing plus decoding of each stanza.
func BenchmarkStreamNext(b *testing.B) {
	const n = 1000
	var in bytes.Buffer
	in.WriteString(`<stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams' id='x'>`)
	for i := range n {
		fmt.Fprintf(&in, `<message from='thermo%d@localhost/dev' to='iot.localhost' id='m%d'><reading xmlns='urn:example:thermo'><celsius>21.5</celsius><humidity>40</humidity></reading></message>`, i, i)
	}
	data := in.Bytes()
	b.SetBytes(int64(len(data) / n))
	b.ReportAllocs()
	b.ResetTimer()
	for done := 0; done < b.N; {
		s := newStream(nil, bytes.NewReader(data), 1<<20, 64)
		if err := s.readHeader(); err != nil {
			b.Fatal(err)
		}
		for i := 0; i < n && done < b.N; i++ {
			if _, err := s.next(); err != nil {
				b.Fatal(err)
			}
			done++
		}
	}
}
