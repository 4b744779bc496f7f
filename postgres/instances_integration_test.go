//go:build integration

package postgres_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/iotgate/iotgate"
	"github.com/iotgate/iotgate/postgres"
)

func TestInstances(t *testing.T) {
	ctx := context.Background()
	db, _, d := commandFixture(t)
	beat := func(id string, streaming bool) {
		t.Helper()
		if err := db.Heartbeat(ctx, iotgate.Instance{ID: id, StartedAt: cmdTime, Streaming: streaming, Role: iotgate.RoleMember}); err != nil {
			t.Fatal(err)
		}
	}
	ids := func(within time.Duration) []string {
		t.Helper()
		ins, err := db.Instances(ctx, within)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, in := range ins {
			out = append(out, in.ID)
		}
		return out
	}

	t.Run("HeartbeatAndLeave", func(t *testing.T) {
		beat("a", true)
		beat("b", false)
		beat("a", false) // an upsert, not a second row
		if got := ids(time.Minute); !slices.Equal(got, []string{"a", "b"}) {
			t.Fatalf("instances = %v, want [a b]", got)
		}
		if err := db.Leave(ctx, "b"); err != nil {
			t.Fatal(err)
		}
		if got := ids(time.Minute); !slices.Equal(got, []string{"a"}) {
			t.Fatalf("after b left: %v, want [a]", got)
		}
	})

	t.Run("ReapFailsTheDeadOnesCommands", func(t *testing.T) {
		// Commands of a (about to die), of c (alive), a finished one of a.
		mk := func(id, instance string, st iotgate.CommandStatus) {
			c := newCommand(d, id, cmdTime, st)
			c.Instance = instance
			if err := db.CreateCommand(ctx, c, time.Time{}, 0); err != nil {
				t.Fatal(err)
			}
		}
		mk("reap-a-sent", "a", iotgate.CommandSent)
		mk("reap-a-pending", "a", iotgate.CommandPending)
		mk("reap-a-done", "a", iotgate.CommandSucceeded)
		mk("reap-c-sent", "c", iotgate.CommandSent)
		beat("a", true)
		time.Sleep(300 * time.Millisecond)
		beat("c", true)
		dead, failed, err := db.ReapInstances(ctx, 200*time.Millisecond, cmdTime.Add(time.Hour), iotgate.DetailRestarted, "gone")
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(dead, []string{"a"}) || failed != 2 {
			t.Fatalf("reaped %v, %d commands failed; want [a], 2", dead, failed)
		}
		for id, want := range map[string]iotgate.CommandStatus{"reap-a-sent": iotgate.CommandFailed, "reap-a-pending": iotgate.CommandFailed,
			"reap-a-done": iotgate.CommandSucceeded, "reap-c-sent": iotgate.CommandSent} {
			c, err := db.Command(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			if c.Status != want || (want == iotgate.CommandFailed && c.ErrorCode != iotgate.DetailRestarted) {
				t.Errorf("%s: %s %s, want %s", id, c.Status, c.ErrorCode, want)
			}
		}
		// Reaping again finds nothing: a survivor and another reap once.
		if dead, _, err := db.ReapInstances(ctx, 200*time.Millisecond, cmdTime, "restarted", "gone"); err != nil || len(dead) != 0 {
			t.Errorf("second reap = %v, %v; want none", dead, err)
		}
	})

	t.Run("IQLookup", func(t *testing.T) {
		c := newCommand(d, "iq-1", cmdTime, iotgate.CommandSent)
		c.IQID, c.Instance, c.Target = "IQIDIQIDIQIDIQIDIQIDIQIDIQ", "a", d.JID+"/r"
		if err := db.CreateCommand(ctx, c, time.Time{}, 0); err != nil {
			t.Fatal(err)
		}
		got, err := db.CommandByIQ(ctx, c.IQID)
		if err != nil || got.ID != c.ID || got.Instance != "a" || got.IQID != c.IQID {
			t.Fatalf("CommandByIQ = %+v, %v", got, err)
		}
		if _, err := db.CommandByIQ(ctx, "NOPE"); iotgate.ErrorCode(err) != iotgate.ENotFound {
			t.Errorf("unknown IQ id: %v, want not_found", err)
		}
	})

	t.Run("DeliveryClaims", func(t *testing.T) {
		claim := func(instance string, ttl time.Duration) bool {
			t.Helper()
			ok, err := db.ClaimDelivery(ctx, d.JID, instance, ttl)
			if err != nil {
				t.Fatal(err)
			}
			return ok
		}
		steps := []struct {
			name     string
			do       func() bool
			want     bool
			sleepFor time.Duration
		}{
			{"AClaims", func() bool { return claim("a", 300*time.Millisecond) }, true, 0},
			{"BRefused", func() bool { return claim("b", time.Minute) }, false, 0},
			{"ARenews", func() bool { return claim("a", 300*time.Millisecond) }, true, 400 * time.Millisecond},
			{"BAfterExpiry", func() bool { return claim("b", time.Minute) }, true, 0},
			{"ARefused", func() bool { return claim("a", time.Minute) }, false, 0},
			{"BReleases", func() bool { return db.ReleaseDelivery(ctx, d.JID, "b") == nil }, true, 0},
			{"AAfterRelease", func() bool { return claim("a", time.Minute) }, true, 0},
			{"UnknownDevice", func() bool {
				ok, err := db.ClaimDelivery(ctx, "nobody@example.com", "a", time.Minute)
				return ok || err != nil
			}, false, 0},
		}
		for _, s := range steps {
			if got := s.do(); got != s.want {
				t.Fatalf("%s = %v, want %v", s.name, got, s.want)
			}
			time.Sleep(s.sleepFor)
		}
	})

	t.Run("AnswerNotifies", func(t *testing.T) {
		lctx, cancel := context.WithCancel(ctx)
		defer cancel()
		got := make(chan string, 10)
		db.ListenChanges(lctx).Subscribe(postgres.ChangeCommand, func(id string) {
			if id != "" {
				got <- id
			}
		})
		time.Sleep(200 * time.Millisecond) // the listener connects
		for _, tt := range []struct {
			id     string
			notify bool
		}{{"quiet", false}, {"told", true}} {
			c := newCommand(d, tt.id, cmdTime, iotgate.CommandSent)
			if err := db.CreateCommand(ctx, c, time.Time{}, 0); err != nil {
				t.Fatal(err)
			}
			c.Status = iotgate.CommandSucceeded
			if errs := db.UpdateCommands(ctx, []iotgate.CommandUpdate{{Command: c, From: []iotgate.CommandStatus{iotgate.CommandSent}, Notify: tt.notify}}); errs[0] != nil {
				t.Fatal(errs[0])
			}
		}
		select {
		case id := <-got:
			if id != "told" {
				t.Fatalf("notified %q, want told only", id)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("no notification for the answer written with Notify")
		}
	})
}
