package servers

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
)

// ProsodyModulesVersion is the Debian version of the prosody-modules
// package whose mod_rest XMPPOptions.ModRest loads. Debian 12's package
// (0.0~hg20230223) has no mod_rest; trixie's has one that works with
// Prosody 0.12 (it says "Requires Prosody trunk / 0.12"). scripts/deps.sh
// fetches that one .deb, checks its SHA256 and extracts mod_rest only: the
// package as a whole wants Prosody 13, so it is never installed.
const ProsodyModulesVersion = "0.0~hg20250402.f315edc39f3d+dfsg-2"

// modRestUser is the account mod_rest's requests are sent from, on the
// VirtualHost "rest."+Domain.
const modRestUser = "bench"

// ProsodyModulesDir returns the directory scripts/deps.sh extracts
// trixie's prosody-modules into (the mod_rest directory sits in it):
// $XDG_CACHE_HOME/iotgate/prosody-modules-VERSION, or ~/.cache/... .
func ProsodyModulesDir() (string, error) {
	cache, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("prosody modules: %w", err)
	}
	return filepath.Join(cache, "iotgate", "prosody-modules-"+ProsodyModulesVersion), nil
}

// copyModRest copies mod_rest from ProsodyModulesDir into dir/mod_rest,
// inside the instance directory: the service user Prosody runs as may not
// reach the cache (root's home is private).
func copyModRest(dir string) error {
	mods, err := ProsodyModulesDir()
	if err != nil {
		return err
	}
	src := filepath.Join(mods, "mod_rest")
	if _, err := os.Stat(filepath.Join(src, "mod_rest.lua")); err != nil {
		return fmt.Errorf("prosody: mod_rest not found (run scripts/deps.sh, which fetches it): %w", err)
	}
	return os.CopyFS(filepath.Join(dir, "mod_rest"), os.DirFS(src))
}

// modRestHost returns the VirtualHost mod_rest runs on, for domain.
func modRestHost(domain string) (string, error) {
	if net.ParseIP(domain) != nil {
		return "", errors.New("prosody: ModRest needs a domain name, not an IP literal")
	}
	return "rest." + domain, nil
}

// ModRestURL returns the URL to POST stanzas to (XMPPOptions.ModRest), or
// "" if mod_rest is not loaded.
func (p *Prosody) ModRestURL() string {
	if p.restHost == "" {
		return ""
	}
	return fmt.Sprintf("http://%s/rest", addr(p.httpPort))
}

// ModRestUser returns the bare JID requests to ModRestURL are sent from and
// its password, for HTTP Basic auth (the user part is the username), or
// empty strings if mod_rest is not loaded.
func (p *Prosody) ModRestUser() (user, jid, password string) {
	if p.restHost == "" {
		return "", "", ""
	}
	return modRestUser, modRestUser + "@" + p.restHost, p.restPass
}
