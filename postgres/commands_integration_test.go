//go:build integration

package postgres_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/iotgate/iotgate"
	"github.com/iotgate/iotgate/devices"
	"github.com/iotgate/iotgate/internal/servers"
	"github.com/iotgate/iotgate/postgres"
	"github.com/lib/pq"
)

// commandFixture is a database with one registered thermostat.
// deletedDevice registers a device and deletes it: writes for it must be
// skipped.
func deletedDevice(t *testing.T, svc *devices.Service, jid string) *iotgate.Device {
	t.Helper()
	ctx := context.Background()
	d, err := svc.Register(ctx, &iotgate.Device{JID: jid, Schema: "thermostat"})
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Delete(ctx, d.JID); err != nil {
		t.Fatal(err)
	}
	return d
}

// sentAndAnswered stores command id of d as sent and returns its update to
// succeeded at done, with an answer and its history entry.
func sentAndAnswered(t *testing.T, db *postgres.DB, d *iotgate.Device, id string, done time.Time) iotgate.CommandUpdate {
	t.Helper()
	c := newCommand(d, id, cmdTime, iotgate.CommandSent)
	if errs := db.CreateCommands(context.Background(), []*iotgate.Command{c}); errs[0] != nil {
		t.Fatal(errs[0])
	}
	c.Status, c.CompletedAt, c.AnsweredAt = iotgate.CommandSucceeded, &done, &done
	c.Response = &iotgate.CommandResponse{XML: `<state xmlns="urn:example:thermostat"/>`, Data: json.RawMessage(`{"a": 1}`)}
	ev := iotgate.CommandEvent{Status: iotgate.CommandSucceeded, At: done}
	c.History = append(c.History, ev)
	return iotgate.CommandUpdate{Command: c, From: []iotgate.CommandStatus{iotgate.CommandSent}, Event: &ev}
}

func commandFixture(t *testing.T) (*postgres.DB, *devices.Service, *iotgate.Device) {
	t.Helper()
	db, reg, svc := newStack(t)
	return db, svc, thermostats(t, reg, svc, "thermo1@example.com")[0]
}

var cmdTime = time.Date(2026, 1, 2, 15, 4, 5, 123456000, time.UTC)

func newCommand(d *iotgate.Device, id string, at time.Time, st iotgate.CommandStatus) *iotgate.Command {
	return &iotgate.Command{
		ID: id, DeviceID: d.ID, DeviceJID: d.JID, Type: "set",
		Payload: `<set xmlns="urn:example:thermostat"><target>21.5</target></set>`,
		Mode:    iotgate.CommandSync, Status: st, Timeout: 10 * time.Second, CreatedAt: at,
		RequestHash: "h-" + id,
		History:     []iotgate.CommandEvent{{Status: iotgate.CommandPending, At: at}, {Status: st, At: at.Add(time.Millisecond), Reason: "why " + id}},
	}
}

func wantCode(t *testing.T, err error, code, detail string) {
	t.Helper()
	var e *iotgate.Error
	if !errors.As(err, &e) || e.Code != code || e.Detail != detail {
		t.Fatalf("err = %v, want %s/%s", err, code, detail)
	}
}

