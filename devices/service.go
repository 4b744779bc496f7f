package devices

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	"github.com/iotgate/iotgate"
)

// ServiceConfig tunes the device service.
type ServiceConfig struct {
	// QueueSize bounds readings waiting to be committed; default 20000.
	QueueSize int
	// DeviceQueue bounds one device's readings waiting to be committed;
	// default 1000. Beyond it that device's readings are refused
	// (too_many_requests), never the others'.
	DeviceQueue int
	// MaxBatch bounds readings committed in one transaction; default 1000.
	MaxBatch int
	// MaxBatchPerDevice bounds one device's readings in one transaction;
	// default 100.
	MaxBatchPerDevice int
	// Committers bounds the batches committed at once; default 2. A
	// device's readings are in one of them at a time.
	Committers int
	// MessageLinger is how long message readings may wait to be
	// committed together when no IQ reading waits (nobody waits for
	// their answer); default 20ms. A trickle of messages (a flood that
	// the rate limit thins out) then costs PostgreSQL a transaction per
	// linger, not one per message.
	MessageLinger time.Duration
	// LookupTimeout bounds a device lookup in the store on a cache miss;
	// default 5s.
	LookupTimeout time.Duration
	// StrangerRate and StrangerBurst bound the store lookups per second
	// that find no device (readings from JIDs that are not registered);
	// defaults 50 and 200. Beyond them Sender says SenderThrottled for
	// JIDs the cache does not know, so a flood from rotating JIDs cannot
	// load PostgreSQL without bound.
	StrangerRate  float64
	StrangerBurst float64
	// MaxHeld bounds message readings kept for another commit attempt
	// after a failed one (a message has no answer a device could retry
	// on); default 20000. Beyond it they are dropped and counted.
	MaxHeld int
	// MaxHeldBytes bounds the memory of those readings (their XML and
	// JSON, plus heldOverhead each); default 64 MiB. A count alone
	// would let 20000 readings of 64 KiB hold gigabytes.
	MaxHeldBytes int
	// HoldFor bounds how long such a reading is retried; default 2m.
	HoldFor time.Duration
	// RejectionPayloadBytes is how much of a refused payload is kept;
	// default 4096.
	RejectionPayloadBytes int
	// KeepRejections is how many refused payloads are kept per device,
	// the newest; default 1000.
	KeepRejections int
	// CacheTTL bounds how long a looked-up device (or its absence) is
	// trusted without asking the store; default 30s. iotgate's own writes
	// update the cache at once; the TTL bounds what a change made behind
	// its back can hide.
	CacheTTL time.Duration
	// CacheDevices bounds the device records kept in memory (a few
	// hundred bytes each); default 100000.
	CacheDevices int
	// CacheStrangers bounds the JIDs remembered as not registered, kept
	// apart from the device records so that a flood from rotating JIDs
	// evicts only its own kind; default 10000.
	CacheStrangers int
	// CacheReadings bounds the newest readings kept in memory, one per
	// device (about 1 KB each with their XML and JSON); default 10000.
	CacheReadings int
	Clock         iotgate.Clock
	Logger        *slog.Logger
	// Presence tracks who is online; nil means nobody ever is.
	Presence *Presence
	// Observer receives ingest measurements; nil discards them.
	Observer Observer
	// DeviceDomains refuses registrations outside its domains; the
	// zero value allows any.
	DeviceDomains DomainAllowList
}

// Service is the device registry and the ingest path of readings.
type Service struct {
	store   iotgate.DeviceStore
	schemas iotgate.SchemaSource
	cfg     ServiceConfig
	log     *slog.Logger

	cache *cache

	// queue holds the readings waiting to be committed, per device;
	// queueMu guards it and queued signals Run that it has some.
	queueMu    sync.Mutex
	queue      *fairQueue[*pendingReading]
	iqQueued   int       // IQ readings in queue
	firstAt    time.Time // when the queue last went from empty to not
	queued     chan struct{}
	strangers  *tokenBucket
	rejections chan *iotgate.Rejection
	// held are message readings whose commit failed, retried with the
	// next batch; heldMu guards them.
	heldMu   sync.Mutex
	held     []*pendingReading
	draining bool
	stopped  chan struct{}
	closing  atomic.Bool
	stats    IngestStats
	statsMu  sync.Mutex

	// heldBytes is what held costs in memory (pendingReading.size).
	heldBytes int
}

type pendingReading struct {
	r    *iotgate.Reading
	done func(error)
	via  string
	at   time.Time
}

// IngestStats counts what the ingest path did since start.
type IngestStats struct {
	Accepted     uint64 `json:"accepted"`
	Rejected     uint64 `json:"rejected"`
	Unregistered uint64 `json:"unregistered"`
	Dropped      uint64 `json:"dropped"`
	Batches      uint64 `json:"batches"`
	// Held is how many message readings wait for the database now.
	Held uint64 `json:"held"`
}

