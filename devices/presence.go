package devices

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"sync"
	"time"

	"github.com/iotgate/iotgate"
)

// Fleet tells the instances of iotgate apart, for presence: a stream drop
// on one instance must not wipe the shared presence while another one
// still receives it.
type Fleet interface {
	// OthersStreaming reports whether another live instance has its
	// XMPP stream up.
	OthersStreaming(ctx context.Context) (bool, error)
}

// PresenceConfig configures a Presence. Zero values mean the defaults.
type PresenceConfig struct {
	Clock  iotgate.Clock
	Logger *slog.Logger
	// Fleet is nil for a single instance: a stream drop then makes every
	// device offline.
	Fleet Fleet
	// ProbeGrace is how long after the probes of a (re)connection a
	// resource that no stanza confirmed since is dropped (default 10 s).
	ProbeGrace time.Duration
	// MaxResources is how many resources (connected instances) of one
	// device are tracked (default DefaultMaxResources); available
	// presence from one more is refused. Each is a row, and part of
	// every presence event of the device.
	MaxResources int
}

// Defaults of PresenceConfig.
const (
	DefaultProbeGrace   = 10 * time.Second
	DefaultMaxResources = 16
)

// A batch of presence changes the store refuses is tried this many
// times, this far apart.
const (
	presenceAttempts = 3
	presenceRetry    = 500 * time.Millisecond
)

// Presence tracks which devices are online. The store holds every
// device's resources for all instances: each presence stanza an instance
// receives is written there (in batches, in order), which records the
// online/offline transitions once. Each instance keeps a copy in memory
// for its hot paths, changed at once by the stanzas it receives and
// reloaded from the store by Refresh when any instance changes a device.
// Without a store, presence lives in memory only and has no history.
type Presence struct {
	store iotgate.PresenceStore
	cfg   PresenceConfig

	mu    sync.Mutex
	res   map[string]map[string]iotgate.Resource // bare JID -> full JID -> resource
	stale bool
	since time.Time
	round int       // probe rounds started, so that an old round's expiry is dropped
	probe time.Time // when the current round started
	// sending is set while the current round's probes are going out
	// (ProbesSending), sentAt when they all went (ProbesSent): the grace
	// period counts from then, since a million paced probes take longer
	// than the grace period itself.
	sending bool
	sentAt  time.Time
	sent    chan struct{}

	ops      chan presenceOp
	pending  map[string]bool // devices to reload; "" = all
	reload   chan struct{}
	probed   chan struct{}
	onOnline []func(jid string)
}

// presenceOp is a write to the store, done in order: a presence change,
// or the removal of the resources not confirmed since a probe round
// started (at probe), or of all at a stream drop (wipe).
type presenceOp struct {
	change *iotgate.PresenceChange
	probe  time.Time
	wipe   bool // a stream drop: all go, unless another instance streams
}

// NewPresence returns a tracker. Presence is stale until MarkFresh: iotgate
// doesn't know who is online before its stream is up and probes answered.
func NewPresence(store iotgate.PresenceStore, cfg PresenceConfig) *Presence {
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.ProbeGrace <= 0 {
		cfg.ProbeGrace = DefaultProbeGrace
	}
	if cfg.MaxResources <= 0 {
		cfg.MaxResources = DefaultMaxResources
	}
	return &Presence{store: store, cfg: cfg,
		res: map[string]map[string]iotgate.Resource{}, stale: true, since: cfg.Clock(),
		ops: make(chan presenceOp, 10000), pending: map[string]bool{},
		reload: make(chan struct{}, 1), probed: make(chan struct{}, 1), sent: make(chan struct{}, 1)}
}

// OnOnline registers f to be called with a device's bare JID each time
// the device gains an available resource, whichever instance received
// its presence, and for every online device when the stream comes up
// (for example to deliver queued commands). f is called outside the
// tracker's lock and must not block.
func (p *Presence) OnOnline(f func(jid string)) {
	p.mu.Lock()
	p.onOnline = append(p.onOnline, f)
	p.mu.Unlock()
}

// Update applies a presence stanza from device d. Errors: too_many_requests
// when u makes a resource available beyond MaxResources (nothing changes:
// the device's other resources stay as they are).
func (p *Presence) Update(d *iotgate.Device, u iotgate.PresenceUpdate) error {
	now := p.cfg.Clock().UTC()
	p.mu.Lock()
	rs := p.res[d.JID]
	if rs == nil {
		rs = map[string]iotgate.Resource{}
	}
	if _, known := rs[u.From]; u.Available && !known && len(rs) >= p.cfg.MaxResources {
		p.mu.Unlock()
		return &iotgate.Error{Code: iotgate.ETooMany,
			Message: fmt.Sprintf("presence ignored: the device has %d resources online, the most iotgate tracks", len(rs))}
	}
	added := iotgate.ApplyPresence(rs, u, now)
	p.setResources(d.JID, rs)
	fire := p.firing(added)
	p.mu.Unlock()
	p.queue(presenceOp{change: &iotgate.PresenceChange{DeviceID: d.ID, DeviceJID: d.JID, At: now, PresenceUpdate: u}})
	for _, f := range fire {
		f(d.JID)
	}
	return nil
}

