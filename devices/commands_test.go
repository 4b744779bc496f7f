package devices

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/iotgate/iotgate"
	"github.com/iotgate/iotgate/internal/memstore"
)

func TestCommandOutcomes(t *testing.T) {
	tests := []struct {
		name       string
		answer     sendResult
		wantStatus iotgate.CommandStatus
		wantCode   string // Err's code, "" for nil
		wantDetail string
		check      func(t *testing.T, c *iotgate.Command)
	}{
		{"Result", result(`<state xmlns="urn:example:t"><target>21.5</target></state>`), iotgate.CommandSucceeded, "", "",
			func(t *testing.T, c *iotgate.Command) {
				if c.Response == nil || string(c.Response.Data) != `{"ok":true}` || c.Response.Invalid != "" {
					t.Errorf("response = %+v, want rendered data", c.Response)
				}
				if c.AnsweredAt == nil || c.CompletedAt == nil || c.SentAt == nil {
					t.Errorf("timestamps: sent %v answered %v completed %v", c.SentAt, c.AnsweredAt, c.CompletedAt)
				}
			}},
		{"ResultInvalid", result(`<state xmlns="urn:example:t">bad</state>`), iotgate.CommandSucceeded, "", "",
			func(t *testing.T, c *iotgate.Command) {
				if c.Response == nil || c.Response.Data != nil || c.Response.Invalid == "" || c.Response.XML == "" {
					t.Errorf("response = %+v, want the XML and why it was not rendered", c.Response)
				}
			}},
		{"ResultOtherNamespace", sendResult{rep: iotgate.CommandReply{Type: "result", Payload: []byte(`<x xmlns="urn:other"/>`), Namespace: "urn:other"}}, iotgate.CommandSucceeded, "", "",
			func(t *testing.T, c *iotgate.Command) {
				if c.Response == nil || c.Response.Data != nil || c.Response.Invalid != "" {
					t.Errorf("response = %+v, want XML only", c.Response)
				}
			}},
		{"EmptyResult", sendResult{rep: iotgate.CommandReply{Type: "result"}}, iotgate.CommandSucceeded, "", "",
			func(t *testing.T, c *iotgate.Command) {
				if c.Response == nil || c.Response.XML != "" {
					t.Errorf("response = %+v, want empty", c.Response)
				}
			}},
		{"DeviceError", iqError("item-not-found", "no such setpoint"), iotgate.CommandFailed, iotgate.EBadGateway, iotgate.DetailXMPPError,
			func(t *testing.T, c *iotgate.Command) {
				if c.XMPPError == nil || c.XMPPError.Condition != "item-not-found" || c.XMPPError.Text != "no such setpoint" || c.XMPPError.Type != "cancel" {
					t.Errorf("xmpp error = %+v", c.XMPPError)
				}
			}},
		{"Bounced", iqError("service-unavailable", ""), iotgate.CommandFailed, iotgate.EConflict, iotgate.DetailDeviceOffline, nil},
		{"BouncedRecipient", iqError("recipient-unavailable", ""), iotgate.CommandFailed, iotgate.EConflict, iotgate.DetailDeviceOffline, nil},
		{"StreamDropped", sendResult{err: &iotgate.Error{Code: iotgate.EUnavailable, Detail: "xmpp_unavailable", Message: "the XMPP stream is not connected"}}, iotgate.CommandFailed, iotgate.EUnavailable, iotgate.DetailXMPPUnavailable, nil},
		{"TooManyIQs", sendResult{err: &iotgate.Error{Code: iotgate.ETooMany, Message: "10000 IQs are already waiting"}}, iotgate.CommandFailed, iotgate.ETooMany, "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newCmdFixture(t, CommandsConfig{})
			c := f.submit(t, iotgate.CommandRequest{})
			if c.Status != iotgate.CommandSent || c.Target != devFull {
				t.Fatalf("submitted: status %s target %q, want sent to %s", c.Status, c.Target, devFull)
			}
			got := f.sender.next(t)
			if got.to != devFull || got.typ != "set" || got.payload != payload {
				t.Errorf("sent %+v", got)
			}
			got.reply <- tt.answer
			c = f.wait(t, c.ID)
			if c.Status != tt.wantStatus {
				t.Fatalf("status = %s (%s), want %s", c.Status, c.Error, tt.wantStatus)
			}
			if err := c.Err(); tt.wantCode == "" && err != nil {
				t.Errorf("Err() = %v, want nil", err)
			} else if tt.wantCode != "" {
				wantErr(t, err, tt.wantCode, tt.wantDetail)
			}
			stored := f.waitStored(t, c.ID, tt.wantStatus, nil)
			wantHistory(t, stored, iotgate.CommandPending, iotgate.CommandSent, tt.wantStatus)
			if tt.check != nil {
				tt.check(t, c)
				tt.check(t, stored)
			}
		})
	}
}