// NewService returns a device service. Call Run to start committing readings.
func NewService(store iotgate.DeviceStore, schemas iotgate.SchemaSource, cfg ServiceConfig) *Service {
	if cfg.QueueSize <= 0 {
		cfg.QueueSize = 20000
	}
	if cfg.DeviceQueue <= 0 {
		cfg.DeviceQueue = 1000
	}
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = 1000
	}
	if cfg.MaxBatchPerDevice <= 0 {
		cfg.MaxBatchPerDevice = 100
	}
	if cfg.Committers <= 0 {
		cfg.Committers = 2
	}
	if cfg.MessageLinger <= 0 {
		cfg.MessageLinger = 20 * time.Millisecond
	}
	if cfg.LookupTimeout <= 0 {
		cfg.LookupTimeout = 5 * time.Second
	}
	if cfg.StrangerRate <= 0 {
		cfg.StrangerRate = 50
	}
	if cfg.StrangerBurst <= 0 {
		cfg.StrangerBurst = 200
	}
	if cfg.CacheStrangers <= 0 {
		cfg.CacheStrangers = 10000
	}
	if cfg.MaxHeld <= 0 {
		cfg.MaxHeld = 20000
	}
	if cfg.MaxHeldBytes <= 0 {
		cfg.MaxHeldBytes = 64 << 20
	}
	if cfg.HoldFor <= 0 {
		cfg.HoldFor = 2 * time.Minute
	}
	if cfg.RejectionPayloadBytes <= 0 {
		cfg.RejectionPayloadBytes = 4096
	}
	if cfg.KeepRejections <= 0 {
		cfg.KeepRejections = 1000
	}
	if cfg.CacheTTL <= 0 {
		cfg.CacheTTL = 30 * time.Second
	}
	if cfg.CacheDevices <= 0 {
		cfg.CacheDevices = 100000
	}
	if cfg.CacheReadings <= 0 {
		cfg.CacheReadings = 10000
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Presence == nil {
		cfg.Presence = NewPresence(nil, cfg.Clock, cfg.Logger)
	}
	if cfg.Observer == nil {
		cfg.Observer = nopObserver{}
	}
	return &Service{
		store: store, schemas: schemas, cfg: cfg, log: cfg.Logger,
		cache:      newCache(cfg.CacheDevices, cfg.CacheStrangers, cfg.CacheReadings),
		queue:      newFairQueue[*pendingReading](QueueLimits{PerSender: cfg.DeviceQueue, Total: cfg.QueueSize}),
		queued:     make(chan struct{}, 1),
		strangers:  newTokenBucket(cfg.StrangerRate, cfg.StrangerBurst, cfg.Clock),
		rejections: make(chan *iotgate.Rejection, 1000),
		stopped:    make(chan struct{}),
	}
}

// Register creates a device. Version 0 means the schema's latest version.
// Errors: invalid (bad JID, labels, unknown schema), forbidden (domain
// outside ServiceConfig.DeviceDomains), conflict (already registered).
func (s *Service) Register(ctx context.Context, d *iotgate.Device) (*iotgate.Device, error) {
	j, err := iotgate.NormalizeJID(d.JID)
	if err != nil {
		return nil, err
	}
	if err := s.cfg.DeviceDomains.Check(j); err != nil {
		return nil, err
	}
	d.JID = j
	if err := d.Validate(); err != nil {
		return nil, err
	}
	_, v, err := s.schemas.Compiled(ctx, d.Schema, d.SchemaVersion)
	if err != nil {
		if iotgate.ErrorCode(err) == iotgate.ENotFound {
			return nil, &iotgate.Error{Code: iotgate.EInvalid, Message: err.Error(), Err: err}
		}
		return nil, fmt.Errorf("resolve schema: %w", err)
	}
	d.SchemaVersion = v
	now := s.cfg.Clock().UTC()
	d.CreatedAt, d.UpdatedAt = now, now
	if d.Labels == nil {
		d.Labels = map[string]string{}
	}
	if err := s.store.CreateDevice(ctx, d); err != nil {
		return nil, err
	}
	s.cache.forget(d.JID, true)
	// Cached at once: its first reading needs no lookup, and is never
	// taken for a stranger's.
	rec := *d
	rec.Labels = maps.Clone(d.Labels)
	s.cache.putDevice(d.JID, &rec, s.cfg.Clock(), s.cache.currentEpoch())
	return d, nil
}

// Device returns a registered device, from memory when it can: it is
// what REST reads and every command look a device up with. The result is
// the caller's to change. Errors: invalid (bad JID), not_found,
// unavailable.
func (s *Service) Device(ctx context.Context, jid string) (*iotgate.Device, error) {
	d, err := s.device(ctx, jid)
	if err != nil {
		return nil, err
	}
	out := *d
	out.Labels = maps.Clone(d.Labels)
	out.LastSeenAt = s.lastSeen(d, nil)
	out.Online, _ = s.cfg.Presence.Online(d.JID)
	return &out, nil
}

// device returns the cached record of a device, which callers must not
// change. Errors: invalid, not_found, unavailable.
func (s *Service) device(ctx context.Context, jid string) (*iotgate.Device, error) {
	j, err := iotgate.NormalizeJID(jid)
	if err != nil {
		return nil, err
	}
	d, err := s.lookup(ctx, j)
	if err != nil {
		return nil, err
	}
	if d == nil {
		return nil, iotgate.Errorf(iotgate.ENotFound, "device %s is not registered", j)
	}
	return d, nil
}

