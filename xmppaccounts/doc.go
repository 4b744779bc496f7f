// Package xmppaccounts creates and removes devices' XMPP accounts on the
// XMPP server, through its admin interface: ejabberd's HTTP API
// (mod_http_api) or Prosody's prosodyctl, run beside the server. Both
// implement devices.AccountProvisioner; cmd/iotgate picks one by
// IOTGATE_XMPP_ACCOUNTS. Passwords are never logged nor put in an error.
package xmppaccounts

import (
	"strings"
	"time"

	"github.com/iotgate/iotgate"
	"github.com/iotgate/iotgate/devices"
)

// DefaultTimeout bounds one call to the server's admin interface when a
// config leaves it zero.
const DefaultTimeout = 10 * time.Second

// split returns the local and domain parts of a canonical bare JID.
// Errors: invalid (no local part).
func split(jid string) (local, domain string, err error) {
	local, domain, ok := strings.Cut(jid, "@")
	if !ok || local == "" || domain == "" {
		return "", "", iotgate.Errorf(iotgate.EInvalid, "%s is not an account JID (user@domain)", jid)
	}
	return local, domain, nil
}

// unavailable is the error of an admin interface that can't be reached
// or won't do what iotgate asks; cause is logged, never shown.
func unavailable(msg string, cause error) error {
	return &iotgate.Error{Code: iotgate.EUnavailable, Detail: devices.DetailAccountServerUnavailable, Message: msg, Err: cause}
}