func TestCommandNotSent(t *testing.T) {
	t.Run("DeviceOffline", func(t *testing.T) {
		f := newCmdFixture(t, CommandsConfig{})
		f.presence.set(devJID)
		start := time.Now()
		c := f.submit(t, iotgate.CommandRequest{})
		if d := time.Since(start); d > time.Second {
			t.Errorf("took %s, want at once", d)
		}
		wantErr(t, c.Err(), iotgate.EConflict, iotgate.DetailDeviceOffline)
		wantHistory(t, storedCommand(t, f.store, c.ID), iotgate.CommandPending, iotgate.CommandFailed)
		f.sender.none(t, 20*time.Millisecond)
	})
	t.Run("ResourceOffline", func(t *testing.T) {
		f := newCmdFixture(t, CommandsConfig{})
		c := f.submit(t, iotgate.CommandRequest{Resource: "hall"})
		wantErr(t, c.Err(), iotgate.EConflict, iotgate.DetailDeviceOffline)
	})
	t.Run("ChosenResource", func(t *testing.T) {
		f := newCmdFixture(t, CommandsConfig{})
		f.presence.set(devJID, devFull, "thermo1@example.com/hall")
		c := f.submit(t, iotgate.CommandRequest{Resource: "hall", Mode: iotgate.CommandAsync})
		if got := f.sender.next(t); got.to != "thermo1@example.com/hall" || c.Target != got.to {
			t.Errorf("sent to %s (target %s), want the hall resource", got.to, c.Target)
		}
	})
	t.Run("StreamDown", func(t *testing.T) {
		f := newCmdFixture(t, CommandsConfig{})
		f.presence.setStale(true)
		c := f.submit(t, iotgate.CommandRequest{})
		wantErr(t, c.Err(), iotgate.EUnavailable, iotgate.DetailXMPPUnavailable)
		f.sender.none(t, 20*time.Millisecond)
	})
}

func TestCommandTimeoutAndLateAnswer(t *testing.T) {
	f := newCmdFixture(t, CommandsConfig{MaxInFlight: 1})
	start := time.Now()
	c := f.submit(t, iotgate.CommandRequest{Timeout: 50 * time.Millisecond})
	f.sender.next(t)
	c = f.wait(t, c.ID)
	if d := time.Since(start); d < 50*time.Millisecond || d > 2*time.Second {
		t.Errorf("settled after %s, want about 50ms", d)
	}
	if c.Status != iotgate.CommandTimedOut {
		t.Fatalf("status = %s, want timed_out", c.Status)
	}
	wantErr(t, c.Err(), iotgate.ETimeout, "")
	f.waitStored(t, c.ID, iotgate.CommandTimedOut, nil)
	// Everything the command held is free at its timeout: the IQ's wait
	// (the sender's call, the component's pending IQ) and the slot.
	waitFor(t, func() bool { return f.sender.waiting.Load() == 0 })
	if total, _, _ := f.svc.slots.counts("", devJID); total != 0 {
		t.Errorf("%d slots held after the timeout, want 0", total)
	}
	next := f.submit(t, iotgate.CommandRequest{Mode: iotgate.CommandAsync})
	if next.Status != iotgate.CommandSent {
		t.Errorf("command after the timeout is %s (%s), want sent", next.Status, next.Error)
	}

	// The late answer comes as a stray reply to the IQ, and is recorded.
	f.svc.ForeignAnswer(devFull, c.IQID, result(`<state xmlns="urn:example:t"/>`).rep)
	late := f.waitStored(t, c.ID, iotgate.CommandTimedOut, func(c *iotgate.Command) bool { return c.LateAnswer })
	if late.Response == nil || string(late.Response.Data) != `{"ok":true}` || late.AnsweredAt == nil {
		t.Errorf("late answer not recorded: %+v", late)
	}
	wantHistory(t, late, iotgate.CommandPending, iotgate.CommandSent, iotgate.CommandTimedOut)
}

