package devices

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/iotgate/iotgate"
	"github.com/iotgate/iotgate/internal/memstore"
)

// TestForeignAnswer runs two instances on one store: A sends a command, the
// answer reaches B, which records it; A, told of the change, hands the
// stored outcome to its waiting client.
func TestForeignAnswer(t *testing.T) {
	tests := []struct {
		name string
		// before runs on A's command (sent, unanswered) before the answer
		// reaches B.
		before     func(t *testing.T, a *cmdFixture, c *iotgate.Command)
		from, id   string // "" = the command's target and IQ id
		answer     sendResult
		wantStatus iotgate.CommandStatus
		wantLate   bool
		recorded   bool
	}{
		{name: "Result", answer: result(`<state xmlns="urn:example:t"/>`), wantStatus: iotgate.CommandSucceeded, recorded: true},
		{name: "DeviceError", answer: iqError("item-not-found", "no"), wantStatus: iotgate.CommandFailed, recorded: true},
		{name: "OtherSender", from: "thermo2@example.com/kitchen", answer: result(""), wantStatus: iotgate.CommandSent},
		{name: "OtherResource", from: "thermo1@example.com/garage", answer: result(""), wantStatus: iotgate.CommandSent},
		{name: "UnknownID", id: "AAAAAAAAAAAAAAAAAAAAAAAAAA", answer: result(""), wantStatus: iotgate.CommandSent},
		{name: "NotOurShape", id: "abc", answer: result(""), wantStatus: iotgate.CommandSent},
		{name: "AfterSenderDied", before: func(t *testing.T, a *cmdFixture, c *iotgate.Command) {
			// A survivor reaped A: its command failed with restarted.
			if _, err := a.store.FailUnfinishedCommands(context.Background(), "a", time.Now(), iotgate.DetailRestarted, "gone"); err != nil {
				t.Fatal(err)
			}
		}, answer: result(""), wantStatus: iotgate.CommandFailed, wantLate: true, recorded: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			store := memstore.NewCommandStore()
			a := newCmdFixtureOn(t, store, CommandsConfig{Instance: "a"})
			b := newCmdFixtureOn(t, store, CommandsConfig{Instance: "b"})
			c := a.submit(t, iotgate.CommandRequest{Mode: iotgate.CommandAsync, Timeout: time.Minute})
			call := a.sender.next(t) // A waits for the answer on its stream
			stored := a.waitStored(t, c.ID, iotgate.CommandSent, func(c *iotgate.Command) bool { return c.IQID != "" })
			if stored.Instance != "a" || !plausibleIQID(stored.IQID) {
				t.Fatalf("stored command: instance %q, IQ id %q", stored.Instance, stored.IQID)
			}
			if tt.before != nil {
				tt.before(t, a, stored)
			}
			from, id := tt.from, tt.id
			if from == "" {
				from = stored.Target
			}
			if id == "" {
				id = stored.IQID
			}
			b.svc.ForeignAnswer(from, id, tt.answer.rep)
			if !tt.recorded {
				time.Sleep(50 * time.Millisecond)
				if got := storedCommand(t, store, c.ID); got.Status != tt.wantStatus || got.AnsweredAt != nil {
					t.Fatalf("stored: %s answered %v, want %s unanswered", got.Status, got.AnsweredAt, tt.wantStatus)
				}
				call.reply <- result("") // A's own stream still answers
				return
			}
			got := a.waitStored(t, c.ID, tt.wantStatus, func(c *iotgate.Command) bool { return c.AnsweredAt != nil })
			if got.LateAnswer != tt.wantLate {
				t.Errorf("late answer = %v, want %v", got.LateAnswer, tt.wantLate)
			}
			// A is told (the store's notification), takes the outcome
			// and stops waiting on its stream.
			a.svc.Changed(c.ID)
			if w := a.wait(t, c.ID); w.Status != tt.wantStatus || w.AnsweredAt == nil {
				t.Errorf("A's client got %s answered %v, want %s", w.Status, w.AnsweredAt, tt.wantStatus)
			}
			waitFor(t, func() bool { return a.svc.snapshot(c.ID) == nil })
		})
	}
}

// TestForeignAnswerBounded: stray answers wait in a bounded queue for a
// few workers; beyond it they are dropped, and ForeignAnswer never blocks
// the stream's read loop.
func TestForeignAnswerBounded(t *testing.T) {
	store := &countingStore{CommandStore: memstore.NewCommandStore()}
	svc := NewCommands(store, fakeDevs{}, fakeSchemaSource{}, &fakePresence{}, newFakeSender(), CommandsConfig{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range foreignQueue + 500 {
			svc.ForeignAnswer(devFull, "AAAAAAAAAAAAAAAAAAAAAAAAAA", iotgate.CommandReply{Type: "result"})
		}
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("ForeignAnswer blocked with its queue full")
	}
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() { svc.Run(ctx); close(stopped) }()
	waitFor(t, func() bool { return store.lookups.Load() >= foreignQueue && len(svc.foreign) == 0 })
	cancel()
	<-stopped
	if n := store.lookups.Load(); n != foreignQueue {
		t.Errorf("%d lookups for %d stray answers, want the queue's %d", n, foreignQueue+500, foreignQueue)
	}
}

// countingStore counts CommandByIQ lookups.
type countingStore struct {
	*memstore.CommandStore
	lookups atomic.Int64
}

func (s *countingStore) CommandByIQ(ctx context.Context, id string) (*iotgate.Command, error) {
	s.lookups.Add(1)
	return s.CommandStore.CommandByIQ(ctx, id)
}
