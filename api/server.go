package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
	echoSwagger "github.com/swaggo/echo-swagger"

	"github.com/iotgate/iotgate"

	// The generated OpenAPI description (make docs) registers itself with swag.
	"github.com/iotgate/iotgate/api/openapi"
)

// Defaults for the zero values of Config.
const (
	DefaultBodyLimit         = 1 << 20 // 1 MiB
	DefaultReadHeaderTimeout = 5 * time.Second
	DefaultReadTimeout       = 30 * time.Second
	DefaultWriteTimeout      = 30 * time.Second
	DefaultIdleTimeout       = 2 * time.Minute
	DefaultCheckTimeout      = 2 * time.Second
)

// Config tunes the HTTP server. The zero value is usable: every zero field
// takes the matching Default.
type Config struct {
	// BodyLimit caps request bodies, in bytes; larger ones get 413.
	BodyLimit int64
	// ReadHeaderTimeout bounds reading a request's headers (slowloris).
	ReadHeaderTimeout time.Duration
	// ReadTimeout bounds reading a whole request, body included.
	ReadTimeout time.Duration
	// WriteTimeout bounds handling a request and writing its response.
	WriteTimeout time.Duration
	// IdleTimeout bounds how long a keep-alive connection waits for the
	// next request.
	IdleTimeout time.Duration
	// CheckTimeout bounds each readiness check of GET /readyz.
	CheckTimeout time.Duration
	// CORSOrigins are the browser origins (e.g. https://app.example.com)
	// allowed to call the API from scripts; none by default. "*" allows
	// any origin.
	CORSOrigins []string
	// RateLimit is how many requests per second one token may make on
	// average; beyond it, requests get 429 with Retry-After. 0 disables
	// the limit.
	RateLimit float64
	// RateBurst is how many requests a token may make at once above
	// RateLimit; 0 means as many as RateLimit (at least 1).
	RateBurst int
	// SchemaWriteRate is how many schema writes (POST and DELETE under
	// /v1/schemas) one token may make per minute, in a burst or spread
	// out; beyond it, 429 schema_write_rate with Retry-After. 0 disables
	// the limit.
	SchemaWriteRate int
	// EventPing is how often an idle event stream gets a comment line
	// (0: DefaultEventPing).
	EventPing time.Duration
	// TrustedProxies are the reverse proxies whose X-Forwarded-For
	// names the client (failed authentications are counted per client,
	// and the access log shows it); none: the peer is the client.
	TrustedProxies []*net.IPNet
	// MaxPageBytes is the byte budget of a page of readings, rejections or
	// commands (0: iotgate.DefaultPageBytes); see iotgate.PageBytes.
	MaxPageBytes int64
	// MaxHeavyPerToken and MaxHeavy cap the list requests (readings,
	// rejections, commands) in progress at once per token and overall
	// (0: DefaultMaxHeavyPerToken, DefaultMaxHeavy); beyond them, 429
	// too_many_concurrent.
	MaxHeavyPerToken, MaxHeavy int
}

func (c Config) withDefaults() Config {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	if c.BodyLimit <= 0 {
		c.BodyLimit = DefaultBodyLimit
	}
	def(&c.ReadHeaderTimeout, DefaultReadHeaderTimeout)
	def(&c.ReadTimeout, DefaultReadTimeout)
	def(&c.WriteTimeout, DefaultWriteTimeout)
	def(&c.IdleTimeout, DefaultIdleTimeout)
	def(&c.CheckTimeout, DefaultCheckTimeout)
	def(&c.EventPing, DefaultEventPing)
	c.MaxPageBytes = iotgate.PageBytes(c.MaxPageBytes)
	if c.MaxHeavyPerToken <= 0 {
		c.MaxHeavyPerToken = DefaultMaxHeavyPerToken
	}
	if c.MaxHeavy <= 0 {
		c.MaxHeavy = DefaultMaxHeavy
	}
	return c
}

