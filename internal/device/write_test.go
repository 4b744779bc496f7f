package device

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"mellium.im/xmpp/jid"
)

// peer is the server end of a device's stream over TLS, negotiated with no
// features: enough to exercise the device's reads and writes on the
// connection that breaks for good after a timed-out write.
type peer struct {
	conn *tls.Conn
	dec  *xml.Decoder
}

// startPeer returns a device (with opts) logged in to a fake peer over TLS,
// and the peer. The device is started with a context that is cancelled
// as soon as it is up, as a caller's deferred cancel would.
func startPeer(t *testing.T, opts Options) (*Client, *peer) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cert := selfSigned(t)
	peerc := make(chan *peer, 1)
	errc := make(chan error, 1)
	go func() {
		raw, err := ln.Accept()
		if err != nil {
			errc <- err
			return
		}
		conn := tls.Server(raw, &tls.Config{Certificates: []tls.Certificate{cert}})
		p := &peer{conn: conn, dec: xml.NewDecoder(conn)}
		for { // the device's stream header
			tok, err := p.dec.Token()
			if err != nil {
				errc <- err
				return
			}
			if se, ok := tok.(xml.StartElement); ok && se.Name.Local == "stream" {
				break
			}
		}
		_, err = io.WriteString(conn, `<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' id='s1' from='localhost' version='1.0'><stream:features></stream:features>`)
		if err != nil {
			errc <- err
			return
		}
		peerc <- p
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	conn := rawClose{tls.Client(raw, &tls.Config{InsecureSkipVerify: true}), raw} //nolint:gosec // test peer
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	c, err := start(ctx, conn, jid.MustParse("dev@localhost"), opts, nil)
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.conn.Close(); <-c.done })
	select {
	case p := <-peerc:
		t.Cleanup(func() { p.conn.Close() })
		return c, p
	case err := <-errc:
		t.Fatal(err)
	case <-time.After(10 * time.Second):
		t.Fatal("peer: no stream in 10s")
	}
	return nil, nil
}

// rawClose is a TLS connection whose Close closes the TCP connection at
// once, as the Client's does after Dial (mellium's TLS sits above it):
// tls.Conn's own Close would first try for 5 s to send close_notify to a
// peer that may not read.
type rawClose struct {
	*tls.Conn
	raw net.Conn
}

func (c rawClose) Close() error { return c.raw.Close() }

func selfSigned(t *testing.T) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "localhost"}, DNSNames: []string{"localhost"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// TestKeepsAnswering sends the device IQs while it sends messages of its
// own, each with a context cancelled once the send returned (the usual
// defer cancel()). Every IQ must be answered and the session stay up: a
// deadline armed for one write must never interrupt another (#17: with
// mellium's Send given those contexts, a device stopped answering for
// good, its session up).
func TestKeepsAnswering(t *testing.T) {
	for _, tt := range []struct {
		name               string
		iqs, window        int
		senders, perSender int
		rounds             int // the fault is a race: each round is a new chance to hit it
	}{
		{"Quiet", 200, 8, 0, 0, 1},
		{"WhileSending", 8000, 32, 8, 3000, 4}, // a window under MaxPendingIQs: no wait errors
	} {
		for round := range tt.rounds {
			t.Run(fmt.Sprintf("%s/%d", tt.name, round+1), func(t *testing.T) {
				c, p := startPeer(t, Options{IQHandler: func(IQ) Reply { return Reply{Type: "result", Payload: `<ok xmlns="urn:test"/>`} }})

				// The peer's reader counts the answers, and frees a place in
				// the window for each; it reads on until the connection closes,
				// so that the device's messages never fill the buffers.
				window := make(chan struct{}, tt.window)
				var results atomic.Int64
				go func() {
					for {
						tok, err := p.dec.Token()
						if err != nil {
							return
						}
						se, ok := tok.(xml.StartElement)
						if !ok || se.Name.Local == "stream" {
							continue
						}
						st, err := readStanza(se, p.dec)
						if err != nil {
							return
						}
						if se.Name.Local == "iq" {
							if st.attr("type") == "result" && strings.HasPrefix(st.attr("id"), "q") {
								results.Add(1)
							}
							<-window
						}
					}
				}()

				var wg sync.WaitGroup
				var sendErrs atomic.Int64
				for range tt.senders {
					wg.Go(func() {
						for range tt.perSender {
							ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
							err := c.SendMessage(ctx, "peer@localhost", "", `<x xmlns="urn:test"/>`)
							cancel()
							if err != nil {
								sendErrs.Add(1)
								return
							}
						}
					})
				}
				// Each IQ waits for a place in the window, so a device that
				// stops answering stops this loop: bound it in time.
				deadline := time.Now().Add(30 * time.Second)
			send:
				for i := range tt.iqs {
					select {
					case window <- struct{}{}:
					case <-time.After(time.Until(deadline)):
						break send
					case <-c.Done():
						break send
					}
					if _, err := fmt.Fprintf(p.conn, `<iq type="get" id="q%d" from="peer@localhost/r" to="dev@localhost"><q xmlns="urn:test"/></iq>`, i); err != nil {
						t.Errorf("peer: write IQ %d: %v (device session error: %v)", i, err, c.Err())
						break
					}
				}
				for results.Load() < int64(tt.iqs) && time.Now().Before(deadline) && c.Err() == nil {
					time.Sleep(10 * time.Millisecond)
				}
				wg.Wait()
				if n := results.Load(); n != int64(tt.iqs) {
					t.Errorf("answered %d of %d IQs with a result (session error: %v)", n, tt.iqs, c.Err())
				}
				if n := sendErrs.Load(); n != 0 {
					t.Errorf("%d senders saw a failed send (session error: %v)", n, c.Err())
				}
				select {
				case <-c.Done():
					t.Errorf("session ended: %v", c.Err())
				default:
				}
			})
		}
	}
}

// TestWriteTimeoutEndsSession: a peer that stops reading makes a write
// time out; that must end the session, with the cause in Err, rather than
// leave a device that reads on and can never answer.
func TestWriteTimeoutEndsSession(t *testing.T) {
	c, _ := startPeer(t, Options{WriteTimeout: 200 * time.Millisecond})
	payload := `<x xmlns="urn:test">` + strings.Repeat("a", 256<<10) + `</x>`
	var sendErr error
	deadline := time.Now().Add(20 * time.Second)
	for i := 0; sendErr == nil && time.Now().Before(deadline); i++ {
		sendErr = c.SendMessage(context.Background(), "peer@localhost", "", payload)
	}
	if sendErr == nil {
		t.Fatal("the writes never blocked: the peer's buffers took 20s of messages")
	}
	select {
	case <-c.Done():
	case <-time.After(5 * time.Second):
		t.Fatalf("session still up 5s after a failed write (%v)", sendErr)
	}
	if err := c.Err(); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("Err = %v; want the write timeout", err)
	}
	if err := c.SendMessage(context.Background(), "peer@localhost", "", `<x xmlns="urn:test"/>`); !errors.Is(err, ErrClosed) {
		t.Errorf("send after the session ended = %v; want ErrClosed", err)
	}
}