// lastSeen returns when d's newest reading arrived: the cached record
// may predate readings committed since it was read, and r (when not nil)
// is a reading of d that may be newer still.
func (s *Service) lastSeen(d *iotgate.Device, r *iotgate.Reading) *time.Time {
	t := d.LastSeenAt
	if at, ok := s.cache.lastSeen(d.ID); ok && (t == nil || at.After(*t)) {
		t = &at
	}
	if r != nil && (t == nil || r.ReceivedAt.After(*t)) {
		t = &r.ReceivedAt
	}
	if t != nil {
		at := *t
		return &at
	}
	return nil
}

// Devices lists devices. Errors: invalid (bad cursor or filter).
func (s *Service) Devices(ctx context.Context, f iotgate.DeviceFilter) (*iotgate.DevicePage, error) {
	if f.Limit <= 0 {
		f.Limit = 100
	}
	if f.Limit > 1000 {
		f.Limit = 1000
	}
	if f.Online != nil {
		f.OnlineJIDs = s.cfg.Presence.OnlineJIDs()
	}
	page, err := s.store.Devices(ctx, f)
	if err != nil {
		return nil, err
	}
	for _, d := range page.Items {
		d.Online, _ = s.cfg.Presence.Online(d.JID)
	}
	return page, nil
}

// Update changes a device. Errors: invalid, not_found.
func (s *Service) Update(ctx context.Context, jid string, u iotgate.DeviceUpdate) (*iotgate.Device, error) {
	j, err := iotgate.NormalizeJID(jid)
	if err != nil {
		return nil, err
	}
	if u.Name != nil && len(*u.Name) > iotgate.MaxNameLen {
		return nil, iotgate.Errorf(iotgate.EInvalid, "name is longer than %d bytes", iotgate.MaxNameLen)
	}
	if u.Labels != nil {
		if err := iotgate.ValidateLabels(*u.Labels); err != nil {
			return nil, err
		}
	}
	if u.SchemaVersion != nil {
		cur, err := s.store.Device(ctx, j)
		if err != nil {
			return nil, err
		}
		if _, _, err := s.schemas.Compiled(ctx, cur.Schema, *u.SchemaVersion); err != nil {
			if iotgate.ErrorCode(err) == iotgate.ENotFound {
				return nil, &iotgate.Error{Code: iotgate.EInvalid, Message: err.Error(), Err: err}
			}
			return nil, err
		}
	}
	d, err := s.store.UpdateDevice(ctx, j, u, s.cfg.Clock().UTC())
	s.cache.forget(j, false)
	if err != nil {
		return nil, err
	}
	d.LastSeenAt = s.lastSeen(d, nil)
	d.Online, _ = s.cfg.Presence.Online(d.JID)
	return d, nil
}

// Delete removes a device with all its readings and rejections.
// Errors: invalid, not_found.
func (s *Service) Delete(ctx context.Context, jid string) error {
	j, err := iotgate.NormalizeJID(jid)
	if err != nil {
		return err
	}
	err = s.store.DeleteDevice(ctx, j)
	s.cache.forget(j, true)
	s.cfg.Presence.Forget(j)
	return err
}

// State returns a device's current state. It is served from memory once
// the device and its newest reading are cached: the committer updates
// the reading before it acknowledges a batch, so a reading is shown as
// soon as it is acknowledged. Errors: invalid, not_found, unavailable.
func (s *Service) State(ctx context.Context, jid string) (*iotgate.State, error) {
	d, err := s.device(ctx, jid)
	if err != nil {
		return nil, err
	}
	r, err := s.latestReading(ctx, d)
	if err != nil {
		return nil, err
	}
	st := &iotgate.State{JID: d.JID, LastSeenAt: s.lastSeen(d, r), Reading: r}
	st.Online, st.PresenceStale = s.cfg.Presence.Online(d.JID)
	st.Resources = s.cfg.Presence.Resources(d.JID)
	return st, nil
}

// latestReading returns d's newest reading, nil if it has none, from the
// cache or else from the store (and then caches it).
func (s *Service) latestReading(ctx context.Context, d *iotgate.Device) (*iotgate.Reading, error) {
	r, ok, _ := s.cache.latestReading(d.JID, d.ID)
	if ok {
		return r, nil
	}
	epoch := s.cache.currentEpoch()
	r, err := s.store.LatestReading(ctx, d.JID)
	switch {
	case iotgate.ErrorCode(err) == iotgate.ENotFound:
		r = nil
	case err != nil:
		return nil, err
	case r.DeviceID != d.ID:
		// The JID was deleted and registered again meanwhile: this
		// reading is the new device's, not d's.
		return nil, nil
	}
	return s.cache.putLatest(d.JID, d.ID, r, epoch), nil
}