// setResources sets a device's resources in memory, with p.mu held.
func (p *Presence) setResources(jid string, rs map[string]iotgate.Resource) {
	if len(rs) == 0 {
		delete(p.res, jid)
		return
	}
	p.res[jid] = rs
}

// firing returns the OnOnline functions to call when added, with p.mu
// held.
func (p *Presence) firing(added bool) []func(string) {
	if !added {
		return nil
	}
	return p.onOnline
}

func (p *Presence) queue(op presenceOp) {
	if p.store == nil {
		return
	}
	select {
	case p.ops <- op:
	default:
		p.cfg.Logger.Warn("presence queue full, change dropped")
	}
}

// Refresh reloads a device's resources from the store (every device's
// when jid is ""), in the background: another instance changed them.
func (p *Presence) Refresh(jid string) {
	if p.store == nil {
		return
	}
	p.mu.Lock()
	p.pending[jid] = true
	p.mu.Unlock()
	select {
	case p.reload <- struct{}{}:
	default:
	}
}

// Forget drops a device (deleted, or unsubscribed). The store drops its
// resources with it.
func (p *Presence) Forget(jid string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.res, jid)
}

// MarkStale says the stream is down: presence seen from here is stale.
// With no other instance streaming (or no Fleet), nobody is known to be
// online any more: every device goes offline. Otherwise the others keep
// the shared presence up to date.
func (p *Presence) MarkStale() {
	now := p.cfg.Clock().UTC()
	p.mu.Lock()
	if p.stale {
		p.mu.Unlock()
		return
	}
	if p.cfg.Fleet == nil {
		clear(p.res)
	}
	p.stale, p.since = true, now
	p.mu.Unlock()
	p.queue(presenceOp{wipe: true})
}

// MarkFresh says the stream is up and probes are being sent. A grace
// period later, the resources no stanza confirmed since are dropped: they
// went away while this instance (or all) could not see it.
// Devices already known online (from the store) count as coming online
// for OnOnline: they are reachable through this stream only now.
func (p *Presence) MarkFresh() {
	p.mu.Lock()
	if !p.stale {
		p.mu.Unlock()
		return
	}
	// The probe start keeps its monotonic reading: the age of what it
	// did not confirm is measured on this clock, the store's own clock
	// dates the rows.
	start := p.cfg.Clock()
	p.stale, p.since = false, start.UTC()
	p.sending = false
	p.round++
	p.probe = start
	online := make([]string, 0, len(p.res))
	for jid := range p.res {
		online = append(online, jid)
	}
	fire := p.onOnline
	p.mu.Unlock()
	select {
	case p.probed <- struct{}{}:
	default:
	}
	for _, jid := range online {
		for _, f := range fire {
			f(jid)
		}
	}
}

// Online reports whether the device has an available resource, and whether
// that knowledge is stale (the stream is down).
func (p *Presence) Online(jid string) (online, stale bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.res[jid]) > 0, p.stale
}

// Resources returns the device's available resources, highest priority
// first (then most recent).
func (p *Presence) Resources(jid string) []iotgate.Resource {
	p.mu.Lock()
	defer p.mu.Unlock()
	return iotgate.SortedResources(p.res[jid])
}

// OnlineJIDs returns the bare JIDs of every online device.
func (p *Presence) OnlineJIDs() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]string, 0, len(p.res))
	for jid := range p.res {
		out = append(out, jid)
	}
	return out
}

// Run writes presence to the store, reloads what Refresh asks and
// reconciles after each probe round, until ctx ends.
func (p *Presence) Run(ctx context.Context) {
	if p.store == nil {
		<-ctx.Done()
		return
	}
	var wg sync.WaitGroup
	wg.Add(3)
	go func() { defer wg.Done(); writeBatches(ctx, p.ops, 1000, func(ops []presenceOp) { p.write(ctx, ops) }) }()
	go func() { defer wg.Done(); p.reloadLoop(ctx) }()
	go func() { defer wg.Done(); p.reconcileLoop(ctx) }()
	wg.Wait()
}

