-- Prosody for iotgate's docker-compose.yml: a development setup, not a
-- production one (no TLS certificates, plain-text client authentication).
--
-- Settings come from the environment (ENV_NAME reads $NAME):
--   XMPP_DOMAIN      the devices' domain (default example.com)
--   IOTGATE_DOMAIN   the component's domain (default iot.example.com)
--   IOTGATE_SECRET   the XEP-0114 component secret (required)

local xmpp_domain = ENV_XMPP_DOMAIN or "example.com"
local component_domain = ENV_IOTGATE_DOMAIN or "iot.example.com"
-- Not named component_secret: a local of that name would shadow the option.
local secret = ENV_IOTGATE_SECRET
if not secret or secret == "" then
	error("IOTGATE_SECRET must be set")
end

-- Log to the console: the container's log. (Prosody 0.12 runs in the
-- foreground unless told to daemonize.)
log = { { levels = { min = "info" }, to = "console" } }

admins = {}
modules_enabled = {
	"roster"; "saslauth"; "tls"; "dialback"; "disco";
	"carbons"; "pep"; "private"; "vcard4"; "version"; "uptime"; "time"; "ping";
}
modules_disabled = {}

allow_registration = false
authentication = "internal_hashed"
storage = "internal"
data_path = "/var/lib/prosody"
certificates = "/etc/prosody/certs"

-- Development only: devices may log in without TLS.
c2s_require_encryption = false
allow_unencrypted_plain_auth = true
s2s_require_encryption = false

-- The component port (XEP-0114), reachable from the iotgate container.
component_ports = { 5347 }
component_interfaces = { "*" }

VirtualHost (xmpp_domain)

-- iotgate connects here as an external component.
Component (component_domain)
	component_secret = secret