// Deps are what the API calls. Nil fields disable what needs them.
type Deps struct {
	// Log receives the access log and the errors of requests; nil
	// discards them.
	Log *slog.Logger
	// Checks are the readiness checks of GET /readyz, by name (for
	// example "xmpp" and "database").
	Checks map[string]HealthCheck
	// Schemas serves /v1/schemas.
	Schemas SchemaRegistry
	// Devices serves /v1/devices.
	Devices DeviceService
	// Commands serves /v1/devices/{jid}/commands and /v1/commands.
	Commands CommandService
	// Auth authenticates the bearer tokens every /v1 route (and /metrics)
	// requires. Nil refuses all such requests with 401: a server is never
	// open by accident.
	Auth Authenticator
	// Tokens serves /v1/tokens.
	Tokens TokenService
	// Metrics, when set, is served at GET /metrics to admin tokens
	// limited to no devices.
	Metrics http.Handler
	// Webhooks serves /v1/webhooks.
	Webhooks WebhookService
	// Events serves GET /v1/events; Tickets, with it, POST
	// /v1/events/tickets and the ticket= of the stream.
	Events  EventHub
	Tickets TicketService
	// Instance, when set, names this instance and its role in /readyz.
	Instance InstanceInfo
	// Console, when set, serves GET and HEAD of /console/ and every path
	// under it, without a token (static files that call the API with
	// one); GET /console redirects there.
	Console http.Handler
}

// Server is iotgate's HTTP server. Create it with New, then Listen, Serve
// (in a goroutine) and finally Shutdown. It is also an http.Handler, for
// tests.
type Server struct {
	cfg  Config
	log  *slog.Logger
	echo *echo.Echo
	http *http.Server
	ln   net.Listener

	auth   Authenticator
	limits *limiter // nil: no rate limit
	// failures counts failed authentications per client (clientKey):
	// beyond a burst, bad credentials get 429.
	failures *limiter
	// streamsStop is closed when Shutdown starts: event streams never
	// go idle on their own.
	streamsStop chan struct{}
	// heavyLimit bounds the list requests in progress (see heavy).
	heavyLimit *concurrency
}