// write applies a batch of operations in order: consecutive changes in
// one transaction.
func (p *Presence) write(ctx context.Context, ops []presenceOp) {
	ctx = context.WithoutCancel(ctx)
	var cs []iotgate.PresenceChange
	flush := func() {
		if len(cs) == 0 {
			return
		}
		// A database that blips must not lose a device's going
		// offline for every instance: try a few times, then give up.
		for attempt := 1; ; attempt++ {
			err := p.store.ApplyPresence(ctx, cs)
			if err == nil {
				break
			}
			if attempt == presenceAttempts {
				p.cfg.Logger.Error("store presence failed; changes dropped", "changes", len(cs), "err", err)
				break
			}
			p.cfg.Logger.Warn("store presence failed; retrying", "changes", len(cs), "err", err)
			time.Sleep(presenceRetry)
		}
		cs = cs[:0]
	}
	for _, op := range ops {
		if op.change != nil {
			cs = append(cs, *op.change)
			continue
		}
		flush()
		if op.wipe && p.cfg.Fleet != nil {
			others, err := p.cfg.Fleet.OthersStreaming(ctx)
			if err != nil {
				// The next probe round reconciles what stays.
				p.cfg.Logger.Warn("cannot tell whether other instances stream; presence kept", "err", err)
				continue
			}
			if others {
				continue
			}
		}
		var age time.Duration // a wipe: all
		now := p.cfg.Clock()
		if !op.wipe {
			age = now.Sub(op.probe)
		}
		if err := p.store.ExpirePresence(ctx, age, now.UTC()); err != nil {
			p.cfg.Logger.Error("expire presence failed", "err", err)
		}
	}
	flush()
}

// reloadLoop reloads from the store the devices Refresh asked for.
func (p *Presence) reloadLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.reload:
		}
		p.mu.Lock()
		pending := p.pending
		p.pending = map[string]bool{}
		p.mu.Unlock()
		var jids []string // nil: all
		if !pending[""] {
			jids = make([]string, 0, len(pending))
			for jid := range pending {
				jids = append(jids, jid)
			}
		}
		got, err := p.store.DeviceResources(ctx, jids)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			p.cfg.Logger.Warn("cannot reload presence; retrying in a second", "devices", len(pending), "err", err)
			p.mu.Lock()
			maps.Copy(p.pending, pending)
			p.mu.Unlock()
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
			select {
			case p.reload <- struct{}{}:
			default:
			}
			continue
		}
		p.replace(jids, got)
	}
}

// replace sets the resources of jids (every device when nil) to got and
// calls OnOnline for those that gained a resource.
func (p *Presence) replace(jids []string, got map[string][]iotgate.Resource) {
	var online []string
	p.mu.Lock()
	if jids == nil {
		for jid := range p.res {
			if _, ok := got[jid]; !ok {
				delete(p.res, jid)
			}
		}
		for jid := range got {
			jids = append(jids, jid)
		}
	}
	for _, jid := range jids {
		old := p.res[jid]
		rs := make(map[string]iotgate.Resource, len(got[jid]))
		added := false
		for _, r := range got[jid] {
			rs[r.JID] = r
			if _, ok := old[r.JID]; !ok {
				added = true
			}
		}
		p.setResources(jid, rs)
		if added {
			online = append(online, jid)
		}
	}
	fire := p.onOnline
	p.mu.Unlock()
	for _, jid := range online {
		for _, f := range fire {
			f(jid)
		}
	}
}

// ProbesSending says the probes of the current round are going out: the
// round's grace period counts from ProbesSent, not from MarkFresh.
func (p *Presence) ProbesSending() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.stale {
		p.sending = true
	}
}

// ProbesSent says the probes of the current round went out (or stopped
// going out: the round's grace period runs from now either way).
func (p *Presence) ProbesSent() {
	p.mu.Lock()
	p.sending, p.sentAt = false, p.cfg.Clock()
	p.mu.Unlock()
	select {
	case p.sent <- struct{}{}:
	default:
	}
}

// reconcileLoop drops, a grace period after each probe round starts (or,
// when the round's probes were announced by ProbesSending, after they were
// all sent), the resources no stanza confirmed since the round started,
// unless the stream dropped again meanwhile. The removal is queued behind
// the changes already received, probe answers included.
func (p *Presence) reconcileLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.probed:
		}
		p.mu.Lock()
		round, start := p.round, p.probe
		p.mu.Unlock()
		t := time.NewTimer(p.cfg.ProbeGrace)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		if !p.awaitProbesSent(ctx, round, start) {
			continue
		}
		select {
		case p.ops <- presenceOp{probe: start}:
		case <-ctx.Done():
			return
		}
	}
}

// awaitProbesSent waits, once the round's first grace period is over,
// until its probes have all been sent and a grace period has passed since.
// It reports whether the round (started at start) is still current.
func (p *Presence) awaitProbesSent(ctx context.Context, round int, start time.Time) bool {
	for {
		p.mu.Lock()
		current := round == p.round && !p.stale
		sending, sentAt := p.sending, p.sentAt
		p.mu.Unlock()
		if !current {
			return false
		}
		var wait <-chan struct{}
		var t *time.Timer
		switch left := sentAt.Add(p.cfg.ProbeGrace).Sub(p.cfg.Clock()); {
		case sending:
			wait = p.sent
		case !sentAt.Before(start) && left > 0:
			t = time.NewTimer(left)
		default:
			return true
		}
		var tc <-chan time.Time
		if t != nil {
			tc = t.C
		}
		select {
		case <-ctx.Done():
			if t != nil {
				t.Stop()
			}
			return false
		case <-wait:
		case <-tc:
		}
	}
}