// TestCommandQuotas: one token's (or one device's) commands in flight
// can't take the slots of the others.
func TestCommandQuotas(t *testing.T) {
	tests := []struct {
		name       string
		cfg        CommandsConfig
		fill       iotgate.CommandRequest // sent until refused
		wantSent   int
		wantDetail string
		other      iotgate.CommandRequest // still sent
	}{
		{"PerToken", CommandsConfig{MaxInFlight: 10, MaxInFlightPerToken: 3},
			iotgate.CommandRequest{TokenID: "a"}, 3, iotgate.DetailTokenCommandsInFlight,
			iotgate.CommandRequest{TokenID: "b"}},
		{"PerTokenAcrossDevices", CommandsConfig{MaxInFlight: 10, MaxInFlightPerToken: 3, MaxInFlightPerDevice: 2},
			iotgate.CommandRequest{TokenID: "a", DeviceJID: dev2JID}, 2, iotgate.DetailDeviceCommandsInFlight,
			iotgate.CommandRequest{TokenID: "a"}},
		{"PerDevice", CommandsConfig{MaxInFlight: 10, MaxInFlightPerDevice: 2},
			iotgate.CommandRequest{TokenID: "a"}, 2, iotgate.DetailDeviceCommandsInFlight,
			iotgate.CommandRequest{TokenID: "b", DeviceJID: dev2JID}},
		{"Total", CommandsConfig{MaxInFlight: 2},
			iotgate.CommandRequest{TokenID: "a"}, 2, "",
			iotgate.CommandRequest{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newCmdFixture(t, tt.cfg)
			fill := tt.fill
			fill.Mode = iotgate.CommandAsync
			var calls []call
			for range tt.wantSent {
				f.submit(t, fill)
				calls = append(calls, f.sender.next(t))
			}
			fill.Payload = payload
			if fill.DeviceJID == "" {
				fill.DeviceJID = devJID
			}
			_, _, err := f.svc.Submit(context.Background(), fill)
			wantErr(t, err, iotgate.ETooMany, tt.wantDetail)
			other := tt.other
			other.Mode = iotgate.CommandAsync
			if tt.wantDetail == "" {
				// The total holds everyone back: that is what the
				// quotas keep one tenant from reaching.
				other.Payload, other.DeviceJID = payload, devJID
				_, _, err := f.svc.Submit(context.Background(), other)
				wantErr(t, err, iotgate.ETooMany, "")
			} else if c := f.submit(t, other); c.Status != iotgate.CommandSent {
				t.Errorf("other command is %s (%s), want sent", c.Status, c.Error)
			} else {
				calls = append(calls, f.sender.next(t))
			}
			for _, c := range calls {
				c.reply <- result("")
			}
			waitFor(t, func() bool { total, _, _ := f.svc.slots.counts("", ""); return total == 0 })
			if c := f.submit(t, fill); c.Status != iotgate.CommandSent {
				t.Errorf("after the answers: %s, want sent", c.Status)
			}
		})
	}
}

// TestCommandQuotaQueueWaits: a queue-mode command over its token's quota
// is queued, and delivered once the token's slot is free.
func TestCommandQuotaQueueWaits(t *testing.T) {
	f := newCmdFixture(t, CommandsConfig{MaxInFlight: 10, MaxInFlightPerToken: 1})
	first := f.submit(t, iotgate.CommandRequest{TokenID: "a", Mode: iotgate.CommandAsync})
	call1 := f.sender.next(t)
	q := f.submit(t, iotgate.CommandRequest{TokenID: "a", Mode: iotgate.CommandQueue})
	if q.Status != iotgate.CommandQueued {
		t.Fatalf("queue-mode command is %s, want queued", q.Status)
	}
	f.sender.none(t, 50*time.Millisecond) // waits for the token's slot
	call1.reply <- result("")
	f.wait(t, first.ID)
	f.sender.next(t).reply <- result("")
	f.waitStored(t, q.ID, iotgate.CommandSucceeded, nil)
}

func TestCommandQueueBound(t *testing.T) {
	f := newCmdFixture(t, CommandsConfig{MaxQueuedPerDevice: 2})
	f.presence.set(devJID)
	for range 2 {
		if c := f.submit(t, iotgate.CommandRequest{Mode: iotgate.CommandQueue}); c.Status != iotgate.CommandQueued {
			t.Fatalf("status %s, want queued", c.Status)
		}
	}
	_, _, err := f.svc.Submit(context.Background(), iotgate.CommandRequest{DeviceJID: devJID, Payload: payload, Mode: iotgate.CommandQueue})
	wantErr(t, err, iotgate.ETooMany, iotgate.DetailDeviceQueueFull)
	// Another device's queue is its own.
	f.presence.set(dev2JID)
	if c := f.submit(t, iotgate.CommandRequest{DeviceJID: dev2JID, Mode: iotgate.CommandQueue}); c.Status != iotgate.CommandQueued {
		t.Errorf("other device: status %s, want queued", c.Status)
	}
}