// Readings returns a page of a device's readings. Errors: invalid, not_found.
func (s *Service) Readings(ctx context.Context, jid string, f iotgate.ReadingFilter) (*iotgate.ReadingPage, error) {
	d, err := s.device(ctx, jid)
	if err != nil {
		return nil, err
	}
	if err := normalizeReadingFilter(&f); err != nil {
		return nil, err
	}
	return s.store.Readings(ctx, d.JID, f)
}

// Rejections returns a page of a device's refused payloads.
// Errors: invalid, not_found.
func (s *Service) Rejections(ctx context.Context, jid string, f iotgate.ReadingFilter) (*iotgate.RejectionPage, error) {
	d, err := s.device(ctx, jid)
	if err != nil {
		return nil, err
	}
	if err := normalizeReadingFilter(&f); err != nil {
		return nil, err
	}
	return s.store.Rejections(ctx, d.JID, f)
}

func normalizeReadingFilter(f *iotgate.ReadingFilter) error {
	if f.Limit <= 0 {
		f.Limit = 100
	}
	if f.Limit > 1000 {
		return iotgate.Errorf(iotgate.EInvalid, "limit must be at most 1000")
	}
	if f.Since != nil && f.Until != nil && f.Until.Before(*f.Since) {
		return iotgate.Errorf(iotgate.EInvalid, "until is before since")
	}
	return nil
}

// Stats returns ingest counters.
func (s *Service) Stats() IngestStats {
	s.statsMu.Lock()
	defer s.statsMu.Unlock()
	return s.stats
}

func (s *Service) count(f func(*IngestStats)) {
	s.statsMu.Lock()
	f(&s.stats)
	s.statsMu.Unlock()
}

// lookup finds a device by canonical bare JID through the cache. It
// returns (nil, nil) for a JID that is not registered. The record is
// shared: callers must not change it.
func (s *Service) lookup(ctx context.Context, bare string) (*iotgate.Device, error) {
	now := s.cfg.Clock()
	d, ok, epoch := s.cache.device(bare, now, s.cfg.CacheTTL)
	if ok {
		return d, nil
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.LookupTimeout)
	defer cancel()
	d, err := s.store.Device(ctx, bare)
	if err != nil && iotgate.ErrorCode(err) != iotgate.ENotFound {
		return nil, err
	}
	s.cache.putDevice(bare, d, now, epoch)
	return d, nil
}

// errStrangersThrottled refuses a lookup of a sender not cached while
// lookups that found nobody exceed StrangerRate.
var errStrangersThrottled = &iotgate.Error{Code: iotgate.ETooMany, Message: "too many unknown senders lately, try again later"}

// lookupSender is lookup for a JID heard on the XMPP stream. A JID the
// cache doesn't know at all reserves a stranger lookup first, given back
// if it turns out registered: so a flood of new JIDs costs at most
// StrangerRate lookups a second plus StrangerBurst, however many of them
// were queued before the throttle showed at the read loop. Errors:
// too_many_requests, and lookup's.
func (s *Service) lookupSender(ctx context.Context, bare string) (*iotgate.Device, error) {
	registered, known := s.cache.sender(bare, s.cfg.Clock(), s.cfg.CacheTTL)
	if registered || known {
		return s.lookup(ctx, bare)
	}
	if !s.strangers.tryTake() {
		return nil, errStrangersThrottled
	}
	d, err := s.lookup(ctx, bare)
	if d != nil || err != nil {
		s.strangers.give()
	}
	return d, err
}

// SenderStatus is what iotgate knows of a sender without I/O.
type SenderStatus int

const (
	// SenderUnseen: not cached; a lookup in the store will tell.
	SenderUnseen SenderStatus = iota
	// SenderRegistered: cached as a registered device (perhaps expired,
	// and then looked up again, but it was registered a moment ago).
	SenderRegistered
	// SenderNotRegistered: cached as not registered.
	SenderNotRegistered
	// SenderThrottled: not cached, and so many lookups found no device
	// lately that this one is not made now.
	SenderThrottled
)

// Sender tells what the cache knows of a (bare or full) JID, without
// I/O: the XMPP read loop asks it to give registered devices, strangers
// and a flood of strangers each their own lane before any lookup.
func (s *Service) Sender(jid string) SenderStatus {
	bare, err := iotgate.BareJID(jid)
	if err != nil {
		return SenderNotRegistered
	}
	switch registered, known := s.cache.sender(bare, s.cfg.Clock(), s.cfg.CacheTTL); {
	case registered:
		return SenderRegistered
	case known:
		return SenderNotRegistered
	case !s.strangers.ready():
		return SenderThrottled
	}
	return SenderUnseen
}

// ErrNotRegistered is returned (wrapped in *Error, detail
// device_not_registered) for readings from unknown JIDs.
var ErrNotRegistered = &iotgate.Error{Code: iotgate.ENotFound, Detail: "device_not_registered", Message: "this JID is not registered as a device"}

