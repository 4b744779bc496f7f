//go:build integration

package device_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"mellium.im/xmpp/stanza"

	"github.com/iotgate/iotgate/internal/device"
	"github.com/iotgate/iotgate/internal/servers"
)

// TestClient runs two devices against a real server: one commands the
// other, and they subscribe to each other's presence.
func TestClient(t *testing.T) {
	for _, name := range servers.XMPPServerNames {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			xs := servers.XMPPForTest(t, name, servers.XMPPOptions{})
			servers.RegisterUserForTest(t, xs, "a", "pa")
			servers.RegisterUserForTest(t, xs, "b", "pb")

			var slowStarted atomic.Bool
			release := make(chan struct{})
			b := dial(t, ctx, device.Options{Addr: xs.C2SAddr(), JID: "b@" + xs.Domain(), Password: "pb", Approve: []string{"*"},
				IQHandler: func(iq device.IQ) device.Reply {
					switch {
					case strings.Contains(iq.Payload, "<slow"):
						slowStarted.Store(true)
						<-release
						return device.Reply{Type: "result", Payload: `<late xmlns="urn:test"/>`}
					case strings.Contains(iq.Payload, "<silent"):
						return device.Reply{Type: device.NoReply}
					case strings.Contains(iq.Payload, "<echo"):
						return device.Reply{Type: "result", Payload: iq.Payload}
					}
					return device.Reply{Type: "error", ErrorType: stanza.Cancel, Condition: stanza.FeatureNotImplemented, Text: "no"}
				}})
			a := dial(t, ctx, device.Options{Addr: xs.C2SAddr(), JID: "a@" + xs.Domain(), Password: "pa"})

			t.Run("IQ", func(t *testing.T) {
				rep, err := a.SendIQ(ctx, "get", b.JID(), `<echo xmlns="urn:test" x="1"><v>2</v></echo>`)
				if err != nil {
					t.Fatal(err)
				}
				if rep.Type != "result" || !strings.Contains(rep.Payload, `<echo xmlns="urn:test" x="1">`) || !strings.Contains(rep.Payload, ">2</v></echo>") {
					t.Errorf("echo = %+v", rep)
				}
				rep, err = a.SendIQ(ctx, "set", b.JID(), `<reboot xmlns="urn:test"/>`)
				if err != nil || rep.Type != "error" || rep.Condition != stanza.FeatureNotImplemented || rep.Text != "no" {
					t.Errorf("unknown command = %+v, %v", rep, err)
				}
			})
			t.Run("SlowDoesNotBlock", func(t *testing.T) {
				slow := make(chan device.Reply, 1)
				go func() {
					rep, _ := a.SendIQ(ctx, "set", b.JID(), `<slow xmlns="urn:test"/>`)
					slow <- rep
				}()
				for !slowStarted.Load() {
					time.Sleep(10 * time.Millisecond)
				}
				// b answers other requests while the slow one waits.
				if rep, err := a.SendIQ(ctx, "get", b.JID(), `<echo xmlns="urn:test"/>`); err != nil || rep.Type != "result" {
					t.Errorf("echo during a slow request = %+v, %v", rep, err)
				}
				close(release)
				if rep := <-slow; rep.Type != "result" || !strings.Contains(rep.Payload, "late") {
					t.Errorf("slow = %+v", rep)
				}
			})
			t.Run("Silent", func(t *testing.T) {
				sctx, scancel := context.WithTimeout(ctx, time.Second)
				defer scancel()
				if rep, err := a.SendIQ(sctx, "set", b.JID(), `<silent xmlns="urn:test"/>`); !errors.Is(err, context.DeadlineExceeded) {
					t.Errorf("silent = %+v, %v; want no answer", rep, err)
				}
			})
			t.Run("Subscribe", func(t *testing.T) {
				// b approves anyone; a subscribes to b and sees it online.
				if err := a.SendAvailable(ctx, 5, "here"); err != nil {
					t.Fatal(err)
				}
				if err := b.SendAvailable(ctx, 3, "there"); err != nil {
					t.Fatal(err)
				}
				bare := "b@" + xs.Domain()
				if err := a.Subscribe(ctx, bare); err != nil {
					t.Fatal(err)
				}
				waitPresence(t, ctx, b, "subscription request approved", func(p device.Presence) bool {
					return p.Type == "subscribe" && strings.HasPrefix(p.From, "a@") && p.Approved
				})
				waitPresence(t, ctx, a, "b available", func(p device.Presence) bool {
					return p.Type == "" && p.From == b.JID() && p.Priority == 3 && p.Status == "there"
				})
			})
			t.Run("Close", func(t *testing.T) {
				if err := a.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
				select {
				case <-a.Done():
				default:
					t.Error("Done not closed after Close")
				}
				if err := a.Err(); err != nil {
					t.Errorf("Err after Close = %v", err)
				}
				if _, err := a.SendIQ(ctx, "get", b.JID(), `<echo xmlns="urn:test"/>`); err == nil {
					t.Error("SendIQ after Close did not fail")
				}
			})
		})
	}
}

func dial(t *testing.T, ctx context.Context, opts device.Options) *device.Client {
	t.Helper()
	c, err := device.Dial(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func waitPresence(t *testing.T, ctx context.Context, c *device.Client, what string, ok func(device.Presence) bool) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	var seen []device.Presence
	for {
		select {
		case p := <-c.Presences():
			if ok(p) {
				return
			}
			seen = append(seen, p)
		case <-timeout:
			t.Fatalf("%s: not seen in 10s; saw %+v", what, seen)
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		}
	}
}
