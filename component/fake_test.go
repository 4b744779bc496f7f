package component

import (
	"bufio"
	"crypto/sha1" //nolint:gosec // XEP-0114
	"encoding/hex"
	"encoding/xml"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeServer is a minimal XEP-0114 server peer for protocol edge cases a real
// server can't produce on demand. Each accepted connection is handed to
// onConn after the handshake (or to reject, which sends a stream error).
type fakeServer struct {
	t      *testing.T
	ln     net.Listener
	secret string
	// reject, when set, is sent as a stream error instead of accepting the
	// handshake.
	reject string

	mu    sync.Mutex
	conns []*fakeConn
	dials int
	ready chan *fakeConn
}

type fakeConn struct {
	net.Conn
	dec *xml.Decoder
	w   *bufio.Writer
	mu  sync.Mutex
}

func newFakeServer(t *testing.T, secret string) *fakeServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fs := &fakeServer{t: t, ln: ln, secret: secret, ready: make(chan *fakeConn, 16)}
	go fs.accept()
	t.Cleanup(func() {
		ln.Close()
		fs.mu.Lock()
		for _, c := range fs.conns {
			c.Close()
		}
		fs.mu.Unlock()
	})
	return fs
}

func (fs *fakeServer) addr() string { return fs.ln.Addr().String() }

func (fs *fakeServer) dialCount() int {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return fs.dials
}

func (fs *fakeServer) accept() {
	for {
		c, err := fs.ln.Accept()
		if err != nil {
			return
		}
		fc := &fakeConn{Conn: c, dec: xml.NewDecoder(c), w: bufio.NewWriter(c)}
		fs.mu.Lock()
		fs.conns = append(fs.conns, fc)
		fs.dials++
		reject := fs.reject
		fs.mu.Unlock()
		go fs.handshake(fc, reject)
	}
}

func (fs *fakeServer) setReject(cond string) {
	fs.mu.Lock()
	fs.reject = cond
	fs.mu.Unlock()
}

func (fs *fakeServer) handshake(fc *fakeConn, reject string) {
	// Stream header from the component.
	for {
		tok, err := fc.dec.Token()
		if err != nil {
			return
		}
		if se, ok := tok.(xml.StartElement); ok && se.Name.Local == "stream" {
			break
		}
	}
	const id = "fake-stream-id"
	fc.send(`<?xml version='1.0'?><stream:stream xmlns:stream='http://etherx.jabber.org/streams' xmlns='jabber:component:accept' from='iot.localhost' id='` + id + `'>`)
	var hs struct {
		Data string `xml:",chardata"`
	}
	start, err := fc.nextStart()
	if err != nil || start.Name.Local != "handshake" {
		return
	}
	if err := fc.dec.DecodeElement(&hs, &start); err != nil {
		return
	}
	sum := sha1.Sum([]byte(id + fs.secret)) //nolint:gosec
	switch {
	case reject != "":
		fc.send(`<stream:error><` + reject + ` xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error></stream:stream>`)
		fc.Close()
		return
	case hs.Data != hex.EncodeToString(sum[:]):
		fc.send(`<stream:error><not-authorized xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error></stream:stream>`)
		fc.Close()
		return
	}
	fc.send(`<handshake/>`)
	fs.ready <- fc
}

// conn waits for the next established connection.
func (fs *fakeServer) conn() *fakeConn {
	fs.t.Helper()
	select {
	case c := <-fs.ready:
		return c
	case <-time.After(5 * time.Second):
		fs.t.Fatal("component did not connect to the fake server")
		return nil
	}
}

func (fc *fakeConn) send(s string) {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	io.WriteString(fc.w, s)
	fc.w.Flush()
}

func (fc *fakeConn) nextStart() (xml.StartElement, error) {
	for {
		tok, err := fc.dec.Token()
		if err != nil {
			return xml.StartElement{}, err
		}
		switch t := tok.(type) {
		case xml.StartElement:
			return t, nil
		case xml.EndElement:
			return xml.StartElement{}, io.EOF
		}
	}
}

// fakeStanza is what the fake server reads back from the component.
type fakeStanza struct {
	XMLName xml.Name
	ID      string `xml:"id,attr"`
	From    string `xml:"from,attr"`
	To      string `xml:"to,attr"`
	Type    string `xml:"type,attr"`
	Inner   string `xml:",innerxml"`
}

// read returns the next stanza the component sent, skipping keepalive pings
// (answered) unless keepPings.
func (fc *fakeConn) read(t *testing.T) fakeStanza {
	t.Helper()
	fc.SetReadDeadline(time.Now().Add(5 * time.Second))
	defer fc.SetReadDeadline(time.Time{})
	for {
		start, err := fc.nextStart()
		if err != nil {
			t.Fatalf("fake server read: %v", err)
		}
		var st fakeStanza
		if err := fc.dec.DecodeElement(&st, &start); err != nil {
			t.Fatalf("fake server decode: %v", err)
		}
		if strings.Contains(st.Inner, "urn:xmpp:ping") && st.To == "localhost" {
			fc.send(fmt.Sprintf(`<iq type='result' id='%s' from='localhost' to='%s'/>`, st.ID, st.From))
			continue
		}
		return st
	}
}
