//go:build integration

package servers

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// c2sSession logs user in on srv and binds a resource, for sending and
// receiving stanzas.
func c2sSession(t *testing.T, srv XMPPServer, user, password string) *xmlConn {
	t.Helper()
	c, err := dialXML(srv.C2SAddr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.login(srv.Domain(), user, password, false); err != nil {
		t.Fatal(err)
	}
	if _, err := c.openStream("jabber:client", srv.Domain()); err != nil {
		t.Fatal(err)
	}
	if _, err := c.next(); err != nil {
		t.Fatalf("features after auth: %v", err)
	}
	fmt.Fprint(c, "<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>r</resource></bind></iq>")
	if el, err := c.next(); err != nil || attr(el, "type") != "result" {
		t.Fatalf("bind: %v %+v", err, el)
	}
	fmt.Fprint(c, "<presence/>")
	return c
}

// attr returns the attribute name of el, or "".
func attr(el element, name string) string {
	for _, a := range el.Attrs {
		if a.Name.Local == name {
			return a.Value
		}
	}
	return ""
}

// nextMessage reads elements until a message with body arrives.
func nextMessage(t *testing.T, c *xmlConn, body string) element {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	for {
		el, err := c.next()
		if err != nil {
			t.Fatalf("waiting for message %q: %v", body, err)
		}
		if el.XMLName.Local == "message" && strings.Contains(el.Inner, body) {
			return el
		}
	}
}

// TestS2S links each pair of servers by s2s, with IP-literal domains: a
// user on one server and a component on the other exchange messages both
// ways (each way opens its own dialback-authenticated stream).
func TestS2S(t *testing.T) {
	for _, home := range XMPPServerNames {
		for _, peer := range XMPPServerNames {
			t.Run(home+"-"+peer, func(t *testing.T) {
				t.Parallel()
				ctx := testCtx(t)
				comp, err := FreeS2SIP()
				if err != nil {
					t.Fatal(err)
				}
				peerDomain, err := FreeS2SIP()
				if err != nil {
					t.Fatal(err)
				}
				a, err := startXMPP(ctx, home, XMPPOptions{Components: map[string]string{comp: "s3cret"}, S2SAddrs: []string{comp}})
				if err != nil {
					t.Fatal(err)
				}
				defer a.Close()
				b, err := startXMPP(ctx, peer, XMPPOptions{Domain: peerDomain, S2SAddrs: []string{peerDomain}})
				if err != nil {
					t.Fatal(err)
				}
				defer b.Close()
				defer func() {
					if t.Failed() {
						t.Logf("%s log:\n%s\n%s log:\n%s", home, a.LogTail(), peer, b.LogTail())
					}
				}()
				if err := b.RegisterUser(ctx, "sensor", "pw"); err != nil {
					t.Fatal(err)
				}
				cc, err := componentHandshake(a.ComponentAddr(), comp, "s3cret")
				if err != nil {
					t.Fatal(err)
				}
				defer cc.Close()
				user := c2sSession(t, b, "sensor", "pw")

				fmt.Fprintf(user, "<message to='gate@%s' id='m1'><body>hello-from-peer</body></message>", comp)
				got := nextMessage(t, cc.xmlConn, "hello-from-peer")
				if from := attr(got, "from"); from != "sensor@"+peerDomain+"/r" {
					t.Errorf("component got from %q, want sensor@%s/r", from, peerDomain)
				}
				fmt.Fprintf(cc, "<message from='%s' to='sensor@%s/r' id='m2'><body>hello-from-gate</body></message>", comp, peerDomain)
				got = nextMessage(t, user, "hello-from-gate")
				if from := attr(got, "from"); from != comp {
					t.Errorf("user got from %q, want %s", from, comp)
				}
			})
		}
	}
}
