package main

import (
	"log/slog"
	"net"
	"time"

	"github.com/iotgate/iotgate/devices"
)

// Config is every setting of the iotgate binary. It is filled only here,
// from flags and the environment (flags win), and handed to constructors.
type Config struct {
	XMPPAddr string
	Domain   string
	// InstanceID names this instance among those sharing the domain and
	// the database.
	InstanceID  string
	Secret      string
	DatabaseURL string
	HTTPAddr    string
	MetricsAddr string
	CORSOrigins []string
	// Console serves the web console at /console/ (its files need no
	// token; its data calls do).
	Console bool
	// TrustedProxies are the reverse proxies whose X-Forwarded-For
	// names the API's client.
	TrustedProxies []*net.IPNet
	LogLevel       slog.Level
	LogFormat      string

	ShutdownTimeout time.Duration
	BodyLimit       int64

	// GCPercent is the Go garbage collector's GOGC, set at start unless
	// the environment has GOGC; MemoryLimit its soft memory limit in
	// bytes (0: none), set unless the environment has GOMEMLIMIT. See
	// applyGC.
	GCPercent   int
	MemoryLimit int64

	MaxSchemaBytes  int
	MaxReadingBytes int
	MaxReadingDepth int
	MaxStanzaBytes  int
	MaxStanzaDepth  int

	// The component stream's keepalive and reconnect pace.
	XMPPKeepAlive        time.Duration
	XMPPKeepAliveTimeout time.Duration
	// XMPPKeepAliveSlowTimeout is how long a server that missed a
	// keepalive answer but whose TCP stack still acknowledges may stay
	// silent before the stream is dropped.
	XMPPKeepAliveSlowTimeout time.Duration
	XMPPMaxBackoff           time.Duration
	XMPPConflictBackoff      time.Duration

	// PresenceProbeGrace is how long after a reconnection's probes a
	// device resource no presence stanza confirmed is dropped.
	PresenceProbeGrace time.Duration
	// MaxResourcesPerDevice is how many resources of one device are
	// tracked; available presence from one more is ignored.
	MaxResourcesPerDevice int
	// InstanceDeadAfter is how long an instance may go without a
	// heartbeat before the others fail its commands and take over its
	// queue deliveries (heartbeats every fifth of it).
	InstanceDeadAfter time.Duration

	MaxPatternValue, MaxPatternTotal int

	// The schema registry's bounds: versions stored (in all, and per
	// API token), compiled schemas kept, and schema writes per token a
	// minute (0: no limit).
	MaxSchemaVersions         int
	MaxSchemaVersionsPerToken int
	SchemaCacheSize           int
	SchemaWriteRate           int
	// What compiling one schema may cost (schemas/xsd CostLimits and
	// TrialOptions).
	SchemaMaxModelParticles, SchemaMaxParticles int
	SchemaMaxDeclarations, SchemaMaxNodes       int
	SchemaCompileCPU                            time.Duration
	SchemaCompileMemory                         int
	// PatternTimeout bounds the validation of one document of a schema
	// with xs:pattern facets, run in a child process (0: in the process).
	PatternTimeout time.Duration

	MaxCommandsInFlight int
	// MaxCommandsInFlightPerToken and MaxCommandsInFlightPerDevice are
	// one token's and one device's quotas within MaxCommandsInFlight;
	// MaxQueuedPerDevice bounds a device's queued commands.
	MaxCommandsInFlightPerToken  int
	MaxCommandsInFlightPerDevice int
	MaxQueuedPerDevice           int

	DeviceRate  int
	DeviceBurst int

	// AdminToken is the bootstrap admin token (env only); "" for none.
	AdminToken string
	// APIRate and APIBurst limit each API token's requests; APIRate 0
	// disables the limit.
	APIRate  int
	APIBurst int
	// MaxPageBytes is the byte budget of a page of readings, rejections
	// or commands; MaxHeavyPerToken and MaxHeavy cap such requests in
	// progress per token and on the instance.
	MaxPageBytes, MaxHeavyPerToken, MaxHeavy int
	// ReadingCacheBytes bounds the memory of the newest readings kept
	// per device for pages of readings (0: none kept, every page is read
	// from PostgreSQL); ReadingCacheDevices bounds the devices, and
	// ReadingCachePerDevice the readings per device.
	ReadingCacheBytes, ReadingCacheDevices, ReadingCachePerDevice int

	// DiscoItemsJIDs are the bare JIDs and domains that see every device
	// in disco#items on the component; DiscoMaxItems caps one answer.
	DiscoItemsJIDs []string
	DiscoMaxItems  int
	// DeviceDomains are the XMPP domains whose devices may register and
	// send stanzas; the zero value allows any.
	DeviceDomains devices.DomainAllowList

	// XMPPAccounts is how devices' XMPP accounts are made on request
	// ("ejabberd", "prosody"; "": not at all), with what follows.
	XMPPAccounts                                                           string
	EjabberdAPIURL, EjabberdAPIUser, EjabberdAPIPassword, EjabberdAPIToken string
	Prosodyctl, ProsodyConfig                                              string
	XMPPAccountsTimeout                                                    time.Duration

	// The event log and its streams.
	EventRetention, EventTrimInterval, EventKeepAlive, EventPoll time.Duration
	EventMaxStreams, EventMaxStreamsPerToken                     int
	EventBacklog, EventBacklogBytes                              int

	// Retention of readings, rejections and finished commands (0: keep
	// forever), and how often the maintainer applies it and creates the
	// reading partitions ahead.
	ReadingRetention, RejectionRetention, CommandRetention, MaintainInterval time.Duration
	// PresenceEventRetention: how long presence history is kept (0: forever).
	PresenceEventRetention time.Duration
	// RollupInterval: how often the hourly rollups of readings are
	// brought up to date.
	RollupInterval time.Duration

	// Webhooks.
	WebhookAllowPrivate                          bool
	WebhookBatch, WebhookMax, WebhookConcurrency int
	WebhookLinger, WebhookTimeout                time.Duration
	WebhookRetryLimit, WebhookRetryMaxDelay      time.Duration
}

