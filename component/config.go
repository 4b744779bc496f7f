package component

import (
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/iotgate/iotgate/devices"
)

// Config configures a Conn. Zero durations and sizes take the defaults noted.
type Config struct {
	// Addr is host:port of the server's component listener.
	Addr string
	// Domain is the component's JID, e.g. iot.example.com.
	Domain string
	// Secret is the shared secret of the handshake.
	Secret string
	// PingTo is where keepalive pings go. Default: Domain without its first
	// label (the server's own domain); an IP-literal Domain itself.
	PingTo string

	// Software and Version are reported by XEP-0092 and disco.
	Software string
	Version  string

	QueueSize        int           // outgoing stanzas waiting for the writer; default 4096
	MaxPendingIQs    int           // IQs awaiting a reply; default 10000
	MaxStanzaBytes   int           // largest incoming stanza kept; larger ones are skipped and refused; default DefaultMaxStanzaBytes
	MaxStanzaDepth   int           // deepest nesting of an incoming stanza kept (the stanza is 1); default 64
	DialTimeout      time.Duration // default 5s
	HandshakeTimeout time.Duration // default 10s
	WriteTimeout     time.Duration // a write blocked longer kills the stream, unless the server's TCP stack is alive (then KeepAliveSlowTimeout); default 10s
	KeepAlive        time.Duration // ping interval; default 15s
	KeepAliveTimeout time.Duration // ping answer deadline; default 10s
	// KeepAliveSlowTimeout is how long after a missed keepalive ping a
	// server whose connection is still alive (bytes flow, TCP acknowledges)
	// may stay silent before the stream is dropped; default 60s, at least
	// KeepAliveTimeout.
	KeepAliveSlowTimeout time.Duration
	MinBackoff           time.Duration // first reconnect delay; default 250ms
	MaxBackoff           time.Duration // reconnect delay cap; default 5s
	CloseTimeout         time.Duration // wait for the server's </stream:stream> on shutdown; default 2s
	// ConflictBackoff is the reconnect delay (with jitter: half to all of
	// it) while the server refuses the stream with conflict, as it does a
	// standby on Prosody; default 2s. See Run.
	ConflictBackoff time.Duration

	// Disco configures the answers to service discovery.
	Disco DiscoConfig

	// DeviceDomains, unless it allows any, refuses stanzas from other
	// domains before any handler sees them: IQ requests are answered
	// cancel/not-allowed, messages and presence dropped (and counted:
	// DomainRefused). The component's own domain always passes.
	DeviceDomains devices.DomainAllowList

	Logger *slog.Logger

	// tcpAlive says whether the peer's TCP stack is alive (tcpConnAlive);
	// tests replace it to play a dead host, which loopback can't.
	tcpAlive func(conn net.Conn, within time.Duration) (alive, known bool)
}

func (c *Config) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	defInt := func(d *int, v int) {
		if *d <= 0 {
			*d = v
		}
	}
	defInt(&c.QueueSize, 4096)
	defInt(&c.MaxPendingIQs, 10000)
	defInt(&c.MaxStanzaBytes, DefaultMaxStanzaBytes)
	defInt(&c.MaxStanzaDepth, 64)
	def(&c.DialTimeout, 5*time.Second)
	def(&c.HandshakeTimeout, 10*time.Second)
	def(&c.WriteTimeout, 10*time.Second)
	def(&c.KeepAlive, 15*time.Second)
	def(&c.KeepAliveTimeout, 10*time.Second)
	def(&c.KeepAliveSlowTimeout, 60*time.Second)
	c.KeepAliveSlowTimeout = max(c.KeepAliveSlowTimeout, c.KeepAliveTimeout)
	def(&c.MinBackoff, 250*time.Millisecond)
	def(&c.MaxBackoff, 5*time.Second)
	def(&c.ConflictBackoff, 2*time.Second)
	def(&c.CloseTimeout, 2*time.Second)
	c.Disco.setDefaults()
	if c.PingTo == "" {
		// An IP-literal domain has no parent: ping it, through the
		// server, which proves the server alive all the same.
		if net.ParseIP(c.Domain) != nil {
			c.PingTo = c.Domain
		} else if _, parent, ok := strings.Cut(c.Domain, "."); ok {
			c.PingTo = parent
		} else {
			c.PingTo = c.Domain
		}
	}
	if c.tcpAlive == nil {
		c.tcpAlive = tcpConnAlive
	}
	if c.Software == "" {
		c.Software = "iotgate"
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}
