package component

import (
	"context"

	"mellium.im/xmpp/stanza"
)

// Namespaces of the built-in services.
const (
	NSDiscoInfo  = "http://jabber.org/protocol/disco#info"
	NSDiscoItems = "http://jabber.org/protocol/disco#items"
	NSPing       = "urn:xmpp:ping"
	NSVersion    = "jabber:iq:version"
)

// builtin answers the IQs every XMPP entity must answer (disco#info,
// disco#items, ping, version) when they are addressed to the component's
// domain itself. It reports whether it answered.
func (c *Conn) builtin(_ context.Context, sess *session, st *Stanza) bool {
	if st.Type != TypeGet || normJID(st.To) != c.cfg.Domain {
		return false
	}
	kids, err := st.Children()
	if err != nil || len(kids) != 1 {
		return false
	}
	q := kids[0]
	switch {
	case q.Name.Space == NSPing && q.Name.Local == "ping":
		c.reply(sess, st.Result(nil))
	case q.Name.Space == NSDiscoInfo && q.Name.Local == "query":
		if q.AttrValue("node") != "" {
			c.reply(sess, st.ErrorReply(stanza.Cancel, stanza.ItemNotFound, "no such node"))
			return true
		}
		c.reply(sess, st.Result(c.discoInfo()))
	case q.Name.Space == NSDiscoItems && q.Name.Local == "query":
		if q.AttrValue("node") != "" {
			c.reply(sess, st.ErrorReply(stanza.Cancel, stanza.ItemNotFound, "no such node"))
			return true
		}
		c.reply(sess, st.Result([]byte(`<query xmlns="`+NSDiscoItems+`"/>`)))
	case q.Name.Space == NSVersion && q.Name.Local == "query":
		b := []byte(`<query xmlns="` + NSVersion + `"><name>`)
		b = appendEscaped(b, c.cfg.Software)
		b = append(b, `</name><version>`...)
		b = appendEscaped(b, c.cfg.Version)
		b = append(b, `</version></query>`...)
		c.reply(sess, st.Result(b))
	default:
		return false
	}
	return true
}

func (c *Conn) discoInfo() []byte {
	b := []byte(`<query xmlns="` + NSDiscoInfo + `"><identity category="component" type="generic" name="`)
	b = appendEscaped(b, c.cfg.Software)
	b = append(b, `"/>`...)
	for _, f := range []string{NSDiscoInfo, NSDiscoItems, NSPing, NSVersion} {
		b = append(b, `<feature var="`+f+`"/>`...)
	}
	return append(b, `</query>`...)
}
