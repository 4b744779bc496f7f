package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"runtime"
	"sync"
	"time"

	"github.com/iotgate/iotgate/api"
	"github.com/iotgate/iotgate/auth"
	"github.com/iotgate/iotgate/component"
	"github.com/iotgate/iotgate/console"
	"github.com/iotgate/iotgate/devices"
	"github.com/iotgate/iotgate/events"
	"github.com/iotgate/iotgate/instances"
	"github.com/iotgate/iotgate/postgres"
	"github.com/iotgate/iotgate/schemas"
	"github.com/iotgate/iotgate/schemas/xsd"
	"github.com/iotgate/iotgate/webhooks"
	"github.com/iotgate/iotgate/xmppaccounts"
)

// The component implements what the API needs to report its health.
var _ api.HealthCheck = (*component.Conn)(nil)

// Stanzas skipped for their size are recorded as rejections of the device.
var _ component.RejectionRecorder = (*devices.Service)(nil)

// App is iotgate wired together: New builds it from a Config, Run serves
// until its context ends, Shutdown stops it in reverse order of start.
type App struct {
	// InstanceID names this instance among those sharing the database
	// (IOTGATE_INSTANCE_ID).
	InstanceID string

	cfg Config
	log *slog.Logger

	starting *startingServer
	db       *postgres.DB
	registry *schemas.Registry
	presence *devices.Presence
	changes  *postgres.Changes
	svc      *devices.Service
	conn     *component.Conn
	readings *component.ReadingHandler
	commands *devices.Commands
	members  *instances.Registry
	metrics  *api.Metrics
	srv      *api.Server

	// The event log's readers: each has its own LISTEN connection, open
	// until stopEvents.
	hub        *events.Hub
	trimmer    *events.Trimmer
	maintainer *postgres.Maintainer
	roller     *postgres.Roller
	dispatcher *webhooks.Dispatcher
	stopEvents context.CancelFunc

	// Set by Run once the loops are started; Shutdown stops them.
	metricsSrv                         *http.Server
	stopIngest, stopXMPP, stopCommands context.CancelFunc
	stopWebhooks, stopTrimmer          context.CancelFunc
	wg                                 sync.WaitGroup
	running                            bool
}

