//go:build integration

package sim

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"mellium.im/xmpp/stanza"

	"github.com/iotgate/iotgate/internal/device"
	"github.com/iotgate/iotgate/internal/servers"
	"github.com/iotgate/iotgate/schemas/examples"
	"github.com/iotgate/iotgate/schemas/xsd"
)

// TestFleet runs simulated thermostats against a real XMPP server, with an
// ordinary account standing in for iotgate: it validates their readings,
// subscribes to their presence and commands them.
func TestFleet(t *testing.T) {
	for _, name := range servers.XMPPServerNames {
		t.Run(name, func(t *testing.T) { testFleet(t, name) })
	}
}

func testFleet(t *testing.T, name string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	xs := servers.XMPPForTest(t, name, servers.XMPPOptions{})
	for _, u := range []string{"ctl", "c1", "c2", "c3", "c4"} {
		servers.RegisterUserForTest(t, xs, u, u)
	}
	schema := compile(t, examples.Thermostat())

	// The stand-in for iotgate acknowledges valid readings, refuses
	// invalid ones, and remembers the last one of each device.
	var mu sync.Mutex
	last := map[string]string{}
	ctl, err := device.Dial(ctx, device.Options{Addr: xs.C2SAddr(), JID: "ctl@" + xs.Domain(), Password: "ctl", Approve: []string{"*"},
		IQHandler: func(iq device.IQ) device.Reply {
			if err := schema.Validate([]byte(iq.Payload), xsd.Limits{}); err != nil {
				return device.Reply{Type: "error", ErrorType: stanza.Modify, Condition: stanza.BadRequest, Text: err.Error()}
			}
			mu.Lock()
			last[strings.SplitN(iq.From, "/", 2)[0]] = iq.Payload
			mu.Unlock()
			return device.Reply{Type: "result"}
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer ctl.Close()
	if err := ctl.SendAvailable(ctx, 0, ""); err != nil {
		t.Fatal(err)
	}
	// IQs to a bare JID are the server's to answer: readings go to the
	// stand-in's full JID.
	ctlJID := ctl.JID()

	cfg := Config{
		Addr: xs.C2SAddr(), Domain: xs.Domain(), Component: ctlJID, Kind: "thermostat",
		Devices: []Device{
			{User: "c1", Password: "c1"},
			{User: "c2", Password: "c2", Behaviour: Behaviour{Slow: true}},
			{User: "c3", Password: "c3", Behaviour: Behaviour{Silent: true}},
			{User: "c4", Password: "c4", Behaviour: Behaviour{Offline: true}},
		},
		Rate: 20, Via: "iq", Invalid: 0.25, SlowDelay: 700 * time.Millisecond, Log: slog.New(slog.NewTextHandler(testWriter{t}, nil)),
	}
	var stats Stats
	simCtx, stopSim := context.WithCancel(ctx)
	simDone := make(chan error, 1)
	go func() { simDone <- Run(simCtx, cfg, &stats) }()
	stop := sync.OnceValue(func() error { stopSim(); return <-simDone })
	defer stop()

	// Subscribe to the devices and learn their full JIDs from their
	// presence.
	full := map[string]string{}
	for _, u := range []string{"c1", "c2", "c3"} {
		if err := ctl.Subscribe(ctx, u+"@"+xs.Domain()); err != nil {
			t.Fatal(err)
		}
	}
	timeout := time.After(20 * time.Second)
	for len(full) < 3 {
		select {
		case p := <-ctl.Presences():
			if user := strings.SplitN(p.From, "@", 2)[0]; p.Type == "" && strings.Contains(p.From, "/") && user != "ctl" {
				full[user] = p.From
			}
			if strings.HasPrefix(p.From, "c4@") && p.Type == "" {
				t.Errorf("offline device c4 is available: %+v", p)
			}
		case <-timeout:
			t.Fatalf("devices available after 20s: %v", full)
		}
	}

	cmd := func(user, typ, payload string, within time.Duration) (device.Reply, time.Duration, error) {
		cctx, cancel := context.WithTimeout(ctx, within)
		defer cancel()
		start := time.Now()
		rep, err := ctl.SendIQ(cctx, typ, full[user], payload)
		return rep, time.Since(start), err
	}
	const ns = `xmlns="urn:example:thermostat"`
	rep, _, err := cmd("c1", "set", `<set `+ns+`><target>25</target><mode>heat</mode></set>`, 5*time.Second)
	if err != nil || rep.Type != "result" || !strings.Contains(rep.Payload, "<target>25.00</target>") {
		t.Fatalf("set = %+v, %v", rep, err)
	}
	if err := schema.Validate([]byte(rep.Payload), xsd.Limits{}); err != nil {
		t.Errorf("state %s: %v", rep.Payload, err)
	}
	if rep, _, err := cmd("c1", "get", `<get `+ns+`/>`, 5*time.Second); err != nil || !strings.Contains(rep.Payload, "<target>25.00</target>") {
		t.Errorf("get = %+v, %v", rep, err)
	}
	if rep, _, err := cmd("c1", "set", `<reboot `+ns+`/>`, 5*time.Second); err != nil || rep.Condition != stanza.FeatureNotImplemented || rep.ErrorType != stanza.Cancel {
		t.Errorf("unknown command = %+v, %v; want cancel/feature-not-implemented", rep, err)
	}
	if rep, took, err := cmd("c2", "get", `<get `+ns+`/>`, 5*time.Second); err != nil || rep.Type != "result" || took < cfg.SlowDelay {
		t.Errorf("slow device: %+v, %v after %s; want a result after %s", rep, err, took, cfg.SlowDelay)
	}
	if rep, _, err := cmd("c3", "get", `<get `+ns+`/>`, 2*time.Second); err == nil {
		t.Errorf("silent device answered %+v", rep)
	}

	// Later readings head for the new target.
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		r := last["c1@"+xs.Domain()]
		mu.Unlock()
		if strings.Contains(r, "<target>25.00</target>") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("c1's last reading after set: %s", r)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	s := stats.Snapshot()
	t.Logf("%s", s)
	// Every invalid reading is refused, except one still in flight when
	// the fleet stopped, which counts as failed; none is acknowledged
	// (that would be Unexpected).
	if s.LoggedIn != 3 || s.Sent == 0 || s.InvalidSent == 0 || s.Acked+s.Refused+s.Failed != s.Sent ||
		s.Refused > s.InvalidSent || s.InvalidSent-s.Refused > s.Failed || s.Unexpected != 0 {
		t.Errorf("readings: %s", s)
	}
	if s.Commands != 5 || s.Answered != 3 || s.Rejected != 1 || s.Ignored != 1 {
		t.Errorf("commands: %s; want 5: 3 answered, 1 refused, 1 ignored", s)
	}
}

// testWriter logs to the test.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}
