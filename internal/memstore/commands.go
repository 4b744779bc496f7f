package memstore

import (
	"context"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/iotgate/iotgate"
)

var _ iotgate.CommandStore = (*CommandStore)(nil)

// CommandStore is an iotgate.CommandStore in memory with the documented
// semantics: idempotency keys released after reuseBefore, updates guarded
// by the stored status, history appended. Pages are never continued.
type CommandStore struct {
	mu   sync.Mutex
	cmds map[string]*iotgate.Command
	// refuseUpdate, if set, refuses an update when it returns an error,
	// as PostgreSQL refuses a number out of its range.
	refuseUpdate func(*iotgate.Command) error
}

// NewCommandStore returns an empty store.
func NewCommandStore() *CommandStore { return &CommandStore{cmds: map[string]*iotgate.Command{}} }

// SetRefuseUpdate makes UpdateCommand(s) refuse, with f's error, the
// updates for which f returns one; nil accepts them all again.
func (m *CommandStore) SetRefuseUpdate(f func(*iotgate.Command) error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.refuseUpdate = f
}

// Len returns how many commands are stored.
func (m *CommandStore) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.cmds)
}

// CreateCommand stores c. Errors: conflict (detail
// idempotency_key_taken), too_many_requests (detail device_queue_full).
func (m *CommandStore) CreateCommand(_ context.Context, c *iotgate.Command, reuseBefore time.Time, maxQueued int) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if c.Status == iotgate.CommandQueued && maxQueued > 0 && len(m.queued(c.DeviceJID)) >= maxQueued {
		return &iotgate.Error{Code: iotgate.ETooMany, Detail: iotgate.DetailDeviceQueueFull, Message: "queue full"}
	}
	if c.IdempotencyKey != "" {
		for _, o := range m.cmds {
			if o.IdempotencyKey != c.IdempotencyKey || o.TokenID != c.TokenID || o.DeviceID != c.DeviceID {
				continue
			}
			if o.CreatedAt.Before(reuseBefore) {
				o.IdempotencyKey = ""
				continue
			}
			return &iotgate.Error{Code: iotgate.EConflict, Detail: iotgate.DetailIdempotencyKeyTaken, Message: "taken"}
		}
	}
	m.cmds[c.ID] = c.Clone()
	return nil
}

// CommandByIdempotencyKey returns the command created with key at or
// after since. Errors: not_found.
func (m *CommandStore) CommandByIdempotencyKey(_ context.Context, tokenID string, deviceID int64, key string, since time.Time) (*iotgate.Command, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, c := range m.cmds {
		if c.IdempotencyKey == key && c.TokenID == tokenID && c.DeviceID == deviceID && !c.CreatedAt.Before(since) {
			return c.Clone(), nil
		}
	}
	return nil, iotgate.Errorf(iotgate.ENotFound, "no command with that key")
}

// Command returns one command. Errors: not_found.
func (m *CommandStore) Command(_ context.Context, id string) (*iotgate.Command, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	c, ok := m.cmds[id]
	if !ok {
		return nil, iotgate.Errorf(iotgate.ENotFound, "command %s not found", id)
	}
	return c.Clone(), nil
}

// CommandByIQ returns the command last sent in IQ iqID.
func (m *CommandStore) CommandByIQ(_ context.Context, iqID string) (*iotgate.Command, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, c := range m.cmds {
		if c.IQID == iqID {
			return c.Clone(), nil
		}
	}
	return nil, iotgate.Errorf(iotgate.ENotFound, "no command was sent in IQ %s", iqID)
}

// Commands returns a device's commands, in no particular order; the
// filter is not applied.
func (m *CommandStore) Commands(_ context.Context, jid string, f iotgate.CommandFilter) (*iotgate.CommandPage, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	page := &iotgate.CommandPage{}
	for _, c := range m.cmds {
		if c.DeviceJID == jid {
			page.Items = append(page.Items, c.Clone())
		}
	}
	return page, nil
}