func TestCommandStore(t *testing.T) {
	ctx := context.Background()
	db, svc, d := commandFixture(t)

	t.Run("RoundTrip", func(t *testing.T) {
		c := newCommand(d, "rt", cmdTime, iotgate.CommandFailed)
		sent, done, answered := cmdTime.Add(time.Second), cmdTime.Add(2*time.Second), cmdTime.Add(3*time.Second)
		exp := cmdTime.Add(time.Hour)
		c.Resource, c.Target, c.Mode, c.ExpiresAt = "kitchen", "thermo1@example.com/kitchen", iotgate.CommandQueue, &exp
		c.SentAt, c.CompletedAt, c.AnsweredAt = &sent, &done, &answered
		c.Response = &iotgate.CommandResponse{XML: "<state/>", Data: json.RawMessage(`{"mode": "heat"}`), Invalid: "x"}
		c.XMPPError = &iotgate.XMPPError{Type: "cancel", Condition: "item-not-found", Text: "nope"}
		c.ErrorCode, c.Error, c.LateAnswer, c.IdempotencyKey = iotgate.DetailXMPPError, "the device answered with an error", true, "key-rt"
		if err := db.CreateCommand(ctx, c, cmdTime.Add(-24*time.Hour), 0); err != nil {
			t.Fatal(err)
		}
		got, err := db.Command(ctx, "rt")
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, c) {
			t.Errorf("stored\n%+v\nread back\n%+v", c, got)
		}
		_, err = db.Command(ctx, "nope")
		wantCode(t, err, iotgate.ENotFound, "")
	})

	t.Run("IdempotencyKey", func(t *testing.T) {
		old := newCommand(d, "k-old", cmdTime, iotgate.CommandSucceeded)
		old.IdempotencyKey = "k"
		if err := db.CreateCommand(ctx, old, cmdTime.Add(-24*time.Hour), 0); err != nil {
			t.Fatal(err)
		}
		got, err := db.CommandByIdempotencyKey(ctx, "", d.ID, "k", cmdTime.Add(-time.Hour))
		if err != nil || got.ID != "k-old" {
			t.Fatalf("by key = %v, %v", got, err)
		}
		_, err = db.CommandByIdempotencyKey(ctx, "", d.ID, "k", cmdTime.Add(time.Second))
		wantCode(t, err, iotgate.ENotFound, "")

		// Within the window the key is taken...
		dup := newCommand(d, "k-dup", cmdTime.Add(time.Hour), iotgate.CommandSent)
		dup.IdempotencyKey = "k"
		wantCode(t, db.CreateCommand(ctx, dup, cmdTime.Add(-23*time.Hour), 0), iotgate.EConflict, "idempotency_key_taken")
		if _, err := db.Command(ctx, "k-dup"); iotgate.ErrorCode(err) != iotgate.ENotFound {
			t.Errorf("refused command was stored: %v", err)
		}
		// ...after it, the old holder lets go.
		if err := db.CreateCommand(ctx, dup, cmdTime.Add(time.Minute), 0); err != nil {
			t.Fatal(err)
		}
		if got, _ := db.Command(ctx, "k-old"); got.IdempotencyKey != "" {
			t.Errorf("old holder still has key %q", got.IdempotencyKey)
		}
		if got, err := db.CommandByIdempotencyKey(ctx, "", d.ID, "k", time.Time{}); err != nil || got.ID != "k-dup" {
			t.Errorf("by key = %v, %v, want k-dup", got, err)
		}
	})

	t.Run("UpdateGuardsStatus", func(t *testing.T) {
		c := newCommand(d, "up", cmdTime, iotgate.CommandSent)
		if err := db.CreateCommand(ctx, c, time.Time{}, 0); err != nil {
			t.Fatal(err)
		}
		c.Status, c.CompletedAt = iotgate.CommandSucceeded, &cmdTime
		c.Response = &iotgate.CommandResponse{XML: ""}
		ev := iotgate.CommandEvent{Status: iotgate.CommandSucceeded, At: cmdTime.Add(time.Second)}
		if err := db.UpdateCommand(ctx, c, []iotgate.CommandStatus{iotgate.CommandSent}, &ev); err != nil {
			t.Fatal(err)
		}
		got, _ := db.Command(ctx, "up")
		if got.Status != iotgate.CommandSucceeded || len(got.History) != 3 || got.History[2] != ev || got.Response == nil || got.Response.Data != nil {
			t.Errorf("after update: %+v", got)
		}
		wantCode(t, db.UpdateCommand(ctx, c, []iotgate.CommandStatus{iotgate.CommandSent}, &ev), iotgate.EConflict, "")
		c.ID = "missing"
		wantCode(t, db.UpdateCommand(ctx, c, []iotgate.CommandStatus{iotgate.CommandSent}, nil), iotgate.ENotFound, "")
	})

	t.Run("Pages", func(t *testing.T) {
		d2, err := svc.Register(ctx, &iotgate.Device{JID: "pager@example.com", Schema: "thermostat"})
		if err != nil {
			t.Fatal(err)
		}
		var want []string
		for i := range 5 {
			id := fmt.Sprintf("p%d", i)
			// Two share a timestamp: the id breaks the tie.
			at := cmdTime.Add(time.Duration(i/2) * time.Second)
			if err := db.CreateCommand(ctx, newCommand(d2, id, at, iotgate.CommandSucceeded), time.Time{}, 0); err != nil {
				t.Fatal(err)
			}
			want = append([]string{id}, want...)
		}
		var got []string
		cursor := ""
		for range 4 {
			page, err := db.Commands(ctx, d2.JID, iotgate.CommandFilter{Limit: 2, Cursor: cursor})
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range page.Items {
				got = append(got, c.ID)
			}
			if cursor = page.NextCursor; cursor == "" {
				break
			}
		}
		if !slices.Equal(got, want) {
			t.Errorf("pages = %v, want %v", got, want)
		}
		_, err = db.Commands(ctx, d2.JID, iotgate.CommandFilter{Limit: 2, Cursor: "!!"})
		wantCode(t, err, iotgate.EInvalid, "")
	})

	t.Run("QueueExpireAndRecover", func(t *testing.T) {
		d3, err := svc.Register(ctx, &iotgate.Device{JID: "queue@example.com", Schema: "thermostat"})
		if err != nil {
			t.Fatal(err)
		}
		for i, st := range []iotgate.CommandStatus{iotgate.CommandQueued, iotgate.CommandQueued, iotgate.CommandSent, iotgate.CommandPending} {
			c := newCommand(d3, fmt.Sprintf("q%d", i), cmdTime.Add(time.Duration(i)*time.Second), st)
			exp := cmdTime.Add(time.Duration(10*i) * time.Minute)
			c.Mode, c.ExpiresAt = iotgate.CommandQueue, &exp
			if err := db.CreateCommand(ctx, c, time.Time{}, 0); err != nil {
				t.Fatal(err)
			}
		}
		q, err := db.QueuedCommands(ctx, d3.JID, 10)
		if err != nil || len(q) != 2 || q[0].ID != "q0" || q[1].ID != "q1" {
			t.Fatalf("queued = %v, %v", q, err)
		}
		jids, err := db.QueuedDeviceJIDs(ctx)
		if err != nil || !slices.Contains(jids, d3.JID) {
			t.Errorf("queued devices = %v, %v", jids, err)
		}

		ids, err := db.ExpireCommands(ctx, cmdTime.Add(5*time.Minute), "too late")
		if err != nil || !slices.Equal(ids, []string{"q0"}) {
			t.Fatalf("expired = %v, %v; want [q0]", ids, err)
		}
		c, _ := db.Command(ctx, "q0")
		if c.Status != iotgate.CommandExpired || c.Error != "too late" || c.CompletedAt == nil || c.History[len(c.History)-1].Status != iotgate.CommandExpired {
			t.Errorf("expired command = %+v", c)
		}

		n, err := db.FailUnfinishedCommands(ctx, "", cmdTime.Add(time.Hour), iotgate.DetailRestarted, "restarted")
		if err != nil || n < 2 {
			t.Fatalf("resolved %d, %v; want at least q2 and q3", n, err)
		}
		for _, id := range []string{"q2", "q3"} {
			c, _ := db.Command(ctx, id)
			last := c.History[len(c.History)-1]
			if c.Status != iotgate.CommandFailed || c.ErrorCode != iotgate.DetailRestarted || last.Status != iotgate.CommandFailed || last.Reason != "restarted" {
				t.Errorf("%s after restart: %+v", id, c)
			}
		}
		if c, _ := db.Command(ctx, "q1"); c.Status != iotgate.CommandQueued {
			t.Errorf("q1 is %s, want still queued", c.Status)
		}
	})

	t.Run("DeviceDeleteCascades", func(t *testing.T) {
		d4, err := svc.Register(ctx, &iotgate.Device{JID: "gone@example.com", Schema: "thermostat"})
		if err != nil {
			t.Fatal(err)
		}
		if err := db.CreateCommand(ctx, newCommand(d4, "gone1", cmdTime, iotgate.CommandQueued), time.Time{}, 0); err != nil {
			t.Fatal(err)
		}
		if err := svc.Delete(ctx, d4.JID); err != nil {
			t.Fatal(err)
		}
		_, err = db.Command(ctx, "gone1")
		wantCode(t, err, iotgate.ENotFound, "")
		wantCode(t, db.CreateCommand(ctx, newCommand(d4, "gone2", cmdTime, iotgate.CommandQueued), time.Time{}, 0), iotgate.ENotFound, "")
		wantCode(t, db.CreateCommand(ctx, newCommand(d4, "gone3", cmdTime, iotgate.CommandQueued), time.Time{}, 5), iotgate.ENotFound, "")
	})

	// Tenant B squats on tenant A's predictable key: before the keys were
	// scoped, A got 422 for 24 hours and B learned A's command ID.
	t.Run("IdempotencyKeyScopedToTokenAndDevice", func(t *testing.T) {
		d2, err := svc.Register(ctx, &iotgate.Device{JID: "scope2@example.com", Schema: "thermostat"})
		if err != nil {
			t.Fatal(err)
		}
		keyed := func(id, token string, dev *iotgate.Device) *iotgate.Command {
			c := newCommand(dev, id, cmdTime, iotgate.CommandSent)
			c.IdempotencyKey, c.TokenID = "7f3c-set-21.5", token
			return c
		}
		for _, c := range []*iotgate.Command{
			keyed("squat-b", "tok-b", d),  // B first, on A's device
			keyed("mine-a", "tok-a", d),   // A's own command with that key: not blocked
			keyed("mine-a2", "tok-a", d2), // A's key on another device
			keyed("mine-none", "", d),     // no token: a scope of its own
		} {
			if err := db.CreateCommand(ctx, c, cmdTime.Add(-24*time.Hour), 0); err != nil {
				t.Fatalf("create %s: %v", c.ID, err)
			}
		}
		wantCode(t, db.CreateCommand(ctx, keyed("again-a", "tok-a", d), cmdTime.Add(-24*time.Hour), 0), iotgate.EConflict, "idempotency_key_taken")
		for _, tc := range []struct {
			token string
			dev   *iotgate.Device
			want  string
		}{{"tok-a", d, "mine-a"}, {"tok-b", d, "squat-b"}, {"tok-a", d2, "mine-a2"}, {"", d, "mine-none"}} {
			got, err := db.CommandByIdempotencyKey(ctx, tc.token, tc.dev.ID, "7f3c-set-21.5", cmdTime.Add(-time.Hour))
			if err != nil || got.ID != tc.want {
				t.Errorf("by key (%q, %s) = %v, %v, want %s", tc.token, tc.dev.JID, got, err, tc.want)
			}
		}
		_, err = db.CommandByIdempotencyKey(ctx, "tok-c", d.ID, "7f3c-set-21.5", cmdTime.Add(-time.Hour))
		wantCode(t, err, iotgate.ENotFound, "")
		// Releasing an old holder releases only the caller's own.
		late := keyed("late-a", "tok-a", d)
		late.CreatedAt = cmdTime.Add(25 * time.Hour)
		if err := db.CreateCommand(ctx, late, cmdTime.Add(time.Hour), 0); err != nil {
			t.Fatal(err)
		}
		for id, want := range map[string]string{"mine-a": "", "squat-b": "7f3c-set-21.5", "mine-none": "7f3c-set-21.5", "mine-a2": "7f3c-set-21.5"} {
			if got, _ := db.Command(ctx, id); got.IdempotencyKey != want {
				t.Errorf("%s has key %q, want %q", id, got.IdempotencyKey, want)
			}
		}
	})

	t.Run("QueueBound", func(t *testing.T) {
		dq, err := svc.Register(ctx, &iotgate.Device{JID: "queuebound@example.com", Schema: "thermostat"})
		if err != nil {
			t.Fatal(err)
		}
		for i := range 3 {
			if err := db.CreateCommand(ctx, newCommand(dq, fmt.Sprintf("q-%d", i), cmdTime, iotgate.CommandQueued), time.Time{}, 3); err != nil {
				t.Fatalf("queued %d: %v", i, err)
			}
		}
		wantCode(t, db.CreateCommand(ctx, newCommand(dq, "q-over", cmdTime, iotgate.CommandQueued), time.Time{}, 3), iotgate.ETooMany, iotgate.DetailDeviceQueueFull)
		if _, err := db.Command(ctx, "q-over"); iotgate.ErrorCode(err) != iotgate.ENotFound {
			t.Errorf("refused command was stored: %v", err)
		}
		// Commands that are not queued don't count, nor are they bounded.
		if err := db.CreateCommand(ctx, newCommand(dq, "q-sent", cmdTime, iotgate.CommandSent), time.Time{}, 3); err != nil {
			t.Fatal(err)
		}
		// A delivered command frees its place.
		c, _ := db.Command(ctx, "q-0")
		c.Status = iotgate.CommandSent
		if err := db.UpdateCommand(ctx, c, []iotgate.CommandStatus{iotgate.CommandQueued}, nil); err != nil {
			t.Fatal(err)
		}
		if err := db.CreateCommand(ctx, newCommand(dq, "q-3", cmdTime, iotgate.CommandQueued), time.Time{}, 3); err != nil {
			t.Errorf("after a delivery: %v", err)
		}
	})

	// Concurrent requests can't all squeeze under the bound: the device's
	// row serializes them.
	t.Run("QueueBoundConcurrent", func(t *testing.T) {
		dq, err := svc.Register(ctx, &iotgate.Device{JID: "queuebound2@example.com", Schema: "thermostat"})
		if err != nil {
			t.Fatal(err)
		}
		const bound, tries = 5, 40
		errs := make([]error, tries)
		var wg sync.WaitGroup
		for i := range tries {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[i] = db.CreateCommand(ctx, newCommand(dq, fmt.Sprintf("qc-%d", i), cmdTime, iotgate.CommandQueued), time.Time{}, bound)
			}()
		}
		wg.Wait()
		ok := 0
		for _, err := range errs {
			switch {
			case err == nil:
				ok++
			case iotgate.ErrorCode(err) != iotgate.ETooMany:
				t.Errorf("unexpected error: %v", err)
			}
		}
		queued, err := db.QueuedCommands(ctx, dq.JID, 1000)
		if ok != bound || len(queued) != bound || err != nil {
			t.Errorf("%d accepted, %d queued (%v), want %d", ok, len(queued), err, bound)
		}
	})
}

