//go:build integration

package main

import (
	"context"
	"maps"
	"net/url"
	"testing"
	"time"

	"github.com/iotgate/iotgate/internal/device"
	"github.com/iotgate/iotgate/internal/servers"
	"github.com/iotgate/iotgate/schemas/examples"
)

type stateBody struct {
	Online        bool `json:"online"`
	PresenceStale bool `json:"presence_stale"`
	Resources     []struct {
		JID      string `json:"jid"`
		Priority int    `json:"priority"`
	} `json:"resources"`
}

// waitState polls the device's state until cond holds.
func (g *gate) waitState(jid string, within time.Duration, what string, cond func(stateBody) bool) stateBody {
	g.t.Helper()
	deadline := time.Now().Add(within)
	var st stateBody
	for {
		st = stateBody{}
		code := g.doQuiet("/v1/devices/"+url.PathEscape(jid)+"/state", &st)
		if code == 200 && cond(st) {
			return st
		}
		if time.Now().After(deadline) {
			g.t.Fatalf("device %s: %s not reached within %s (last state %d %+v)", jid, what, within, code, st)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// subscribe goes through the subscription handshake with the component:
// the device asks, iotgate accepts and asks back, the device accepts.
func subscribe(t *testing.T, ctx context.Context, dev *device.Client) {
	t.Helper()
	if err := dev.SendPresence(ctx, e2eDomain, "subscribe"); err != nil {
		t.Fatal(err)
	}
	// iotgate's own subscribe arrives asynchronously; approving it early
	// is harmless (the server ignores an approval with nothing pending),
	// so approve until it takes.
	for range 3 {
		time.Sleep(200 * time.Millisecond)
		if err := dev.SendPresence(ctx, e2eDomain, "subscribed"); err != nil {
			t.Fatal(err)
		}
	}
}

func TestE2EPresence(t *testing.T) {
	for _, name := range servers.XMPPServerNames {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			pg := servers.PostgresForTest(t)
			xs := servers.XMPPForTest(t, name, servers.XMPPOptions{Components: map[string]string{e2eDomain: e2eSecret}})
			env := map[string]string{
				"IOTGATE_XMPP_ADDR": xs.ComponentAddr(), "IOTGATE_DOMAIN": e2eDomain,
				"IOTGATE_SECRET": e2eSecret, "IOTGATE_DATABASE_URL": pg.DSN(),
			}
			g := startGate(t, env)
			g.waitReady(200, 30*time.Second, nil)
			if code := g.do("POST", "/v1/schemas", map[string]string{"name": "thermostat", "xsd": string(examples.Thermostat())}, nil); code != 201 {
				t.Fatalf("register schema: %d", code)
			}
			jid := "thermo1@" + xs.Domain()
			if code := g.do("POST", "/v1/devices", map[string]any{"jid": jid, "schema": "thermostat"}, nil); code != 201 {
				t.Fatalf("register device: %d", code)
			}
			servers.RegisterUserForTest(t, xs, "thermo1", "pw1")
			servers.RegisterUserForTest(t, xs, "stranger", "pw2")

			login := func(user, pass string) *device.Client {
				t.Helper()
				c, err := device.Dial(ctx, device.Options{Addr: xs.C2SAddr(), JID: user + "@" + xs.Domain(), Password: pass})
				if err != nil {
					t.Fatal(err)
				}
				if err := c.SendPresence(ctx, "", ""); err != nil {
					t.Fatal(err)
				}
				return c
			}
			g.waitState(jid, 5*time.Second, "offline before login", func(s stateBody) bool { return !s.Online && !s.PresenceStale })

			dev := login("thermo1", "pw1")
			subscribe(t, ctx, dev)
			st := g.waitState(jid, 10*time.Second, "online after subscribing", func(s stateBody) bool { return s.Online })
			if len(st.Resources) != 1 || st.Resources[0].JID != dev.JID() {
				t.Errorf("resources = %+v, want %s", st.Resources, dev.JID())
			}
			var list struct {
				Items []struct {
					JID    string `json:"jid"`
					Online bool   `json:"online"`
				} `json:"items"`
			}
			if g.do("GET", "/v1/devices?online=true", nil, &list); len(list.Items) != 1 || list.Items[0].JID != jid || !list.Items[0].Online {
				t.Errorf("online=true lists %+v", list.Items)
			}

			// An unregistered JID is refused.
			stranger := login("stranger", "pw2")
			defer stranger.Close()
			if err := stranger.SendPresence(ctx, e2eDomain, "subscribe"); err != nil {
				t.Fatal(err)
			}

			dev.Close()
			g.waitState(jid, 10*time.Second, "offline after logout", func(s stateBody) bool { return !s.Online })
			if g.do("GET", "/v1/devices?online=false", nil, &list); len(list.Items) != 1 || list.Items[0].JID != jid {
				t.Errorf("online=false lists %+v", list.Items)
			}

			// The subscription persists: logging in again is enough.
			dev = login("thermo1", "pw1")
			defer dev.Close()
			g.waitState(jid, 10*time.Second, "online after logging in again", func(s stateBody) bool { return s.Online })

			// iotgate restarts: its probes rebuild the picture.
			g.stop()
			g = startGate(t, env)
			g.waitReady(200, 30*time.Second, nil)
			g.waitState(jid, 10*time.Second, "online after iotgate restarted", func(s stateBody) bool { return s.Online && !s.PresenceStale })

			// The device leaves while iotgate is down: its resource is
			// still stored. Prosody answers the probe of an account
			// without sessions with unavailable (from the bare JID): with
			// an hour's grace, only that answer can end the resource.
			// ejabberd does not answer such a probe: the reconciliation
			// a grace after the probes does it.
			grace := "1h"
			if name == "ejabberd" {
				grace = "2s"
			}
			g.stop()
			dev.Close()
			// Let the server end the session before iotgate probes: a
			// probe answered before would rightly say available.
			time.Sleep(time.Second)
			slow := maps.Clone(env)
			slow["IOTGATE_PRESENCE_PROBE_GRACE"] = grace
			g = startGate(t, slow)
			g.waitReady(200, 30*time.Second, nil)
			g.waitState(jid, 10*time.Second, "offline after a restart missed the logout", func(s stateBody) bool { return !s.Online && !s.PresenceStale })
			dev = login("thermo1", "pw1")
			defer dev.Close()
			g.waitState(jid, 10*time.Second, "online after logging in once more", func(s stateBody) bool { return s.Online })

			// The stream drops: presence is unknown, and says so.
			if err := xs.Kill(); err != nil {
				t.Fatal(err)
			}
			g.waitState(jid, 10*time.Second, "stale while the XMPP server is down", func(s stateBody) bool { return s.PresenceStale && !s.Online })
			if err := xs.Start(ctx); err != nil {
				t.Fatal(err)
			}
			g.waitReady(200, 10*time.Second, nil)
			g.waitState(jid, 10*time.Second, "fresh again after reconnecting", func(s stateBody) bool { return !s.PresenceStale })
		})
	}
}
