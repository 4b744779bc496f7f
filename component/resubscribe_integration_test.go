//go:build integration

package component_test

import (
	"context"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/iotgate/iotgate"
	"github.com/iotgate/iotgate/component"
	"github.com/iotgate/iotgate/devices"
	"github.com/iotgate/iotgate/internal/device"
	"github.com/iotgate/iotgate/internal/servers"
)

// TestResubscribeAfterDropRealServers: a device that subscribes to iotgate
// while iotgate's stream is down (the server bounces the request) is seen
// online once the stream is back, on both servers: the reconnection asks
// every registered device for its subscription, not only for its presence
// (a probe gets nothing from a device without a subscription). Issue #17:
// with 10,000 devices logging in, ejabberd's stalls dropped the stream and
// the devices that subscribed meanwhile were never seen.
func TestResubscribeAfterDropRealServers(t *testing.T) {
	for _, sc := range xmppServers {
		t.Run(sc.name, func(t *testing.T) {
			srv := sc.start(t, servers.XMPPOptions{Components: map[string]string{testDomain: testSecret}})
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			defer cancel()
			if err := srv.RegisterUser(ctx, "dev", "dev-pass"); err != nil {
				t.Fatal(err)
			}
			devJID := "dev@" + srv.Domain()
			proxy := newCutter(t, srv.ComponentAddr())
			c, err := component.New(component.Config{Addr: proxy.addr(), Domain: testDomain, Secret: testSecret,
				MinBackoff: 100 * time.Millisecond, MaxBackoff: 500 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			p := devices.NewPresence(nil, devices.PresenceConfig{})
			h := component.NewPresenceHandler(c, oneDevice{p: p, jid: devJID}, nil)
			c.SetHandler(h)
			runCtx, stop := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { c.Run(runCtx); close(done) }()
			defer func() { stop(); <-done }()
			waitHealth(t, c, true, 10*time.Second)

			// The stream drops and stays down while the device logs in
			// and subscribes.
			proxy.cut(true)
			waitHealth(t, c, false, 10*time.Second)
			dev, err := device.Dial(ctx, device.Options{Addr: srv.C2SAddr(), JID: devJID, Password: "dev-pass"})
			if err != nil {
				t.Fatal(err)
			}
			defer dev.Close()
			if err := dev.Subscribe(ctx, testDomain); err != nil {
				t.Fatal(err)
			}
			if err := dev.SendAvailable(ctx, 0, ""); err != nil {
				t.Fatal(err)
			}
			time.Sleep(500 * time.Millisecond) // the server bounces them
			if online, _ := p.Online(devJID); online {
				t.Fatal("device online while the stream is down")
			}

			proxy.cut(false)
			waitHealth(t, c, true, 10*time.Second)
			start := time.Now()
			for {
				if online, _ := p.Online(devJID); online {
					t.Logf("%s: device seen online %s after the reconnection (%d reconnects)", sc.name, time.Since(start).Round(time.Millisecond), c.Reconnects())
					break
				}
				if time.Since(start) > 15*time.Second {
					t.Fatalf("%s: device that subscribed while the stream was down not seen online 15 s after the reconnection", sc.name)
				}
				time.Sleep(50 * time.Millisecond)
			}
		})
	}
}

// oneDevice is the device service of one registered device, with
// presence kept in memory.
type oneDevice struct {
	p   *devices.Presence
	jid string
}

func (o oneDevice) UpdatePresence(_ context.Context, u iotgate.PresenceUpdate) error {
	bare, _, _ := strings.Cut(u.From, "/")
	return o.p.Update(&iotgate.Device{JID: bare}, u)
}
func (o oneDevice) Registered(_ context.Context, j string) (bool, error) { return j == o.jid, nil }
func (o oneDevice) DeviceJIDs(_ context.Context, after string, limit int) ([]string, error) {
	if after >= o.jid || limit < 1 {
		return nil, nil
	}
	return []string{o.jid}, nil
}
func (o oneDevice) PresenceStale()   { o.p.MarkStale() }
func (o oneDevice) PresenceFresh()   { o.p.MarkFresh() }
func (o oneDevice) PresenceProbing() { o.p.ProbesSending() }
func (o oneDevice) PresenceProbed()  { o.p.ProbesSent() }

// cutter is a TCP proxy to the server's component port that can cut the
// path: its connections are closed and new ones refused until it is
// restored.
type cutter struct {
	ln       net.Listener
	upstream string

	mu    sync.Mutex
	down  bool
	conns []net.Conn
}

func newCutter(t *testing.T, upstream string) *cutter {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &cutter{ln: ln, upstream: upstream}
	go c.accept()
	t.Cleanup(func() { ln.Close(); c.cut(true) })
	return c
}

func (c *cutter) addr() string { return c.ln.Addr().String() }

func (c *cutter) accept() {
	for {
		in, err := c.ln.Accept()
		if err != nil {
			return
		}
		c.mu.Lock()
		if c.down {
			c.mu.Unlock()
			in.Close()
			continue
		}
		out, err := net.Dial("tcp", c.upstream)
		if err != nil {
			c.mu.Unlock()
			in.Close()
			continue
		}
		c.conns = append(c.conns, in, out)
		c.mu.Unlock()
		go func() { io.Copy(out, in); out.Close() }()
		go func() { io.Copy(in, out); in.Close() }()
	}
}

// cut closes the connections and refuses new ones (down), or accepts
// them again.
func (c *cutter) cut(down bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.down = down
	if down {
		for _, x := range c.conns {
			x.Close()
		}
		c.conns = nil
	}
}
