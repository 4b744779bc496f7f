//go:build integration

package main

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/iotgate/iotgate/internal/device"
	"github.com/iotgate/iotgate/internal/servers"
	"github.com/iotgate/iotgate/schemas/examples"
)

// coherent is how soon a change made through one instance must show on
// another: the change notification, not the caches' TTLs (10 s, 30 s).
const coherent = time.Second

// TestE2EInstancesCaches runs two iotgate instances on one PostgreSQL and
// one ejabberd and checks that what one writes shows on the other within
// a second, although the other had it cached: devices (registered,
// relabeled, deleted), schemas (readings in a schema created on A are
// accepted by B, which gets about half of them from ejabberd), readings
// (each instance's /state shows the newest, whichever stored it) and tokens
// (revoked on A, refused by B). It also checks each instance's identity:
// the instance label on its metrics and its startup line.
func TestE2EInstancesCaches(t *testing.T) {
	gates, metrics, xs := sharedGates(t, "e2e-a", "e2e-b")
	a, b := gates[0], gates[1]
	jid := "thermo1@" + xs.Domain()
	path := "/v1/devices/" + jid
	type deviceBody struct {
		Labels map[string]string `json:"labels"`
	}
	took := map[string]time.Duration{}

	t.Run("InstanceIdentity", func(t *testing.T) {
		for _, id := range []string{"e2e-a", "e2e-b"} {
			resp, err := http.Get("http://" + metrics[id] + "/metrics")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if want := `iotgate_xmpp_up{instance="` + id + `"} 1`; !strings.Contains(string(body), want) {
				t.Errorf("metrics of %s lack %q", id, want)
			}
		}
		for g, id := range map[*gate]string{a: "e2e-a", b: "e2e-b"} {
			if !strings.Contains(g.logs.String(), "instance="+id) {
				t.Errorf("the log of %s does not name it", id)
			}
		}
	})

	t.Run("Schema", func(t *testing.T) {
		// B started before the schema existed: it learns its namespace
		// from the notification.
		created := time.Now()
		if code := a.do("POST", "/v1/schemas", map[string]string{"name": "thermostat", "xsd": string(examples.Thermostat())}, nil); code != 201 {
			t.Fatalf("register schema on A: %d", code)
		}
		// B caches the JID as not registered before A registers it.
		if code := b.do("GET", path, nil, nil); code != 404 {
			t.Fatalf("GET on B before registration: %d, want 404", code)
		}
		if code := a.do("POST", "/v1/devices", map[string]any{"jid": jid, "schema": "thermostat", "labels": map[string]string{"room": "hall"}}, nil); code != 201 {
			t.Fatalf("register device on A: %d", code)
		}
		took["registered"] = pollWithin(t, "device registered on A visible on B", coherent, func() bool { return b.do("GET", path, nil, nil) == 200 })

		servers.RegisterUserForTest(t, xs, "thermo1", "pw1")
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		dev, err := device.Dial(ctx, device.Options{Addr: xs.C2SAddr(), JID: jid, Password: "pw1"})
		if err != nil {
			t.Fatal(err)
		}
		defer dev.Close()
		time.Sleep(time.Until(created.Add(coherent)))
		// ejabberd spreads the IQs over both connections: B must serve
		// the namespace too, or about half get service-unavailable.
		for i := range 10 {
			rep, err := dev.SendIQ(ctx, "set", e2eDomain, `<reading xmlns="urn:example:thermostat"><temperature>2`+string(rune('0'+i))+`.5</temperature><mode>heat</mode></reading>`)
			if err != nil {
				t.Fatal(err)
			}
			if rep.Type != "result" {
				t.Errorf("reading %d: %+v, want result", i, rep)
			}
		}
		// Each instance stored some of them: both show the newest.
		type stateBody struct {
			LastSeenAt *time.Time `json:"last_seen_at"`
			Reading    *struct {
				ID         int64     `json:"id"`
				ReceivedAt time.Time `json:"received_at"`
				Data       struct {
					Temperature float64 `json:"temperature"`
				} `json:"data"`
			} `json:"reading"`
		}
		for g, name := range map[*gate]string{a: "A", b: "B"} {
			took["state on "+name] = pollWithin(t, "the newest reading shown by "+name, coherent, func() bool {
				var st stateBody
				return g.do("GET", path+"/state", nil, &st) == 200 && st.Reading != nil && st.Reading.Data.Temperature == 29.5 &&
					st.LastSeenAt != nil && st.LastSeenAt.Equal(st.Reading.ReceivedAt)
			})
		}
	})

	t.Run("DeviceUpdated", func(t *testing.T) {
		var d deviceBody
		if code := b.do("GET", path, nil, &d); code != 200 || d.Labels["room"] != "hall" {
			t.Fatalf("GET on B: %d %+v", code, d)
		}
		if code := a.do("PATCH", path, map[string]any{"labels": map[string]string{"room": "kitchen"}}, nil); code != 200 {
			t.Fatalf("PATCH on A: %d", code)
		}
		took["relabeled"] = pollWithin(t, "labels changed on A shown by B", coherent, func() bool {
			d = deviceBody{}
			return b.do("GET", path, nil, &d) == 200 && d.Labels["room"] == "kitchen"
		})
	})

	t.Run("DeviceDeleted", func(t *testing.T) {
		if code := a.do("DELETE", path, nil, nil); code != 204 && code != 200 {
			t.Fatalf("DELETE on A: %d", code)
		}
		took["deleted"] = pollWithin(t, "device deleted on A gone from B", coherent, func() bool { return b.do("GET", path, nil, nil) == 404 })
	})

	t.Run("TokenRevoked", func(t *testing.T) {
		var created struct {
			ID     string `json:"id"`
			Secret string `json:"token"`
		}
		if code := a.do("POST", "/v1/tokens", map[string]any{"name": "shared", "scopes": []string{"schemas:read"}}, &created); code != 201 {
			t.Fatalf("POST /v1/tokens on A: %d", code)
		}
		// B caches it.
		if code := b.doAs(created.Secret, "GET", "/v1/schemas", nil, nil); code != 200 {
			t.Fatalf("the new token on B: %d", code)
		}
		if code := a.do("DELETE", "/v1/tokens/"+created.ID, nil, nil); code != 200 {
			t.Fatalf("revoke on A: %d", code)
		}
		took["revoked"] = pollWithin(t, "token revoked on A refused by B", coherent, func() bool {
			return b.doAs(created.Secret, "GET", "/v1/schemas", nil, nil) == 401
		})
	})
	t.Logf("shown on B after the write on A (upper bounds, polled every 10 ms over HTTP): %v", took)
}
