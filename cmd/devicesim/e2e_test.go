//go:build integration

package main

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/iotgate/iotgate/internal/servers"
)

// TestWithIotgate runs devicesim against real PostgreSQL, Prosody and the
// real iotgate binary: it registers itself over REST, its devices come
// online and send readings by IQ and by message, and the readings and
// refusals show up in the REST API.
func TestWithIotgate(t *testing.T) {
	const component, secret = "iot.localhost", "sim-secret"
	pg := servers.PostgresForTest(t)
	xs := servers.ProsodyForTest(t, servers.XMPPOptions{Components: map[string]string{component: secret}})
	api := startIotgate(t, map[string]string{
		"IOTGATE_XMPP_ADDR": xs.ComponentAddr(), "IOTGATE_DOMAIN": component,
		"IOTGATE_SECRET": secret, "IOTGATE_DATABASE_URL": pg.DSN(),
	})
	for _, u := range []string{"thermo1", "thermo2", "thermo3", "thermo4", "ms1", "ms2"} {
		servers.RegisterUserForTest(t, xs, u, u)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	// Thermostats by IQ: 4 devices, the last offline; every 5th reading
	// invalid. They stay online a moment after their readings, so that we
	// can see them online.
	var out1, log1 servers.LogBuffer
	done1 := make(chan int, 1)
	go func() {
		done1 <- run(ctx, []string{"-addr", xs.C2SAddr(), "-domain", xs.Domain(), "-component", component,
			"-devices", "4", "-offline", "1", "-rate", "5", "-count", "10", "-invalid", "0.2", "-via", "iq",
			"-register-with-iotgate", api.base, "-token", api.token}, &out1, &log1)
	}()
	online := func() []string {
		var list struct {
			Items []struct {
				JID string `json:"jid"`
			} `json:"items"`
		}
		api.get(t, "/v1/devices?online=true", &list)
		var jids []string
		for _, it := range list.Items {
			jids = append(jids, it.JID)
		}
		return jids
	}
	deadline := time.Now().Add(20 * time.Second)
	for len(online()) < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("online devices after 20s: %v\n%s", online(), log1.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if got := online(); strings.Contains(strings.Join(got, ","), "thermo4") {
		t.Errorf("offline thermo4 is online: %v", got)
	}

	// Multisensors by message, every other reading invalid.
	var out2, log2 servers.LogBuffer
	if code := run(ctx, []string{"-addr", xs.C2SAddr(), "-domain", xs.Domain(), "-component", component,
		"-schema", "multisensor", "-prefix", "ms", "-devices", "2", "-rate", "10", "-count", "4", "-invalid", "0.5", "-via", "message",
		"-register-with-iotgate", api.base, "-token", api.token, "-quiet"}, &out2, &log2); code != 0 {
		t.Fatalf("multisensors: exit %d\n%s", code, log2.String())
	}
	if code := <-done1; code != 0 {
		t.Fatalf("thermostats: exit %d\n%s", code, log1.String())
	}
	t.Logf("thermostats: %s", out1.String())
	t.Logf("multisensors: %s", out2.String())
	for _, want := range []string{"4 thermostat devices", "logins 3 (0 failed)", "readings sent 30 (6 invalid on purpose): acknowledged 24, refused 6, failed 0, unexpected answers 0"} {
		if !strings.Contains(out1.String(), want) {
			t.Errorf("thermostat summary lacks %q: %s\n%s", want, out1.String(), log1.String())
		}
	}
	for _, want := range []string{"readings sent 8 (4 invalid on purpose)", "refused 4, failed 0, unexpected answers 0"} {
		if !strings.Contains(out2.String(), want) {
			t.Errorf("multisensor summary lacks %q: %s\n%s", want, out2.String(), log2.String())
		}
	}

	// What iotgate stored.
	count := func(jid, what string) int {
		var page struct {
			Items []json.RawMessage `json:"items"`
		}
		api.get(t, "/v1/devices/"+url.PathEscape(jid)+"/"+what+"?limit=1000", &page)
		return len(page.Items)
	}
	for _, tc := range []struct {
		jid                string
		readings, refusals int
	}{
		{"thermo1@localhost", 8, 2}, {"thermo3@localhost", 8, 2}, {"thermo4@localhost", 0, 0},
		{"ms1@localhost", 2, 2}, {"ms2@localhost", 2, 2},
	} {
		// Message readings are committed shortly after they arrive.
		deadline := time.Now().Add(10 * time.Second)
		for count(tc.jid, "readings") < tc.readings && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		if got := count(tc.jid, "readings"); got != tc.readings {
			t.Errorf("%s: %d readings stored, want %d", tc.jid, got, tc.readings)
		}
		if got := count(tc.jid, "rejections"); got != tc.refusals {
			t.Errorf("%s: %d rejections, want %d", tc.jid, got, tc.refusals)
		}
	}
	var state struct {
		Reading struct {
			Data map[string]any `json:"data"`
		} `json:"reading"`
	}
	api.get(t, "/v1/devices/thermo2%40localhost/state", &state)
	// Reading 10 was invalid: the last one stored is 9.
	if d := state.Reading.Data; d["@seq"] != 9.0 || d["mode"] != "heat" || d["target"] == nil {
		t.Errorf("thermo2's last reading: %v", d)
	}
}

// api is a running iotgate.
type api struct {
	base string
	// token is iotgate's bootstrap admin token.
	token string
}

func (a api) get(t *testing.T, path string, out any) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, a.base+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+a.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %s", path, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
}

// startIotgate builds and runs the iotgate binary with env, waits until it
// is ready, and stops it when the test ends.
func startIotgate(t *testing.T, env map[string]string) api {
	t.Helper()
	bin, err := servers.BuildIotgate(context.Background(), t.TempDir(), false)
	if err != nil {
		t.Fatal(err)
	}
	g := servers.IotgateForTest(t, servers.IotgateOptions{Bin: bin, Env: env})
	return api{base: g.URL(), token: g.Token()}
}