// New returns a server for cfg and deps with every route registered.
func New(cfg Config, deps Deps) *Server {
	cfg = cfg.withDefaults()
	log := deps.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{cfg: cfg, log: log, auth: deps.Auth,
		failures: newLimiter(authFailureRate, authFailureBurst, time.Now), streamsStop: make(chan struct{})}
	s.heavyLimit = newConcurrency(cfg.MaxHeavyPerToken, cfg.MaxHeavy)
	if cfg.RateLimit > 0 {
		s.limits = newLimiter(cfg.RateLimit, cfg.RateBurst, time.Now)
	}

	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.HTTPErrorHandler = s.handleError
	e.Validator = newValidator()
	e.Binder = jsonBinder{}
	// X-Forwarded-For only from the trusted proxies.
	e.IPExtractor = ipExtractor(cfg.TrustedProxies)
	e.Use(
		requestID(),
		accessLog(log),
		middleware.RecoverWithConfig(middleware.RecoverConfig{
			// Hand the panic to accessLog as an error; the error
			// handler logs it once, with the stack.
			DisableErrorHandler: true,
			LogErrorFunc: func(c echo.Context, err error, stack []byte) error {
				return &panicError{err: err, stack: stack}
			},
		}),
		bodyLimit(cfg.BodyLimit),
	)
	if len(cfg.CORSOrigins) > 0 {
		e.Use(middleware.CORSWithConfig(middleware.CORSConfig{
			AllowOrigins:  cfg.CORSOrigins,
			AllowMethods:  []string{http.MethodGet, http.MethodPost, http.MethodPatch, http.MethodDelete},
			AllowHeaders:  []string{"Authorization", "Content-Type", "Idempotency-Key", "X-Request-ID", "Last-Event-ID"},
			ExposeHeaders: []string{"Location", "Retry-After", "X-Request-ID", "Idempotent-Replayed"},
			MaxAge:        600,
		}))
	}
	s.echo = e
	s.routes(deps)

	s.http = &http.Server{
		Handler:           e,
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		ReadTimeout:       cfg.ReadTimeout,
		WriteTimeout:      cfg.WriteTimeout,
		IdleTimeout:       cfg.IdleTimeout,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	var stopOnce sync.Once
	s.http.RegisterOnShutdown(func() { stopOnce.Do(func() { close(s.streamsStop) }) })
	return s
}

// consolePath is where Deps.Console is mounted.
const consolePath = "/console/"

// route is one protected route: every route but the probes, the Swagger
// UI and the console's files needs a token with its scope.
type route struct {
	method, path string
	scope        iotgate.Scope
	handler      echo.HandlerFunc
}

// routes registers every route of the API. The table below is the one
// place that says which scope each route needs.
func (s *Server) routes(deps Deps) {
	health := &healthHandler{checks: deps.Checks, timeout: s.cfg.CheckTimeout, instance: deps.Instance, log: s.log, now: time.Now}
	s.echo.GET("/healthz", health.healthz)
	s.echo.GET("/readyz", health.readyz)

	swagger := echoSwagger.EchoWrapHandler()
	toIndex := func(c echo.Context) error {
		return c.Redirect(http.StatusMovedPermanently, "/swagger/index.html")
	}
	s.echo.GET("/swagger", toIndex)
	s.echo.GET("/swagger/", toIndex)
	// The description itself, valid Swagger 2.0 (see openapi.Description);
	// the UI's other files come from echo-swagger.
	s.echo.GET("/swagger/doc.json", func(c echo.Context) error {
		doc, err := openapi.Description()
		if err != nil {
			return fmt.Errorf("openapi description: %w", err)
		}
		return c.Blob(http.StatusOK, echo.MIMEApplicationJSONCharsetUTF8, doc)
	})
	s.echo.GET("/swagger/*", swagger)

	if deps.Console != nil {
		s.echo.GET("/console", func(c echo.Context) error {
			return c.Redirect(http.StatusMovedPermanently, consolePath)
		})
		h := echo.WrapHandler(deps.Console)
		s.echo.GET(consolePath+"*", h)
		s.echo.HEAD(consolePath+"*", h)
	}

	var table []route
	add := func(rs ...route) { table = append(table, rs...) }
	if deps.Schemas != nil {
		h := &schemaHandler{reg: deps.Schemas}
		if s.cfg.SchemaWriteRate > 0 {
			h.writes = newLimiter(float64(s.cfg.SchemaWriteRate)/60, s.cfg.SchemaWriteRate, time.Now)
		}
		add(
			route{http.MethodPost, "/v1/schemas", iotgate.ScopeSchemasWrite, h.create},
			route{http.MethodGet, "/v1/schemas", iotgate.ScopeSchemasRead, h.list},
			route{http.MethodGet, "/v1/schemas/:name", iotgate.ScopeSchemasRead, h.latest},
			route{http.MethodGet, "/v1/schemas/:name/versions", iotgate.ScopeSchemasRead, h.versions},
			route{http.MethodGet, "/v1/schemas/:name/versions/:version", iotgate.ScopeSchemasRead, h.version},
			route{http.MethodDelete, "/v1/schemas/:name/versions/:version", iotgate.ScopeSchemasWrite, h.delete},
			route{http.MethodGet, "/v1/schemas/:name/versions/:version/xsd", iotgate.ScopeSchemasRead, h.xsd},
			route{http.MethodGet, "/v1/schemas/:name/versions/:version/json-schema", iotgate.ScopeSchemasRead, h.jsonSchema},
		)
	}
	if deps.Devices != nil {
		h := &deviceHandler{svc: deps.Devices, pageBytes: s.cfg.MaxPageBytes, writeTimeout: s.cfg.WriteTimeout}
		add(
			route{http.MethodPost, "/v1/devices", iotgate.ScopeDevicesWrite, h.create},
			route{http.MethodGet, "/v1/devices", iotgate.ScopeDevicesRead, s.heavyWhen(includesState, h.list)},
			route{http.MethodPost, "/v1/devices/states", iotgate.ScopeDevicesRead, s.heavy(h.states)},
			route{http.MethodGet, "/v1/devices/:jid", iotgate.ScopeDevicesRead, h.get},
			route{http.MethodPatch, "/v1/devices/:jid", iotgate.ScopeDevicesWrite, h.update},
			route{http.MethodDelete, "/v1/devices/:jid", iotgate.ScopeDevicesWrite, h.delete},
			route{http.MethodGet, "/v1/devices/:jid/state", iotgate.ScopeDevicesRead, h.state},
			route{http.MethodGet, "/v1/devices/:jid/readings", iotgate.ScopeDevicesRead, s.heavy(h.readings)},
			route{http.MethodGet, "/v1/devices/:jid/rejections", iotgate.ScopeDevicesRead, s.heavy(h.rejections)},
			route{http.MethodGet, "/v1/devices/:jid/readings/aggregate", iotgate.ScopeDevicesRead, s.heavy(h.aggregate)},
		)
	}
	if deps.Commands != nil {
		h := &commandHandler{svc: deps.Commands, devs: deps.Devices}
		h.pageBytes = s.cfg.MaxPageBytes
		add(
			route{http.MethodPost, "/v1/devices/:jid/commands", iotgate.ScopeCommandsSend, h.create},
			route{http.MethodGet, "/v1/devices/:jid/commands", iotgate.ScopeDevicesRead, s.heavy(h.list)},
			route{http.MethodGet, "/v1/commands/:id", iotgate.ScopeDevicesRead, h.get},
			route{http.MethodPost, "/v1/commands/:id/cancel", iotgate.ScopeCommandsSend, h.cancel},
		)
	}
	if deps.Tokens != nil {
		h := &tokenHandler{svc: deps.Tokens}
		add(
			route{http.MethodPost, "/v1/tokens", iotgate.ScopeAdmin, h.create},
			route{http.MethodGet, "/v1/tokens", iotgate.ScopeAdmin, h.list},
			route{http.MethodGet, "/v1/tokens/:id", iotgate.ScopeAdmin, h.get},
			route{http.MethodDelete, "/v1/tokens/:id", iotgate.ScopeAdmin, h.revoke},
		)
	}
	if deps.Webhooks != nil {
		h := &webhookHandler{svc: deps.Webhooks}
		add(
			route{http.MethodPost, "/v1/webhooks", iotgate.ScopeAdmin, h.create},
			route{http.MethodGet, "/v1/webhooks", iotgate.ScopeAdmin, h.list},
			route{http.MethodGet, "/v1/webhooks/:id", iotgate.ScopeAdmin, h.get},
			route{http.MethodPatch, "/v1/webhooks/:id", iotgate.ScopeAdmin, h.update},
			route{http.MethodDelete, "/v1/webhooks/:id", iotgate.ScopeAdmin, h.delete},
		)
	}
	if deps.Metrics != nil {
		add(route{http.MethodGet, "/metrics", iotgate.ScopeAdmin, unlimitedOnly(echo.WrapHandler(deps.Metrics))})
	}
	if deps.Events != nil {
		h := &eventHandler{hub: deps.Events, tickets: deps.Tickets, auth: deps.Auth, ping: s.cfg.EventPing, stop: s.streamsStop, log: s.log}
		add(route{http.MethodGet, eventsPath, iotgate.ScopeDevicesRead, h.stream})
		if deps.Tickets != nil {
			add(route{http.MethodPost, "/v1/events/tickets", iotgate.ScopeDevicesRead, h.ticket})
		}
	}
	for _, r := range table {
		authn := s.authenticate
		if r.path == eventsPath {
			authn = s.authenticateTicket(deps.Tickets)
		}
		s.echo.Add(r.method, r.path, r.handler, authn, s.rateLimit, requireScope(r.scope))
	}
}

// ServeHTTP serves one request, as the server would.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.echo.ServeHTTP(w, r)
}

