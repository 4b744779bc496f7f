package devices

import (
	"log/slog"
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
	// ReadingRetention is how long readings are kept (0: forever): a
	// cached newest reading older than it is shown as none, as the
	// store's answer will be once its day's partition is dropped.
	ReadingRetention time.Duration
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
	// device (about 1 KB each with their XML and JSON, twice that once
	// read through State with EncodeReading set: the encoding is kept
	// too); default 10000.
	CacheReadings int
	// RingBytes bounds the memory of the newest readings kept per
	// device for pages of readings (see readingRing): default 64 MiB;
	// negative: none are kept. RingDevices bounds the devices they are
	// kept for (default 10000), RingPerDevice the readings kept per
	// device (default 128, at most iotgate.MaxPageLimit+1); a page of
	// limit RingPerDevice or more is always read from the store.
	RingBytes, RingDevices, RingPerDevice int
	// StoredJSON writes a reading's JSON as the store gives it back
	// (postgres.StoredJSON) and EncodeReading a reading as the API writes
	// it (api.AppendReading): without both no readings are kept.
	StoredJSON    func([]byte) ([]byte, bool)
	EncodeReading func([]byte, *iotgate.Reading) []byte
	// ChangesLive tells whether other instances' change notifications
	// are flowing (postgres.Changes.Live); while it is false, pages of
	// readings are read from the store. nil: always (one instance, tests).
	ChangesLive func() bool
	Clock       iotgate.Clock
	Logger      *slog.Logger
	// Presence tracks who is online; nil means nobody ever is.
	Presence *Presence
	// Observer receives ingest measurements; nil discards them.
	Observer Observer
	// DeviceDomains refuses registrations outside its domains; the
	// zero value allows any.
	DeviceDomains DomainAllowList
	// Accounts creates and removes devices' XMPP accounts for
	// RegisterWithAccount and DeleteWithAccount; nil: they refuse
	// (accounts_unavailable).
	Accounts AccountProvisioner
}

// Service is the device registry and the ingest path of readings.
type Service struct {
	store   iotgate.DeviceStore
	schemas iotgate.SchemaSource
	cfg     ServiceConfig
	log     *slog.Logger

	cache *cache
	ring  *readingRing // nil: pages are read from the store

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
	// resends are the IQ readings answered unavailable that may have
	// been stored, for their resends.
	resends *resends
}

type pendingReading struct {
	r    *iotgate.Reading
	done func(error)
	via  string
	at   time.Time
	// resendKey is the IQ's id (IncomingReading.ResendKey).
	resendKey string
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
	if cfg.RingBytes == 0 {
		cfg.RingBytes = 64 << 20
	}
	if cfg.RingDevices <= 0 {
		cfg.RingDevices = 10000
	}
	if cfg.RingPerDevice <= 0 {
		cfg.RingPerDevice = 128
	}
	cfg.RingPerDevice = min(cfg.RingPerDevice, iotgate.MaxPageLimit+1)
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Presence == nil {
		cfg.Presence = NewPresence(nil, PresenceConfig{Clock: cfg.Clock, Logger: cfg.Logger})
	}
	if cfg.Observer == nil {
		cfg.Observer = nopObserver{}
	}
	var ring *readingRing
	if cfg.RingBytes > 0 && cfg.StoredJSON != nil && cfg.EncodeReading != nil {
		ring = newReadingRing(cfg.RingBytes, cfg.RingDevices, cfg.RingPerDevice, cfg.ReadingRetention, cfg.StoredJSON, cfg.EncodeReading)
		ring.live = cfg.ChangesLive
	}
	return &Service{
		store: store, schemas: schemas, cfg: cfg, log: cfg.Logger, ring: ring,
		cache:      newCache(cfg.CacheDevices, cfg.CacheStrangers, cfg.CacheReadings),
		queue:      newFairQueue[*pendingReading](QueueLimits{PerSender: cfg.DeviceQueue, Total: cfg.QueueSize}),
		queued:     make(chan struct{}, 1),
		strangers:  newTokenBucket(cfg.StrangerRate, cfg.StrangerBurst, cfg.Clock),
		rejections: make(chan *iotgate.Rejection, 1000),
		stopped:    make(chan struct{}),
		resends:    newResends(cfg.MaxHeld, cfg.HoldFor),
	}
}