// Ingest takes a stanza that may carry a reading. It never blocks on the
// database: done is called once, later, with nil after the reading is
// committed, or with the reason it was refused (unprocessable, with the
// validator's reason; invalid when no payload is in the schema's
// namespace), not stored (unavailable, too_many_requests), or not accepted
// (not_found with detail device_not_registered).
func (s *Service) Ingest(ctx context.Context, in iotgate.IncomingReading, done func(error)) {
	if done == nil {
		done = func(error) {}
	}
	if s.closing.Load() {
		s.cfg.Observer.ReadingRefused(RefusedUnavailable)
		done(&iotgate.Error{Code: iotgate.EUnavailable, Message: "iotgate is shutting down, try again later"})
		return
	}
	bare, err := iotgate.BareJID(in.From)
	if err != nil {
		done(err)
		return
	}
	dev, err := s.lookupSender(ctx, bare)
	if iotgate.ErrorCode(err) == iotgate.ETooMany {
		s.cfg.Observer.ReadingRefused(RefusedUnavailable)
		done(err)
		return
	}
	if err != nil {
		s.cfg.Observer.ReadingRefused(RefusedUnavailable)
		done(&iotgate.Error{Code: iotgate.EUnavailable, Message: "device registry unavailable, try again later", Err: err})
		return
	}
	if dev == nil {
		s.count(func(st *IngestStats) { st.Unregistered++ })
		s.cfg.Observer.ReadingRefused(RefusedUnregistered)
		done(ErrNotRegistered)
		return
	}
	schema, _, err := s.schemas.Compiled(ctx, dev.Schema, dev.SchemaVersion)
	if err != nil {
		s.cfg.Observer.ReadingRefused(RefusedUnavailable)
		done(&iotgate.Error{Code: iotgate.EUnavailable, Message: "device schema unavailable, try again later", Err: err})
		return
	}
	now := s.cfg.Clock().UTC()
	var payload *iotgate.Payload
	for i := range in.Payloads {
		if in.Payloads[i].Namespace == schema.TargetNamespace() {
			payload = &in.Payloads[i]
			break
		}
	}
	if payload == nil {
		err := iotgate.Errorf(iotgate.EInvalid, "no payload element in namespace %q (the namespace of schema %s version %d)", schema.TargetNamespace(), dev.Schema, dev.SchemaVersion)
		s.reject(dev, in, nil, err, now)
		done(err)
		return
	}
	if err := checkDeviceTime(in.DeviceTime); err != nil {
		s.reject(dev, in, payload.XML, err, now)
		done(err)
		return
	}
	data, err := schema.ValidateAndRender(payload.XML)
	if err != nil {
		s.reject(dev, in, payload.XML, err, now)
		done(err)
		return
	}
	// PostgreSQL keeps microseconds: round the times here, so that the
	// reading the cache keeps after the commit is the one stored.
	r := &iotgate.Reading{DeviceID: dev.ID, DeviceJID: dev.JID, ReceivedAt: now.Round(time.Microsecond), XML: string(payload.XML), Data: data}
	if in.DeviceTime != nil {
		t := in.DeviceTime.UTC().Round(time.Microsecond)
		r.DeviceTime = &t
	}
	s.queueMu.Lock()
	if s.queue.len() == 0 {
		s.firstAt = time.Now()
	}
	_, err = s.queue.push(dev.JID, &pendingReading{r: r, done: done, via: in.Via, at: now}, len(r.XML)+len(r.Data))
	if err == nil && in.Via == "iq" {
		s.iqQueued++
	}
	s.queueMu.Unlock()
	if err != nil {
		s.count(func(st *IngestStats) { st.Dropped++ })
		s.cfg.Observer.ReadingRefused(RefusedQueueFull)
		done(err)
		return
	}
	s.signal()
}

// signal tells Run that readings are queued.
func (s *Service) signal() {
	select {
	case s.queued <- struct{}{}:
	default:
	}
}

// take appends queued readings to batch, up to MaxBatch: round-robin
// over the devices, at most MaxBatchPerDevice of each, so a device
// flooding the queue fills a batch only up to its share. The devices
// taken (keys) stay checked out, out of other batches, until release.
func (s *Service) take(batch []*pendingReading) ([]*pendingReading, []string) {
	s.queueMu.Lock()
	defer s.queueMu.Unlock()
	var keys []string
	for len(batch) < s.cfg.MaxBatch {
		key, p, ok := s.queue.next()
		if !ok {
			break
		}
		keys = append(keys, key)
		batch = append(batch, p)
	}
	for round := 1; round < s.cfg.MaxBatchPerDevice && len(batch) < s.cfg.MaxBatch; round++ {
		more := false
		for _, key := range keys {
			if len(batch) == s.cfg.MaxBatch {
				break
			}
			if p, ok := s.queue.more(key); ok {
				batch = append(batch, p)
				more = true
			}
		}
		if !more {
			break
		}
	}
	for _, p := range batch {
		if p.via == "iq" {
			s.iqQueued--
		}
	}
	return batch, keys
}

// linger returns how long to wait before committing what is queued, so
// that message readings trickling in share a transaction: none when an
// IQ reading waits for its answer or a batch's worth is queued.
func (s *Service) linger() time.Duration {
	s.queueMu.Lock()
	defer s.queueMu.Unlock()
	if s.iqQueued > 0 || s.queue.len() >= s.cfg.MaxBatchPerDevice || s.queue.len() == 0 {
		return 0
	}
	return max(0, s.cfg.MessageLinger-time.Since(s.firstAt))
}

