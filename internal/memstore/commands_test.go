package memstore

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/iotgate/iotgate"
)

func TestCommandStore(t *testing.T) {
	ctx := context.Background()
	m := NewCommandStore()
	t0 := time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC)
	c := &iotgate.Command{ID: "1", DeviceJID: "a@example.com", IdempotencyKey: "k", Status: iotgate.CommandPending, CreatedAt: t0}
	if err := m.CreateCommand(ctx, c, t0.Add(-time.Hour), 0); err != nil {
		t.Fatal(err)
	}
	dup := &iotgate.Command{ID: "2", IdempotencyKey: "k", Status: iotgate.CommandPending, CreatedAt: t0}
	var e *iotgate.Error
	if err := m.CreateCommand(ctx, dup, t0.Add(-time.Hour), 0); !errors.As(err, &e) || e.Detail != "idempotency_key_taken" {
		t.Errorf("key reused = %v, want idempotency_key_taken", err)
	}
	if err := m.CreateCommand(ctx, dup, t0.Add(time.Second), 0); err != nil {
		t.Errorf("key released after reuseBefore: %v", err)
	}
	sent := c.Clone()
	sent.Status = iotgate.CommandSent
	ev := &iotgate.CommandEvent{Status: iotgate.CommandSent, At: t0}
	if err := m.UpdateCommand(ctx, sent, []iotgate.CommandStatus{iotgate.CommandQueued}, ev); iotgate.ErrorCode(err) != iotgate.EConflict {
		t.Errorf("update from the wrong status = %v, want conflict", err)
	}
	if err := m.UpdateCommand(ctx, sent, []iotgate.CommandStatus{iotgate.CommandPending}, ev); err != nil {
		t.Fatal(err)
	}
	if n, err := m.FailUnfinishedCommands(ctx, "", t0, "restarted", "why"); err != nil || n != 2 {
		t.Errorf("FailUnfinishedCommands = %d, %v, want 2", n, err)
	}
	got, err := m.Command(ctx, "1")
	if err != nil || got.Status != iotgate.CommandFailed || len(got.History) != 2 {
		t.Errorf("command 1 = %+v, %v, want failed with 2 events", got, err)
	}
}