// UpdateCommand writes c and appends ev to its history if the stored
// status is one of from. Errors: not_found, conflict, and what
// SetRefuseUpdate's function returns.
func (m *CommandStore) UpdateCommand(_ context.Context, c *iotgate.Command, from []iotgate.CommandStatus, ev *iotgate.CommandEvent) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	old, ok := m.cmds[c.ID]
	if !ok {
		return iotgate.Errorf(iotgate.ENotFound, "command %s not found", c.ID)
	}
	if !slices.Contains(from, old.Status) {
		return iotgate.Errorf(iotgate.EConflict, "command %s is %s", c.ID, old.Status)
	}
	if m.refuseUpdate != nil {
		if err := m.refuseUpdate(c); err != nil {
			return err
		}
	}
	n := c.Clone()
	n.History = old.History
	if ev != nil {
		n.History = append(slices.Clone(old.History), *ev)
	}
	m.cmds[c.ID] = n
	return nil
}

// CreateCommands creates each command as CreateCommand would.
func (m *CommandStore) CreateCommands(ctx context.Context, cs []*iotgate.Command) []error {
	errs := make([]error, len(cs))
	for i, c := range cs {
		errs[i] = m.CreateCommand(ctx, c, time.Time{}, 0)
	}
	return errs
}

// UpdateCommands applies each update as UpdateCommand would.
func (m *CommandStore) UpdateCommands(ctx context.Context, us []iotgate.CommandUpdate) []error {
	errs := make([]error, len(us))
	for i, u := range us {
		errs[i] = m.UpdateCommand(ctx, u.Command, u.From, u.Event)
	}
	return errs
}

func (m *CommandStore) queued(jid string) []*iotgate.Command {
	var out []*iotgate.Command
	for _, c := range m.cmds {
		if c.DeviceJID == jid && c.Status == iotgate.CommandQueued {
			out = append(out, c.Clone())
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].CreatedAt.Before(out[j].CreatedAt) })
	return out
}

// QueuedCommands returns up to limit queued commands of a device, oldest
// first.
func (m *CommandStore) QueuedCommands(_ context.Context, jid string, limit int) ([]*iotgate.Command, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := m.queued(jid)
	if len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

// QueuedDeviceJIDs returns the devices that have queued commands.
func (m *CommandStore) QueuedDeviceJIDs(context.Context) ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	seen := map[string]bool{}
	var out []string
	for _, c := range m.cmds {
		if c.Status == iotgate.CommandQueued && !seen[c.DeviceJID] {
			seen[c.DeviceJID] = true
			out = append(out, c.DeviceJID)
		}
	}
	return out, nil
}

// ExpireCommands moves queued commands expired at now to expired.
func (m *CommandStore) ExpireCommands(_ context.Context, now time.Time, reason string) ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var ids []string
	for _, c := range m.cmds {
		if c.Status == iotgate.CommandQueued && c.ExpiresAt != nil && !c.ExpiresAt.After(now) {
			c.Status, c.Error, c.CompletedAt = iotgate.CommandExpired, reason, &now
			c.History = append(c.History, iotgate.CommandEvent{Status: iotgate.CommandExpired, At: now, Reason: reason})
			ids = append(ids, c.ID)
		}
	}
	return ids, nil
}

// FailUnfinishedCommands moves pending and sent commands of instance (or
// of none) to failed.
func (m *CommandStore) FailUnfinishedCommands(_ context.Context, instance string, now time.Time, code, reason string) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for _, c := range m.cmds {
		if (c.Status == iotgate.CommandPending || c.Status == iotgate.CommandSent) && (c.Instance == instance || c.Instance == "") {
			c.Status, c.ErrorCode, c.Error, c.CompletedAt = iotgate.CommandFailed, code, reason, &now
			c.History = append(c.History, iotgate.CommandEvent{Status: iotgate.CommandFailed, At: now, Reason: reason})
			n++
		}
	}
	return n, nil
}