// TestCommandIdempotencyScope: a key is the token's, for the device: tenant
// B using A's key neither blocks A nor finds A's command.
func TestCommandIdempotencyScope(t *testing.T) {
	f := newCmdFixture(t, CommandsConfig{})
	req := func(token, dev, target string) iotgate.CommandRequest {
		return iotgate.CommandRequest{TokenID: token, DeviceJID: dev, Mode: iotgate.CommandAsync, IdempotencyKey: "7f3c-set-21.5",
			Payload: `<set xmlns="urn:example:t"><target>` + target + `</target></set>`}
	}
	submit := func(r iotgate.CommandRequest) (*iotgate.Command, bool, error) {
		c, replayed, err := f.svc.Submit(context.Background(), r)
		if err == nil && !replayed {
			f.sender.next(t).reply <- result("")
		}
		return c, replayed, err
	}
	squat, _, err := submit(req("b", devJID, "30"))
	if err != nil {
		t.Fatal(err)
	}
	mine, replayed, err := submit(req("a", devJID, "21.5"))
	if err != nil || replayed || mine.ID == squat.ID {
		t.Fatalf("A's command = %v, replayed %v, %v; want a new one", mine, replayed, err)
	}
	// B's reuse of the key with another body names B's own command only.
	_, _, err = submit(req("b", devJID, "31"))
	wantErr(t, err, iotgate.EUnprocessable, iotgate.DetailIdempotencyKeyReused)
	if msg := iotgate.ErrorMessage(err); strings.Contains(msg, mine.ID) || !strings.Contains(msg, squat.ID) {
		t.Errorf("B's 422 says %q: want B's command %s, never A's %s", msg, squat.ID, mine.ID)
	}
	// A's retry finds A's command; the same key to another device is
	// another key.
	if c, replayed, err := submit(req("a", devJID, "21.5")); err != nil || !replayed || c.ID != mine.ID {
		t.Errorf("A's retry = %v, replayed %v, %v; want %s", c, replayed, err, mine.ID)
	}
	if c, replayed, err := submit(req("a", dev2JID, "21.5")); err != nil || replayed || c.ID == mine.ID {
		t.Errorf("A's key on another device = %v, replayed %v, %v; want a new command", c, replayed, err)
	}
}

func TestCommandTooManyInFlight(t *testing.T) {
	f := newCmdFixture(t, CommandsConfig{MaxInFlight: 1})
	first := f.submit(t, iotgate.CommandRequest{Mode: iotgate.CommandAsync})
	call1 := f.sender.next(t)
	_, _, err := f.svc.Submit(context.Background(), iotgate.CommandRequest{DeviceJID: devJID, Payload: payload})
	wantErr(t, err, iotgate.ETooMany, "")
	// A queued command waits for its turn instead.
	q := f.submit(t, iotgate.CommandRequest{Mode: iotgate.CommandQueue})
	if q.Status != iotgate.CommandQueued {
		t.Fatalf("queue-mode command is %s, want queued", q.Status)
	}
	call1.reply <- result("")
	f.wait(t, first.ID)
	// The slot is free again: the redelivery (or a presence change)
	// sends the queued one.
	f.svc.DeviceOnline(devJID)
	f.sender.next(t).reply <- result("")
	f.waitStored(t, q.ID, iotgate.CommandSucceeded, nil)
}