// Listen opens the listening socket on addr (host:port; port 0 picks a
// free one), so that a bad or busy address is reported at start. The error
// is net.Listen's, wrapped.
func (s *Server) Listen(addr string) error {
	if s.ln != nil {
		return errors.New("api: already listening")
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("api: listen: %w", err)
	}
	s.ln = ln
	s.log.Info("http listening", "addr", ln.Addr().String())
	return nil
}

// Addr returns the address Listen bound, or nil before it.
func (s *Server) Addr() net.Addr {
	if s.ln == nil {
		return nil
	}
	return s.ln.Addr()
}

// Serve serves requests on the socket opened by Listen until Shutdown. It
// returns nil after Shutdown, and otherwise the error that stopped it.
func (s *Server) Serve() error {
	if s.ln == nil {
		return errors.New("api: Serve called before Listen")
	}
	if err := s.http.Serve(s.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("api: serve: %w", err)
	}
	return nil
}

// Shutdown stops accepting connections and waits for the requests in
// progress until ctx ends; then it closes the remaining connections and
// returns ctx's error.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.http.Shutdown(ctx)
	if s.ln != nil {
		// Serve closes it, but it may never have run.
		_ = s.ln.Close()
	}
	if err != nil {
		_ = s.http.Close()
		return fmt.Errorf("api: shutdown: %w", err)
	}
	return nil
}
