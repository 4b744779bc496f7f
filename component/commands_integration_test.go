//go:build integration

package component_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"mellium.im/xmpp/jid"
	"mellium.im/xmpp/stanza"

	"github.com/iotgate/iotgate"
	"github.com/iotgate/iotgate/component"
	"github.com/iotgate/iotgate/internal/device"
	"github.com/iotgate/iotgate/internal/servers"
)

// TestCommandsRealServers checks what the command service relies on, with
// the real servers: how they bounce an IQ to an unavailable resource, and
// that an answer with the right id from the wrong JID is ignored.
func TestCommandsRealServers(t *testing.T) {
	for _, sc := range xmppServers {
		t.Run(sc.name, func(t *testing.T) {
			srv := sc.start(t, servers.XMPPOptions{Components: map[string]string{testDomain: testSecret}})
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			for _, u := range []string{"thermo", "mallory"} {
				if err := srv.RegisterUser(ctx, u, u+"-pass"); err != nil {
					t.Fatal(err)
				}
			}
			c := runConn(t, component.Config{Addr: srv.ComponentAddr(), Secret: testSecret})
			waitHealth(t, c, true, 10*time.Second)

			t.Run("BounceIsOffline", func(t *testing.T) {
				// An existing account that is not logged in, and one
				// that does not exist: the device service treats both
				// answers as "offline" (device_offline, or queued again).
				for _, to := range []string{"thermo@" + srv.Domain() + "/gone", "nobody@" + srv.Domain() + "/x"} {
					rep, err := c.SendCommand(ctx, to, "set", "", []byte(`<set xmlns="urn:example:t"/>`))
					if err != nil {
						t.Fatalf("%s: %v", to, err)
					}
					if rep.Type != "error" || rep.Error == nil ||
						(rep.Error.Condition != "service-unavailable" && rep.Error.Condition != "recipient-unavailable") {
						t.Errorf("%s: reply %+v %+v, want service-unavailable or recipient-unavailable", to, rep, rep.Error)
					}
				}
			})

			t.Run("AnswerFromWrongJIDIgnored", func(t *testing.T) {
				ids := make(chan string, 1)
				release := make(chan struct{})
				dev, err := device.Dial(ctx, device.Options{Addr: srv.C2SAddr(), JID: "thermo@" + srv.Domain(), Password: "thermo-pass",
					IQHandler: func(iq device.IQ) device.Reply {
						ids <- iq.ID
						<-release
						return device.Reply{Type: "result", Payload: `<ok xmlns="urn:example:t"/>`}
					}})
				if err != nil {
					t.Fatal(err)
				}
				defer dev.Close()
				mallory := clientSession(t, srv, "mallory", "mallory-pass")

				type result struct {
					rep iotgate.CommandReply
					err error
				}
				done := make(chan result, 1)
				go func() {
					rep, err := c.SendCommand(ctx, dev.JID(), "set", "", []byte(`<set xmlns="urn:example:t"/>`))
					done <- result{rep, err}
				}()
				var id string
				select {
				case id = <-ids:
				case <-time.After(10 * time.Second):
					t.Fatal("the device got no command")
				}
				// Mallory knows the id (she can't, it is random: the test
				// hands it to her) and answers first; her server stamps
				// her JID on it.
				spoof := stanza.IQ{ID: id, To: jid.MustParse(testDomain), Type: stanza.ResultIQ}
				if err := mallory.Send(ctx, spoof.Wrap(nil)); err != nil {
					t.Fatal(err)
				}
				select {
				case r := <-done:
					t.Fatalf("SendCommand returned on the spoofed answer: %+v", r)
				case <-time.After(500 * time.Millisecond):
				}
				close(release)
				select {
				case r := <-done:
					if r.err != nil || r.rep.Type != "result" || r.rep.Namespace != "urn:example:t" || !strings.Contains(string(r.rep.Payload), "<ok") {
						t.Errorf("answer %+v (%s), %v; want the device's <ok/>", r.rep, r.rep.Payload, r.err)
					}
				case <-time.After(10 * time.Second):
					t.Fatal("no answer from the device")
				}
			})
		})
	}
}