func TestCommandQueue(t *testing.T) {
	t.Run("DeliveredInOrderWhenOnline", func(t *testing.T) {
		f := newCmdFixture(t, CommandsConfig{})
		f.presence.set(devJID)
		var ids []string
		for _, p := range []string{"<a xmlns='urn:example:t'/>", "<b xmlns='urn:example:t'/>"} {
			c := f.submit(t, iotgate.CommandRequest{Mode: iotgate.CommandQueue, Payload: p})
			if c.Status != iotgate.CommandQueued || c.ExpiresAt == nil || c.Err() != nil {
				t.Fatalf("queued command = %+v", c)
			}
			ids = append(ids, c.ID)
			time.Sleep(time.Millisecond) // distinct created_at
		}
		f.sender.none(t, 20*time.Millisecond)
		f.presence.set(devJID, devFull)
		f.svc.DeviceOnline(devJID)
		first := f.sender.next(t)
		if first.payload != "<a xmlns='urn:example:t'/>" {
			t.Fatalf("first delivered %s, want a", first.payload)
		}
		f.sender.none(t, 20*time.Millisecond) // one at a time
		first.reply <- result("")
		second := f.sender.next(t)
		if second.payload != "<b xmlns='urn:example:t'/>" {
			t.Fatalf("second delivered %s, want b", second.payload)
		}
		second.reply <- result("")
		for _, id := range ids {
			c := f.waitStored(t, id, iotgate.CommandSucceeded, nil)
			wantHistory(t, c, iotgate.CommandPending, iotgate.CommandQueued, iotgate.CommandSent, iotgate.CommandSucceeded)
		}
	})
	t.Run("OnlineAtSubmitSendsAtOnce", func(t *testing.T) {
		f := newCmdFixture(t, CommandsConfig{})
		c := f.submit(t, iotgate.CommandRequest{Mode: iotgate.CommandQueue})
		if c.Status != iotgate.CommandSent {
			t.Fatalf("status = %s, want sent", c.Status)
		}
		f.sender.next(t).reply <- result("")
		f.waitStored(t, c.ID, iotgate.CommandSucceeded, nil)
	})
	t.Run("BouncedIsQueuedAgain", func(t *testing.T) {
		f := newCmdFixture(t, CommandsConfig{})
		c := f.submit(t, iotgate.CommandRequest{Mode: iotgate.CommandQueue})
		f.presence.set(devJID)
		f.sender.next(t).reply <- iqError("service-unavailable", "")
		c = f.waitStored(t, c.ID, iotgate.CommandQueued, nil)
		wantHistory(t, c, iotgate.CommandPending, iotgate.CommandSent, iotgate.CommandQueued)
		if c.XMPPError != nil {
			t.Errorf("a bounce left xmpp_error %+v", c.XMPPError)
		}
		f.presence.set(devJID, devFull)
		f.svc.DeviceOnline(devJID)
		f.sender.next(t).reply <- result("")
		f.waitStored(t, c.ID, iotgate.CommandSucceeded, nil)
	})
	t.Run("Expires", func(t *testing.T) {
		f := newCmdFixture(t, CommandsConfig{})
		f.presence.set(devJID)
		c := f.submit(t, iotgate.CommandRequest{Mode: iotgate.CommandQueue, ExpiresIn: 30 * time.Millisecond})
		c = f.waitStored(t, c.ID, iotgate.CommandExpired, nil)
		wantHistory(t, c, iotgate.CommandPending, iotgate.CommandQueued, iotgate.CommandExpired)
		f.presence.set(devJID, devFull)
		f.svc.DeviceOnline(devJID)
		f.sender.none(t, 30*time.Millisecond)
	})
	t.Run("StreamDownQueues", func(t *testing.T) {
		f := newCmdFixture(t, CommandsConfig{})
		f.presence.setStale(true)
		c := f.submit(t, iotgate.CommandRequest{Mode: iotgate.CommandQueue})
		if c.Status != iotgate.CommandQueued {
			t.Fatalf("status = %s, want queued", c.Status)
		}
	})
	t.Run("Cancel", func(t *testing.T) {
		f := newCmdFixture(t, CommandsConfig{})
		f.presence.set(devJID)
		c := f.submit(t, iotgate.CommandRequest{Mode: iotgate.CommandQueue})
		got, err := f.svc.Cancel(context.Background(), c.ID)
		if err != nil || got.Status != iotgate.CommandCanceled {
			t.Fatalf("Cancel = %+v, %v", got, err)
		}
		wantHistory(t, storedCommand(t, f.store, c.ID), iotgate.CommandPending, iotgate.CommandQueued, iotgate.CommandCanceled)
		_, err = f.svc.Cancel(context.Background(), c.ID)
		wantErr(t, err, iotgate.EConflict, "command_not_queued")
		_, err = f.svc.Cancel(context.Background(), "nope")
		wantErr(t, err, iotgate.ENotFound, "")
		f.presence.set(devJID, devFull)
		f.svc.DeviceOnline(devJID)
		f.sender.none(t, 30*time.Millisecond)
	})
}

// TestCommandData: a command sent as JSON data goes out (and is stored) as
// the XML the schema builds; a refusal to build is the schema's 422; the
// data counts in the Idempotency-Key's request identity.
func TestCommandData(t *testing.T) {
	f := newCmdFixture(t, CommandsConfig{})
	ctx := context.Background()
	req := iotgate.CommandRequest{DeviceJID: devJID, Data: `{"target":21}`, Element: "set", Mode: iotgate.CommandAsync, IdempotencyKey: "d1"}
	c, _, err := f.svc.Submit(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	want := `<set xmlns="` + testNS + `">{"target":21}</set>`
	if got := f.sender.next(t); got.payload != want {
		t.Errorf("sent %q, want %q", got.payload, want)
	} else {
		got.reply <- result("")
	}
	if c.Payload != want {
		t.Errorf("stored payload %q, want %q", c.Payload, want)
	}
	again, replayed, err := f.svc.Submit(ctx, req)
	if err != nil || !replayed || again.ID != c.ID {
		t.Errorf("retry = %v, replayed %v, %v; want %s replayed", again, replayed, err, c.ID)
	}
	for _, tc := range []struct {
		name         string
		data, el     string
		code, detail string
	}{
		{"OtherDataSameKey", `{"target":22}`, "set", iotgate.EUnprocessable, iotgate.DetailIdempotencyKeyReused},
		{"OtherElementSameKey", `{"target":21}`, "get", iotgate.EUnprocessable, iotgate.DetailIdempotencyKeyReused},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := req
			r.Data, r.Element = tc.data, tc.el
			_, _, err := f.svc.Submit(ctx, r)
			wantErr(t, err, tc.code, tc.detail)
		})
	}
	t.Run("NotMappable", func(t *testing.T) {
		_, _, err := f.svc.Submit(ctx, iotgate.CommandRequest{DeviceJID: devJID, Data: `{"unmappable":1}`, Mode: iotgate.CommandAsync})
		wantErr(t, err, iotgate.EUnprocessable, iotgate.DetailJSONNotMappable)
		f.sender.none(t, 20*time.Millisecond)
	})
}

