// Package component connects iotgate to an XMPP server as an external
// component (XEP-0114) and keeps it connected.
//
// A Conn dials the server's component port, performs the handshake and runs
// the stream: one reader, one writer fed by a bounded queue, a keepalive ping
// that notices a dead TCP connection, and IQ tracking that accepts a reply
// only from the entity the request was sent to. When the stream drops, every
// pending IQ fails at once and the Conn reconnects with capped exponential
// backoff and jitter, forever, until its context ends.
//
// The stream protocol is small enough that it is implemented here on
// encoding/xml rather than on a general XMPP library: iotgate needs control
// over deadlines, queueing and reply matching that the libraries we studied
// don't give (see docs/design.md). JIDs are handled with
// mellium.im/xmpp/jid and stanza error conditions with mellium.im/xmpp/stanza.
//
// Where to read: conn.go connects and reconnects (backoff, health);
// session.go runs one stream's read, write and keepalive loops; stream.go
// and framer.go read it; mux.go routes each stanza, to the built-ins of
// builtin.go (disco, ping, version) or to the installed Handler (readings.go,
// presence.go); iq.go matches IQ replies to their requests.
//
// It may import the root package iotgate and devices (the ingest
// scheduler, the domain allow-list, the CommandSender port it implements);
// never api (HTTP), postgres or cmd.
package component