// release returns devices taken into a batch to the queue's turn order,
// once their commit is done.
func (s *Service) release(keys []string) {
	s.queueMu.Lock()
	for _, key := range keys {
		s.queue.done(key)
	}
	ready := s.queue.hasReady()
	s.queueMu.Unlock()
	if ready {
		s.signal()
	}
}

// RecordRejection records, for the operator, a stanza from the device at
// from that was refused before it could be read as a reading (one over the
// stanza size limit): payload is what is left of it, via "message" or "iq".
// It does not wait for the database. Errors: invalid for a bad JID,
// not_found (device_not_registered) for a JID that is not a device,
// unavailable when the registry can't be read.
func (s *Service) RecordRejection(ctx context.Context, from, via string, payload []byte, reason error) error {
	bare, err := iotgate.BareJID(from)
	if err != nil {
		return err
	}
	dev, err := s.lookupSender(ctx, bare)
	if iotgate.ErrorCode(err) == iotgate.ETooMany {
		return err
	}
	if err != nil {
		return &iotgate.Error{Code: iotgate.EUnavailable, Message: "device registry unavailable", Err: err}
	}
	if dev == nil {
		return ErrNotRegistered
	}
	s.reject(dev, iotgate.IncomingReading{From: from, Via: via}, payload, reason, s.cfg.Clock().UTC())
	return nil
}

// The device times a reading may carry: the years RFC 3339 writes with
// four digits, as UTC. Go parses a stamp of year 0 (or one whose offset
// moves it to year 0 or 10000), which PostgreSQL refuses; such a reading
// would fail the batch it is committed with.
var (
	minDeviceTime = time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC)
	maxDeviceTime = time.Date(9999, 12, 31, 23, 59, 59, 999999000, time.UTC)
)

// checkDeviceTime refuses a device time (a delay stamp) out of range
// (nil: none). A stamp is the device's claim about its reading: storing
// the reading without it would drop what the device said, so the device
// is told, and can fix its clock. Errors: invalid.
func checkDeviceTime(t *time.Time) error {
	if t == nil {
		return nil
	}
	if u := t.UTC().Round(time.Microsecond); u.Before(minDeviceTime) || u.After(maxDeviceTime) {
		return iotgate.Errorf(iotgate.EInvalid, "delay stamp %s is out of range: a reading's time must be from 0001-01-01 to 9999-12-31 UTC",
			t.UTC().Format(time.RFC3339Nano))
	}
	return nil
}

func (s *Service) reject(dev *iotgate.Device, in iotgate.IncomingReading, payload []byte, reason error, now time.Time) {
	s.count(func(st *IngestStats) { st.Rejected++ })
	s.cfg.Observer.ReadingRefused(RefusedInvalid)
	if payload == nil && len(in.Payloads) > 0 {
		payload = in.Payloads[0].XML
	}
	if len(payload) > s.cfg.RejectionPayloadBytes {
		payload = payload[:s.cfg.RejectionPayloadBytes]
	}
	s.record(&iotgate.Rejection{DeviceID: dev.ID, DeviceJID: dev.JID, ReceivedAt: now, Via: in.Via, Reason: iotgate.ErrorMessage(reason), Payload: string(payload)})
}

// record queues a rejection for the store.
func (s *Service) record(rej *iotgate.Rejection) {
	select {
	case s.rejections <- rej:
	default:
		// A flood of bad payloads must not grow memory; the counter
		// still says how many were refused.
	}
}

// clip cuts a refused payload to what is kept of it.
func (s *Service) clip(payload string) string {
	if len(payload) > s.cfg.RejectionPayloadBytes {
		return payload[:s.cfg.RejectionPayloadBytes]
	}
	return payload
}

// Run commits queued readings and rejections until ctx ends, then commits
// what is still queued (within a short grace period) and returns.
//
// Up to Committers batches are committed at once. A device's readings
// are in at most one of them (its queue stays checked out until that
// commit ends), so they are stored in order, and a device that floods
// the queue occupies one commit at a time: another device's reading never
// waits behind the flood's commit for a free one.
func (s *Service) Run(ctx context.Context) {
	defer close(s.stopped)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); s.runRejections(ctx) }()
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	lingering := time.NewTimer(time.Hour)
	lingering.Stop()
	var lingerC <-chan time.Time
	backoff := minRetry
	type outcome struct {
		keys []string
		ok   bool
	}
	finished := make(chan outcome, s.cfg.Committers)
	inflight := 0
	for {
		var retryC <-chan time.Time
		if inflight == 0 && s.heldCount() > 0 {
			retry.Reset(backoff)
			retryC = retry.C
		}
		select {
		case <-s.queued:
		case <-retryC:
		case <-lingerC:
			lingerC = nil
		case o := <-finished:
			inflight--
			s.release(o.keys)
			if o.ok {
				backoff = minRetry
			} else {
				backoff = min(2*backoff, maxRetry)
			}
		case <-ctx.Done():
			retry.Stop()
			lingering.Stop()
			s.closing.Store(true)
			for ; inflight > 0; inflight-- {
				s.release((<-finished).keys)
			}
			s.drain()
			wg.Wait()
			return
		}
		retry.Stop()
		if d := s.linger(); d > 0 {
			if lingerC == nil {
				lingering.Reset(d)
				lingerC = lingering.C
			}
			continue
		}
		if lingerC != nil {
			lingering.Stop()
			lingerC = nil
		}
		for inflight < s.cfg.Committers {
			// Held readings go first: they are the oldest. Then group
			// commit: whatever else is waiting. Under load a batch
			// grows while the previous commit runs; idle, a reading is
			// committed alone without waiting.
			batch, keys := s.take(s.takeHeld(make([]*pendingReading, 0, s.cfg.MaxBatch)))
			if len(batch) == 0 {
				break
			}
			inflight++
			go func() { finished <- outcome{keys, s.commit(ctx, batch)} }()
		}
	}
}

