//go:build integration

package main

import (
	"context"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/iotgate/iotgate/internal/device"
	"github.com/iotgate/iotgate/internal/servers"
	"github.com/iotgate/iotgate/schemas/examples"
)

// TestE2EXMPPEdge checks what iotgate puts on and answers from the XMPP
// stream (issue #11, parts 2, 4 and 8), on both servers: command payloads
// that would make the server close the stream are refused or re-serialized,
// stanzas in namespaces iotgate does not serve get service-unavailable, and
// disco lists what the asker may see.
func TestE2EXMPPEdge(t *testing.T) {
	forEachXMPPServer(t, testXMPPEdge)
}

var discoItemRE = regexp.MustCompile(`<item [^>]*jid=["']([^"']+)["']`)

// discoItems returns the JIDs of a disco#items answer, sorted as sent.
func discoItems(payload string) []string {
	var out []string
	for _, m := range discoItemRE.FindAllStringSubmatch(payload, -1) {
		out = append(out, m[1])
	}
	return out
}

func testXMPPEdge(t *testing.T, name string) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	metricsAddr := freeAddr(t)
	e := newCommandsEnv(t, ctx, name, "IOTGATE_METRICS_ADDR", metricsAddr, "IOTGATE_DISCO_ITEMS_JIDS", "ops@localhost")
	g := e.g
	thermo := e.register("thermo1")
	other := e.register("thermo2")

	// The device records the payloads of the commands it receives.
	var mu sync.Mutex
	var received []string
	dev := e.online("thermo1", func(iq device.IQ) device.Reply {
		mu.Lock()
		received = append(received, iq.Payload)
		mu.Unlock()
		return thermostat(iq)
	})
	// A user of the server that is not a device, and one on the disco
	// list.
	login := func(user string) *device.Client {
		t.Helper()
		servers.RegisterUserForTest(t, e.xs, user, "pw-"+user)
		c, err := device.Dial(ctx, device.Options{Addr: e.xs.C2SAddr(), JID: user + "@" + e.xs.Domain(), Password: "pw-" + user})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	stranger, ops := login("stranger"), login("ops")
	reconnects := metricValue(t, metricsAddr, "iotgate_xmpp_reconnects_total")
	streamStayedUp := func(t *testing.T) {
		t.Helper()
		if n := metricValue(t, metricsAddr, "iotgate_xmpp_reconnects_total"); n != reconnects {
			t.Errorf("reconnects %v, was %v: the stream was dropped", n, reconnects)
		}
		var ready readyBody
		if code := g.doQuiet("/readyz", &ready); code != 200 {
			t.Errorf("/readyz = %d %+v", code, ready)
		}
	}

	t.Run("CommandPayloadRefused", func(t *testing.T) {
		for _, tc := range []struct{ payload, code string }{
			{`<set xmlns="urn:example:thermostat"><!--x--><target>21.5</target></set>`, "comment_forbidden"},
			{`<set xmlns="urn:example:thermostat"><?x y?><target>21.5</target></set>`, "processing_instruction_forbidden"},
			{`<!DOCTYPE set><set xmlns="urn:example:thermostat"><target>21.5</target></set>`, "doctype_forbidden"},
		} {
			// Again and again: it used to cost a reconnect every time.
			for range 3 {
				if a := g.command(thermo, map[string]any{"payload": tc.payload}); a.status != 422 || a.code != tc.code {
					t.Errorf("POST %s: %d %s, want 422 %s", tc.payload, a.status, a.code, tc.code)
				}
			}
		}
		// Give a dropped stream the time to show.
		time.Sleep(500 * time.Millisecond)
		streamStayedUp(t)
		if a := g.command(thermo, map[string]any{"payload": setTarget("21")}); a.status != 200 || a.cmd.Status != "succeeded" {
			t.Errorf("command after the refusals: %d %+v", a.status, a.cmd)
		}
	})

	t.Run("CDATADeliveredClean", func(t *testing.T) {
		// CDATA is only text: accepted, and sent escaped, not as CDATA.
		a := g.command(thermo, map[string]any{"payload": `<set xmlns="urn:example:thermostat"><target><![CDATA[22.5]]></target></set>`})
		if a.status != 200 || a.cmd.Status != "succeeded" {
			t.Fatalf("CDATA command: %d %+v", a.status, a.cmd)
		}
		mu.Lock()
		last := received[len(received)-1]
		mu.Unlock()
		if !strings.Contains(last, "<target>22.5</target>") || strings.Contains(last, "CDATA") {
			t.Errorf("device received %s, want the target as plain text", last)
		}
		streamStayedUp(t)
	})

	t.Run("UnservedNamespace", func(t *testing.T) {
		unservedBefore := metricValue(t, metricsAddr, "iotgate_xmpp_unserved_total")
		for _, tc := range []struct {
			name     string
			from     *device.Client
			typ      string
			payload  string
			wantType string
			wantCond string
		}{
			{"StrangerSet", stranger, "set", `<query xmlns='urn:example:no-such-namespace'/>`, "cancel", "service-unavailable"},
			{"StrangerGet", stranger, "get", `<query xmlns='urn:example:no-such-namespace'/>`, "cancel", "service-unavailable"},
			{"DeviceSet", dev, "set", `<query xmlns='urn:example:no-such-namespace'/>`, "cancel", "service-unavailable"},
			{"StrangerReading", stranger, "set", readingPayload(1), "auth", "registration-required"},
		} {
			rep, err := tc.from.SendIQ(ctx, tc.typ, e2eDomain, tc.payload)
			if err != nil {
				t.Fatalf("%s: %v", tc.name, err)
			}
			if rep.Type != "error" || string(rep.ErrorType) != tc.wantType || string(rep.Condition) != tc.wantCond {
				t.Errorf("%s: %+v, want %s/%s", tc.name, rep, tc.wantType, tc.wantCond)
			}
		}
		// Messages in no served namespace get nothing back, but count.
		if err := dev.SendMessage(ctx, e2eDomain, "u1", `<x xmlns='urn:example:no-such-namespace'/>`); err != nil {
			t.Fatal(err)
		}
		if err := stranger.SendMessage(ctx, e2eDomain, "u2", `<x xmlns='urn:example:no-such-namespace'/>`); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for metricValue(t, metricsAddr, "iotgate_xmpp_unserved_total")-unservedBefore < 4 {
			if time.Now().After(deadline) {
				t.Fatalf("unserved count +%v, want +4 (2 IQ sets, 2 messages)", metricValue(t, metricsAddr, "iotgate_xmpp_unserved_total")-unservedBefore)
			}
			time.Sleep(20 * time.Millisecond)
		}
		for _, c := range []*device.Client{dev, stranger} {
			select {
			case m := <-c.Messages():
				t.Errorf("%s got a message back: %+v", c.JID(), m)
			case <-time.After(300 * time.Millisecond):
			}
		}
		streamStayedUp(t)
	})

	t.Run("Disco", func(t *testing.T) {
		itemsOf := func(c *device.Client) []string {
			t.Helper()
			rep, err := c.SendIQ(ctx, "get", e2eDomain, `<query xmlns='http://jabber.org/protocol/disco#items'/>`)
			if err != nil {
				t.Fatal(err)
			}
			if rep.Type != "result" {
				t.Fatalf("disco#items from %s: %+v", c.JID(), rep)
			}
			return discoItems(rep.Payload)
		}
		if got := strings.Join(itemsOf(dev), ","); got != thermo {
			t.Errorf("a device sees %q, want itself only (%s)", got, thermo)
		}
		if got := itemsOf(stranger); len(got) != 0 {
			t.Errorf("an unregistered user sees %q, want nothing", got)
		}
		if got, want := strings.Join(itemsOf(ops), ","), thermo+","+other; got != want {
			t.Errorf("a JID on IOTGATE_DISCO_ITEMS_JIDS sees %q, want every device %q", got, want)
		}
		// A page at a time (XEP-0059): <last/> is where the next starts.
		rep, err := ops.SendIQ(ctx, "get", e2eDomain, `<query xmlns='http://jabber.org/protocol/disco#items'><set xmlns='http://jabber.org/protocol/rsm'><max>1</max></set></query>`)
		last := regexp.MustCompile(`<last>([^<]+)</last>`).FindStringSubmatch(rep.Payload)
		if err != nil || strings.Join(discoItems(rep.Payload), ",") != thermo || last == nil {
			t.Fatalf("first page of 1: %+v %v", rep, err)
		}
		rep, err = ops.SendIQ(ctx, "get", e2eDomain, `<query xmlns='http://jabber.org/protocol/disco#items'><set xmlns='http://jabber.org/protocol/rsm'><max>1</max><after>`+last[1]+`</after></set></query>`)
		if err != nil || strings.Join(discoItems(rep.Payload), ",") != other || strings.Contains(rep.Payload, "<last>") {
			t.Errorf("second and last page: %+v %v", rep, err)
		}

		rep, err = stranger.SendIQ(ctx, "get", e2eDomain, `<query xmlns='http://jabber.org/protocol/disco#info'/>`)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range []string{"urn:example:thermostat", "urn:xmpp:ping", "jabber:iq:version", "http://jabber.org/protocol/disco#items"} {
			if !regexp.MustCompile(`<feature var=["']` + regexp.QuoteMeta(f) + `["']`).MatchString(rep.Payload) {
				t.Errorf("disco#info lacks %s: %s", f, rep.Payload)
			}
		}
		// A schema registered now shows at once.
		if code := g.do("POST", "/v1/schemas", map[string]string{"name": "later", "xsd": strings.ReplaceAll(string(examples.Thermostat()), "urn:example:thermostat", "urn:example:later")}, nil); code != 201 {
			t.Fatalf("register schema: %d", code)
		}
		rep, err = stranger.SendIQ(ctx, "get", e2eDomain, `<query xmlns='http://jabber.org/protocol/disco#info'/>`)
		if err != nil || !strings.Contains(rep.Payload, "urn:example:later") {
			t.Errorf("disco#info after registering urn:example:later: %+v %v", rep, err)
		}
		streamStayedUp(t)
	})
}
