package main

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"strings"
	"testing"
	"time"
)

func TestParseConfig(t *testing.T) {
	base := map[string]string{
		"IOTGATE_DOMAIN":       "iot.example.com",
		"IOTGATE_SECRET":       "s3cret",
		"IOTGATE_DATABASE_URL": "postgres://u@127.0.0.1/db?sslmode=disable",
	}
	with := func(kv ...string) map[string]string {
		m := map[string]string{}
		for k, v := range base {
			m[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	tests := []struct {
		name        string
		env         map[string]string
		args        []string
		wantSetting string // "" means OK
		check       func(t *testing.T, c Config)
	}{
		{name: "OK", env: base, check: func(t *testing.T, c Config) {
			if c.XMPPAddr != "127.0.0.1:5347" || c.HTTPAddr != "127.0.0.1:8080" || c.LogFormat != "text" {
				t.Errorf("defaults wrong: %+v", c)
			}
			if c.MaxStanzaBytes != 2<<20 || c.MaxStanzaDepth != 64 || c.XMPPKeepAlive != 15*time.Second || c.XMPPKeepAliveTimeout != 10*time.Second ||
				c.XMPPKeepAliveSlowTimeout != time.Minute || c.XMPPMaxBackoff != 5*time.Second || c.XMPPConflictBackoff != 2*time.Second || c.InstanceDeadAfter != 10*time.Second {
				t.Errorf("stream defaults wrong: %+v", c)
			}
		}},
		{name: "FlagOverridesEnv", env: base, args: []string{"--http-addr", "127.0.0.1:9999"}, check: func(t *testing.T, c Config) {
			if c.HTTPAddr != "127.0.0.1:9999" {
				t.Errorf("HTTPAddr = %q", c.HTTPAddr)
			}
		}},
		{name: "DomainNormalized", env: with("IOTGATE_DOMAIN", "IoT.Example.COM"), check: func(t *testing.T, c Config) {
			if c.Domain != "iot.example.com" {
				t.Errorf("Domain = %q", c.Domain)
			}
		}},
		{name: "DSN", env: with("IOTGATE_DATABASE_URL", "host=/tmp dbname=x"), check: func(t *testing.T, c Config) {}},
		{name: "ErrMissingDomain", env: with("IOTGATE_DOMAIN", ""), wantSetting: "IOTGATE_DOMAIN"},
		{name: "ErrDomainWithLocalpart", env: with("IOTGATE_DOMAIN", "a@iot.example.com"), wantSetting: "IOTGATE_DOMAIN"},
		{name: "ErrMissingSecret", env: with("IOTGATE_SECRET", ""), wantSetting: "IOTGATE_SECRET"},
		{name: "ErrMissingDatabase", env: with("IOTGATE_DATABASE_URL", ""), wantSetting: "IOTGATE_DATABASE_URL"},
		{name: "ErrDatabaseScheme", env: with("IOTGATE_DATABASE_URL", "mysql://x/y"), wantSetting: "IOTGATE_DATABASE_URL"},
		{name: "ErrXMPPAddr", env: with("IOTGATE_XMPP_ADDR", "localhost"), wantSetting: "IOTGATE_XMPP_ADDR"},
		{name: "ErrHTTPPort", env: with("IOTGATE_HTTP_ADDR", "127.0.0.1:99999"), wantSetting: "IOTGATE_HTTP_ADDR"},
		{name: "ErrLogLevel", env: with("IOTGATE_LOG_LEVEL", "loud"), wantSetting: "IOTGATE_LOG_LEVEL"},
		{name: "TrustedProxies", env: with("IOTGATE_TRUSTED_PROXIES", " 10.0.0.0/8, 192.0.2.7 ,2001:db8::/32,::1"), check: func(t *testing.T, c Config) {
			var got []string
			for _, n := range c.TrustedProxies {
				got = append(got, n.String())
			}
			if strings.Join(got, ",") != "10.0.0.0/8,192.0.2.7/32,2001:db8::/32,::1/128" {
				t.Errorf("TrustedProxies = %v", got)
			}
		}},
		{name: "NoTrustedProxies", env: base, check: func(t *testing.T, c Config) {
			if len(c.TrustedProxies) != 0 {
				t.Errorf("TrustedProxies = %v, want none by default", c.TrustedProxies)
			}
		}},
		{name: "ErrTrustedProxies", env: with("IOTGATE_TRUSTED_PROXIES", "10.0.0.0/8,proxy.local"), wantSetting: "IOTGATE_TRUSTED_PROXIES"},
		{name: "ErrTrustedProxiesMask", env: with("IOTGATE_TRUSTED_PROXIES", "10.0.0.0/33"), wantSetting: "IOTGATE_TRUSTED_PROXIES"},
		{name: "ErrLogFormat", env: with("IOTGATE_LOG_FORMAT", "xml"), wantSetting: "IOTGATE_LOG_FORMAT"},
		{name: "KeepAlive", env: with("IOTGATE_XMPP_KEEPALIVE", "500ms"), check: func(t *testing.T, c Config) {
			if c.XMPPKeepAlive != 500*time.Millisecond {
				t.Errorf("XMPPKeepAlive = %s", c.XMPPKeepAlive)
			}
		}},
		{name: "ErrKeepAlive", env: with("IOTGATE_XMPP_KEEPALIVE", "0s"), wantSetting: "IOTGATE_XMPP_KEEPALIVE"},
		{name: "KeepAliveSlowTimeout", env: with("IOTGATE_XMPP_KEEPALIVE_SLOW_TIMEOUT", "2m"), check: func(t *testing.T, c Config) {
			if c.XMPPKeepAliveSlowTimeout != 2*time.Minute {
				t.Errorf("XMPPKeepAliveSlowTimeout = %s", c.XMPPKeepAliveSlowTimeout)
			}
		}},
		{name: "ErrKeepAliveSlowTimeout", env: with("IOTGATE_XMPP_KEEPALIVE_SLOW_TIMEOUT", "-1s"), wantSetting: "IOTGATE_XMPP_KEEPALIVE_SLOW_TIMEOUT"},
		{name: "ErrConflictBackoff", env: with("IOTGATE_XMPP_CONFLICT_BACKOFF", "soon"), wantSetting: "IOTGATE_XMPP_CONFLICT_BACKOFF"},
		{name: "InstanceDeadAfter", env: with("IOTGATE_INSTANCE_DEAD_AFTER", "30s"), check: func(t *testing.T, c Config) {
			if c.InstanceDeadAfter != 30*time.Second {
				t.Errorf("InstanceDeadAfter = %s", c.InstanceDeadAfter)
			}
		}},
		{name: "ErrInstanceDeadAfter", env: with("IOTGATE_INSTANCE_DEAD_AFTER", "100ms"), wantSetting: "IOTGATE_INSTANCE_DEAD_AFTER"},
		{name: "ErrStanzaDepth", env: with("IOTGATE_MAX_STANZA_DEPTH", "0"), wantSetting: "IOTGATE_MAX_STANZA_DEPTH"},
		{name: "ErrShutdownTimeout", env: with("IOTGATE_SHUTDOWN_TIMEOUT", "soon"), wantSetting: "IOTGATE_SHUTDOWN_TIMEOUT"},
		{name: "ErrReadingBytes", env: with("IOTGATE_MAX_READING_BYTES", "0"), wantSetting: "IOTGATE_MAX_READING_BYTES"},
		{name: "DiscoItemsJIDs", env: with("IOTGATE_DISCO_ITEMS_JIDS", " Ops@Example.com, trusted.example.com ,"), check: func(t *testing.T, c Config) {
			if strings.Join(c.DiscoItemsJIDs, " ") != "ops@example.com trusted.example.com" || c.DiscoMaxItems != 100 {
				t.Errorf("DiscoItemsJIDs = %q, DiscoMaxItems = %d", c.DiscoItemsJIDs, c.DiscoMaxItems)
			}
		}},
		{name: "ErrDiscoItemsJIDWithResource", env: with("IOTGATE_DISCO_ITEMS_JIDS", "ops@example.com/phone"), wantSetting: "IOTGATE_DISCO_ITEMS_JIDS"},
		{name: "ErrDiscoMaxItems", env: with("IOTGATE_DISCO_MAX_ITEMS", "1001"), wantSetting: "IOTGATE_DISCO_MAX_ITEMS"},
		{name: "ErrReadingDepth", env: with("IOTGATE_MAX_READING_DEPTH", "1000"), wantSetting: "IOTGATE_MAX_READING_DEPTH"},
		{name: "ErrPatternValue", env: with("IOTGATE_MAX_PATTERN_VALUE", "0"), wantSetting: "IOTGATE_MAX_PATTERN_VALUE"},
		{name: "CORSOrigins", env: with("IOTGATE_CORS_ORIGINS", "https://a.example.com, http://localhost:3000"), check: func(t *testing.T, c Config) {
			if len(c.CORSOrigins) != 2 || c.CORSOrigins[1] != "http://localhost:3000" {
				t.Errorf("CORSOrigins = %q", c.CORSOrigins)
			}
		}},
		{name: "ErrCORSOrigin", env: with("IOTGATE_CORS_ORIGINS", "app.example.com/path"), wantSetting: "IOTGATE_CORS_ORIGINS"},
		{name: "AdminTokenAndRate", env: with("IOTGATE_ADMIN_TOKEN", strings.Repeat("x", 32), "IOTGATE_API_RATE", "0"), check: func(t *testing.T, c Config) {
			if c.AdminToken != strings.Repeat("x", 32) || c.APIRate != 0 || c.APIBurst != 100 {
				t.Errorf("AdminToken %d chars, APIRate %d, APIBurst %d", len(c.AdminToken), c.APIRate, c.APIBurst)
			}
		}},
		{name: "APIRateDefault", env: base, check: func(t *testing.T, c Config) {
			if c.AdminToken != "" || c.APIRate != 50 || c.APIBurst != 100 {
				t.Errorf("AdminToken %q, APIRate %d, APIBurst %d", c.AdminToken, c.APIRate, c.APIBurst)
			}
		}},
		{name: "EventDefaults", env: base, check: func(t *testing.T, c Config) {
			if c.EventRetention != 24*time.Hour || c.EventKeepAlive != 15*time.Second || c.EventBacklog != 10000 ||
				c.WebhookAllowPrivate || c.WebhookRetryLimit != 24*time.Hour || c.WebhookBatch != 100 {
				t.Errorf("event settings %+v", c)
			}
		}},
		{name: "EventRetention", env: with("IOTGATE_EVENT_RETENTION", "72h", "IOTGATE_WEBHOOK_ALLOW_PRIVATE", "1"), check: func(t *testing.T, c Config) {
			if c.EventRetention != 72*time.Hour || !c.WebhookAllowPrivate {
				t.Errorf("EventRetention %s, WebhookAllowPrivate %v", c.EventRetention, c.WebhookAllowPrivate)
			}
		}},
		{name: "ErrEventRetention", env: with("IOTGATE_EVENT_RETENTION", "0s"), wantSetting: "IOTGATE_EVENT_RETENTION"},
		{name: "ErrWebhookAllowPrivate", env: with("IOTGATE_WEBHOOK_ALLOW_PRIVATE", "yes"), wantSetting: "IOTGATE_WEBHOOK_ALLOW_PRIVATE"},
		{name: "ConsoleOnByDefault", env: base, check: func(t *testing.T, c Config) {
			if !c.Console {
				t.Error("Console off by default, want on")
			}
		}},
		{name: "ConsoleOff", env: with("IOTGATE_CONSOLE", "0"), check: func(t *testing.T, c Config) {
			if c.Console {
				t.Error("Console on with IOTGATE_CONSOLE=0")
			}
		}},
		{name: "ConsoleOffByFlag", env: base, args: []string{"--console=0"}, check: func(t *testing.T, c Config) {
			if c.Console {
				t.Error("Console on with --console=0")
			}
		}},
		{name: "ErrConsole", env: with("IOTGATE_CONSOLE", "yes"), wantSetting: "IOTGATE_CONSOLE"},
		{name: "ErrEventBacklog", env: with("IOTGATE_EVENT_BACKLOG", "0"), wantSetting: "IOTGATE_EVENT_BACKLOG"},
		{name: "DeviceDomainsDefaultAny", env: base, check: func(t *testing.T, c Config) {
			if !c.DeviceDomains.Any() {
				t.Errorf("DeviceDomains = %s, want any", c.DeviceDomains)
			}
		}},
		{name: "DeviceDomains", env: with("IOTGATE_DEVICE_DOMAINS", " Example.com, ,127.0.0.3 "), check: func(t *testing.T, c Config) {
			if got := c.DeviceDomains.String(); got != "127.0.0.3,example.com" {
				t.Errorf("DeviceDomains = %s", got)
			}
		}},
		{name: "DeviceDomainsFlag", env: base, args: []string{"--device-domains", "a.example"}, check: func(t *testing.T, c Config) {
			if got := c.DeviceDomains.String(); got != "a.example" {
				t.Errorf("DeviceDomains = %s", got)
			}
		}},
		{name: "ErrDeviceDomainsJID", env: with("IOTGATE_DEVICE_DOMAINS", "dev@example.com"), wantSetting: "IOTGATE_DEVICE_DOMAINS"},
		{name: "AccountsOff", env: base, check: func(t *testing.T, c Config) {
			if c.XMPPAccounts != "" || c.XMPPAccountsTimeout != 10*time.Second || c.Prosodyctl != "prosodyctl" || accountProvisioner(c) != nil {
				t.Errorf("XMPPAccounts %q, timeout %s, prosodyctl %q", c.XMPPAccounts, c.XMPPAccountsTimeout, c.Prosodyctl)
			}
		}},
		{name: "AccountsEjabberd", env: with("IOTGATE_XMPP_ACCOUNTS", "ejabberd", "IOTGATE_EJABBERD_API_URL", "http://127.0.0.1:5280/api",
			"IOTGATE_EJABBERD_API_USER", "admin@example.com", "IOTGATE_EJABBERD_API_PASSWORD", " pw "), check: func(t *testing.T, c Config) {
			if c.XMPPAccounts != "ejabberd" || c.EjabberdAPIURL != "http://127.0.0.1:5280/api" || c.EjabberdAPIUser != "admin@example.com" || c.EjabberdAPIPassword != " pw " || accountProvisioner(c) == nil {
				t.Errorf("config %+v", c)
			}
		}},
		{name: "AccountsProsody", env: with("IOTGATE_XMPP_ACCOUNTS", "prosody", "IOTGATE_PROSODYCTL", "sudo -n -u prosody prosodyctl", "IOTGATE_XMPP_ACCOUNTS_TIMEOUT", "3s"), check: func(t *testing.T, c Config) {
			if c.XMPPAccounts != "prosody" || c.Prosodyctl != "sudo -n -u prosody prosodyctl" || c.XMPPAccountsTimeout != 3*time.Second || accountProvisioner(c) == nil {
				t.Errorf("config %+v", c)
			}
		}},
		{name: "ErrAccountsKind", env: with("IOTGATE_XMPP_ACCOUNTS", "openfire"), wantSetting: "IOTGATE_XMPP_ACCOUNTS"},
		{name: "ErrAccountsEjabberdNoURL", env: with("IOTGATE_XMPP_ACCOUNTS", "ejabberd"), wantSetting: "IOTGATE_EJABBERD_API_URL"},
		{name: "ErrAccountsEjabberdURLCredentials", env: with("IOTGATE_XMPP_ACCOUNTS", "ejabberd", "IOTGATE_EJABBERD_API_URL", "http://a:b@127.0.0.1/api"), wantSetting: "IOTGATE_EJABBERD_API_URL"},
		{name: "ErrAccountsEjabberdUserNoPassword", env: with("IOTGATE_XMPP_ACCOUNTS", "ejabberd", "IOTGATE_EJABBERD_API_URL", "http://127.0.0.1/api", "IOTGATE_EJABBERD_API_USER", "admin@example.com"), wantSetting: "IOTGATE_EJABBERD_API_PASSWORD"},
		{name: "ErrAccountsEjabberdTokenAndUser", env: with("IOTGATE_XMPP_ACCOUNTS", "ejabberd", "IOTGATE_EJABBERD_API_URL", "http://127.0.0.1/api", "IOTGATE_EJABBERD_API_USER", "admin@example.com", "IOTGATE_EJABBERD_API_PASSWORD", "pw", "IOTGATE_EJABBERD_API_TOKEN", "tok"), wantSetting: "IOTGATE_EJABBERD_API_TOKEN"},
		{name: "ErrAccountsTimeout", env: with("IOTGATE_XMPP_ACCOUNTS_TIMEOUT", "0s"), wantSetting: "IOTGATE_XMPP_ACCOUNTS_TIMEOUT"},
		{name: "ErrAdminTokenShort", env: with("IOTGATE_ADMIN_TOKEN", "short"), wantSetting: "IOTGATE_ADMIN_TOKEN"},
		{name: "ErrAPIRate", env: with("IOTGATE_API_RATE", "-1"), wantSetting: "IOTGATE_API_RATE"},
		{name: "GCDefaults", env: base, check: func(t *testing.T, c Config) {
			if c.GCPercent != 400 || c.MemoryLimit != 1<<30 {
				t.Errorf("GCPercent, MemoryLimit = %d, %d; want 400, %d", c.GCPercent, c.MemoryLimit, 1<<30)
			}
		}},
		{name: "GCSet", env: with("IOTGATE_GC_PERCENT", "100", "IOTGATE_MEMORY_LIMIT", "0"), check: func(t *testing.T, c Config) {
			if c.GCPercent != 100 || c.MemoryLimit != 0 {
				t.Errorf("GCPercent, MemoryLimit = %d, %d; want 100, 0", c.GCPercent, c.MemoryLimit)
			}
		}},
		{name: "ErrGCPercent", env: with("IOTGATE_GC_PERCENT", "10"), wantSetting: "IOTGATE_GC_PERCENT"},
		{name: "ErrGCPercentOff", env: with("IOTGATE_GC_PERCENT", "off"), wantSetting: "IOTGATE_GC_PERCENT"},
		{name: "ErrMemoryLimitSmall", env: with("IOTGATE_MEMORY_LIMIT", "1048576"), wantSetting: "IOTGATE_MEMORY_LIMIT"},
		{name: "ErrMemoryLimitUnit", env: with("IOTGATE_MEMORY_LIMIT", "1GiB"), wantSetting: "IOTGATE_MEMORY_LIMIT"},
		{name: "SchemaLimits", env: with("IOTGATE_SCHEMA_WRITE_RATE", "0", "IOTGATE_SCHEMA_CACHE_SIZE", "50"), check: func(t *testing.T, c Config) {
			if c.SchemaWriteRate != 0 || c.SchemaCacheSize != 50 || c.MaxSchemaVersions != 10000 || c.MaxSchemaVersionsPerToken != 1000 {
				t.Errorf("SchemaWriteRate %d, SchemaCacheSize %d, MaxSchemaVersions %d, MaxSchemaVersionsPerToken %d",
					c.SchemaWriteRate, c.SchemaCacheSize, c.MaxSchemaVersions, c.MaxSchemaVersionsPerToken)
			}
		}},
		{name: "ErrSchemaWriteRate", env: with("IOTGATE_SCHEMA_WRITE_RATE", "-1"), wantSetting: "IOTGATE_SCHEMA_WRITE_RATE"},
		{name: "ErrMaxSchemaVersions", env: with("IOTGATE_MAX_SCHEMA_VERSIONS", "0"), wantSetting: "IOTGATE_MAX_SCHEMA_VERSIONS"},
		{name: "ErrAPIBurst", env: with("IOTGATE_API_BURST", "many"), wantSetting: "IOTGATE_API_BURST"},
		{name: "ErrAdminTokenFlagDoesNotExist", env: base, args: []string{"--admin-token", strings.Repeat("x", 32)}, wantSetting: "arguments"},
		{name: "InstanceIDDefault", env: base, check: func(t *testing.T, c Config) {
			if h, _ := os.Hostname(); c.InstanceID != h {
				t.Errorf("InstanceID = %q, want the host name %q", c.InstanceID, h)
			}
		}},
		{name: "InstanceID", env: with("IOTGATE_INSTANCE_ID", "gw-1.eu_west"), check: func(t *testing.T, c Config) {
			if c.InstanceID != "gw-1.eu_west" {
				t.Errorf("InstanceID = %q", c.InstanceID)
			}
		}},
		{name: "InstanceIDLongest", env: with("IOTGATE_INSTANCE_ID", strings.Repeat("a", 64)), check: func(t *testing.T, c Config) {}},
		{name: "ErrInstanceIDTooLong", env: with("IOTGATE_INSTANCE_ID", strings.Repeat("a", 65)), wantSetting: "IOTGATE_INSTANCE_ID"},
		{name: "ErrInstanceIDChars", env: with("IOTGATE_INSTANCE_ID", "gw 1"), wantSetting: "IOTGATE_INSTANCE_ID"},
		{name: "ErrInstanceIDSlash", env: base, args: []string{"--instance-id", "a/b"}, wantSetting: "IOTGATE_INSTANCE_ID"},
		{name: "ErrUnknownFlag", env: base, args: []string{"--nope"}, wantSetting: "arguments"},
		{name: "ErrSecretFlagDoesNotExist", env: base, args: []string{"--secret", "x"}, wantSetting: "arguments"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, _, err := parseConfig(tt.args, func(k string) string { return tt.env[k] }, &bytes.Buffer{})
			if tt.wantSetting == "" {
				if err != nil {
					t.Fatal(err)
				}
				tt.check(t, cfg)
				return
			}
			var ce *configError
			if !errors.As(err, &ce) || ce.setting != tt.wantSetting {
				t.Fatalf("err = %v, want a config error naming %s", err, tt.wantSetting)
			}
		})
	}
}

func TestHelpListsEverySetting(t *testing.T) {
	var out bytes.Buffer
	_, _, err := parseConfig([]string{"--help"}, func(string) string { return "" }, &out)
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("err = %v, want flag.ErrHelp", err)
	}
	for _, s := range settings {
		if !strings.Contains(out.String(), s.env) {
			t.Errorf("--help does not mention %s", s.env)
		}
	}
}