// TestCommandStoreBatches checks the group-commit writes: many commands
// in one statement, each with its own outcome.
func TestCommandStoreBatches(t *testing.T) {
	ctx := context.Background()
	db, svc, d := commandFixture(t)
	gone := deletedDevice(t, svc, "gone@example.com")

	t.Run("Create", func(t *testing.T) {
		keyed := newCommand(d, "c-keyed", cmdTime, iotgate.CommandSent)
		keyed.IdempotencyKey = "k"
		for _, tc := range []struct {
			name string
			cs   []*iotgate.Command
			// want is each command's error code ("" for stored).
			want []string
		}{
			{"OK", []*iotgate.Command{newCommand(d, "c1", cmdTime, iotgate.CommandSent), newCommand(d, "c2", cmdTime, iotgate.CommandFailed),
				newCommand(d, "c3", cmdTime.Add(time.Second), iotgate.CommandQueued)}, []string{"", "", ""}},
			{"ErrDeviceGoneOnlyItsOwn", []*iotgate.Command{newCommand(d, "c4", cmdTime, iotgate.CommandSent), newCommand(gone, "c5", cmdTime, iotgate.CommandSent),
				newCommand(d, "c6", cmdTime, iotgate.CommandSent)}, []string{"", iotgate.ENotFound, ""}},
			{"ErrDuplicateID", []*iotgate.Command{newCommand(d, "c7", cmdTime, iotgate.CommandSent), newCommand(d, "c1", cmdTime, iotgate.CommandSent)},
				[]string{"", iotgate.EConflict}},
			{"ErrIdempotencyKey", []*iotgate.Command{keyed}, []string{iotgate.EInvalid}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				errs := db.CreateCommands(ctx, tc.cs)
				if len(errs) != len(tc.cs) {
					t.Fatalf("%d errors for %d commands", len(errs), len(tc.cs))
				}
				for i, c := range tc.cs {
					if got := iotgate.ErrorCode(errs[i]); errs[i] != nil && got != tc.want[i] || errs[i] == nil && tc.want[i] != "" {
						t.Errorf("%s: err = %v, want code %q", c.ID, errs[i], tc.want[i])
						continue
					}
					if tc.want[i] != "" {
						continue
					}
					got, err := db.Command(ctx, c.ID)
					if err != nil {
						t.Fatal(err)
					}
					if !reflect.DeepEqual(got, c) {
						t.Errorf("stored\n%+v\nread back\n%+v", c, got)
					}
				}
			})
		}
	})

	t.Run("Update", func(t *testing.T) {
		mk := func(id string, st iotgate.CommandStatus) *iotgate.Command {
			c := newCommand(d, id, cmdTime, st)
			if errs := db.CreateCommands(ctx, []*iotgate.Command{c}); errs[0] != nil {
				t.Fatal(errs[0])
			}
			return c
		}
		ok, noEvent, late, wrong := mk("u-ok", iotgate.CommandSent), mk("u-noev", iotgate.CommandSent), mk("u-late", iotgate.CommandTimedOut), mk("u-wrong", iotgate.CommandSucceeded)
		missing := newCommand(d, "u-missing", cmdTime, iotgate.CommandSent)
		done := cmdTime.Add(2 * time.Second)

		ok.Status, ok.CompletedAt, ok.AnsweredAt = iotgate.CommandSucceeded, &done, &done
		ok.Response = &iotgate.CommandResponse{XML: `<state xmlns="urn:example:thermostat"/>`, Data: json.RawMessage(`{"a": 1}`)}
		okEv := iotgate.CommandEvent{Status: iotgate.CommandSucceeded, At: done}
		noEvent.Status, noEvent.ErrorCode, noEvent.Error = iotgate.CommandFailed, iotgate.DetailXMPPError, "no"
		late.LateAnswer, late.XMPPError = true, &iotgate.XMPPError{Type: "cancel", Condition: "item-not-found", Text: "what"}
		wrongEv := iotgate.CommandEvent{Status: iotgate.CommandFailed, At: done, Reason: "too late"}

		us := []iotgate.CommandUpdate{
			{Command: ok, From: []iotgate.CommandStatus{iotgate.CommandSent}, Event: &okEv},
			{Command: noEvent, From: []iotgate.CommandStatus{iotgate.CommandPending, iotgate.CommandSent}},
			{Command: late, From: []iotgate.CommandStatus{iotgate.CommandTimedOut}},
			{Command: wrong, From: []iotgate.CommandStatus{iotgate.CommandSent}, Event: &wrongEv},
			{Command: missing, From: []iotgate.CommandStatus{iotgate.CommandSent}},
		}
		errs := db.UpdateCommands(ctx, us)
		for _, tc := range []struct {
			c        *iotgate.Command
			wantCode string
			// history is the entries the stored command must have.
			history []iotgate.CommandEvent
		}{
			{ok, "", append(slices.Clone(ok.History), okEv)},
			{noEvent, "", noEvent.History},
			{late, "", late.History},
			{wrong, iotgate.EConflict, wrong.History},
			{missing, iotgate.ENotFound, nil},
		} {
			t.Run(tc.c.ID, func(t *testing.T) {
				i := slices.IndexFunc(us, func(u iotgate.CommandUpdate) bool { return u.Command == tc.c })
				if got := iotgate.ErrorCode(errs[i]); errs[i] != nil && got != tc.wantCode || errs[i] == nil && tc.wantCode != "" {
					t.Fatalf("err = %v, want code %q", errs[i], tc.wantCode)
				}
				got, err := db.Command(ctx, tc.c.ID)
				if tc.wantCode == iotgate.ENotFound {
					wantCode(t, err, iotgate.ENotFound, "")
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(got.History, tc.history) {
					t.Errorf("history = %+v, want %+v", got.History, tc.history)
				}
				if tc.wantCode != "" {
					if got.Status != iotgate.CommandSucceeded {
						t.Errorf("refused update changed the status to %s", got.Status)
					}
					return
				}
				want := tc.c.Clone()
				want.History = tc.history
				if !reflect.DeepEqual(got, want) {
					t.Errorf("stored\n%+v\nread back\n%+v", want, got)
				}
			})
		}
	})
}

