package component

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/iotgate/iotgate/devices"
)

// benchStream returns a stream of n small readings, each from its own
// device.
func benchStream(n int) []byte {
	var in bytes.Buffer
	in.WriteString(`<stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams' id='x'>`)
	for i := range n {
		fmt.Fprintf(&in, `<message from='thermo%d@localhost/dev' to='iot.localhost' id='m%d'><reading xmlns='urn:example:thermo'><celsius>21.5</celsius><humidity>40</humidity></reading></message>`, i, i)
	}
	return in.Bytes()
}

// benchReadings runs each on every stanza of a stream of small readings, b.N
// stanzas in all.
func benchReadings(b *testing.B, each func(*Stanza)) {
	const n = 1000
	data := benchStream(n)
	b.SetBytes(int64(len(data) / n))
	b.ReportAllocs()
	b.ResetTimer()
	for done := 0; done < b.N; {
		s := newStream(nil, bytes.NewReader(data), 1<<20, 64)
		if err := s.readHeader(); err != nil {
			b.Fatal(err)
		}
		for i := 0; i < n && done < b.N; i++ {
			st, err := s.next()
			if err != nil {
				b.Fatal(err)
			}
			each(st)
			done++
		}
	}
}

// BenchmarkStreamNext reads a stream of small stanzas, the ingest hot path:
// framing plus decoding of each stanza.
func BenchmarkStreamNext(b *testing.B) {
	benchReadings(b, func(*Stanza) {})
}

// BenchmarkReadingPath follows a reading from the socket to what the
// component hands the device service (iotgate.IncomingReading): framing and
// decoding, the domain allow-list, the sender's bare JID (the lane and the
// rate limit), the payloads.
func BenchmarkReadingPath(b *testing.B) {
	allow, err := devices.NewDomainAllowList([]string{"localhost"})
	if err != nil {
		b.Fatal(err)
	}
	c, err := New(Config{Addr: "127.0.0.1:1", Domain: "iot.localhost", DeviceDomains: allow})
	if err != nil {
		b.Fatal(err)
	}
	benchReadings(b, func(st *Stanza) {
		if c.refuseDomain(nil, st) {
			b.Fatal("refused")
		}
		if _, err := st.bareFrom(); err != nil {
			b.Fatal(err)
		}
		in, err := incoming(st, "message")
		if err != nil || len(in.Payloads) != 1 {
			b.Fatal(in, err)
		}
	})
}
