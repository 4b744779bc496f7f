package component

import (
	"github.com/iotgate/iotgate"
)

// Namespaces is what the component needs to know of the registered
// schemas: which payload namespaces can be readings. Both methods read
// memory only: they are called on the stream's read loop.
type Namespaces interface {
	// ServesNamespace reports whether ns is the target namespace of a
	// registered schema version.
	ServesNamespace(ns string) bool
	// Namespaces lists them, sorted, for disco#info.
	Namespaces() []string
}

// notServed decides whether iotgate serves a device stanza at all, before
// anyone asks who sent it. A stanza that carries payloads, none of them in
// a namespace of a registered schema, is not for iotgate: RFC 6120 8.4 has
// an IQ answered cancel/service-unavailable, whoever sent it; a message is
// dropped (see refuseMessage). registration-required stays for what looks
// like a reading (a payload in a served namespace) from an unknown JID.
// A stanza without payloads goes on, to be refused as a malformed reading.
//
// It returns nil when the stanza is served, or when no Namespaces are set.
// Errors: unavailable with detail namespace_not_served.
func (h *ReadingHandler) notServed(in iotgate.IncomingReading) error {
	if h.Namespaces == nil || len(in.Payloads) == 0 {
		return nil
	}
	for _, p := range in.Payloads {
		if h.Namespaces.ServesNamespace(p.Namespace) {
			return nil
		}
	}
	h.unserved.Add(1)
	ns := in.Payloads[0].Namespace
	if ns == "" {
		return &iotgate.Error{Code: iotgate.EUnavailable, Detail: iotgate.DetailNamespaceNotServed,
			Message: "iotgate serves no payload without a namespace: readings are in the namespace of a registered schema"}
	}
	return &iotgate.Error{Code: iotgate.EUnavailable, Detail: iotgate.DetailNamespaceNotServed,
		Message: "iotgate serves no schema in namespace " + ns}
}

// payloads extracts a stanza's payloads (see incoming) and refuses the
// stanzas iotgate does not serve (see notServed).
func (h *ReadingHandler) payloads(st *Stanza, via string) (iotgate.IncomingReading, error) {
	in, err := incoming(st, via)
	if err == nil {
		err = h.notServed(in)
	}
	return in, err
}

// Unserved returns how many stanzas carried payloads in no namespace
// iotgate serves (IQs answered service-unavailable, messages dropped).
func (h *ReadingHandler) Unserved() uint64 { return h.unserved.Load() }