// The pace of commit attempts for held readings while the database is down.
const (
	minRetry = 100 * time.Millisecond
	maxRetry = 2 * time.Second
)

// heldCount returns how many message readings wait for another attempt.
func (s *Service) heldCount() int {
	s.heldMu.Lock()
	defer s.heldMu.Unlock()
	return len(s.held)
}

// takeHeld moves held readings into batch, as many as fit.
func (s *Service) takeHeld(batch []*pendingReading) []*pendingReading {
	s.heldMu.Lock()
	defer s.heldMu.Unlock()
	n := min(len(s.held), s.cfg.MaxBatch-len(batch))
	if n <= 0 {
		return batch
	}
	batch = append(batch, s.held[:n]...)
	for _, p := range s.held[:n] {
		s.heldBytes -= p.size()
	}
	rest := copy(s.held, s.held[n:])
	clear(s.held[rest:]) // let the moved readings go when they are done
	s.held = s.held[:rest]
	s.count(func(st *IngestStats) { st.Held = uint64(len(s.held)) })
	return batch
}

// Stopped is closed when Run has returned, every queued reading committed
// or refused.
func (s *Service) Stopped() <-chan struct{} { return s.stopped }

// drain commits what is left after shutdown began. Held readings get one
// last attempt; if it fails they are dropped, counted and logged.
func (s *Service) drain() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s.heldMu.Lock()
	s.draining = true
	s.heldMu.Unlock()
	for {
		batch, keys := s.take(s.takeHeld(make([]*pendingReading, 0, s.cfg.MaxBatch)))
		if len(batch) == 0 {
			return
		}
		s.commit(ctx, batch)
		s.release(keys)
	}
}

// commit stores batch and reports the outcome to each reading's sender.
// The store writes it in one transaction, or apart when the database
// refuses a value of some reading: only those are refused (invalid, with
// the reason, and recorded as rejections), the others are stored. When
// the database can't be reached, IQ readings are answered with a wait
// error (the device retries); message readings are held for the next
// attempt, within MaxHeld, MaxHeldBytes and HoldFor. It reports whether
// the database could be reached.
func (s *Service) commit(ctx context.Context, batch []*pendingReading) bool {
	rs := make([]*iotgate.Reading, len(batch))
	for i, p := range batch {
		rs[i] = p.r
	}
	began := time.Now()
	errs := s.store.InsertReadings(context.WithoutCancel(ctx), rs)
	now := s.cfg.Clock()
	stored := rs[:0:0]
	var firstErr error
	held, dropped, refused := 0, 0, 0
	for i, p := range batch {
		err := errs[i]
		switch {
		case err == nil:
			stored = append(stored, p.r)
			continue
		case iotgate.ErrorCode(err) == iotgate.EInvalid:
			// This reading's own fault: waiting won't help.
			refused++
			reason := &iotgate.Error{Code: iotgate.EInvalid, Message: "the reading could not be stored: the database refused a value in it (" + iotgate.ErrorMessage(err) + ")", Err: err}
			s.record(&iotgate.Rejection{DeviceID: p.r.DeviceID, DeviceJID: p.r.DeviceJID, ReceivedAt: p.r.ReceivedAt, Via: p.via, Reason: reason.Message, Payload: s.clip(p.r.XML)})
			s.cfg.Observer.ReadingRefused(RefusedInvalid)
			p.done(reason)
			continue
		}
		if firstErr == nil {
			firstErr = err
		}
		// Only an unreachable database is worth waiting for.
		if p.via == "message" && iotgate.ErrorCode(err) == iotgate.EUnavailable && s.hold(p, now) {
			held++
			continue
		}
		dropped++
		p.done(&iotgate.Error{Code: iotgate.EUnavailable, Message: "readings could not be stored, try again later", Err: err})
		s.cfg.Observer.ReadingRefused(RefusedUnavailable)
	}
	if len(stored) > 0 {
		s.cfg.Observer.ReadingsCommitted(len(stored), time.Since(began))
		// Before the acknowledgements: a device (or whoever it told) that
		// reads the state after its answer must find the reading.
		s.cache.committed(stored)
	}
	for i, p := range batch {
		if errs[i] == nil {
			p.done(nil)
		}
	}
	s.heldMu.Lock()
	heldTotal, heldBytes := len(s.held), s.heldBytes
	s.heldMu.Unlock()
	s.count(func(st *IngestStats) {
		st.Accepted += uint64(len(stored))
		st.Rejected += uint64(refused)
		st.Dropped += uint64(dropped)
		st.Held = uint64(heldTotal)
		if len(stored) > 0 {
			st.Batches++
		}
	})
	if refused > 0 {
		s.log.Warn("readings refused by the database", "readings", len(batch), "refused", refused)
	}
	if firstErr != nil {
		s.log.Error("commit readings failed", "readings", len(batch), "refused", dropped, "held_for_retry", held,
			"held_total", heldTotal, "held_bytes", heldBytes, "err", firstErr)
		return false
	}
	return true
}