// New takes the HTTP address (where /readyz answers 503 meanwhile), waits
// for the database and builds every part from cfg. On error, what it
// opened is closed.
func New(ctx context.Context, cfg Config, log *slog.Logger) (_ *App, err error) {
	a := &App{InstanceID: cfg.InstanceID, cfg: cfg, log: log}
	// The database may not be up yet (containers start in any order):
	// wait for it rather than exit. The HTTP address is taken first, so
	// that /readyz says so meanwhile; the API takes it over once built.
	if a.starting, err = listenStarting(cfg.HTTPAddr); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			a.close()
		}
	}()
	if a.db, err = openDatabase(ctx, cfg, log, a.starting.waiting); err != nil {
		return nil, err
	}
	db := a.db

	a.registry = schemas.NewRegistry(db, schemas.Config{
		MaxSchemaBytes: cfg.MaxSchemaBytes, MaxReadingBytes: cfg.MaxReadingBytes, MaxDepth: cfg.MaxReadingDepth,
		MaxPatternValue: cfg.MaxPatternValue, MaxPatternTotal: cfg.MaxPatternTotal,
		MaxVersions: cfg.MaxSchemaVersions, MaxVersionsPerToken: cfg.MaxSchemaVersionsPerToken, CacheSize: cfg.SchemaCacheSize,
		Cost: xsd.CostLimits{MaxModelParticles: cfg.SchemaMaxModelParticles, MaxParticles: cfg.SchemaMaxParticles,
			MaxDeclarations: cfg.SchemaMaxDeclarations, MaxNodes: cfg.SchemaMaxNodes},
		Logger: log,
	})
	// Schemas compile first in a child process (main serves it) under
	// CPU and memory limits.
	xsd.EnableTrialCompiles(xsd.TrialOptions{CPU: cfg.SchemaCompileCPU, Memory: int64(cfg.SchemaCompileMemory)})
	// Documents of schemas with xs:pattern facets are validated in child
	// processes, killed at the time budget (main serves them too).
	if cfg.PatternTimeout > 0 {
		xsd.EnablePatternSandbox(xsd.SandboxOptions{Timeout: cfg.PatternTimeout, Memory: int64(cfg.SchemaCompileMemory)})
	}
	// The read loop decides by namespace without asking the database.
	if err := a.registry.LoadNamespaces(ctx); err != nil {
		return nil, err
	}
	a.presence = devices.NewPresence(db, devices.PresenceConfig{Logger: log.With("part", "presence"),
		ProbeGrace: cfg.PresenceProbeGrace, Fleet: fleet{&a.members}, MaxResources: cfg.MaxResourcesPerDevice})

	var evCtx context.Context
	evCtx, a.stopEvents = context.WithCancel(context.WithoutCancel(ctx))
	// Presence any instance receives is reloaded by every instance.
	a.changes = db.ListenChanges(evCtx)
	a.changes.Subscribe(postgres.ChangePresence, a.presence.Refresh)
	// Subscribed before the listener's first "": a schema another
	// instance registered since LoadNamespaces is read then.
	a.changes.Subscribe(postgres.ChangeSchema, a.registry.Forget)
	evLog := log.With("part", "events")
	a.hub = events.NewHub(db, events.Config{Wake: db.EventWakeups(evCtx), Poll: cfg.EventPoll,
		MaxBacklog: cfg.EventBacklog, MaxBacklogBytes: cfg.EventBacklogBytes,
		MaxSubscribers: cfg.EventMaxStreams, MaxPerToken: cfg.EventMaxStreamsPerToken, Logger: evLog})
	a.trimmer = &events.Trimmer{Log: db, Retention: cfg.EventRetention, Every: cfg.EventTrimInterval, Logger: evLog}
	a.maintainer = &postgres.Maintainer{DB: db, ReadingRetention: cfg.ReadingRetention,
		RejectionRetention: cfg.RejectionRetention, CommandRetention: cfg.CommandRetention,
		Every: cfg.MaintainInterval, Logger: log.With("part", "maintainer")}
	a.maintainer.PresenceEventRetention = cfg.PresenceEventRetention
	a.roller = &postgres.Roller{DB: db, Every: cfg.RollupInterval, Logger: log.With("part", "roller")}
	// 0 means "the default" to the dispatcher; a linger of 0 means none.
	linger := cfg.WebhookLinger
	if linger == 0 {
		linger = -1
	}
	a.dispatcher = webhooks.NewDispatcher(db, db, webhooks.DispatcherConfig{
		BatchSize: cfg.WebhookBatch, BatchWait: linger, Timeout: cfg.WebhookTimeout,
		BackoffMax: cfg.WebhookRetryMaxDelay, RetryLimit: cfg.WebhookRetryLimit,
		Concurrency: cfg.WebhookConcurrency, AllowPrivate: cfg.WebhookAllowPrivate,
		Wakeups: db.EventWakeups(evCtx), Logger: log.With("part", "webhooks")})
	hooks := webhooks.NewService(db, db, webhooks.Config{MaxWebhooks: cfg.WebhookMax, AllowPrivate: cfg.WebhookAllowPrivate,
		Logger: log.With("part", "webhooks")})

	a.metrics = api.NewMetrics(api.MetricsSources{
		Instance:          cfg.InstanceID,
		XMPP:              xmppStats{&a.conn},
		OnlineDevices:     func() int { return len(a.presence.OnlineJIDs()) },
		RateLimited:       func() uint64 { return a.readings.RateLimited() },
		QueueFull:         func() uint64 { return a.readings.QueueFull() },
		Unserved:          func() uint64 { return a.readings.Unserved() },
		HeldReadings:      func() int { return int(a.svc.Stats().Held) },
		PagesFromMemory:   func() uint64 { p, _ := a.svc.ReadingCacheStats(); return p },
		ReadingCacheBytes: func() int { _, b := a.svc.ReadingCacheStats(); return b },
		DomainRefused:     func() uint64 { return a.conn.DomainRefused() },
		DB:                db.SQL(),
		Events:            a.hub,
		Webhooks:          a.dispatcher,
		EventsWritten:     db.EventsWritten,

		OversizeStanzas: func() uint64 { return a.conn.Oversize() },
	})
	a.svc = devices.NewService(db, a.registry, devices.ServiceConfig{Logger: log, ReadingRetention: cfg.ReadingRetention, Presence: a.presence, Observer: a.metrics,
		DeviceDomains: cfg.DeviceDomains, Accounts: accountProvisioner(cfg),
		RingBytes: ringBytes(cfg.ReadingCacheBytes), RingDevices: cfg.ReadingCacheDevices, RingPerDevice: cfg.ReadingCachePerDevice,
		StoredJSON: postgres.StoredJSON, EncodeReading: api.AppendReading, ChangesLive: a.changes.Live})

	a.conn, err = component.New(component.Config{
		Addr: cfg.XMPPAddr, Domain: cfg.Domain, Secret: cfg.Secret,
		Software: "iotgate", Version: buildVersion(), MaxStanzaBytes: cfg.MaxStanzaBytes,
		MaxStanzaDepth: cfg.MaxStanzaDepth, KeepAlive: cfg.XMPPKeepAlive, KeepAliveTimeout: cfg.XMPPKeepAliveTimeout,
		KeepAliveSlowTimeout: cfg.XMPPKeepAliveSlowTimeout,
		MaxBackoff:           cfg.XMPPMaxBackoff, ConflictBackoff: cfg.XMPPConflictBackoff,
		DeviceDomains: cfg.DeviceDomains, Logger: log.With("part", "xmpp"),
		Disco: component.DiscoConfig{Devices: a.svc, Namespaces: a.registry, SeeAll: cfg.DiscoItemsJIDs, MaxItems: cfg.DiscoMaxItems},
	})
	if err != nil {
		return nil, err
	}
	a.readings = component.NewReadingHandler(a.conn, a.svc,
		component.RateLimit{Rate: float64(cfg.DeviceRate), Burst: float64(cfg.DeviceBurst)}, log.With("part", "readings"))
	probes := component.NewPresenceHandler(a.conn, a.svc, log.With("part", "presence"))
	a.readings.Presence = probes
	a.readings.Namespaces = a.registry
	a.conn.SetHandler(a.readings)

	a.commands = devices.NewCommands(db, a.svc, a.registry, a.presence, a.conn, devices.CommandsConfig{
		MaxInFlight: cfg.MaxCommandsInFlight, Logger: log.With("part", "commands"), Observer: a.metrics,
		MaxInFlightPerToken: cfg.MaxCommandsInFlightPerToken, MaxInFlightPerDevice: cfg.MaxCommandsInFlightPerDevice,
		MaxQueuedPerDevice: cfg.MaxQueuedPerDevice,
		Instance:           cfg.InstanceID, Claims: db, ClaimTTL: cfg.InstanceDeadAfter,
	})
	a.presence.OnOnline(a.commands.DeviceOnline)
	// Several instances: an answer may reach this instance for a command
	// another one sent, and the other way round.
	a.conn.ForwardStrayAnswers(a.commands)
	a.members = instances.New(db, a.conn, instances.Config{ID: cfg.InstanceID, Logger: log.With("part", "instances"),
		DeadAfter: cfg.InstanceDeadAfter, Heartbeat: cfg.InstanceDeadAfter / 5,
		// Presence a dead instance received and had not stored yet is
		// asked for again.
		Reaped: func([]string) {
			pctx, cancel := context.WithTimeout(evCtx, time.Minute)
			defer cancel()
			probes.Probe(pctx)
		}})
	a.changes.Subscribe(postgres.ChangeCommand, a.commands.Changed)
	// Commands a previous run left waiting for an answer can't be
	// answered any more: say so before anyone asks.
	if err := a.commands.Recover(ctx); err != nil {
		return nil, err
	}

	tokens, err := auth.NewService(db, auth.Config{Bootstrap: cfg.AdminToken, Logger: log.With("part", "auth")})
	if err != nil {
		return nil, err
	}
	// Writes by any instance (this one too) reach the caches at their
	// commit; the caches' TTLs remain for a notification lost while the
	// listener reconnects (then "" flushes the kind anyway).
	a.changes.Subscribe(postgres.ChangeDevice, a.svc.Forget)
	a.changes.Subscribe(postgres.ChangeReading, a.svc.ReadingStored)
	a.changes.Subscribe(postgres.ChangeToken, tokens.Forget)

	var consoleHandler http.Handler
	if cfg.Console {
		consoleHandler = console.Handler()
	}
	a.srv = api.New(api.Config{
		BodyLimit: cfg.BodyLimit, CORSOrigins: cfg.CORSOrigins,
		RateLimit: float64(cfg.APIRate), RateBurst: cfg.APIBurst,
		EventPing:    cfg.EventKeepAlive,
		MaxPageBytes: int64(cfg.MaxPageBytes), MaxHeavyPerToken: cfg.MaxHeavyPerToken, MaxHeavy: cfg.MaxHeavy,
		TrustedProxies:  cfg.TrustedProxies,
		SchemaWriteRate: cfg.SchemaWriteRate,
	}, api.Deps{
		Log:      log.With("part", "http"),
		Checks:   map[string]api.HealthCheck{"xmpp": a.conn, "database": db},
		Schemas:  a.registry,
		Devices:  a.svc,
		Commands: a.commands,
		Auth:     tokens,
		Tokens:   tokens,
		Metrics:  a.metrics.Handler(),
		Events:   a.hub,
		Tickets:  auth.NewTickets(tokens, db, log.With("part", "auth")),
		Webhooks: hooks,
		Instance: a.members,
		Console:  consoleHandler,
	})
	return a, nil
}