// The command service writes inserts and status changes in one batch
// through it.
var _ devices.CommandWriter = (*postgres.DB)(nil)

// TestWriteCommands checks WriteCommands: new commands and status changes
// of others in one transaction, each with its own outcome, and one command
// event per stored change.
func TestWriteCommands(t *testing.T) {
	ctx := context.Background()
	db, svc, d := commandFixture(t)
	gone := deletedDevice(t, svc, "gone@example.com")
	done := cmdTime.Add(2 * time.Second)
	answer := func(t *testing.T, id string) iotgate.CommandUpdate { return sentAndAnswered(t, db, d, id, done) }
	// stale is answer's update of a command already succeeded.
	stale := func(t *testing.T, id string) iotgate.CommandUpdate {
		t.Helper()
		u := answer(t, id)
		if errs := db.UpdateCommands(ctx, []iotgate.CommandUpdate{u}); errs[0] != nil {
			t.Fatal(errs[0])
		}
		u.Event = &iotgate.CommandEvent{Status: iotgate.CommandFailed, At: done, Reason: "again"}
		return u
	}
	keyed := newCommand(d, "w-keyed", cmdTime, iotgate.CommandSent)
	keyed.IdempotencyKey = "k"
	for _, tc := range []struct {
		name    string
		cs      []*iotgate.Command
		us      func(t *testing.T) []iotgate.CommandUpdate
		wantCs  []string // each command's error code, "" for stored
		wantUs  []string // each update's
		changes int      // command events written
	}{
		{"OK", []*iotgate.Command{newCommand(d, "w1", cmdTime, iotgate.CommandSent), newCommand(d, "w2", cmdTime, iotgate.CommandQueued)},
			func(t *testing.T) []iotgate.CommandUpdate {
				return []iotgate.CommandUpdate{answer(t, "a1"), answer(t, "a2")}
			},
			[]string{"", ""}, []string{"", ""}, 4},
		{"OnlyCreates", []*iotgate.Command{newCommand(d, "w3", cmdTime, iotgate.CommandSent)},
			func(t *testing.T) []iotgate.CommandUpdate { return nil }, []string{""}, nil, 1},
		{"OnlyUpdates", nil,
			func(t *testing.T) []iotgate.CommandUpdate { return []iotgate.CommandUpdate{answer(t, "a3")} }, nil, []string{""}, 1},
		{"ErrConflictOnlyItsOwn", []*iotgate.Command{newCommand(d, "w4", cmdTime, iotgate.CommandSent)},
			func(t *testing.T) []iotgate.CommandUpdate {
				return []iotgate.CommandUpdate{stale(t, "a4"), answer(t, "a5")}
			}, []string{""}, []string{iotgate.EConflict, ""}, 2},
		{"ErrDeviceGoneOnlyItsOwn", []*iotgate.Command{newCommand(d, "w5", cmdTime, iotgate.CommandSent), newCommand(gone, "w6", cmdTime, iotgate.CommandSent)},
			func(t *testing.T) []iotgate.CommandUpdate { return []iotgate.CommandUpdate{answer(t, "a6")} },
			[]string{"", iotgate.ENotFound}, []string{""}, 2},
		{"Notify", []*iotgate.Command{newCommand(d, "w7", cmdTime, iotgate.CommandSent)},
			func(t *testing.T) []iotgate.CommandUpdate {
				u := answer(t, "a8")
				u.Notify = true // written in a transaction of statements, not in one
				return []iotgate.CommandUpdate{answer(t, "a9"), u}
			}, []string{""}, []string{"", ""}, 3},
		{"ErrIdempotencyKey", []*iotgate.Command{keyed},
			func(t *testing.T) []iotgate.CommandUpdate { return []iotgate.CommandUpdate{answer(t, "a7")} },
			[]string{iotgate.EInvalid}, []string{""}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			us := tc.us(t)
			before, err := db.Events(ctx, iotgate.EventQuery{After: 0, Limit: 10000})
			if err != nil {
				t.Fatal(err)
			}
			cerrs, uerrs := db.WriteCommands(ctx, tc.cs, us)
			if len(cerrs) != len(tc.cs) || len(uerrs) != len(us) {
				t.Fatalf("%d and %d errors for %d commands and %d updates", len(cerrs), len(uerrs), len(tc.cs), len(us))
			}
			check := func(id string, err error, want string) bool {
				t.Helper()
				if got := iotgate.ErrorCode(err); err != nil && got != want || err == nil && want != "" {
					t.Errorf("%s: err = %v, want code %q", id, err, want)
					return false
				}
				return want == ""
			}
			stored := func(want *iotgate.Command) {
				t.Helper()
				got, err := db.Command(ctx, want.ID)
				if err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(got, want) {
					t.Errorf("stored\n%+v\nread back\n%+v", want, got)
				}
			}
			for i, c := range tc.cs {
				if check(c.ID, cerrs[i], tc.wantCs[i]) {
					stored(c)
				}
			}
			for i, u := range us {
				if check(u.Command.ID, uerrs[i], tc.wantUs[i]) {
					stored(u.Command)
				}
			}
			after, err := db.Events(ctx, iotgate.EventQuery{After: before.Next, Limit: 10000})
			if err != nil {
				t.Fatal(err)
			}
			if got := len(after.Events); got != tc.changes {
				t.Errorf("%d events written, want %d", got, tc.changes)
			}
			// In order: the new commands', then the applied updates',
			// each with the command as stored.
			var want, got []string
			for i, c := range tc.cs {
				if tc.wantCs[i] == "" {
					want = append(want, c.ID+" "+string(c.Status))
				}
			}
			for i, u := range us {
				if tc.wantUs[i] == "" {
					want = append(want, u.Command.ID+" "+string(u.Command.Status))
				}
			}
			for _, e := range after.Events {
				var v iotgate.CommandView
				if err := json.Unmarshal(e.Data, &v); err != nil {
					t.Fatal(err)
				}
				if e.Type != iotgate.EventCommand || e.Device != v.Device {
					t.Errorf("event %d: type %s, device %s, of command %s of %s", e.ID, e.Type, e.Device, v.ID, v.Device)
				}
				got = append(got, v.ID+" "+v.Status)
			}
			if !slices.Equal(got, want) {
				t.Errorf("events of commands %q, want %q", got, want)
			}
		})
	}
}

