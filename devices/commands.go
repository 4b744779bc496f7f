package devices

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/iotgate/iotgate"
)

// CommandSender sends command IQs. The XMPP component implements it.
type CommandSender interface {
	// SendCommand sends payload to the full JID `to` in an IQ of type
	// iqType ("get" or "set") with the given id (random and unguessable;
	// "" makes one up) and waits for the answer, result or error, until
	// ctx ends. Errors: unavailable (detail xmpp_unavailable) when
	// the stream is down or drops first, timeout when ctx ends first,
	// too_many_requests when too many IQs are waiting, invalid for a
	// payload that is not one XML element.
	SendCommand(ctx context.Context, to, iqType, id string, payload []byte) (iotgate.CommandReply, error)
}

// CommandDevices looks devices up; the device Service implements it.
type CommandDevices interface {
	// Device returns a registered device. Errors: invalid, not_found.
	Device(ctx context.Context, jid string) (*iotgate.Device, error)
}

// PresenceView tells which instances of a device are available; Presence
// implements it.
type PresenceView interface {
	// Resources returns the available resources, highest priority first.
	Resources(jid string) []iotgate.Resource
	// Online reports whether the device is online and whether presence
	// is stale (the XMPP stream is down).
	Online(jid string) (online, stale bool)
}

// CommandsConfig tunes the command service.
type CommandsConfig struct {
	// MaxInFlight bounds commands sent and not yet answered or timed out;
	// beyond it, commands are refused with too_many_requests (queued ones
	// wait). Default 1000.
	MaxInFlight int
	// MaxInFlightPerToken and MaxInFlightPerDevice are the quotas of one
	// API token and of one device within MaxInFlight (0: none): beyond
	// them, too_many_requests with detail token_commands_in_flight or
	// device_commands_in_flight (queued ones wait). With them, one
	// tenant's commands to silent devices can't hold every slot.
	MaxInFlightPerToken  int
	MaxInFlightPerDevice int
	// MaxQueuedPerDevice bounds a device's queued commands (0: none):
	// beyond it, too_many_requests with detail device_queue_full.
	MaxQueuedPerDevice int
	// SweepInterval is how often expired queued commands are marked.
	// Default 1s.
	SweepInterval time.Duration
	// RedeliverInterval is how often queued commands of online devices
	// are retried, in case a presence change was missed or another
	// instance's delivery claim ran out. Default 30s, ClaimTTL/2 with
	// Claims.
	RedeliverInterval time.Duration
	Clock             iotgate.Clock
	Logger            *slog.Logger
	// Observer receives each command's outcome; nil discards them.
	Observer Observer
	// Instance is this instance's ID: the commands it runs carry it, and
	// Recover fails only its own (and those of no instance).
	Instance string
	// Claims, when several instances share the store, make one of them
	// at a time deliver a device's queued commands; nil: this instance
	// is alone.
	Claims iotgate.DeliveryClaims
	// ClaimTTL is how long a delivery claim lasts without renewal: how
	// long a dead instance's claim holds a queue up. Default 10s.
	ClaimTTL time.Duration
}

// Commands is the command service: it validates, stores and delivers
// commands, and records their outcome. Create it with NewCommands, call
// Recover once at start, then Run.
type Commands struct {
	store    iotgate.CommandStore
	devs     CommandDevices
	schemas  iotgate.SchemaSource
	presence PresenceView
	sender   CommandSender
	cfg      CommandsConfig
	log      *slog.Logger

	// ctx is the life of the service: executions listen for answers
	// under it, and shutdown cancels it.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	slots  *inFlight

	mu       sync.Mutex
	inflight map[string]*execution
	wanted   map[string]bool // devices whose queues to deliver
	// queuedFor are the devices with queued commands, so that the
	// presence storm after a reconnection only wakes those.
	queuedFor  map[string]bool
	delivering map[string]bool
	again      map[string]bool
	closed     bool // Run has stopped: nothing new starts
	draining   bool // shutting down: queued commands stay queued
	wake       chan struct{}
	stopped    chan struct{}

	// creates and updates group-commit the store writes of concurrent
	// commands: one transaction per batch, not per command, and one for
	// both kinds with a CommandWriter store (see newWriters).
	creates writer[*iotgate.Command]
	updates writer[iotgate.CommandUpdate]

	// foreign queues the answers to other instances' commands for their
	// lookup (ForeignAnswer).
	foreign chan foreignAnswer
}

// maxWriteBatch bounds the commands written in one transaction.
const maxWriteBatch = 256

