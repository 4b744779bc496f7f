// Package instances lets several iotgate instances share one component
// domain and one PostgreSQL: each keeps a heartbeat row saying whether its
// stream is up and what role it has (active, member, standby), learns who
// else is alive, and reaps the instances that stopped beating, failing the
// commands they were running.
package instances

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/iotgate/iotgate"
)

// Stream is this instance's XMPP component stream; component.Conn
// implements it.
type Stream interface {
	// Health reports whether the stream is up.
	Health(ctx context.Context) (ok bool, since time.Time, err error)
	// Refused reports whether the server refuses the stream because
	// another connection holds the domain.
	Refused() bool
}

// Config tunes the registry.
type Config struct {
	// ID is this instance's ID, unique among the instances.
	ID string
	// Heartbeat is how often the instance says it is alive and looks at
	// the others; default 2s.
	Heartbeat time.Duration
	// DeadAfter is how long without a heartbeat makes an instance dead:
	// its commands in flight fail and it no longer counts; default 10s.
	DeadAfter time.Duration
	Clock     iotgate.Clock
	Logger    *slog.Logger
	// Reaped, if set, is called (in its own goroutine) after this
	// instance reaped dead ones: what they held in memory only is lost.
	Reaped func(ids []string)
}

// Registry is this instance's membership.
type Registry struct {
	store   iotgate.InstanceStore
	stream  Stream
	cfg     Config
	log     *slog.Logger
	started time.Time

	mu     sync.Mutex
	others []iotgate.Instance // the live ones, as of the last heartbeat
	role   iotgate.Role
}

// New returns a registry; call Run.
func New(store iotgate.InstanceStore, stream Stream, cfg Config) *Registry {
	if cfg.Heartbeat <= 0 {
		cfg.Heartbeat = 2 * time.Second
	}
	if cfg.DeadAfter <= 0 {
		cfg.DeadAfter = 10 * time.Second
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Registry{store: store, stream: stream, cfg: cfg, log: cfg.Logger,
		started: cfg.Clock().UTC(), role: iotgate.RoleDisconnected}
}

// ID returns this instance's ID.
func (r *Registry) ID() string { return r.cfg.ID }

// Run beats until ctx ends, then leaves (removes its row), so that the
// others need not wait DeadAfter to stop counting it.
func (r *Registry) Run(ctx context.Context) {
	iotgate.Every(ctx, r.cfg.Heartbeat, r.Beat)
	lctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := r.store.Leave(lctx, r.cfg.ID); err != nil {
		r.log.Warn("instance row not removed at shutdown; the others reap it", "err", err)
	}
}

// Beat is one heartbeat: say how this instance is, learn the others,
// reap the dead.
func (r *Registry) Beat(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Heartbeat)
	defer cancel()
	up, _, _ := r.stream.Health(ctx)
	all, err := r.store.Instances(ctx, r.cfg.DeadAfter)
	if err != nil {
		r.log.Warn("cannot list instances", "err", err)
	}
	var others []iotgate.Instance
	for _, in := range all {
		if in.ID != r.cfg.ID {
			others = append(others, in)
		}
	}
	role := r.roleOf(up, others)
	r.mu.Lock()
	if err == nil {
		r.others = others
	}
	changed := role != r.role
	r.role = role
	r.mu.Unlock()
	if changed {
		r.log.Info("instance role", "role", role, "others", len(others))
	}
	if err := r.store.Heartbeat(ctx, iotgate.Instance{ID: r.cfg.ID, StartedAt: r.started, Streaming: up, Role: role}); err != nil {
		r.log.Warn("heartbeat not recorded", "err", err)
	}
	ids, failed, err := r.store.ReapInstances(ctx, r.cfg.DeadAfter, r.cfg.Clock().UTC(), iotgate.DetailRestarted, reasonReaped)
	if err != nil {
		r.log.Warn("cannot reap dead instances", "err", err)
	} else if len(ids) > 0 {
		r.log.Warn("instances stopped beating: their commands in flight failed", "instances", ids, "commands", failed)
		if r.cfg.Reaped != nil {
			go r.cfg.Reaped(ids)
		}
	}
}

// reasonReaped is the failure reason of a dead instance's commands.
const reasonReaped = "the iotgate instance running the command stopped before the device answered"

func (r *Registry) roleOf(up bool, others []iotgate.Instance) iotgate.Role {
	switch {
	case up:
		for _, in := range others {
			if in.Streaming {
				return iotgate.RoleMember
			}
		}
		return iotgate.RoleActive
	case r.stream.Refused():
		return iotgate.RoleStandby
	default:
		return iotgate.RoleDisconnected
	}
}

// Role returns this instance's role as of now (the stream's state is
// read afresh; the others' as of the last heartbeat).
func (r *Registry) Role(ctx context.Context) iotgate.Role {
	up, _, _ := r.stream.Health(ctx)
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.roleOf(up, r.others)
}

// OthersStreaming reports whether another live instance has its stream
// up, as of the last heartbeat.
func (r *Registry) OthersStreaming(context.Context) (bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, in := range r.others {
		if in.Streaming {
			return true, nil
		}
	}
	return false, nil
}

// Others returns the other live instances, as of the last heartbeat.
func (r *Registry) Others() []iotgate.Instance {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]iotgate.Instance(nil), r.others...)
}