func TestCommandIdempotency(t *testing.T) {
	f := newCmdFixture(t, CommandsConfig{})
	req := iotgate.CommandRequest{DeviceJID: devJID, Payload: payload, Mode: iotgate.CommandAsync, IdempotencyKey: "k1"}
	first, replay, err := f.svc.Submit(context.Background(), req)
	if err != nil || replay {
		t.Fatalf("first: %v replay %v", err, replay)
	}
	f.sender.next(t).reply <- result("")
	again, replay, err := f.svc.Submit(context.Background(), req)
	if err != nil || !replay || again.ID != first.ID {
		t.Fatalf("again: %v replay %v id %s, want %s", err, replay, again.ID, first.ID)
	}
	f.sender.none(t, 20*time.Millisecond)

	other := req
	other.Payload = `<get xmlns="urn:example:t"/>`
	_, _, err = f.svc.Submit(context.Background(), other)
	wantErr(t, err, iotgate.EUnprocessable, "idempotency_key_reused")

	// A command refused before sending (offline) does not hold its key.
	f.presence.set(devJID)
	req.IdempotencyKey = "k2"
	off, _, err := f.svc.Submit(context.Background(), req)
	if err != nil || off.Status != iotgate.CommandFailed {
		t.Fatalf("offline: %+v %v", off, err)
	}
	f.presence.set(devJID, devFull)
	on, replay, err := f.svc.Submit(context.Background(), req)
	if err != nil || replay || on.ID == off.ID || on.Status != iotgate.CommandSent {
		t.Fatalf("retry once online: %+v replay %v err %v", on, replay, err)
	}
	f.sender.next(t).reply <- result("")
}

func TestCommandRefused(t *testing.T) {
	tests := []struct {
		name   string
		req    iotgate.CommandRequest
		code   string
		detail string
	}{
		{"UnknownDevice", iotgate.CommandRequest{DeviceJID: "nobody@example.com"}, iotgate.ENotFound, ""},
		{"BadJID", iotgate.CommandRequest{DeviceJID: "@@"}, iotgate.EInvalid, ""},
		{"BadType", iotgate.CommandRequest{Type: "result"}, iotgate.EInvalid, ""},
		{"BadMode", iotgate.CommandRequest{Mode: "later"}, iotgate.EInvalid, ""},
		{"TimeoutTooLong", iotgate.CommandRequest{Timeout: 301 * time.Second}, iotgate.EInvalid, ""},
		{"ExpiryWithoutQueue", iotgate.CommandRequest{ExpiresIn: time.Minute}, iotgate.EInvalid, ""},
		{"ExpiryTooLong", iotgate.CommandRequest{Mode: iotgate.CommandQueue, ExpiresIn: 8 * 24 * time.Hour}, iotgate.EInvalid, ""},
		{"BadResource", iotgate.CommandRequest{Resource: "\u0000"}, iotgate.EInvalid, ""},
		{"InvalidPayload", iotgate.CommandRequest{Payload: "<set xmlns='urn:example:t'>bad</set>"}, iotgate.EUnprocessable, ""},
		// The validator skips these; the XMPP server would close the
		// stream for them.
		{"Comment", iotgate.CommandRequest{Payload: "<set xmlns='urn:example:t'><!--x--><target>21.5</target></set>"}, iotgate.EUnprocessable, iotgate.DetailCommentForbidden},
		{"CommentAfter", iotgate.CommandRequest{Payload: "<set xmlns='urn:example:t'/><!--x-->"}, iotgate.EUnprocessable, iotgate.DetailCommentForbidden},
		{"PI", iotgate.CommandRequest{Payload: "<set xmlns='urn:example:t'><?x y?></set>"}, iotgate.EUnprocessable, iotgate.DetailProcInstForbidden},
		{"LateDeclaration", iotgate.CommandRequest{Payload: "<!--c--><?xml version='1.0'?><set xmlns='urn:example:t'/>"}, iotgate.EUnprocessable, iotgate.DetailCommentForbidden},
		{"Doctype", iotgate.CommandRequest{Payload: "<!DOCTYPE set><set xmlns='urn:example:t'/>"}, iotgate.EUnprocessable, iotgate.DetailDoctypeForbidden},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newCmdFixture(t, CommandsConfig{})
			if tt.req.DeviceJID == "" {
				tt.req.DeviceJID = devJID
			}
			if tt.req.Payload == "" {
				tt.req.Payload = payload
			}
			_, _, err := f.svc.Submit(context.Background(), tt.req)
			wantErr(t, err, tt.code, tt.detail)
			f.sender.none(t, 10*time.Millisecond)
			if n := f.store.Len(); n != 0 {
				t.Errorf("%d commands stored, want none", n)
			}
		})
	}
}