// configError is a missing or malformed setting; the binary prints it as
// one line and exits with status 2.
type configError struct {
	setting string
	msg     string
}

func (e *configError) Error() string { return e.setting + ": " + e.msg }

// setting describes one configuration value, for parsing and --help.
type setting struct {
	env, flag, def, help string
	secret               bool // environment only: never a flag, never echoed
}

var settings = []setting{
	{env: "IOTGATE_XMPP_ADDR", flag: "xmpp-addr", def: "127.0.0.1:5347", help: "host:port of the XMPP server's component (XEP-0114) listener"},
	{env: "IOTGATE_DOMAIN", flag: "domain", help: "the component's JID, e.g. iot.example.com (required)"},
	{env: "IOTGATE_INSTANCE_ID", flag: "instance-id", help: "this instance's ID among the instances sharing the domain and the database (1-64 of A-Z a-z 0-9 . _ -); default: the host name. It must stay the same across restarts and differ between instances"},
	{env: "IOTGATE_SECRET", secret: true, help: "the component's shared secret (required; environment only)"},
	{env: "IOTGATE_DATABASE_URL", flag: "database-url", help: "PostgreSQL URL or DSN (required), e.g. postgres://iotgate@127.0.0.1/iotgate?sslmode=disable"},
	{env: "IOTGATE_HTTP_ADDR", flag: "http-addr", def: "127.0.0.1:8080", help: "host:port the REST API listens on"},
	{env: "IOTGATE_METRICS_ADDR", flag: "metrics-addr", help: "host:port serving Prometheus metrics at /metrics and profiles at /debug/pprof/, without authentication: keep it on 127.0.0.1 (iotgate warns at start otherwise); empty: not served"},
	{env: "IOTGATE_CORS_ORIGINS", flag: "cors-origins", help: "comma-separated browser origins allowed to call the API (e.g. https://app.example.com, or *); none by default"},
	{env: "IOTGATE_CONSOLE", flag: "console", def: "1", help: "1 serves the web console at /console/ (static files embedded in the binary; its data calls need a token like any API call); 0 does not"},
	{env: "IOTGATE_TRUSTED_PROXIES", flag: "trusted-proxies", help: "comma-separated addresses or CIDR ranges (10.0.0.0/8, 2001:db8::/32) of the reverse proxies in front of the REST API: X-Forwarded-For is believed only from them, so that failed authentications are counted per client, not per proxy; empty: the connection's peer is the client and X-Forwarded-For is ignored"},
	{env: "IOTGATE_LOG_LEVEL", flag: "log-level", def: "info", help: "debug, info, warn or error"},
	{env: "IOTGATE_LOG_FORMAT", flag: "log-format", def: "text", help: "text or json"},
	{env: "IOTGATE_SHUTDOWN_TIMEOUT", flag: "shutdown-timeout", def: "15s", help: "how long a graceful shutdown may take"},
	{env: "IOTGATE_GC_PERCENT", flag: "gc-percent", def: "400", help: "the Go garbage collector's GOGC: the heap may grow by this percentage of the live data before a collection. Above Go's 100, iotgate spends less CPU collecting per reading and holds more memory, bounded by IOTGATE_MEMORY_LIMIT. Ignored when the environment sets GOGC"},
	{env: "IOTGATE_MEMORY_LIMIT", flag: "memory-limit", def: "1073741824", help: "soft limit, in bytes, of the memory the Go runtime holds (GOMEMLIMIT): near it the collector runs as often as it must, whatever IOTGATE_GC_PERCENT says; it does not cap the live data itself. 0: no limit. Ignored when the environment sets GOMEMLIMIT"},
	{env: "IOTGATE_HTTP_BODY_LIMIT", flag: "http-body-limit", def: "1048576", help: "largest HTTP request body in bytes"},
	{env: "IOTGATE_MAX_SCHEMA_BYTES", flag: "max-schema-bytes", def: "1048576", help: "largest XSD accepted at registration, in bytes"},
	{env: "IOTGATE_MAX_READING_BYTES", flag: "max-reading-bytes", def: "65536", help: "largest reading payload, in bytes"},
	{env: "IOTGATE_MAX_READING_DEPTH", flag: "max-reading-depth", def: "32", help: "deepest element nesting of a reading"},
	{env: "IOTGATE_MAX_STANZA_BYTES", flag: "max-stanza-bytes", def: "2097152", help: "largest stanza read from the XMPP server, in bytes; a larger one is skipped and refused (policy-violation), the stream goes on. The default covers a 256 KiB client stanza that the server's escaping grew 6-fold"},
	{env: "IOTGATE_MAX_STANZA_DEPTH", flag: "max-stanza-depth", def: "64", help: "deepest element nesting of a stanza read from the XMPP server (the stanza is 1); a deeper one is skipped and refused"},
	{env: "IOTGATE_XMPP_KEEPALIVE", flag: "xmpp-keepalive", def: "15s", help: "interval of the keepalive ping on the component stream"},
	{env: "IOTGATE_XMPP_KEEPALIVE_TIMEOUT", flag: "xmpp-keepalive-timeout", def: "10s", help: "a stream that has sent nothing this long after a keepalive ping, and whose TCP peer acknowledges nothing, is presumed dead and reconnected"},
	{env: "IOTGATE_XMPP_KEEPALIVE_SLOW_TIMEOUT", flag: "xmpp-keepalive-slow-timeout", def: "60s", help: "a stream that has sent nothing this long after a keepalive ping, although its TCP peer still acknowledges (a busy server), is presumed stuck and reconnected; at least the keepalive timeout"},
	{env: "IOTGATE_XMPP_MAX_BACKOFF", flag: "xmpp-max-backoff", def: "5s", help: "longest wait between reconnect attempts (they start at 250ms and double, with jitter)"},
	{env: "IOTGATE_XMPP_CONFLICT_BACKOFF", flag: "xmpp-conflict-backoff", def: "2s", help: "shortest wait after the XMPP server refuses the stream with conflict (it still holds an older stream for the domain, often iotgate's own that it has not seen die): iotgate is back at most max(this, xmpp-max-backoff) after the server drops it"},
	{env: "IOTGATE_INSTANCE_DEAD_AFTER", flag: "instance-dead-after", def: "10s", help: "how long an instance may miss heartbeats (sent every fifth of it) before the others fail its commands in flight and take over delivering its devices' queued commands"},
	{env: "IOTGATE_PRESENCE_PROBE_GRACE", flag: "presence-probe-grace", def: "10s", help: "how long after the last presence probe of a (re)connection went out a device resource that no presence stanza confirmed since is dropped (it went away while no instance could see it)"},
	{env: "IOTGATE_MAX_RESOURCES_PER_DEVICE", flag: "max-resources-per-device", def: "16", help: "resources (connected sessions) of one device whose presence is tracked; available presence from one more is ignored, with a log line, until one goes"},
	{env: "IOTGATE_MAX_PATTERN_VALUE", flag: "max-pattern-value", def: "256", help: "longest value, in characters, that a schema's xs:pattern checks; longer ones are refused before matching (backtracking costs grow with the length)"},
	{env: "IOTGATE_MAX_PATTERN_TOTAL", flag: "max-pattern-total", def: "1024", help: "most characters, in all of a reading's values that xs:pattern facets check (a value counts once per facet it is matched against)"},
	{env: "IOTGATE_MAX_SCHEMA_VERSIONS", flag: "max-schema-versions", def: "10000", help: "most schema versions stored, of all schemas (each costs a compilation and memory); a registration beyond it gets 409 schema_quota_exceeded"},
	{env: "IOTGATE_MAX_SCHEMA_VERSIONS_PER_TOKEN", flag: "max-schema-versions-per-token", def: "1000", help: "most schema versions one API token may have registered (and not deleted), so that one tenant can't take them all; beyond it 409 schema_quota_exceeded (0: no limit)"},
	{env: "IOTGATE_SCHEMA_CACHE_SIZE", flag: "schema-cache-size", def: "1000", help: "most compiled schema versions kept in memory; the least recently used are dropped and compiled again at their next use"},
	{env: "IOTGATE_SCHEMA_WRITE_RATE", flag: "schema-write-rate", def: "30", help: "schema registrations and deletions one API token may make per minute (in a burst or spread out); excess ones get 429 schema_write_rate (0: no limit)"},
	{env: "IOTGATE_SCHEMA_MAX_MODEL_PARTICLES", flag: "schema-max-model-particles", def: "300", help: "most particles (elements, wildcards, sequences, choices, group references; groups, base types and substitution groups expanded) in one content model of a schema; libxml2's compile time grows with its cube"},
	{env: "IOTGATE_SCHEMA_MAX_PARTICLES", flag: "schema-max-particles", def: "2000", help: "most particles in all the content models of a schema document, counted as for schema-max-model-particles"},
	{env: "IOTGATE_SCHEMA_MAX_DECLARATIONS", flag: "schema-max-declarations", def: "5000", help: "most element declarations plus attribute uses (attribute groups and base types expanded) in a schema document"},
	{env: "IOTGATE_SCHEMA_MAX_NODES", flag: "schema-max-nodes", def: "10000", help: "most XML elements in a schema document, annotations included"},
	{env: "IOTGATE_SCHEMA_COMPILE_CPU", flag: "schema-compile-cpu", def: "2s", help: "CPU time a schema's trial compile, in a child process, may take (whole seconds); a schema over it is refused"},
	{env: "IOTGATE_PATTERN_TIMEOUT", flag: "pattern-timeout", def: "250ms", help: "time one reading or command payload of a schema with xs:pattern facets may take to validate, in a child process (killed beyond it); longer ones are refused as pattern_too_costly (0: validate in the process, bounded only by the pattern value lengths)"},
	{env: "IOTGATE_SCHEMA_COMPILE_MEMORY", flag: "schema-compile-memory", def: "536870912", help: "memory, in bytes, a schema's trial compile may add to its child process; a schema over it is refused"},
	{env: "IOTGATE_DEVICE_RATE", flag: "device-rate", def: "500", help: "readings per second one device may send on average; excess IQs get policy-violation, excess messages are dropped"},
	{env: "IOTGATE_DEVICE_BURST", flag: "device-burst", def: "1000", help: "readings one device may send in a burst above its rate"},
	{env: "IOTGATE_ADMIN_TOKEN", secret: true, help: "a bootstrap API token with the admin scope, not stored in the database (environment only; at least 32 characters)"},
	{env: "IOTGATE_API_RATE", flag: "api-rate", def: "50", help: "HTTP requests per second one API token may make on average; excess ones get 429 (0: no limit)"},
	{env: "IOTGATE_API_BURST", flag: "api-burst", def: "100", help: "HTTP requests one API token may make in a burst above its rate"},
	{env: "IOTGATE_MAX_PAGE_BYTES", flag: "max-page-bytes", def: "4194304", help: "bytes of rows (XML, JSON, answers as stored) in one page of readings, rejections or commands; the page ends at the row that reaches it and next_cursor carries on"},
	{env: "IOTGATE_MAX_HEAVY_PER_TOKEN", flag: "max-heavy-per-token", def: "4", help: "list requests (readings, rejections, commands) one API token may have in progress at once; beyond it, 429 too_many_concurrent"},
	{env: "IOTGATE_MAX_HEAVY", flag: "max-heavy", def: "32", help: "list requests (readings, rejections, commands) in progress at once on this instance, all tokens together; beyond it, 429 too_many_concurrent"},
	{env: "IOTGATE_READING_CACHE_BYTES", flag: "reading-cache-bytes", def: "67108864", help: "memory, in bytes, for the newest readings of recently read devices, kept to serve their newest pages of readings without PostgreSQL (least recently read devices dropped first); 0: every page is read from PostgreSQL"},
	{env: "IOTGATE_READING_CACHE_DEVICES", flag: "reading-cache-devices", def: "10000", help: "devices whose newest readings are kept in memory for pages of readings"},
	{env: "IOTGATE_READING_CACHE_PER_DEVICE", flag: "reading-cache-per-device", def: "128", help: "newest readings kept in memory per device for pages of readings (at most 1001); a page of this limit or more is read from PostgreSQL"},
	{env: "IOTGATE_DISCO_ITEMS_JIDS", flag: "disco-items-jids", help: "comma-separated bare JIDs (ops@example.com) or domains (example.com: all its users) that see every registered device in disco#items on the component; a device sees only itself, anyone else nothing"},
	{env: "IOTGATE_DISCO_MAX_ITEMS", flag: "disco-max-items", def: "100", help: "most devices in one disco#items answer; more come in XEP-0059 pages"},
	{env: "IOTGATE_DEVICE_DOMAINS", flag: "device-domains", help: "comma-separated XMPP domains whose devices may register and send stanzas (e.g. example.com,sensors.example.org); others get 403 at registration and not-allowed over XMPP; empty: any domain"},
	{env: "IOTGATE_XMPP_ACCOUNTS", flag: "xmpp-accounts", help: "how POST /v1/devices with account.create makes the device's XMPP account: ejabberd (its HTTP API, mod_http_api), prosody (prosodyctl, iotgate beside Prosody); empty: it doesn't (422 accounts_unavailable)"},
	{env: "IOTGATE_XMPP_ACCOUNTS_TIMEOUT", flag: "xmpp-accounts-timeout", def: "10s", help: "how long one call to the XMPP server's admin interface (HTTP API or prosodyctl run) may take; beyond it the request gets 503 account_server_unavailable"},
	{env: "IOTGATE_EJABBERD_API_URL", flag: "ejabberd-api-url", help: "base URL of ejabberd's mod_http_api, e.g. http://127.0.0.1:5280/api (required with IOTGATE_XMPP_ACCOUNTS=ejabberd)"},
	{env: "IOTGATE_EJABBERD_API_USER", flag: "ejabberd-api-user", help: "ejabberd admin account (user@host) iotgate authenticates as on the API (HTTP basic auth), allowed register and unregister by api_permissions; empty: no basic auth"},
	{env: "IOTGATE_EJABBERD_API_PASSWORD", secret: true, help: "that account's password (environment only)"},
	{env: "IOTGATE_EJABBERD_API_TOKEN", secret: true, help: "an ejabberd OAuth token with the ejabberd:admin scope, sent as a bearer token instead of basic auth (environment only)"},
	{env: "IOTGATE_PROSODYCTL", flag: "prosodyctl", def: "prosodyctl", help: "the prosodyctl command run for IOTGATE_XMPP_ACCOUNTS=prosody"},
	{env: "IOTGATE_PROSODY_CONFIG", flag: "prosody-config", help: "Prosody's config file, passed to prosodyctl as --config; empty: prosodyctl's default (/etc/prosody/prosody.cfg.lua)"},
	{env: "IOTGATE_MAX_COMMANDS_IN_FLIGHT", flag: "max-commands-in-flight", def: "1000", help: "commands sent and not yet answered or timed out; beyond it, new ones get 429"},
	{env: "IOTGATE_MAX_COMMANDS_IN_FLIGHT_PER_TOKEN", flag: "max-commands-in-flight-per-token", def: "250", help: "one API token's share of the commands in flight (per instance); beyond it, its new ones get 429 token_commands_in_flight (queued ones wait), so that one tenant can't take every slot"},
	{env: "IOTGATE_MAX_COMMANDS_IN_FLIGHT_PER_DEVICE", flag: "max-commands-in-flight-per-device", def: "32", help: "one device's share of the commands in flight (per instance); beyond it, new ones to it get 429 device_commands_in_flight (queued ones wait)"},
	{env: "IOTGATE_MAX_QUEUED_PER_DEVICE", flag: "max-queued-per-device", def: "100", help: "queued commands (mode queue, waiting for the device) per device; beyond it, new ones get 429 device_queue_full"},
	{env: "IOTGATE_EVENT_RETENTION", flag: "event-retention", def: "24h", help: "how long events are kept for streams and webhooks to resume from; older ones are trimmed"},
	{env: "IOTGATE_EVENT_TRIM_INTERVAL", flag: "event-trim-interval", def: "1m", help: "how often expired events are trimmed (in bounded batches)"},
	{env: "IOTGATE_READING_RETENTION", flag: "reading-retention", def: "0", help: "how long readings are kept (e.g. 8760h); older ones go a day at a time, by dropping the day's partition once its end is older (0: forever)"},
	{env: "IOTGATE_REJECTION_RETENTION", flag: "rejection-retention", def: "720h", help: "how long refused payloads (rejections) are kept (0: forever)"},
	{env: "IOTGATE_COMMAND_RETENTION", flag: "command-retention", def: "2160h", help: "how long finished commands (with their history) are kept after their creation (0: forever)"},
	{env: "IOTGATE_PRESENCE_EVENT_RETENTION", flag: "presence-event-retention", def: "720h", help: "how long presence history (each device's online/offline changes) is kept (0: forever)"},
	{env: "IOTGATE_MAINTAIN_INTERVAL", flag: "maintain-interval", def: "1h", help: "how often reading partitions are created ahead and the retentions applied (in bounded batches)"},
	{env: "IOTGATE_ROLLUP_INTERVAL", flag: "rollup-interval", def: "5m", help: "how often the hourly rollups of readings (for aggregates over whole hours) are brought up to the hour that ended 10 minutes ago"},
	{env: "IOTGATE_EVENT_KEEPALIVE", flag: "event-keepalive", def: "15s", help: "interval of the comment line that keeps an idle event stream open through proxies"},
	{env: "IOTGATE_EVENT_POLL", flag: "event-poll", def: "1s", help: "how often the event log is read without a wake-up (the safety net under LISTEN/NOTIFY)"},
	{env: "IOTGATE_EVENT_MAX_STREAMS", flag: "event-max-streams", def: "1000", help: "event streams (GET /v1/events) open at once on this instance; beyond it, 429"},
	{env: "IOTGATE_EVENT_MAX_STREAMS_PER_TOKEN", flag: "event-max-streams-per-token", def: "20", help: "event streams one API token may have open at once on this instance"},
	{env: "IOTGATE_EVENT_BACKLOG", flag: "event-backlog", def: "10000", help: "events a stream may fall behind by before it is cut off (the client resumes with Last-Event-ID)"},
	{env: "IOTGATE_EVENT_BACKLOG_BYTES", flag: "event-backlog-bytes", def: "10485760", help: "bytes of events a stream may fall behind by before it is cut off"},
	{env: "IOTGATE_WEBHOOK_ALLOW_PRIVATE", flag: "webhook-allow-private", def: "0", help: "1 lets webhooks reach loopback, private, link-local and metadata addresses (refused by default: SSRF)"},
	{env: "IOTGATE_WEBHOOK_BATCH", flag: "webhook-batch", def: "100", help: "most events in one webhook delivery"},
	{env: "IOTGATE_WEBHOOK_LINGER", flag: "webhook-linger", def: "1s", help: "how long a webhook delivery waits for more events to fill its batch"},
	{env: "IOTGATE_WEBHOOK_TIMEOUT", flag: "webhook-timeout", def: "10s", help: "how long a webhook receiver may take to answer a delivery"},
	{env: "IOTGATE_WEBHOOK_RETRY_LIMIT", flag: "webhook-retry-limit", def: "24h", help: "how long failed deliveries are retried before the webhook is marked failing"},
	{env: "IOTGATE_WEBHOOK_RETRY_MAX_DELAY", flag: "webhook-retry-max-delay", def: "10m", help: "longest wait between retries (they start at 1s and double, with jitter)"},
	{env: "IOTGATE_WEBHOOK_MAX", flag: "webhook-max", def: "100", help: "most webhooks that may be registered"},
	{env: "IOTGATE_WEBHOOK_CONCURRENCY", flag: "webhook-concurrency", def: "8", help: "webhook deliveries in flight at once on this instance"},
}
