package devices

import (
	"context"

	"github.com/iotgate/iotgate"
)

// CommandWriter is a command store that writes new commands and status
// changes of others in one transaction (postgres.DB is one). With it, the
// command service group-commits both in one batch: under load, the
// commands arriving and the answers coming back share a commit instead of
// taking one each. A store without it gets the two written apart.
type CommandWriter interface {
	// WriteCommands stores cs (as CreateCommands: no idempotency key)
	// and applies us (as UpdateCommands) in one transaction, and returns
	// one error per command and per update, as those would. No command
	// is in both.
	WriteCommands(ctx context.Context, cs []*iotgate.Command, us []iotgate.CommandUpdate) (createErrs, updateErrs []error)
}

// writer is one kind of write of the command service, group-committed.
type writer[T any] interface {
	do(item T) error
}

// commandWrite is one write of a command: its insert (create set) or a
// status change (update).
type commandWrite struct {
	create *iotgate.Command
	update iotgate.CommandUpdate
}

// writeAs hands one kind of write to the group commit of both kinds.
type writeAs[T any] struct {
	g    *groupCommit[commandWrite]
	wrap func(T) commandWrite
}

func (w writeAs[T]) do(item T) error { return w.g.do(w.wrap(item)) }

// newWriters returns the group commits of the command service's inserts
// and status changes: one for both when store is a CommandWriter, else
// one each. Their batches run under the store's own timeout, not a
// caller's context: they outlive any one request.
func (s *Commands) newWriters(store iotgate.CommandStore) (writer[*iotgate.Command], writer[iotgate.CommandUpdate]) {
	if cw, ok := store.(CommandWriter); ok {
		g := &groupCommit[commandWrite]{max: maxWriteBatch,
			// Two changes of one command go in two batches, in order.
			conflicts: func(a, b commandWrite) bool {
				return a.create == nil && b.create == nil && a.update.Command.ID == b.update.Command.ID
			},
			write: func(ws []commandWrite) []error { return s.writeBoth(cw, ws) }}
		return writeAs[*iotgate.Command]{g, func(c *iotgate.Command) commandWrite { return commandWrite{create: c} }},
			writeAs[iotgate.CommandUpdate]{g, func(u iotgate.CommandUpdate) commandWrite { return commandWrite{update: u} }}
	}
	creates := &groupCommit[*iotgate.Command]{max: maxWriteBatch, write: func(cs []*iotgate.Command) []error {
		ctx, cancel := s.storeCtx()
		defer cancel()
		return store.CreateCommands(ctx, cs)
	}}
	updates := &groupCommit[iotgate.CommandUpdate]{max: maxWriteBatch,
		conflicts: func(a, b iotgate.CommandUpdate) bool { return a.Command.ID == b.Command.ID },
		write: func(us []iotgate.CommandUpdate) []error {
			ctx, cancel := s.storeCtx()
			defer cancel()
			return store.UpdateCommands(ctx, us)
		}}
	return creates, updates
}

// writeBoth writes a batch of inserts and status changes with one
// WriteCommands, and returns one error per write, in ws' order.
func (s *Commands) writeBoth(cw CommandWriter, ws []commandWrite) []error {
	var cs []*iotgate.Command
	var us []iotgate.CommandUpdate
	for _, w := range ws {
		if w.create != nil {
			cs = append(cs, w.create)
		} else {
			us = append(us, w.update)
		}
	}
	ctx, cancel := s.storeCtx()
	defer cancel()
	cerrs, uerrs := cw.WriteCommands(ctx, cs, us)
	errs := make([]error, len(ws))
	for i, w := range ws {
		if w.create != nil {
			errs[i], cerrs = cerrs[0], cerrs[1:]
		} else {
			errs[i], uerrs = uerrs[0], uerrs[1:]
		}
	}
	return errs
}