// execution is one command on its way to a device.
type execution struct {
	mu      sync.Mutex
	cmd     *iotgate.Command
	schema  iotgate.PayloadSchema
	settled chan struct{} // closed when cmd is terminal or queued again
	once    sync.Once
	release func()
	// stop ends the wait for the answer, once another instance has
	// recorded it (see Changed).
	stop func()
}

// NewCommands returns a command service.
func NewCommands(store iotgate.CommandStore, devs CommandDevices, schemas iotgate.SchemaSource, presence PresenceView, sender CommandSender, cfg CommandsConfig) *Commands {
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = 1000
	}
	if cfg.SweepInterval <= 0 {
		cfg.SweepInterval = time.Second
	}
	if cfg.ClaimTTL <= 0 {
		cfg.ClaimTTL = 10 * time.Second
	}
	if cfg.RedeliverInterval <= 0 {
		cfg.RedeliverInterval = 30 * time.Second
		if cfg.Claims != nil {
			// Another instance's claim may run out: look again soon after.
			cfg.RedeliverInterval = cfg.ClaimTTL / 2
		}
	}
	if cfg.Observer == nil {
		cfg.Observer = nopObserver{}
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Commands{
		store: store, devs: devs, schemas: schemas, presence: presence, sender: sender,
		cfg: cfg, log: cfg.Logger, ctx: ctx, cancel: cancel,
		slots:    newInFlight(cfg.MaxInFlight, cfg.MaxInFlightPerToken, cfg.MaxInFlightPerDevice),
		inflight: map[string]*execution{}, wanted: map[string]bool{}, queuedFor: map[string]bool{},
		delivering: map[string]bool{}, again: map[string]bool{},
		wake: make(chan struct{}, 1), stopped: make(chan struct{}),
		foreign: make(chan foreignAnswer, foreignQueue),
	}
	s.creates, s.updates = s.newWriters(store)
	return s
}

func (s *Commands) now() time.Time { return s.cfg.Clock().UTC() }

// timeoutStore bounds the store writes of executions, which outlive the
// requests that started them.
const timeoutStore = 5 * time.Second

func (s *Commands) storeCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), timeoutStore)
}

// Wait waits until the command is finished (or queued again), at most d or
// until ctx ends, and returns it as it then is. Errors: not_found.
func (s *Commands) Wait(ctx context.Context, id string, d time.Duration) (*iotgate.Command, error) {
	s.mu.Lock()
	e := s.inflight[id]
	s.mu.Unlock()
	if e == nil {
		return s.store.Command(ctx, id)
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-e.settled:
	case <-t.C:
	case <-ctx.Done():
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.cmd.Clone(), nil
}

// Command returns a command. Errors: not_found.
func (s *Commands) Command(ctx context.Context, id string) (*iotgate.Command, error) {
	if c := s.snapshot(id); c != nil {
		return c, nil
	}
	return s.store.Command(ctx, id)
}

// List returns a page of a device's commands, newest first.
// The limit is clamped (the API checks it). Errors: invalid (JID,
// cursor), not_found (device).
func (s *Commands) List(ctx context.Context, deviceJID string, f iotgate.CommandFilter) (*iotgate.CommandPage, error) {
	d, err := s.devs.Device(ctx, deviceJID)
	if err != nil {
		return nil, err
	}
	f.Limit = iotgate.PageLimit(f.Limit)
	return s.store.Commands(ctx, d.JID, f)
}

// Cancel cancels a queued command. Errors: not_found, conflict (the
// command is not queued).
func (s *Commands) Cancel(ctx context.Context, id string) (*iotgate.Command, error) {
	c, err := s.store.Command(ctx, id)
	if err != nil {
		return nil, err
	}
	notQueued := func(st iotgate.CommandStatus) error {
		return &iotgate.Error{Code: iotgate.EConflict, Detail: iotgate.DetailCommandNotQueued, Message: fmt.Sprintf("command %s is %s; only queued commands can be canceled", c.ID, st)}
	}
	if c.Status != iotgate.CommandQueued {
		return nil, notQueued(c.Status)
	}
	now := s.now()
	c.Status, c.CompletedAt, c.Error = iotgate.CommandCanceled, &now, reasonCanceled
	ev := iotgate.CommandEvent{Status: iotgate.CommandCanceled, At: now, Reason: reasonCanceled}
	c.History = append(c.History, ev)
	if err := s.store.UpdateCommand(ctx, c, []iotgate.CommandStatus{iotgate.CommandQueued}, &ev); err != nil {
		if iotgate.ErrorCode(err) == iotgate.EConflict {
			cur, gerr := s.Command(ctx, id)
			if gerr == nil {
				return nil, notQueued(cur.Status)
			}
		}
		return nil, err
	}
	return c, nil
}
