package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"mellium.im/xmpp/jid"

	"github.com/iotgate/iotgate"
	"github.com/iotgate/iotgate/auth"
	"github.com/iotgate/iotgate/devices"
)

// parseConfig reads settings from args and getenv. It returns the config,
// the remaining arguments, and a *configError for a bad setting,
// flag.ErrHelp for --help.
func parseConfig(args []string, getenv func(string) string, usageOut io.Writer) (Config, []string, error) {
	fs := flag.NewFlagSet("iotgate", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	values := make(map[string]*string, len(settings))
	for _, s := range settings {
		v := s.def
		if e := getenv(s.env); e != "" {
			v = e
		}
		if s.secret {
			values[s.env] = &v
			continue
		}
		values[s.env] = fs.String(s.flag, v, s.help)
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			usage(usageOut)
			return Config{}, nil, err
		}
		return Config{}, nil, &configError{setting: "arguments", msg: err.Error()}
	}
	get := func(env string) string { return strings.TrimSpace(*values[env]) }

	var cfg Config
	var err error
	if cfg.XMPPAddr, err = hostPort("IOTGATE_XMPP_ADDR", get("IOTGATE_XMPP_ADDR")); err != nil {
		return cfg, nil, err
	}
	if cfg.HTTPAddr, err = hostPort("IOTGATE_HTTP_ADDR", get("IOTGATE_HTTP_ADDR")); err != nil {
		return cfg, nil, err
	}
	if m := get("IOTGATE_METRICS_ADDR"); m != "" {
		if cfg.MetricsAddr, err = hostPort("IOTGATE_METRICS_ADDR", m); err != nil {
			return cfg, nil, err
		}
	}
	for _, o := range strings.Split(get("IOTGATE_CORS_ORIGINS"), ",") {
		o = strings.TrimSpace(o)
		if o == "" {
			continue
		}
		if u, perr := url.Parse(o); o != "*" && (perr != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Path != "") {
			return cfg, nil, &configError{"IOTGATE_CORS_ORIGINS", fmt.Sprintf("%q is not an origin such as https://app.example.com", o)}
		}
		cfg.CORSOrigins = append(cfg.CORSOrigins, o)
	}
	if cfg.TrustedProxies, err = parseCIDRs("IOTGATE_TRUSTED_PROXIES", get("IOTGATE_TRUSTED_PROXIES")); err != nil {
		return cfg, nil, err
	}
	d := get("IOTGATE_DOMAIN")
	if d == "" {
		return cfg, nil, &configError{"IOTGATE_DOMAIN", "is required (the component's domain, e.g. iot.example.com)"}
	}
	dj, perr := jid.Parse(d)
	if perr != nil || dj.Localpart() != "" || dj.Resourcepart() != "" {
		return cfg, nil, &configError{"IOTGATE_DOMAIN", fmt.Sprintf("%q is not a domain name such as iot.example.com", d)}
	}
	cfg.Domain = dj.String()
	if cfg.InstanceID = get("IOTGATE_INSTANCE_ID"); cfg.InstanceID == "" {
		// The host name stays across restarts (a restarted instance
		// fails its own commands in flight at once) and differs between
		// hosts and containers.
		h, herr := os.Hostname()
		if herr != nil || !validInstanceID(h) {
			return cfg, nil, &configError{"IOTGATE_INSTANCE_ID", "is required: the host name is not usable as one"}
		}
		cfg.InstanceID = h
	} else if !validInstanceID(cfg.InstanceID) {
		return cfg, nil, &configError{"IOTGATE_INSTANCE_ID", fmt.Sprintf("%q is not 1-64 of A-Z a-z 0-9 . _ -", cfg.InstanceID)}
	}

	// The secret may legitimately contain surrounding spaces.
	if cfg.Secret = *values["IOTGATE_SECRET"]; cfg.Secret == "" {
		return cfg, nil, &configError{"IOTGATE_SECRET", "is required (the component_secret configured on the XMPP server)"}
	}
	if cfg.DatabaseURL = get("IOTGATE_DATABASE_URL"); cfg.DatabaseURL == "" {
		return cfg, nil, &configError{"IOTGATE_DATABASE_URL", "is required (a PostgreSQL URL or DSN)"}
	}
	if strings.Contains(cfg.DatabaseURL, "://") {
		u, perr := url.Parse(cfg.DatabaseURL)
		if perr != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
			return cfg, nil, &configError{"IOTGATE_DATABASE_URL", "must be a postgres:// URL or a key=value DSN"}
		}
	}
	if err := cfg.LogLevel.UnmarshalText([]byte(get("IOTGATE_LOG_LEVEL"))); err != nil {
		return cfg, nil, &configError{"IOTGATE_LOG_LEVEL", fmt.Sprintf("%q is not one of debug, info, warn, error", get("IOTGATE_LOG_LEVEL"))}
	}
	switch cfg.LogFormat = get("IOTGATE_LOG_FORMAT"); cfg.LogFormat {
	case "text", "json":
	default:
		return cfg, nil, &configError{"IOTGATE_LOG_FORMAT", fmt.Sprintf("%q is not text or json", cfg.LogFormat)}
	}
	if v, err := strconv.Atoi(get("IOTGATE_GC_PERCENT")); err != nil || v < 50 || v > 10000 {
		return cfg, nil, &configError{"IOTGATE_GC_PERCENT", fmt.Sprintf("%q is not a number between 50 and 10000", get("IOTGATE_GC_PERCENT"))}
	} else {
		cfg.GCPercent = v
	}
	if v, err := strconv.ParseInt(get("IOTGATE_MEMORY_LIMIT"), 10, 64); err != nil || v != 0 && (v < minMemoryLimit || v > 1<<44) {
		return cfg, nil, &configError{"IOTGATE_MEMORY_LIMIT", fmt.Sprintf("%q is not 0 or a number of bytes between %d and %d", get("IOTGATE_MEMORY_LIMIT"), minMemoryLimit, int64(1)<<44)}
	} else {
		cfg.MemoryLimit = v
	}
	if cfg.ShutdownTimeout, err = time.ParseDuration(get("IOTGATE_SHUTDOWN_TIMEOUT")); err != nil || cfg.ShutdownTimeout <= 0 {
		return cfg, nil, &configError{"IOTGATE_SHUTDOWN_TIMEOUT", fmt.Sprintf("%q is not a positive duration such as 15s", get("IOTGATE_SHUTDOWN_TIMEOUT"))}
	}
	for _, d := range []struct {
		env      string
		dst      *time.Duration
		min, max time.Duration
	}{
		{"IOTGATE_XMPP_KEEPALIVE", &cfg.XMPPKeepAlive, 10 * time.Millisecond, time.Hour},
		{"IOTGATE_XMPP_KEEPALIVE_TIMEOUT", &cfg.XMPPKeepAliveTimeout, 10 * time.Millisecond, time.Hour},
		{"IOTGATE_XMPP_KEEPALIVE_SLOW_TIMEOUT", &cfg.XMPPKeepAliveSlowTimeout, 10 * time.Millisecond, time.Hour},
		{"IOTGATE_XMPP_MAX_BACKOFF", &cfg.XMPPMaxBackoff, 10 * time.Millisecond, time.Hour},
		{"IOTGATE_XMPP_CONFLICT_BACKOFF", &cfg.XMPPConflictBackoff, 10 * time.Millisecond, time.Hour},
		{"IOTGATE_PRESENCE_PROBE_GRACE", &cfg.PresenceProbeGrace, 100 * time.Millisecond, time.Hour},
		{"IOTGATE_INSTANCE_DEAD_AFTER", &cfg.InstanceDeadAfter, time.Second, 10 * time.Minute},
		{"IOTGATE_EVENT_RETENTION", &cfg.EventRetention, time.Second, 90 * 24 * time.Hour},
		{"IOTGATE_EVENT_TRIM_INTERVAL", &cfg.EventTrimInterval, 100 * time.Millisecond, time.Hour},
		{"IOTGATE_READING_RETENTION", &cfg.ReadingRetention, 0, 100 * 365 * 24 * time.Hour},
		{"IOTGATE_REJECTION_RETENTION", &cfg.RejectionRetention, 0, 100 * 365 * 24 * time.Hour},
		{"IOTGATE_COMMAND_RETENTION", &cfg.CommandRetention, 0, 100 * 365 * 24 * time.Hour},
		{"IOTGATE_PRESENCE_EVENT_RETENTION", &cfg.PresenceEventRetention, 0, 100 * 365 * 24 * time.Hour},
		{"IOTGATE_MAINTAIN_INTERVAL", &cfg.MaintainInterval, time.Second, 24 * time.Hour},
		{"IOTGATE_ROLLUP_INTERVAL", &cfg.RollupInterval, time.Second, time.Hour},
		{"IOTGATE_EVENT_KEEPALIVE", &cfg.EventKeepAlive, 100 * time.Millisecond, time.Hour},
		{"IOTGATE_EVENT_POLL", &cfg.EventPoll, 10 * time.Millisecond, time.Minute},
		{"IOTGATE_WEBHOOK_LINGER", &cfg.WebhookLinger, 0, time.Minute},
		{"IOTGATE_WEBHOOK_TIMEOUT", &cfg.WebhookTimeout, 100 * time.Millisecond, 5 * time.Minute},
		{"IOTGATE_WEBHOOK_RETRY_LIMIT", &cfg.WebhookRetryLimit, time.Second, 30 * 24 * time.Hour},
		{"IOTGATE_WEBHOOK_RETRY_MAX_DELAY", &cfg.WebhookRetryMaxDelay, 10 * time.Millisecond, 24 * time.Hour},
		{"IOTGATE_SCHEMA_COMPILE_CPU", &cfg.SchemaCompileCPU, time.Second, 10 * time.Minute},
		{"IOTGATE_PATTERN_TIMEOUT", &cfg.PatternTimeout, 0, time.Minute},
		{"IOTGATE_XMPP_ACCOUNTS_TIMEOUT", &cfg.XMPPAccountsTimeout, 100 * time.Millisecond, 5 * time.Minute},
	} {
		v, err := time.ParseDuration(get(d.env))
		if err != nil || v < d.min || v > d.max {
			return cfg, nil, &configError{d.env, fmt.Sprintf("%q is not a duration between %s and %s, such as 15s", get(d.env), d.min, d.max)}
		}
		*d.dst = v
	}
	if cfg.BodyLimit, err = strconv.ParseInt(get("IOTGATE_HTTP_BODY_LIMIT"), 10, 64); err != nil || cfg.BodyLimit <= 0 {
		return cfg, nil, &configError{"IOTGATE_HTTP_BODY_LIMIT", fmt.Sprintf("%q is not a positive number of bytes", get("IOTGATE_HTTP_BODY_LIMIT"))}
	}
	for _, n := range []struct {
		env string
		dst *int
		max int
	}{
		{"IOTGATE_MAX_SCHEMA_BYTES", &cfg.MaxSchemaBytes, 64 << 20},
		{"IOTGATE_MAX_READING_BYTES", &cfg.MaxReadingBytes, 16 << 20},
		{"IOTGATE_MAX_READING_DEPTH", &cfg.MaxReadingDepth, 256},
		{"IOTGATE_MAX_PATTERN_VALUE", &cfg.MaxPatternValue, 1 << 20},
		{"IOTGATE_MAX_PATTERN_TOTAL", &cfg.MaxPatternTotal, 1 << 20},
		{"IOTGATE_MAX_SCHEMA_VERSIONS", &cfg.MaxSchemaVersions, 10000000},
		{"IOTGATE_SCHEMA_CACHE_SIZE", &cfg.SchemaCacheSize, 10000000},
		{"IOTGATE_SCHEMA_MAX_MODEL_PARTICLES", &cfg.SchemaMaxModelParticles, 1 << 20},
		{"IOTGATE_SCHEMA_MAX_PARTICLES", &cfg.SchemaMaxParticles, 1 << 24},
		{"IOTGATE_SCHEMA_MAX_DECLARATIONS", &cfg.SchemaMaxDeclarations, 1 << 24},
		{"IOTGATE_SCHEMA_MAX_NODES", &cfg.SchemaMaxNodes, 1 << 24},
		{"IOTGATE_SCHEMA_COMPILE_MEMORY", &cfg.SchemaCompileMemory, 1 << 40},
		{"IOTGATE_MAX_STANZA_BYTES", &cfg.MaxStanzaBytes, 64 << 20},
		{"IOTGATE_MAX_STANZA_DEPTH", &cfg.MaxStanzaDepth, 1024},
		{"IOTGATE_MAX_COMMANDS_IN_FLIGHT", &cfg.MaxCommandsInFlight, 1000000},
		{"IOTGATE_MAX_COMMANDS_IN_FLIGHT_PER_TOKEN", &cfg.MaxCommandsInFlightPerToken, 1000000},
		{"IOTGATE_MAX_COMMANDS_IN_FLIGHT_PER_DEVICE", &cfg.MaxCommandsInFlightPerDevice, 1000000},
		{"IOTGATE_MAX_QUEUED_PER_DEVICE", &cfg.MaxQueuedPerDevice, 1000000},
		{"IOTGATE_MAX_RESOURCES_PER_DEVICE", &cfg.MaxResourcesPerDevice, 1000},
		{"IOTGATE_DEVICE_RATE", &cfg.DeviceRate, 10000000},
		{"IOTGATE_DEVICE_BURST", &cfg.DeviceBurst, 10000000},
		{"IOTGATE_DISCO_MAX_ITEMS", &cfg.DiscoMaxItems, 1000},
		{"IOTGATE_EVENT_MAX_STREAMS", &cfg.EventMaxStreams, 1000000},
		{"IOTGATE_EVENT_MAX_STREAMS_PER_TOKEN", &cfg.EventMaxStreamsPerToken, 1000000},
		{"IOTGATE_EVENT_BACKLOG", &cfg.EventBacklog, 10000000},
		{"IOTGATE_EVENT_BACKLOG_BYTES", &cfg.EventBacklogBytes, 1 << 30},
		{"IOTGATE_WEBHOOK_BATCH", &cfg.WebhookBatch, 10000},
		{"IOTGATE_WEBHOOK_MAX", &cfg.WebhookMax, 100000},
		{"IOTGATE_WEBHOOK_CONCURRENCY", &cfg.WebhookConcurrency, 1000},
		{"IOTGATE_MAX_PAGE_BYTES", &cfg.MaxPageBytes, 1 << 30},
		{"IOTGATE_MAX_HEAVY_PER_TOKEN", &cfg.MaxHeavyPerToken, 1000000},
		{"IOTGATE_MAX_HEAVY", &cfg.MaxHeavy, 1000000},
		{"IOTGATE_READING_CACHE_DEVICES", &cfg.ReadingCacheDevices, 10000000},
		{"IOTGATE_READING_CACHE_PER_DEVICE", &cfg.ReadingCachePerDevice, 1001},
	} {
		v, err := strconv.Atoi(get(n.env))
		if err != nil || v <= 0 || v > n.max {
			return cfg, nil, &configError{n.env, fmt.Sprintf("%q is not a number between 1 and %d", get(n.env), n.max)}
		}
		*n.dst = v
	}
	// Like the secret, taken as is; only its length is checked (the
	// auth package's minimum), never echoed.
	if cfg.AdminToken = *values["IOTGATE_ADMIN_TOKEN"]; cfg.AdminToken != "" && len(cfg.AdminToken) < auth.MinBootstrapLen {
		return cfg, nil, &configError{"IOTGATE_ADMIN_TOKEN", fmt.Sprintf("is shorter than %d characters; generate one with e.g. `openssl rand -base64 32`", auth.MinBootstrapLen)}
	}
	for _, n := range []struct {
		env string
		dst *int
	}{{"IOTGATE_API_RATE", &cfg.APIRate}, {"IOTGATE_API_BURST", &cfg.APIBurst}, {"IOTGATE_SCHEMA_WRITE_RATE", &cfg.SchemaWriteRate}, {"IOTGATE_MAX_SCHEMA_VERSIONS_PER_TOKEN", &cfg.MaxSchemaVersionsPerToken}} {
		v, err := strconv.Atoi(get(n.env))
		if err != nil || v < 0 || v > 10000000 {
			return cfg, nil, &configError{n.env, fmt.Sprintf("%q is not a number between 0 and 10000000", get(n.env))}
		}
		*n.dst = v
	}
	if v, err := strconv.Atoi(get("IOTGATE_READING_CACHE_BYTES")); err != nil || v < 0 || v > 1<<40 {
		return cfg, nil, &configError{"IOTGATE_READING_CACHE_BYTES", fmt.Sprintf("%q is not a number between 0 and %d", get("IOTGATE_READING_CACHE_BYTES"), 1<<40)}
	} else {
		cfg.ReadingCacheBytes = v
	}
	for _, v := range strings.Split(get("IOTGATE_DISCO_ITEMS_JIDS"), ",") {
		if v = strings.TrimSpace(v); v == "" {
			continue
		}
		j, perr := jid.Parse(v)
		if perr != nil || j.Resourcepart() != "" {
			return cfg, nil, &configError{"IOTGATE_DISCO_ITEMS_JIDS", fmt.Sprintf("%q is not a bare JID or a domain such as ops@example.com or example.com", v)}
		}
		cfg.DiscoItemsJIDs = append(cfg.DiscoItemsJIDs, j.String())
	}
	switch get("IOTGATE_CONSOLE") {
	case "1":
		cfg.Console = true
	case "0":
	default:
		return cfg, nil, &configError{"IOTGATE_CONSOLE", fmt.Sprintf("%q is not 0 or 1", get("IOTGATE_CONSOLE"))}
	}
	switch get("IOTGATE_WEBHOOK_ALLOW_PRIVATE") {
	case "0", "false", "":
	case "1", "true":
		cfg.WebhookAllowPrivate = true
	default:
		return cfg, nil, &configError{"IOTGATE_WEBHOOK_ALLOW_PRIVATE", fmt.Sprintf("%q is not 0 or 1", get("IOTGATE_WEBHOOK_ALLOW_PRIVATE"))}
	}
	if err := parseAccounts(&cfg, get, values); err != nil {
		return cfg, nil, err
	}
	var domains []string
	for _, d := range strings.Split(get("IOTGATE_DEVICE_DOMAINS"), ",") {
		if d = strings.TrimSpace(d); d != "" {
			domains = append(domains, d)
		}
	}
	if cfg.DeviceDomains, err = devices.NewDomainAllowList(domains); err != nil {
		return cfg, nil, &configError{"IOTGATE_DEVICE_DOMAINS", iotgate.ErrorMessage(err)}
	}
	return cfg, fs.Args(), nil
}