func TestCommandRecover(t *testing.T) {
	store := memstore.NewCommandStore()
	now := time.Now().UTC()
	for id, st := range map[string]iotgate.CommandStatus{"s": iotgate.CommandSent, "p": iotgate.CommandPending, "q": iotgate.CommandQueued, "ok": iotgate.CommandSucceeded} {
		if err := store.CreateCommand(context.Background(), &iotgate.Command{ID: id, Status: st, DeviceJID: devJID, CreatedAt: now, History: []iotgate.CommandEvent{{Status: st, At: now}}}, time.Time{}, 0); err != nil {
			t.Fatal(err)
		}
	}
	svc := NewCommands(store, fakeDevs{}, fakeSchemaSource{}, &fakePresence{}, newFakeSender(), CommandsConfig{})
	if err := svc.Recover(context.Background()); err != nil {
		t.Fatal(err)
	}
	for id, want := range map[string]iotgate.CommandStatus{"s": iotgate.CommandFailed, "p": iotgate.CommandFailed, "q": iotgate.CommandQueued, "ok": iotgate.CommandSucceeded} {
		c := storedCommand(t, store, id)
		if c.Status != want {
			t.Errorf("%s: status %s, want %s", id, c.Status, want)
		}
		if want == iotgate.CommandFailed && (c.ErrorCode != iotgate.DetailRestarted || c.Error != reasonRestarted) {
			t.Errorf("%s: error %s %q", id, c.ErrorCode, c.Error)
		}
	}
}

func TestCommandShutdownFailsInFlight(t *testing.T) {
	f := newCmdFixture(t, CommandsConfig{})
	c := f.submit(t, iotgate.CommandRequest{Mode: iotgate.CommandAsync, Timeout: time.Minute})
	f.sender.next(t)
	f.stop()
	got := storedCommand(t, f.store, c.ID)
	if got.Status != iotgate.CommandFailed || got.Error != reasonShutdown {
		t.Errorf("after shutdown: %s %q, want failed: %s", got.Status, got.Error, reasonShutdown)
	}
	_, _, err := f.svc.Submit(context.Background(), iotgate.CommandRequest{DeviceJID: devJID, Payload: payload})
	wantErr(t, err, iotgate.EUnavailable, "")
}

func TestCommandStreamDropFailsPendingAtOnce(t *testing.T) {
	f := newCmdFixture(t, CommandsConfig{})
	const n = 5
	var ids []string
	for range n {
		ids = append(ids, f.submit(t, iotgate.CommandRequest{Mode: iotgate.CommandAsync, Timeout: time.Minute}).ID)
	}
	for range n {
		f.sender.next(t)
	}
	start := time.Now()
	close(f.sender.drop)
	for _, id := range ids {
		c := f.wait(t, id)
		wantErr(t, c.Err(), iotgate.EUnavailable, iotgate.DetailXMPPUnavailable)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("pending commands failed after %s, want at once", d)
	}
}

func TestPresenceOnOnline(t *testing.T) {
	p := NewPresence(nil, PresenceConfig{})
	p.MarkFresh()
	var got []string
	p.OnOnline(func(jid string) {
		// Called outside the lock: asking presence must not deadlock.
		if online, _ := p.Online(jid); !online {
			t.Errorf("%s not online in its hook", jid)
		}
		got = append(got, jid)
	})
	d := &iotgate.Device{ID: 1, JID: devJID}
	p.Update(d, iotgate.PresenceUpdate{From: devFull, Available: true})
	p.Update(d, iotgate.PresenceUpdate{From: devFull, Available: true, Show: "away"}) // same resource: no call
	p.Update(d, iotgate.PresenceUpdate{From: devJID + "/hall", Available: true})      // a new resource: a call
	p.Update(d, iotgate.PresenceUpdate{From: devFull})
	if !slices.Equal(got, []string{devJID, devJID}) {
		t.Errorf("hook calls = %v, want two for %s", got, devJID)
	}
}

func TestCommandQueuedByPreviousRunDelivered(t *testing.T) {
	f := newCmdFixture(t, CommandsConfig{})
	now := time.Now().UTC()
	exp := now.Add(time.Hour)
	if err := f.store.CreateCommand(context.Background(), &iotgate.Command{ID: "old", DeviceID: 1, DeviceJID: devJID, Type: "set", Payload: payload, Mode: iotgate.CommandQueue,
		Status: iotgate.CommandQueued, Timeout: time.Second, CreatedAt: now, ExpiresAt: &exp,
		History: []iotgate.CommandEvent{{Status: iotgate.CommandPending, At: now}, {Status: iotgate.CommandQueued, At: now}}}, time.Time{}, 0); err != nil {
		t.Fatal(err)
	}
	// Before Recover the service doesn't know of it: a presence change
	// of a device without queued commands costs nothing.
	f.svc.DeviceOnline(devJID)
	f.sender.none(t, 20*time.Millisecond)
	if err := f.svc.Recover(context.Background()); err != nil {
		t.Fatal(err)
	}
	f.svc.DeviceOnline(devJID)
	f.sender.next(t).reply <- result("")
	f.waitStored(t, "old", iotgate.CommandSucceeded, nil)
}