// BenchmarkCommandWrites measures the store writes of a sync command
// (created as sent, then updated to succeeded with the device's answer)
// for batches of 1 (what an idle iotgate writes) and 32 (what the
// command service's group commit writes under load), with the database
// alone: how many commands per second the store can take, and what each
// costs PostgreSQL in CPU (pg-cpu-ms/op: the CPU of the server's
// processes, from /proc, over the loop; the test's PostgreSQL is its own,
// but other tests of the package running at once would count too).
//
//	go test -tags integration -run '^$' -bench BenchmarkCommandWrites -benchtime 20000x ./postgres/
func BenchmarkCommandWrites(b *testing.B) {
	ctx := context.Background()
	db, reg, svc := newStack(b)
	d := thermostats(b, reg, svc, "thermo1@example.com")[0]
	// answered returns the updates of cs to succeeded.
	answered := func(cs []*iotgate.Command) []iotgate.CommandUpdate {
		us := make([]iotgate.CommandUpdate, len(cs))
		for i, c := range cs {
			done := cmdTime.Add(time.Second)
			c.Status, c.CompletedAt, c.AnsweredAt = iotgate.CommandSucceeded, &done, &done
			c.Response = &iotgate.CommandResponse{XML: `<state xmlns="urn:example:thermostat"/>`, Data: json.RawMessage(`{}`)}
			us[i] = iotgate.CommandUpdate{Command: c, From: []iotgate.CommandStatus{iotgate.CommandSent},
				Event: &iotgate.CommandEvent{Status: iotgate.CommandSucceeded, At: done}}
		}
		return us
	}
	fail := func(b *testing.B, what string, errs []error) {
		for _, err := range errs {
			if err != nil {
				b.Fatalf("%s: %v", what, err)
			}
		}
	}
	for _, batch := range []int{1, 32} {
		// apart: each batch's inserts, then its updates, in a
		// transaction each (CreateCommands, UpdateCommands). shared: the
		// inserts of a batch and the updates of the one before in one
		// transaction (WriteCommands), as the command service writes
		// them under load.
		for _, shared := range []bool{false, true} {
			name := fmt.Sprintf("batch%d/apart", batch)
			if shared {
				name = fmt.Sprintf("batch%d/shared", batch)
			}
			b.Run(name, func(b *testing.B) {
				// IDs unique across the benchmark's calls of this function.
				prefix := fmt.Sprintf("b%d-%d", batch, time.Now().UnixNano())
				n := 0
				var pending []iotgate.CommandUpdate
				pg := serverCPU(b, db)
				for b.Loop() {
					if n%batch == 0 {
						cs := make([]*iotgate.Command, batch)
						for i := range cs {
							cs[i] = newCommand(d, fmt.Sprintf("%s-%d", prefix, n+i), cmdTime, iotgate.CommandSent)
						}
						if shared {
							cerrs, uerrs := db.WriteCommands(ctx, cs, pending)
							fail(b, "create", cerrs)
							fail(b, "update", uerrs)
							pending = answered(cs)
						} else {
							fail(b, "create", db.CreateCommands(ctx, cs))
							fail(b, "update", db.UpdateCommands(ctx, answered(cs)))
						}
					}
					n++
				}
				b.ReportMetric(float64(servers.CPUDelta(pg, serverCPU(b, db)))/float64(time.Millisecond)/float64(b.N), "pg-cpu-ms/op")
			})
		}
	}
}