// parseAccounts reads the settings of IOTGATE_XMPP_ACCOUNTS into cfg.
func parseAccounts(cfg *Config, get func(string) string, values map[string]*string) error {
	cfg.EjabberdAPIUser = get("IOTGATE_EJABBERD_API_USER")
	// Secrets are taken as they are.
	cfg.EjabberdAPIPassword = *values["IOTGATE_EJABBERD_API_PASSWORD"]
	cfg.EjabberdAPIToken = *values["IOTGATE_EJABBERD_API_TOKEN"]
	cfg.Prosodyctl = get("IOTGATE_PROSODYCTL")
	cfg.ProsodyConfig = get("IOTGATE_PROSODY_CONFIG")
	switch cfg.XMPPAccounts = get("IOTGATE_XMPP_ACCOUNTS"); cfg.XMPPAccounts {
	case "":
	case "ejabberd":
		raw := get("IOTGATE_EJABBERD_API_URL")
		u, err := url.Parse(raw)
		if raw == "" || err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil {
			return &configError{"IOTGATE_EJABBERD_API_URL", fmt.Sprintf("%q is not an http(s) URL without credentials such as http://127.0.0.1:5280/api (required with IOTGATE_XMPP_ACCOUNTS=ejabberd)", raw)}
		}
		cfg.EjabberdAPIURL = raw
		if cfg.EjabberdAPIToken != "" && cfg.EjabberdAPIUser != "" {
			return &configError{"IOTGATE_EJABBERD_API_TOKEN", "set either it or IOTGATE_EJABBERD_API_USER, not both"}
		}
		if cfg.EjabberdAPIUser != "" && cfg.EjabberdAPIPassword == "" {
			return &configError{"IOTGATE_EJABBERD_API_PASSWORD", "is required with IOTGATE_EJABBERD_API_USER"}
		}
	case "prosody":
		if cfg.Prosodyctl == "" {
			return &configError{"IOTGATE_PROSODYCTL", "is required with IOTGATE_XMPP_ACCOUNTS=prosody"}
		}
	default:
		return &configError{"IOTGATE_XMPP_ACCOUNTS", fmt.Sprintf("%q is not ejabberd, prosody or empty", cfg.XMPPAccounts)}
	}
	return nil
}

