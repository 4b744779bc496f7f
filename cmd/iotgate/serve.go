package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/iotgate/iotgate"
	"github.com/iotgate/iotgate/api"
	"github.com/iotgate/iotgate/auth"
	"github.com/iotgate/iotgate/component"
	"github.com/iotgate/iotgate/devices"
	"github.com/iotgate/iotgate/migrations"
	"github.com/iotgate/iotgate/postgres"
	"github.com/iotgate/iotgate/schemas"
)

// The component implements what the API needs to report its health.
var _ api.HealthCheck = (*component.Conn)(nil)

// Stanzas skipped for their size are recorded as rejections of the device.
var _ component.RejectionRecorder = (*devices.Service)(nil)

// serve runs iotgate until ctx ends, then shuts down in reverse order of
// start: HTTP (with commands), ingest, the XMPP stream, the database.
func serve(ctx context.Context, cfg Config, log *slog.Logger) error {
	log.Info("starting iotgate", "version", buildVersion(), "domain", cfg.Domain, "xmpp", cfg.XMPPAddr, "http", cfg.HTTPAddr,
		"device_domains", cfg.DeviceDomains.String())

	// The database may not be up yet (containers start in any order):
	// wait for it rather than exit. The HTTP address is taken first, so
	// that /readyz says so meanwhile; the API takes it over once built.
	starting, err := listenStarting(cfg.HTTPAddr)
	if err != nil {
		return err
	}
	defer starting.close()
	db, err := openDatabase(ctx, cfg, log, starting.waiting)
	if err != nil {
		return err
	}
	defer db.Close()

	registry := schemas.NewRegistry(db, schemas.Config{
		MaxSchemaBytes: cfg.MaxSchemaBytes, MaxReadingBytes: cfg.MaxReadingBytes, MaxDepth: cfg.MaxReadingDepth,
		MaxPatternValue: cfg.MaxPatternValue, MaxPatternTotal: cfg.MaxPatternTotal,
		Logger: log,
	})
	// The read loop decides by namespace without asking the database.
	if err := registry.LoadNamespaces(ctx); err != nil {
		return err
	}
	presence := devices.NewPresence(db, nil, log.With("part", "presence"))
	var readings *component.ReadingHandler
	var conn *component.Conn
	var svc *devices.Service
	metrics := api.NewMetrics(api.MetricsSources{
		XMPP:          xmppStats{&conn},
		OnlineDevices: func() int { return len(presence.OnlineJIDs()) },
		RateLimited:   func() uint64 { return readings.RateLimited() },
		Unserved:      func() uint64 { return readings.Unserved() },
		HeldReadings:  func() int { return int(svc.Stats().Held) },
		DomainRefused: func() uint64 { return conn.DomainRefused() },
		DB:            db.SQL(),

		OversizeStanzas: func() uint64 { return conn.Oversize() },
	})
	svc = devices.NewService(db, registry, devices.ServiceConfig{Logger: log, Presence: presence, Observer: metrics,
		DeviceDomains: cfg.DeviceDomains})

	conn, err = component.New(component.Config{
		Addr: cfg.XMPPAddr, Domain: cfg.Domain, Secret: cfg.Secret,
		Software: "iotgate", Version: buildVersion(), MaxStanzaBytes: cfg.MaxStanzaBytes,
		MaxStanzaDepth: cfg.MaxStanzaDepth, KeepAlive: cfg.XMPPKeepAlive, KeepAliveTimeout: cfg.XMPPKeepAliveTimeout,
		MaxBackoff: cfg.XMPPMaxBackoff, ConflictBackoff: cfg.XMPPConflictBackoff,
		DeviceDomains: cfg.DeviceDomains, Logger: log.With("part", "xmpp"),
		Disco: component.DiscoConfig{Devices: svc, Namespaces: registry, SeeAll: cfg.DiscoItemsJIDs, MaxItems: cfg.DiscoMaxItems},
	})
	if err != nil {
		return err
	}
	readings = component.NewReadingHandler(conn, svc,
		component.RateLimit{Rate: float64(cfg.DeviceRate), Burst: float64(cfg.DeviceBurst)}, log.With("part", "readings"))
	readings.Presence = component.NewPresenceHandler(conn, svc, log.With("part", "presence"))
	readings.Namespaces = registry
	conn.SetHandler(readings)

	commands := devices.NewCommands(db, svc, registry, presence, conn, devices.CommandsConfig{
		MaxInFlight: cfg.MaxCommandsInFlight, Logger: log.With("part", "commands"), Observer: metrics,
	})
	presence.OnOnline(commands.DeviceOnline)
	// Commands a previous run left waiting for an answer can't be
	// answered any more: say so before anyone asks.
	if err := commands.Recover(ctx); err != nil {
		return err
	}

	tokens, err := auth.NewService(db, auth.Config{Bootstrap: cfg.AdminToken, Logger: log.With("part", "auth")})
	if err != nil {
		return err
	}
	srv := api.New(api.Config{
		BodyLimit: cfg.BodyLimit, CORSOrigins: cfg.CORSOrigins,
		RateLimit: float64(cfg.APIRate), RateBurst: cfg.APIBurst,
	}, api.Deps{
		Log:      log.With("part", "http"),
		Checks:   map[string]api.HealthCheck{"xmpp": conn, "database": db},
		Schemas:  registry,
		Devices:  svc,
		Commands: commands,
		Auth:     tokens,
		Tokens:   tokens,
		Metrics:  metrics.Handler(),
	})
	addr := starting.addr()
	starting.close()
	if err := srv.Listen(addr); err != nil {
		return fmt.Errorf("listen on %s: %w", addr, err)
	}
	log.Info("REST API listening", "addr", srv.Addr().String(), "swagger", "http://"+srv.Addr().String()+"/swagger/index.html")
	var metricsSrv *http.Server
	if cfg.MetricsAddr != "" {
		ln, err := net.Listen("tcp", cfg.MetricsAddr)
		if err != nil {
			return fmt.Errorf("listen on %s: %w", cfg.MetricsAddr, err)
		}
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", metrics.Handler())
		// Profiles on the operators' private address: how a slow
		// iotgate gets diagnosed in place (go tool pprof URL).
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
		metricsSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go metricsSrv.Serve(ln)
		log.Info("metrics listening", "addr", ln.Addr().String(), "paths", "/metrics, /debug/pprof/")
	}

	ingestCtx, stopIngest := context.WithCancel(context.WithoutCancel(ctx))
	xmppCtx, stopXMPP := context.WithCancel(context.WithoutCancel(ctx))
	commandsCtx, stopCommands := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	wg.Add(6)
	// Every schema is compiled in the background, not before /readyz:
	// many schemas (or a slow one) must not keep the API and the stream
	// down; a reading whose schema is not compiled yet waits for it in
	// its device's lane, off the stream's read loop.
	go func() { defer wg.Done(); compileSchemas(ingestCtx, registry, log) }()
	go func() { defer wg.Done(); commands.Run(commandsCtx) }()
	go func() { defer wg.Done(); svc.Run(ingestCtx) }()
	go func() { defer wg.Done(); presence.Run(ingestCtx) }()
	go func() { defer wg.Done(); conn.Run(xmppCtx) }()
	serveErr := make(chan error, 1)
	go func() { defer wg.Done(); serveErr <- srv.Serve() }()

	select {
	case <-ctx.Done():
	case err = <-serveErr:
		log.Error("HTTP server failed", "err", err)
	}
	log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	// Stop accepting requests; meanwhile give the commands in flight
	// most of the shutdown time to be answered, then fail the rest, so
	// that sync requests waiting for a device get their answer (failed:
	// shutting down) instead of holding the shutdown up.
	httpDone := make(chan error, 1)
	go func() { httpDone <- srv.Shutdown(sctx) }()
	gctx, cancelGrace := context.WithTimeout(sctx, commandGrace(cfg.ShutdownTimeout))
	commands.Drain(gctx)
	cancelGrace()
	stopCommands()
	waitOr(sctx, func() { <-commands.Stopped() })
	if err := <-httpDone; err != nil {
		log.Warn("HTTP shutdown incomplete", "err", err)
	}
	if metricsSrv != nil {
		metricsSrv.Shutdown(sctx)
	}
	// Ingest drains before the stream closes: its last commits still need
	// the stream to acknowledge the devices' IQs. New readings meanwhile
	// are answered "wait". Stanzas waiting for a worker go first.
	if err := readings.Drain(sctx); err != nil {
		log.Warn("queued stanzas not all handled before shutdown", "queued", readings.Queued(), "err", err)
	}
	stopIngest()
	waitOr(sctx, func() { <-svcStopped(svc) })
	stopXMPP()
	waitOr(sctx, wg.Wait)
	log.Info("iotgate stopped")
	return err
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

// commandGrace is how much of a graceful shutdown in-flight commands may
// use: two thirds, the rest is for committing readings and closing.
func commandGrace(shutdown time.Duration) time.Duration { return shutdown * 2 / 3 }

// svcStopped adapts Service.Stopped for waitOr.
func svcStopped(s *devices.Service) <-chan struct{} { return s.Stopped() }

func waitOr(ctx context.Context, f func()) {
	done := make(chan struct{})
	go func() { f(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
	}
}

// openDatabase connects and migrates (postgres.Open), retrying while the
// database is unavailable (unreachable, or refusing the login: an
// operator fixes that while iotgate waits), and telling failed each
// attempt's error. A dirty or too-new schema stops the start: it needs a
// human.
func openDatabase(ctx context.Context, cfg Config, log *slog.Logger, failed func(error)) (*postgres.DB, error) {
	delay := 500 * time.Millisecond
	for {
		db, err := postgres.Open(ctx, cfg.DatabaseURL, log.With("part", "db"))
		if err == nil {
			return db, nil
		}
		switch iotgate.ErrorCode(err) {
		case iotgate.EUnavailable, iotgate.ETimeout:
		default:
			return nil, err
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		failed(err)
		log.Warn("database not available yet, retrying", "in", delay, "err", err)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(delay):
		}
		delay = min(delay*2, 5*time.Second)
	}
}

// migrateCommand runs `iotgate migrate up|down N|version|force V`.
func migrateCommand(ctx context.Context, cfg Config, args []string, log *slog.Logger, stdout, stderr io.Writer) int {
	usage := func() int {
		fmt.Fprintln(stderr, "usage: iotgate migrate up | down N | version | force V")
		return 2
	}
	if len(args) == 0 {
		return usage()
	}
	// Connect, not Open: down, force and version must work on a schema
	// that Open would refuse (dirty, too new).
	db, err := postgres.Connect(ctx, cfg.DatabaseURL, log)
	if err != nil {
		fmt.Fprintf(stderr, "iotgate: %v\n", err)
		return 1
	}
	defer db.Close()
	num := func() (int, bool) {
		if len(args) != 2 {
			return 0, false
		}
		n, err := strconv.Atoi(args[1])
		return n, err == nil && n >= 0
	}
	switch args[0] {
	case "up":
		err = db.Migrate(ctx)
	case "down":
		n, ok := num()
		if !ok || n < 1 {
			return usage()
		}
		err = db.MigrateDown(ctx, n)
	case "force":
		n, ok := num()
		if !ok {
			return usage()
		}
		err = db.ForceMigration(ctx, uint(n))
	case "version":
		v, dirty, verr := db.MigrationVersion(ctx)
		if verr == nil {
			latest, _ := migrations.Latest()
			fmt.Fprintf(stdout, "version %d (dirty: %v, latest available: %d)\n", v, dirty, latest)
		}
		err = verr
	default:
		return usage()
	}
	if err != nil {
		var de *iotgate.Error
		if errors.As(err, &de) {
			fmt.Fprintf(stderr, "iotgate: %s\n", de.Error())
		} else {
			fmt.Fprintf(stderr, "iotgate: %v\n", err)
		}
		return 1
	}
	return 0
}

// startingServer serves api.Starting on the HTTP address while iotgate
// waits for its database.
type startingServer struct {
	ln   net.Listener
	srv  *http.Server
	last atomic.Pointer[error]
	once sync.Once
}

// listenStarting takes addr and serves api.Starting on it. Errors:
// net.Listen's, wrapped.
func listenStarting(addr string) (*startingServer, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", addr, err)
	}
	s := &startingServer{ln: ln}
	s.srv = &http.Server{Handler: api.Starting(s.lastErr), ReadHeaderTimeout: 5 * time.Second}
	go s.srv.Serve(ln)
	return s, nil
}

func (s *startingServer) waiting(err error) { s.last.Store(&err) }

func (s *startingServer) lastErr() error {
	if p := s.last.Load(); p != nil {
		return *p
	}
	return nil
}

// addr is the address taken: with port 0 in the setting, the one the API
// must take over.
func (s *startingServer) addr() string { return s.ln.Addr().String() }

// close frees the address (requests in progress get a second to finish).
func (s *startingServer) close() {
	s.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if s.srv.Shutdown(ctx) != nil {
			s.srv.Close()
		}
		// Shutdown closes only a listener Serve has begun with.
		s.ln.Close()
	})
}