// Run hands the HTTP address over to the API, starts the metrics server
// and every loop, and returns when ctx ends (nil) or the HTTP server
// fails. Call Shutdown after it in either case.
func (a *App) Run(ctx context.Context) error {
	addr := a.starting.addr()
	a.starting.close()
	if err := a.srv.Listen(addr); err != nil {
		return fmt.Errorf("listen on %s: %w", addr, err)
	}
	a.log.Info("REST API listening", "addr", a.srv.Addr().String(), "swagger", "http://"+a.srv.Addr().String()+"/swagger/index.html")
	if a.cfg.Console {
		a.log.Info("web console", "url", "http://"+a.srv.Addr().String()+console.Path)
	}
	if a.cfg.MetricsAddr != "" {
		ln, err := net.Listen("tcp", a.cfg.MetricsAddr)
		if err != nil {
			return fmt.Errorf("listen on %s: %w", a.cfg.MetricsAddr, err)
		}
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", a.metrics.Handler())
		// Profiles on the operators' private address: how a slow
		// iotgate gets diagnosed in place (go tool pprof URL).
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
		a.metricsSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go a.metricsSrv.Serve(ln)
		a.log.Info("metrics listening", "addr", ln.Addr().String(), "paths", "/metrics, /debug/pprof/")
		if openToNetwork(a.cfg.MetricsAddr) {
			a.log.Warn("the metrics address may be reachable from other machines: it serves /metrics and /debug/pprof/ without authentication; bind it to 127.0.0.1 or keep it behind a firewall",
				"addr", a.cfg.MetricsAddr)
		}
	}

	// The hub starts at the log's newest event: streams serve what
	// comes after (and replay from the log what they ask for).
	if err := a.hub.Start(ctx); err != nil {
		return fmt.Errorf("start the event hub: %w", err)
	}
	var ingestCtx, xmppCtx, commandsCtx, webhooksCtx, trimCtx context.Context
	ingestCtx, a.stopIngest = context.WithCancel(context.WithoutCancel(ctx))
	xmppCtx, a.stopXMPP = context.WithCancel(context.WithoutCancel(ctx))
	commandsCtx, a.stopCommands = context.WithCancel(context.WithoutCancel(ctx))
	webhooksCtx, a.stopWebhooks = context.WithCancel(context.WithoutCancel(ctx))
	trimCtx, a.stopTrimmer = context.WithCancel(context.WithoutCancel(ctx))
	a.running = true
	a.start(func() { a.registry.FollowChanges(ingestCtx) })
	a.start(func() { a.dispatcher.Run(webhooksCtx) })
	// The heartbeat stops with the commands: a clean stop leaves at once.
	a.start(func() { a.members.Run(commandsCtx) })
	a.start(func() { a.trimmer.Run(trimCtx) })
	a.start(func() { a.maintainer.Run(trimCtx) })
	a.start(func() { a.roller.Run(trimCtx) })
	// Every schema is compiled in the background, not before /readyz:
	// many schemas (or a slow one) must not keep the API and the stream
	// down; a reading whose schema is not compiled yet waits for it in
	// its device's lane, off the stream's read loop.
	a.start(func() { compileSchemas(ingestCtx, a.registry, a.log) })
	a.start(func() { a.commands.Run(commandsCtx) })
	a.start(func() { a.svc.Run(ingestCtx) })
	a.start(func() { a.presence.Run(ingestCtx) })
	a.start(func() { a.conn.Run(xmppCtx) })
	serveErr := make(chan error, 1)
	a.start(func() { serveErr <- a.srv.Serve() })

	select {
	case <-ctx.Done():
		return nil
	case err := <-serveErr:
		a.log.Error("HTTP server failed", "err", err)
		return err
	}
}

