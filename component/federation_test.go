package component

import "testing"

func TestPingToDefault(t *testing.T) {
	for _, tc := range []struct {
		name, domain, want string
	}{
		{"Subdomain", "iot.example.com", "example.com"},
		{"SingleLabel", "iot", "iot"},
		// An IP literal has no parent domain: "0.0.3" would be
		// routed nowhere and the keepalive would kill the stream.
		{"IPv4Literal", "127.0.0.3", "127.0.0.3"},
		{"IPv6Literal", "::1", "::1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Config{Domain: tc.domain}
			cfg.setDefaults()
			if cfg.PingTo != tc.want {
				t.Errorf("PingTo = %q, want %q", cfg.PingTo, tc.want)
			}
		})
	}
}