// parseCIDRs parses a comma-separated list of CIDR ranges; a bare address
// is its own range (/32 or /128).
func parseCIDRs(setting, v string) ([]*net.IPNet, error) {
	var out []*net.IPNet
	for _, part := range strings.Split(v, ",") {
		if part = strings.TrimSpace(part); part == "" {
			continue
		}
		if !strings.Contains(part, "/") {
			ip := net.ParseIP(part)
			if ip == nil {
				return nil, &configError{setting, fmt.Sprintf("%q is not an address or a CIDR range such as 10.0.0.0/8", part)}
			}
			bits := 128
			if ip4 := ip.To4(); ip4 != nil {
				ip, bits = ip4, 32
			}
			out = append(out, &net.IPNet{IP: ip, Mask: net.CIDRMask(bits, bits)})
			continue
		}
		_, n, err := net.ParseCIDR(part)
		if err != nil {
			return nil, &configError{setting, fmt.Sprintf("%q is not an address or a CIDR range such as 10.0.0.0/8", part)}
		}
		out = append(out, n)
	}
	return out, nil
}

func hostPort(setting, v string) (string, error) {
	host, port, err := net.SplitHostPort(v)
	if err != nil {
		return "", &configError{setting, fmt.Sprintf("%q is not host:port", v)}
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return "", &configError{setting, fmt.Sprintf("%q has no valid port", v)}
	}
	_ = host // empty host means all interfaces, which is allowed
	return v, nil
}

