package component

import (
	"bufio"
	"context"
	"crypto/sha1" //nolint:gosec // XEP-0114
	"encoding/hex"
	"encoding/xml"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/iotgate/iotgate"
	"github.com/iotgate/iotgate/devices"
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
// (answered).
func (fc *fakeConn) read(t *testing.T) fakeStanza {
	t.Helper()
	for {
		st := fc.readAny(t)
		if strings.Contains(st.Inner, "urn:xmpp:ping") && st.To == "localhost" {
			fc.send(fmt.Sprintf(`<iq type='result' id='%s' from='localhost' to='%s'/>`, st.ID, st.From))
			continue
		}
		return st
	}
}

// readAny returns the next stanza the component sent, pings included.
func (fc *fakeConn) readAny(t *testing.T) fakeStanza {
	t.Helper()
	fc.SetReadDeadline(time.Now().Add(5 * time.Second))
	defer fc.SetReadDeadline(time.Time{})
	start, err := fc.nextStart()
	if err != nil {
		t.Fatalf("fake server read: %v", err)
	}
	var st fakeStanza
	if err := fc.dec.DecodeElement(&st, &start); err != nil {
		t.Fatalf("fake server decode: %v", err)
	}
	return st
}

// startConn runs a connection to addr until the test ends; mod changes
// its configuration.
func startConn(t *testing.T, addr, secret string, mod func(*Config)) *Conn {
	t.Helper()
	c := newTestConn(t, addr, secret, mod)
	runConn(t, c)
	return c
}

// newTestConn makes a connection to addr that is not running yet, so that
// a test can set its handler first; mod changes its configuration.
func newTestConn(t *testing.T, addr, secret string, mod func(*Config)) *Conn {
	t.Helper()
	cfg := Config{Addr: addr, Domain: "iot.localhost", Secret: secret, Version: "test",
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond, CloseTimeout: 50 * time.Millisecond}
	if mod != nil {
		mod(&cfg)
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// runConn runs c until the test ends.
func runConn(t *testing.T, c *Conn) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Error("Run did not return after cancel")
		}
	})
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func isUp(c *Conn) bool {
	ok, _, _ := c.Health(context.Background())
	return ok
}

// oversizeRecorder is a Handler that notes the oversize stanzas it is told of.
type oversizeRecorder struct {
	got chan *Stanza
}

func (o *oversizeRecorder) HandleStanza(context.Context, *Stanza) bool { return false }
func (o *oversizeRecorder) HandleOversize(_ context.Context, st *Stanza, _ string) {
	o.got <- st
}

// fakeDirectory holds registered devices, sorted by JID; a page cursor is
// the index of the next device. block, when set, holds Registered until it
// is closed.
type fakeDirectory struct {
	jids  []string
	down  atomic.Bool
	block chan struct{}
}

func (f *fakeDirectory) Registered(ctx context.Context, j string) (bool, error) {
	if f.block != nil {
		<-f.block
	}
	if f.down.Load() {
		return false, &iotgate.Error{Code: iotgate.EUnavailable, Message: "device registry unavailable"}
	}
	bare, err := iotgate.BareJID(j)
	return slices.Contains(f.jids, bare), err
}

func (f *fakeDirectory) Devices(_ context.Context, flt iotgate.DeviceFilter) (*iotgate.DevicePage, error) {
	from := 0
	if flt.Cursor != "" {
		n, err := strconv.Atoi(flt.Cursor)
		if err != nil || n < 0 || n > len(f.jids) {
			return nil, iotgate.Errorf(iotgate.EInvalid, "bad cursor")
		}
		from = n
	}
	to := min(from+flt.Limit, len(f.jids))
	p := &iotgate.DevicePage{}
	for _, j := range f.jids[from:to] {
		p.Items = append(p.Items, &iotgate.Device{JID: j, Name: "name of " + j})
	}
	if to < len(f.jids) {
		p.NextCursor = strconv.Itoa(to)
	}
	return p, nil
}

// fakeIngester decides by the sender's JID and the payload's text, so each
// case says what it wants: a JID with "stranger" in it is not registered,
// one that starts with "thr" is a throttled stranger; a payload with "bad"
// in it is invalid, "dbdown" meets a database that is down, "block" waits
// until gate closes (when gate is set). got, when set, receives every
// reading. Readings are committed from another goroutine, unless gate is
// set: a lane's answers then come in its order.
type fakeIngester struct {
	got           chan iotgate.IncomingReading
	gate, blocked chan struct{}
}

func (f *fakeIngester) Sender(jid string) devices.SenderStatus {
	switch {
	case strings.HasPrefix(jid, "thr"):
		return devices.SenderThrottled
	case strings.Contains(jid, "stranger"):
		return devices.SenderUnseen
	}
	return devices.SenderRegistered
}

func (f *fakeIngester) Ingest(_ context.Context, in iotgate.IncomingReading, done func(error)) {
	if f.got != nil {
		f.got <- in
	}
	var last string
	if len(in.Payloads) > 0 {
		last = string(in.Payloads[len(in.Payloads)-1].XML)
	}
	if f.gate != nil && strings.Contains(last, "block") {
		select {
		case f.blocked <- struct{}{}:
		default:
		}
		<-f.gate
	}
	switch {
	case strings.Contains(in.From, "stranger"):
		done(devices.ErrNotRegistered)
	case strings.Contains(last, "bad"):
		done(iotgate.Errorf(iotgate.EInvalid, "line 1: /r/v: 'bad' is not a valid decimal"))
	case strings.Contains(last, "dbdown"):
		done(&iotgate.Error{Code: iotgate.EUnavailable, Message: "readings could not be stored, try again later"})
	case f.gate != nil:
		done(nil)
	default:
		go done(nil) // committed later, from another goroutine
	}
}

// fakeNamespaces serves a fixed set of namespaces.
type fakeNamespaces []string

func (f fakeNamespaces) ServesNamespace(ns string) bool { return slices.Contains(f, ns) }
func (f fakeNamespaces) Namespaces() []string           { return f }

// idOf returns the id attribute of a stanza written with single quotes.
func idOf(s string) string {
	_, rest, _ := strings.Cut(s, "id='")
	id, _, _ := strings.Cut(rest, "'")
	return id
}
