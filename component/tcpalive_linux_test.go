//go:build linux

package component

import (
	"net"
	"testing"
	"time"
)

// TestTCPConnAlive: a peer whose application stops reading is alive (its
// stack shuts its window and answers the probes); a connection that isn't
// TCP can't be asked. A dead host can't be played on loopback: the
// keepalive tests replace tcpAlive for that.
func TestTCPConnAlive(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c // never read
		}
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	peer := <-accepted
	defer peer.Close()
	pipeA, pipeB := net.Pipe()
	defer pipeA.Close()
	defer pipeB.Close()

	tests := []struct {
		name      string
		conn      net.Conn
		fill      bool // write until the peer's window is shut
		wantAlive bool
		wantKnown bool
	}{
		{name: "Idle", conn: c, wantAlive: true, wantKnown: true},
		{name: "PeerNotReading", conn: c, fill: true, wantAlive: true, wantKnown: true},
		{name: "NotTCP", conn: pipeA, wantAlive: false, wantKnown: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.fill {
				buf := make([]byte, 1<<20)
				for {
					tt.conn.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
					if _, err := tt.conn.Write(buf); err != nil {
						break // blocked: the buffers are full
					}
				}
				time.Sleep(500 * time.Millisecond) // window probes go out
			}
			alive, known := tcpConnAlive(tt.conn, time.Second)
			if alive != tt.wantAlive || known != tt.wantKnown {
				t.Errorf("tcpConnAlive = (%v, %v), want (%v, %v)", alive, known, tt.wantAlive, tt.wantKnown)
			}
		})
	}
}