// Shutdown stops iotgate in reverse order of start, within
// cfg.ShutdownTimeout: HTTP (with the commands in flight), ingest, the
// XMPP stream, the database. After a Run that failed before starting the
// loops, it only closes the database and frees the address.
func (a *App) Shutdown() {
	defer a.close()
	if !a.running {
		return
	}
	a.log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), a.cfg.ShutdownTimeout)
	defer cancel()
	// Stop accepting requests; meanwhile give the commands in flight
	// most of the shutdown time to be answered, then fail the rest, so
	// that sync requests waiting for a device get their answer (failed:
	// shutting down) instead of holding the shutdown up.
	httpDone := make(chan error, 1)
	go func() { httpDone <- a.srv.Shutdown(sctx) }()
	gctx, cancelGrace := context.WithTimeout(sctx, commandGrace(a.cfg.ShutdownTimeout))
	a.commands.Drain(gctx)
	cancelGrace()
	a.stopCommands()
	waitOr(sctx, func() { <-a.commands.Stopped() })
	if err := <-httpDone; err != nil {
		a.log.Warn("HTTP shutdown incomplete", "err", err)
	}
	if a.metricsSrv != nil {
		a.metricsSrv.Shutdown(sctx)
	}
	// The HTTP shutdown ended the streams; deliveries in flight are
	// canceled (sent again later: the cursor moves only on a 2xx).
	a.hub.Close()
	a.stopWebhooks()
	a.stopTrimmer()
	// Ingest drains before the stream closes: its last commits still need
	// the stream to acknowledge the devices' IQs. New readings meanwhile
	// are answered "wait". Stanzas waiting for a worker go first.
	if err := a.readings.Drain(sctx); err != nil {
		a.log.Warn("queued stanzas not all handled before shutdown", "queued", a.readings.Queued(), "err", err)
	}
	a.stopIngest()
	waitOr(sctx, func() { <-a.svc.Stopped() })
	a.stopXMPP()
	waitOr(sctx, a.wg.Wait)
	a.log.Info("iotgate stopped")
}