// hold keeps p, a message reading the database could not take, for the
// next attempt if there is room (MaxHeld, MaxHeldBytes) and it is not too
// old (HoldFor); it reports whether p is held.
func (s *Service) hold(p *pendingReading, now time.Time) bool {
	s.heldMu.Lock()
	defer s.heldMu.Unlock()
	if s.draining || len(s.held) >= s.cfg.MaxHeld || s.heldBytes+p.size() > s.cfg.MaxHeldBytes || now.Sub(p.at) >= s.cfg.HoldFor {
		return false
	}
	s.held = append(s.held, p)
	s.heldBytes += p.size()
	return true
}

// heldOverhead is what a held reading costs beyond its XML and JSON: the
// reading, its pending entry and the callback's closure, roughly.
const heldOverhead = 512

// size is what p costs in memory while held.
func (p *pendingReading) size() int { return len(p.r.XML) + len(p.r.Data) + heldOverhead }

func (s *Service) runRejections(ctx context.Context) {
	for {
		var batch []*iotgate.Rejection
		select {
		case r := <-s.rejections:
			batch = append(batch, r)
		case <-ctx.Done():
			return
		}
	fill:
		for len(batch) < 500 {
			select {
			case r := <-s.rejections:
				batch = append(batch, r)
			default:
				break fill
			}
		}
		if err := s.store.InsertRejections(context.WithoutCancel(ctx), batch, s.cfg.KeepRejections); err != nil {
			s.log.Error("store rejections failed", "rejections", len(batch), "err", err)
		}
	}
}

// UpdatePresence applies a presence stanza from a device. Errors: not_found
// (detail device_not_registered), unavailable.
func (s *Service) UpdatePresence(ctx context.Context, u iotgate.PresenceUpdate) error {
	bare, err := iotgate.BareJID(u.From)
	if err != nil {
		return err
	}
	d, err := s.lookupSender(ctx, bare)
	if iotgate.ErrorCode(err) == iotgate.ETooMany {
		return err
	}
	if err != nil {
		return &iotgate.Error{Code: iotgate.EUnavailable, Message: "device registry unavailable", Err: err}
	}
	if d == nil {
		return ErrNotRegistered
	}
	s.cfg.Presence.Update(d, u)
	return nil
}

// Registered reports whether a (bare or full) JID is a registered device.
// Errors: invalid, unavailable.
func (s *Service) Registered(ctx context.Context, jid string) (bool, error) {
	bare, err := iotgate.BareJID(jid)
	if err != nil {
		return false, err
	}
	d, err := s.lookup(ctx, bare)
	if err != nil {
		return false, &iotgate.Error{Code: iotgate.EUnavailable, Message: "device registry unavailable", Err: err}
	}
	return d != nil, nil
}

// DeviceJIDs returns every registered JID, for presence probes.
func (s *Service) DeviceJIDs(ctx context.Context) ([]string, error) {
	return s.store.DeviceJIDs(ctx)
}

// PresenceStale marks presence unknown (the stream is down).
func (s *Service) PresenceStale() { s.cfg.Presence.MarkStale() }

// PresenceFresh marks presence known again (the stream is up).
func (s *Service) PresenceFresh() { s.cfg.Presence.MarkFresh() }

// tokenBucket is one token bucket: rate tokens a second, at most burst.
type tokenBucket struct {
	rate, burst float64
	clock       iotgate.Clock

	mu     sync.Mutex
	tokens float64
	last   time.Time
}

func newTokenBucket(rate, burst float64, clock iotgate.Clock) *tokenBucket {
	return &tokenBucket{rate: rate, burst: burst, clock: clock, tokens: burst, last: clock()}
}

// refill adds the tokens earned since the last call; b.mu is held.
func (b *tokenBucket) refill() {
	now := b.clock()
	b.tokens = min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	b.last = now
}

// ready reports whether a token is there, without taking it.
func (b *tokenBucket) ready() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.refill()
	return b.tokens >= 1
}

// tryTake takes a token if there is one.
func (b *tokenBucket) tryTake() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.refill()
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// give returns a token taken for what did not happen after all.
func (b *tokenBucket) give() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.tokens = min(b.tokens+1, b.burst)
}