// TestCommandsDrain checks the graceful shutdown of commands: one in
// flight may still be answered during the drain; one that isn't answered
// by its end fails as restarted; queued ones are not delivered meanwhile.
func TestCommandsDrain(t *testing.T) {
	tests := []struct {
		name       string
		answer     bool // the device answers during the drain
		wantStatus iotgate.CommandStatus
		wantCode   string
	}{
		{"AnsweredDuringDrain", true, iotgate.CommandSucceeded, ""},
		{"NotAnsweredFailsRestarted", false, iotgate.CommandFailed, iotgate.DetailRestarted},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newCmdFixture(t, CommandsConfig{})
			c := f.submit(t, iotgate.CommandRequest{Mode: iotgate.CommandAsync, Timeout: time.Minute})
			call := f.sender.next(t)
			f.presence.set(devJID) // offline: the next one is queued
			q := f.submit(t, iotgate.CommandRequest{Mode: iotgate.CommandQueue})
			if q.Status != iotgate.CommandQueued {
				t.Fatalf("queue command is %s", q.Status)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			drained := make(chan struct{})
			go func() { f.svc.Drain(ctx); close(drained) }()
			time.Sleep(20 * time.Millisecond) // the drain has begun
			// A device coming online during the drain gets nothing.
			f.presence.set(devJID, devFull)
			f.svc.DeviceOnline(devJID)
			if tt.answer {
				time.Sleep(50 * time.Millisecond)
				call.reply <- result(`<state xmlns="urn:example:t"/>`)
			}
			<-drained
			f.stop()
			got := f.waitStored(t, c.ID, tt.wantStatus, nil)
			if got.ErrorCode != tt.wantCode {
				t.Errorf("error code %q, want %q", got.ErrorCode, tt.wantCode)
			}
			f.sender.none(t, 50*time.Millisecond)
			if got := storedCommand(t, f.store, q.ID); got.Status != iotgate.CommandQueued {
				t.Errorf("queued command is %s after the drain, want queued", got.Status)
			}
		})
	}
}

// TestCommandRequestHashStable pins the request hash: commands stored by
// earlier versions must still match their retries' Idempotency-Key.
func TestCommandRequestHashStable(t *testing.T) {
	old := func(r *iotgate.CommandRequest, jid string) string {
		h := sha256.New()
		for _, s := range []string{jid, r.Type, string(r.Mode), r.Resource,
			strconv.FormatInt(r.Timeout.Milliseconds(), 10), strconv.FormatInt(r.ExpiresIn.Milliseconds(), 10), r.Payload} {
			fmt.Fprintf(h, "%d:%s;", len(s), s)
		}
		return hex.EncodeToString(h.Sum(nil))
	}
	for _, tc := range []struct {
		name string
		req  iotgate.CommandRequest
	}{
		{"Sync", iotgate.CommandRequest{Type: "set", Mode: iotgate.CommandSync, Timeout: time.Second, Payload: "<a/>"}},
		{"Queue", iotgate.CommandRequest{Type: "get", Mode: iotgate.CommandQueue, Resource: "kitchen", Timeout: time.Minute, ExpiresIn: time.Hour, Payload: "<b>ü</b>"}},
		{"Empty", iotgate.CommandRequest{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got, want := requestHash(&tc.req, "t@example.com"), old(&tc.req, "t@example.com"); got != want {
				t.Errorf("hash = %s, want %s", got, want)
			}
		})
	}
}

func TestPlainXML(t *testing.T) {
	tests := []struct {
		name, payload, detail string
	}{
		{"OK", "<set xmlns='urn:t'><target>1</target></set>", ""},
		{"Escaped", "<set xmlns='urn:t' a='&lt;!--'><target>&lt;?x?&gt;&lt;!--</target></set>", ""},
		{"Declaration", "  <?xml version='1.0'?>\n<set xmlns='urn:t'/>", ""},
		{"CDATA", "<set xmlns='urn:t'><target><![CDATA[1]]></target></set>", ""},
		{"NotWellFormedLeftToValidator", "<set><!--", ""},
		{"Comment", "<set xmlns='urn:t'><!--x--></set>", iotgate.DetailCommentForbidden},
		{"PI", "<set xmlns='urn:t'/><?x?>", iotgate.DetailProcInstForbidden},
		{"DeclarationNotFirst", "<set xmlns='urn:t'><?xml version='1.0'?></set>", iotgate.DetailProcInstForbidden},
		{"Doctype", "<!DOCTYPE set [<!ENTITY e 'x'>]><set xmlns='urn:t'/>", iotgate.DetailDoctypeForbidden},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := plainXML([]byte(tt.payload))
			if got, want := errDetail(err), errDetail(plainXMLTokens([]byte(tt.payload))); got != want {
				t.Errorf("plainXML's detail %q, reading every token %q", got, want)
			}
			if tt.detail == "" {
				if err != nil {
					t.Fatalf("err = %v, want none", err)
				}
				return
			}
			wantErr(t, err, iotgate.EUnprocessable, tt.detail)
		})
	}
}