// close closes the database and frees the address taken at start (if
// the API has not taken it over yet).
func (a *App) close() {
	if a.stopEvents != nil {
		a.stopEvents()
	}
	if a.db != nil {
		a.db.Close()
	}
	a.starting.close()
}

// compileSchemas compiles every stored schema version, logging how long
// that took.
func compileSchemas(ctx context.Context, registry *schemas.Registry, log *slog.Logger) {
	began := time.Now()
	n, err := registry.CompileAll(ctx, runtime.GOMAXPROCS(0))
	if err != nil {
		log.Warn("schemas not compiled at start: each is compiled at its first reading", "err", err)
		return
	}
	log.Info("schemas compiled", "versions", n, "took", time.Since(began).Round(time.Millisecond))
}

// xmppStats reads the connection once it exists (the metrics are created
// before it, since the ingest path reports to them).
type xmppStats struct{ c **component.Conn }

func (x xmppStats) Health(ctx context.Context) (bool, time.Time, error) { return (*x.c).Health(ctx) }
func (x xmppStats) Reconnects() uint64                                  { return (*x.c).Reconnects() }
func (x xmppStats) PendingIQs() int                                     { return (*x.c).PendingIQs() }

// start runs f in a goroutine that Shutdown waits for.
func (a *App) start(f func()) {
	a.wg.Add(1)
	go func() { defer a.wg.Done(); f() }()
}

// fleet is the instance registry for presence, which is built before it
// (the registry needs the stream, which needs the device service, which
// needs presence).
type fleet struct{ r **instances.Registry }

func (f fleet) OthersStreaming(ctx context.Context) (bool, error) {
	if *f.r == nil {
		return false, nil
	}
	return (*f.r).OthersStreaming(ctx)
}

// commandGrace is how much of a graceful shutdown in-flight commands may
// use: two thirds, the rest is for committing readings and closing.
func commandGrace(shutdown time.Duration) time.Duration { return shutdown * 2 / 3 }

func waitOr(ctx context.Context, f func()) {
	done := make(chan struct{})
	go func() { f(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
	}
}

// accountProvisioner returns what makes devices' XMPP accounts per
// cfg.XMPPAccounts; nil when it is not set.
func accountProvisioner(cfg Config) devices.AccountProvisioner {
	switch cfg.XMPPAccounts {
	case "ejabberd":
		return xmppaccounts.NewEjabberd(xmppaccounts.EjabberdConfig{
			URL: cfg.EjabberdAPIURL, User: cfg.EjabberdAPIUser, Password: cfg.EjabberdAPIPassword,
			Token: cfg.EjabberdAPIToken, Timeout: cfg.XMPPAccountsTimeout,
		})
	case "prosody":
		return xmppaccounts.NewProsody(xmppaccounts.ProsodyConfig{
			Prosodyctl: cfg.Prosodyctl, Config: cfg.ProsodyConfig, Timeout: cfg.XMPPAccountsTimeout,
		})
	}
	return nil
}

// ringBytes is the device service's RingBytes for
// IOTGATE_READING_CACHE_BYTES, where 0 means none kept.
func ringBytes(n int) int {
	if n == 0 {
		return -1
	}
	return n
}