// serverCPU returns the CPU time each process of the PostgreSQL server
// of db (its postmaster, backends, WAL writer...) has used so far
// (servers.TreeCPU; servers.CPUDelta of two is the load's).
func serverCPU(tb testing.TB, db *postgres.DB) map[int]time.Duration {
	tb.Helper()
	var backend int
	if err := db.SQL().QueryRow(`SELECT pg_backend_pid()`).Scan(&backend); err != nil {
		tb.Fatal(err)
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(backend) + "/stat")
	if err != nil {
		tb.Fatal(err)
	}
	// The parent's pid is the second field after the command (in parentheses).
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	postmaster, err := strconv.Atoi(f[1])
	if err != nil {
		tb.Fatalf("parent of backend %d: %v", backend, err)
	}
	return servers.TreeCPU(postmaster)
}

// TestCommandUpdatePlan checks that the status update's statement
// (iotgate_update_commands, migration 0016) looks each command up by its
// primary key even with the plan a prepared statement keeps: made while
// commands is small and analyzed as such, where a free planner joins the
// batch with a sequential scan of the table and keeps that plan as the
// table grows. The plans are those PostgreSQL ran, read with auto_explain
// (nested statements, sent to this test as notices), past the calls after
// which a cached plan turns generic.
func TestCommandUpdatePlan(t *testing.T) {
	ctx := context.Background()
	dsn := servers.DatabaseForTest(t)
	db, reg, svc := newStackOn(t, dsn)
	d := thermostats(t, reg, svc, "thermo1@example.com")[0]
	var ids []string
	for i := range 3 {
		ids = append(ids, fmt.Sprintf("plan-%d", i))
	}
	cs := make([]*iotgate.Command, len(ids))
	for i, id := range ids {
		cs[i] = newCommand(d, id, cmdTime, iotgate.CommandSent)
	}
	for _, err := range db.CreateCommands(ctx, cs) {
		if err != nil {
			t.Fatal(err)
		}
	}

	var mu sync.Mutex
	var notices []string
	conn, err := pq.NewConnector(dsn)
	if err != nil {
		t.Fatal(err)
	}
	raw := sql.OpenDB(pq.ConnectorWithNoticeHandler(conn, func(e *pq.Error) {
		mu.Lock()
		notices = append(notices, e.Message)
		mu.Unlock()
	}))
	t.Cleanup(func() { raw.Close() })
	raw.SetMaxOpenConns(1) // the session's settings below hold for every statement
	for _, q := range []string{
		`ANALYZE commands`,
		`LOAD 'auto_explain'`,
		`SET auto_explain.log_min_duration = 0`,
		`SET auto_explain.log_nested_statements = on`,
		`SET auto_explain.log_level = notice`,
	} {
		if _, err := raw.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	// update runs the statement for ids, from a status none is in (the
	// plan is what is looked at, not the rows), and returns the plans
	// PostgreSQL logged of the UPDATE inside it.
	update := func(t *testing.T, ids []string) []string {
		t.Helper()
		n := len(ids)
		str, jsonb, times, bools := make([]sql.NullString, n), make([]sql.NullString, n), make([]sql.NullString, n), make([]bool, n)
		from := slices.Repeat([]string{"canceled"}, n)
		args := []any{pq.Array(ids), pq.Array(from), pq.Array(jsonb),
			pq.Array(from), pq.Array(from), pq.Array(times), pq.Array(times), pq.Array(times),
			pq.Array(str), pq.Array(jsonb), pq.Array(str), pq.Array(str), pq.Array(str), pq.Array(str),
			pq.Array(from), pq.Array(from), pq.Array(bools), pq.Array(str), pq.Array(from)}
		mu.Lock()
		notices = nil
		mu.Unlock()
		rows, err := raw.QueryContext(ctx, `SELECT id FROM iotgate_update_commands(`+placeholders(len(args))+`) AS id`, args...)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			t.Errorf("updated a command from status canceled")
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		rows.Close()
		mu.Lock()
		defer mu.Unlock()
		var plans []string
		for _, m := range notices {
			if strings.Contains(m, "Update on commands") {
				plans = append(plans, m)
			}
		}
		return plans
	}
	for _, tc := range []struct {
		name string
		ids  []string
	}{
		{"OneCommand", ids[:1]},
		{"Batch", ids},
		{"Missing", []string{"plan-none", ids[0]}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Past the fifth call, PostgreSQL may switch a statement
			// to its generic plan: look at the calls after too.
			for call := 1; call <= 8; call++ {
				plans := update(t, tc.ids)
				if len(plans) != 1 {
					t.Fatalf("call %d: %d plans of the UPDATE logged, want 1: %q", call, len(plans), plans)
				}
				if p := plans[0]; strings.Contains(p, "Seq Scan on commands") || !strings.Contains(p, "Index Scan using commands_pkey") {
					t.Fatalf("call %d: the UPDATE does not look commands up by key:\n%s", call, p)
				}
			}
		})
	}
}

