package devices

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/iotgate/iotgate"
	"github.com/iotgate/iotgate/internal/memstore"
)

// writerStore is a memstore that is a CommandWriter: it records each
// WriteCommands call's commands and updates, and fails the IDs in fail.
type writerStore struct {
	*memstore.CommandStore
	fail map[string]error

	mu    sync.Mutex
	calls [][2][]string // IDs of each call's commands, then updates
}

func (w *writerStore) WriteCommands(ctx context.Context, cs []*iotgate.Command, us []iotgate.CommandUpdate) ([]error, []error) {
	var call [2][]string
	cerrs, uerrs := make([]error, len(cs)), make([]error, len(us))
	for i, c := range cs {
		call[0] = append(call[0], c.ID)
		if cerrs[i] = w.fail[c.ID]; cerrs[i] == nil {
			cerrs[i] = w.CreateCommand(ctx, c, time.Time{}, 0)
		}
	}
	for i, u := range us {
		call[1] = append(call[1], u.Command.ID)
		if uerrs[i] = w.fail[u.Command.ID]; uerrs[i] == nil {
			uerrs[i] = w.UpdateCommand(ctx, u.Command, u.From, u.Event)
		}
	}
	w.mu.Lock()
	w.calls = append(w.calls, call)
	w.mu.Unlock()
	return cerrs, uerrs
}

// TestWriteBoth checks that a batch of inserts and status changes goes to
// one WriteCommands call, and that each write gets its own error back.
func TestWriteBoth(t *testing.T) {
	now := time.Now().UTC()
	cmd := func(id string, st iotgate.CommandStatus) *iotgate.Command {
		return &iotgate.Command{ID: id, Status: st, DeviceJID: devJID, CreatedAt: now, History: []iotgate.CommandEvent{{Status: st, At: now}}}
	}
	create := func(id string) commandWrite { return commandWrite{create: cmd(id, iotgate.CommandSent)} }
	update := func(id string) commandWrite {
		return commandWrite{update: iotgate.CommandUpdate{Command: cmd(id, iotgate.CommandSucceeded), From: []iotgate.CommandStatus{iotgate.CommandSent}}}
	}
	refused := iotgate.Errorf(iotgate.ENotFound, "device gone")
	for _, tc := range []struct {
		name      string
		stored    []string // sent commands in the store before
		ws        []commandWrite
		fail      map[string]error
		wantCall  [2][]string
		wantCodes []string // each write's error code, "" for none
	}{
		{"CreatesAndUpdates", []string{"u1", "u2"}, []commandWrite{create("c1"), update("u1"), create("c2"), update("u2")}, nil,
			[2][]string{{"c1", "c2"}, {"u1", "u2"}}, []string{"", "", "", ""}},
		{"OnlyUpdates", []string{"u3"}, []commandWrite{update("u3")}, nil,
			[2][]string{nil, {"u3"}}, []string{""}},
		{"ErrEachItsOwn", []string{"u4"}, []commandWrite{update("u4"), create("c3"), update("u5"), create("c4")}, map[string]error{"c3": refused},
			[2][]string{{"c3", "c4"}, {"u4", "u5"}}, []string{"", iotgate.ENotFound, iotgate.ENotFound, ""}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			store := &writerStore{CommandStore: memstore.NewCommandStore(), fail: tc.fail}
			for _, id := range tc.stored {
				if err := store.CreateCommand(context.Background(), cmd(id, iotgate.CommandSent), time.Time{}, 0); err != nil {
					t.Fatal(err)
				}
			}
			svc := NewCommands(store, fakeDevs{}, fakeSchemaSource{}, &fakePresence{}, newFakeSender(), CommandsConfig{})
			errs := svc.writeBoth(store, tc.ws)
			if len(store.calls) != 1 || !slices.Equal(store.calls[0][0], tc.wantCall[0]) || !slices.Equal(store.calls[0][1], tc.wantCall[1]) {
				t.Fatalf("WriteCommands calls %v, want one: %v", store.calls, tc.wantCall)
			}
			if len(errs) != len(tc.ws) {
				t.Fatalf("%d errors for %d writes", len(errs), len(tc.ws))
			}
			for i, err := range errs {
				if got := iotgate.ErrorCode(err); err != nil && got != tc.wantCodes[i] || err == nil && tc.wantCodes[i] != "" {
					t.Errorf("write %d: err = %v, want code %q", i, err, tc.wantCodes[i])
				}
			}
		})
	}
}

// TestCommandWriterStore checks that a service whose store is a
// CommandWriter writes a command's insert and its outcome through it,
// and one whose store is not writes them apart, with the same result.
func TestCommandWriterStore(t *testing.T) {
	for _, tc := range []struct {
		name      string
		writer    bool
		wantCalls int
	}{
		{"Writer", true, 2},
		{"Apart", false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mem := memstore.NewCommandStore()
			ws := &writerStore{CommandStore: mem}
			var store iotgate.CommandStore = mem
			if tc.writer {
				store = ws
			}
			svc := NewCommands(store, fakeDevs{}, fakeSchemaSource{}, &fakePresence{}, newFakeSender(), CommandsConfig{})
			now := time.Now().UTC()
			c := &iotgate.Command{ID: "c1", Status: iotgate.CommandSent, DeviceJID: devJID, CreatedAt: now, History: []iotgate.CommandEvent{{Status: iotgate.CommandSent, At: now}}}
			if err := svc.creates.do(c); err != nil {
				t.Fatal(err)
			}
			done := c.Clone()
			done.Status = iotgate.CommandSucceeded
			done.History = append(done.History, iotgate.CommandEvent{Status: iotgate.CommandSucceeded, At: now})
			if err := svc.updates.do(iotgate.CommandUpdate{Command: done, From: []iotgate.CommandStatus{iotgate.CommandSent}, Event: &done.History[1]}); err != nil {
				t.Fatal(err)
			}
			if got := len(ws.calls); got != tc.wantCalls {
				t.Errorf("%d WriteCommands calls, want %d", got, tc.wantCalls)
			}
			if got := storedCommand(t, mem, "c1"); got.Status != iotgate.CommandSucceeded || len(got.History) != 2 {
				t.Errorf("stored %s with %d history entries, want succeeded with 2", got.Status, len(got.History))
			}
		})
	}
}
