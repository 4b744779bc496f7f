package component

import (
	"encoding/xml"
	"fmt"
	"strings"
)

// StreamError is an XMPP stream error (RFC 6120 §4.9) received from the
// server. The stream is gone after one.
type StreamError struct {
	Condition string
	Text      string
}

func (e *StreamError) Error() string {
	if e.Text != "" {
		return "stream error " + e.Condition + ": " + e.Text
	}
	return "stream error " + e.Condition
}

// explain says in an operator's words what a stream error means for a
// component serving domain.
func (e *StreamError) explain(domain string) string {
	switch e.Condition {
	case "not-authorized":
		return "the XMPP server refused the component secret (not-authorized): check IOTGATE_SECRET against component_secret in Prosody or the ejabberd_service password"
	case "conflict":
		return fmt.Sprintf("another connection already holds the component domain %s (conflict): another iotgate instance is connected, or the server still keeps an old connection; Prosody keeps the first unless component_conflict_resolve = \"kick_old\"", domain)
	case "host-unknown":
		return fmt.Sprintf("the XMPP server does not serve the component domain %s (host-unknown): declare Component %q in Prosody, or list it under the ejabberd_service hosts", domain, domain)
	case "system-shutdown":
		return "the XMPP server is shutting down (system-shutdown)"
	case "policy-violation":
		return "the XMPP server closed the stream for a policy violation (stanza too large or rate limit?)"
	}
	return e.Error()
}

// summary says what a stream error means in a few words that name no
// host nor domain: what Health and the errors of Send show clients (explain,
// for the log, says what to do about it).
func (e *StreamError) summary() string {
	switch e.Condition {
	case "not-authorized":
		return "the XMPP server refused the component secret (not-authorized)"
	case "conflict":
		return "another connection holds the component domain (conflict)"
	case "host-unknown":
		return "the XMPP server does not serve the component domain (host-unknown)"
	case "system-shutdown":
		return "the XMPP server is shutting down (system-shutdown)"
	}
	return "the XMPP server closed the stream (" + e.Condition + ")"
}

func decodeStreamError(d *xml.Decoder, start *xml.StartElement) error {
	var v struct {
		Any []struct {
			XMLName xml.Name
			Data    string `xml:",chardata"`
		} `xml:",any"`
	}
	if err := d.DecodeElement(&v, start); err != nil {
		return fmt.Errorf("read stream error: %w", err)
	}
	se := &StreamError{Condition: "undefined-condition"}
	for _, el := range v.Any {
		if el.XMLName.Space != NSStreamErr {
			continue
		}
		if el.XMLName.Local == "text" {
			se.Text = strings.TrimSpace(el.Data)
		} else {
			se.Condition = el.XMLName.Local
		}
	}
	return se
}