// placeholders returns "$1, ..., $n".
func placeholders(n int) string {
	ps := make([]string, n)
	for i := range ps {
		ps[i] = "$" + strconv.Itoa(i+1)
	}
	return strings.Join(ps, ", ")
}

// TestWriteCommandsDeviceDeletedMeanwhile checks that WriteCommands and a
// device's deletion, in progress at once, don't deadlock: the deletion
// holds the device's row and then takes the events lock for its own
// events; WriteCommands, with a new command for that device, waits for
// the row before it takes the events lock, so the deletion commits and
// only that command fails (not_found) while the rest of the batch is
// stored.
func TestWriteCommandsDeviceDeletedMeanwhile(t *testing.T) {
	ctx := context.Background()
	db, svc, d := commandFixture(t)
	doomed, err := svc.Register(ctx, &iotgate.Device{JID: "doomed@example.com", Schema: "thermostat"})
	if err != nil {
		t.Fatal(err)
	}
	answered := newCommand(d, "dd-answered", cmdTime, iotgate.CommandSent)
	if errs := db.CreateCommands(ctx, []*iotgate.Command{answered}); errs[0] != nil {
		t.Fatal(errs[0])
	}
	done := cmdTime.Add(time.Second)
	answered.Status, answered.CompletedAt, answered.AnsweredAt = iotgate.CommandSucceeded, &done, &done
	answered.Response = &iotgate.CommandResponse{XML: `<state xmlns="urn:example:thermostat"/>`}
	ev := iotgate.CommandEvent{Status: iotgate.CommandSucceeded, At: done}
	answered.History = append(answered.History, ev)
	for _, tc := range []struct {
		name    string
		cs      []*iotgate.Command
		us      []iotgate.CommandUpdate
		wantCs  []string
		wantUss []string
	}{
		{"ErrNotFoundOnlyItsOwn",
			[]*iotgate.Command{newCommand(doomed, "dd-new", cmdTime, iotgate.CommandSent), newCommand(d, "dd-other", cmdTime, iotgate.CommandSent)},
			[]iotgate.CommandUpdate{{Command: answered, From: []iotgate.CommandStatus{iotgate.CommandSent}, Event: &ev}},
			[]string{iotgate.ENotFound, ""}, []string{""}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tx, err := db.SQL().BeginTx(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer tx.Rollback()
			if _, err := tx.ExecContext(ctx, `DELETE FROM devices WHERE id = $1`, doomed.ID); err != nil {
				t.Fatal(err)
			}
			type result struct{ cerrs, uerrs []error }
			out := make(chan result, 1)
			go func() {
				cerrs, uerrs := db.WriteCommands(ctx, tc.cs, tc.us)
				out <- result{cerrs, uerrs}
			}()
			deadline := time.After(30 * time.Second)
			// Wait until WriteCommands waits for the deletion (for its
			// transaction, which holds the device's row).
			for waiting := 0; waiting == 0; {
				if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM pg_locks
					WHERE NOT granted AND locktype = 'transactionid'
					  AND transactionid::text = (pg_current_xact_id()::text::bigint % 4294967296)::text`).Scan(&waiting); err != nil {
					t.Fatal(err)
				}
				select {
				case r := <-out:
					t.Fatalf("WriteCommands returned while the device's deletion was in progress: %v, %v", r.cerrs, r.uerrs)
				case <-deadline:
					t.Fatal("WriteCommands did not wait for the device's deletion")
				case <-time.After(10 * time.Millisecond):
				}
			}
			// The deletion's events, as the store writes them: a
			// deadlock would be detected here (deadlock_timeout) and
			// fail one of the two.
			if _, err := tx.ExecContext(ctx, `SET LOCAL lock_timeout = '10s'`); err != nil {
				t.Fatal(err)
			}
			if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1)`, postgres.EventsLockKey); err != nil {
				t.Fatalf("the deletion's events lock: %v", err)
			}
			if err := tx.Commit(); err != nil {
				t.Fatal(err)
			}
			var r result
			select {
			case r = <-out:
			case <-time.After(30 * time.Second):
				t.Fatal("WriteCommands did not return after the deletion committed")
			}
			for i, c := range tc.cs {
				if got := iotgate.ErrorCode(r.cerrs[i]); r.cerrs[i] != nil && got != tc.wantCs[i] || r.cerrs[i] == nil && tc.wantCs[i] != "" {
					t.Errorf("%s: err = %v, want code %q", c.ID, r.cerrs[i], tc.wantCs[i])
				}
			}
			for i, u := range tc.us {
				if got := iotgate.ErrorCode(r.uerrs[i]); r.uerrs[i] != nil && got != tc.wantUss[i] || r.uerrs[i] == nil && tc.wantUss[i] != "" {
					t.Errorf("update of %s: err = %v, want code %q", u.Command.ID, r.uerrs[i], tc.wantUss[i])
				}
				got, err := db.Command(ctx, u.Command.ID)
				if err != nil {
					t.Fatal(err)
				}
				if got.Status != u.Command.Status {
					t.Errorf("%s is %s, want %s", u.Command.ID, got.Status, u.Command.Status)
				}
			}
		})
	}
}