func usage(w io.Writer) {
	fmt.Fprint(w, `iotgate: an XMPP component (XEP-0114) that gives IoT devices a REST API.

Usage:
  iotgate [flags]                 run the component and the REST API
  iotgate migrate up              apply all database migrations
  iotgate migrate down N          revert the last N migrations
  iotgate migrate version         print the schema version
  iotgate migrate force V         mark version V as clean after fixing a failed migration by hand
  iotgate token create --name N --scopes S1,S2 [--devices k=v,...] [--expires 720h]
                                  create an API token and print it (shown only once)
  iotgate token list              list API tokens
  iotgate token revoke ID         revoke an API token

Scopes: schemas:read, schemas:write, devices:read, devices:write, commands:send, admin (implies all).

Settings (flag, environment variable, default). Flags override the environment.
`)
	for _, s := range settings {
		name := "--" + s.flag
		if s.secret {
			name = "(env only)"
		}
		def := ""
		if s.def != "" {
			def = " (default " + s.def + ")"
		}
		fmt.Fprintf(w, "  %-20s %-26s %s%s\n", name, s.env, s.help, def)
	}
}

// validInstanceID reports whether id is 1-64 of [A-Za-z0-9._-].
func validInstanceID(id string) bool {
	if len(id) == 0 || len(id) > 64 {
		return false
	}
	for _, r := range id {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return false
		}
	}
	return true
}
