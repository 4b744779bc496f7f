//go:build integration

package servers

import (
	"crypto/sha1"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// A minimal XMPP client, just enough to check that the servers accept
// logins and component handshakes: the package under test must not depend
// on the XMPP code it is there to test.

// xmlConn is a connection with an XML decoder over it.
type xmlConn struct {
	net.Conn
	dec *xml.Decoder
}

func dialXML(addr string) (*xmlConn, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	_ = c.SetDeadline(time.Now().Add(15 * time.Second))
	return &xmlConn{Conn: c, dec: xml.NewDecoder(c)}, nil
}

// openStream sends a stream header and reads the server's; it returns the
// server's stream header.
func (c *xmlConn) openStream(ns, to string) (xml.StartElement, error) {
	c.dec = xml.NewDecoder(c.Conn)
	_, err := fmt.Fprintf(c, "<?xml version='1.0'?><stream:stream to='%s' version='1.0' xmlns='%s' xmlns:stream='http://etherx.jabber.org/streams'>", to, ns)
	if err != nil {
		return xml.StartElement{}, err
	}
	for {
		tok, err := c.dec.Token()
		if err != nil {
			return xml.StartElement{}, fmt.Errorf("read stream header: %w", err)
		}
		if se, ok := tok.(xml.StartElement); ok {
			if se.Name.Local != "stream" {
				return se, fmt.Errorf("got <%s>, want <stream:stream>", se.Name.Local)
			}
			return se, nil
		}
	}
}

// element is any XML element, kept whole.
type element struct {
	XMLName xml.Name
	Attrs   []xml.Attr `xml:",any,attr"`
	Inner   string     `xml:",innerxml"`
}

// next reads the next top-level element of the stream.
func (c *xmlConn) next() (element, error) {
	var el element
	for {
		tok, err := c.dec.Token()
		if err != nil {
			return el, err
		}
		switch tok := tok.(type) {
		case xml.StartElement:
			err := c.dec.DecodeElement(&el, &tok)
			return el, err
		case xml.EndElement:
			return el, io.EOF // </stream:stream>
		}
	}
}

// c2sLogin opens a client stream to domain, optionally upgrades it with
// STARTTLS, and authenticates with SASL PLAIN.
func c2sLogin(addr, domain, user, password string, starttls bool) error {
	c, err := dialXML(addr)
	if err != nil {
		return err
	}
	defer c.Close()
	return c.login(domain, user, password, starttls)
}

// login is c2sLogin on a connection; the stream is authenticated but not
// yet restarted when it returns.
func (c *xmlConn) login(domain, user, password string, starttls bool) error {
	const ns = "jabber:client"
	if _, err := c.openStream(ns, domain); err != nil {
		return err
	}
	features, err := c.next()
	if err != nil {
		return fmt.Errorf("read features: %w", err)
	}
	if features.XMLName.Local != "features" {
		return fmt.Errorf("got <%s>, want <stream:features>", features.XMLName.Local)
	}
	if starttls {
		if _, err := io.WriteString(c, "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"); err != nil {
			return err
		}
		el, err := c.next()
		if err != nil {
			return fmt.Errorf("starttls: %w", err)
		}
		if el.XMLName.Local != "proceed" {
			return fmt.Errorf("starttls: got <%s>, want <proceed/>", el.XMLName.Local)
		}
		tc := tls.Client(c.Conn, &tls.Config{ServerName: domain, InsecureSkipVerify: true})
		if err := tc.Handshake(); err != nil {
			return fmt.Errorf("tls handshake: %w", err)
		}
		c.Conn = tc
		if _, err := c.openStream(ns, domain); err != nil {
			return err
		}
		if _, err := c.next(); err != nil {
			return fmt.Errorf("read features after tls: %w", err)
		}
	}
	creds := base64.StdEncoding.EncodeToString([]byte("\x00" + user + "\x00" + password))
	if _, err := fmt.Fprintf(c, "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>%s</auth>", creds); err != nil {
		return err
	}
	el, err := c.next()
	if err != nil {
		return fmt.Errorf("read auth result: %w", err)
	}
	if el.XMLName.Local != "success" {
		return fmt.Errorf("%w: <%s>%s", errAuth, el.XMLName.Local, el.Inner)
	}
	return nil
}

var errAuth = errors.New("authentication failed")

// componentConn is a component connection after the handshake.
type componentConn struct{ *xmlConn }

// componentHandshake connects to a XEP-0114 listener as domain.
func componentHandshake(addr, domain, secret string) (*componentConn, error) {
	c, err := dialXML(addr)
	if err != nil {
		return nil, err
	}
	hdr, err := c.openStream("jabber:component:accept", domain)
	if err != nil {
		c.Close()
		return nil, err
	}
	var id string
	for _, a := range hdr.Attr {
		if a.Name.Local == "id" {
			id = a.Value
		}
	}
	sum := sha1.Sum([]byte(id + secret))
	if _, err := fmt.Fprintf(c, "<handshake>%s</handshake>", hex.EncodeToString(sum[:])); err != nil {
		c.Close()
		return nil, err
	}
	el, err := c.next()
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("read handshake result: %w", err)
	}
	if el.XMLName.Local != "handshake" {
		c.Close()
		return nil, fmt.Errorf("%w: <%s>%s", errHandshake, el.XMLName.Local, el.Inner)
	}
	_ = c.SetDeadline(time.Time{})
	return &componentConn{c}, nil
}

var errHandshake = errors.New("component handshake refused")
