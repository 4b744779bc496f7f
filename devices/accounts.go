package devices

import (
	"context"
	"crypto/rand"
	"fmt"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/iotgate/iotgate"
)

// AccountProvisioner creates and removes devices' XMPP accounts on the
// XMPP server, for registrations that ask for one (ServiceConfig.Accounts).
type AccountProvisioner interface {
	// CreateAccount creates the account jid (a canonical bare JID) with
	// password. Errors: conflict (detail account_exists), invalid (a JID
	// the server can't take), unavailable (the server can't be reached
	// or refused iotgate's credential), timeout.
	CreateAccount(ctx context.Context, jid, password string) error
	// DeleteAccount removes the account jid; one that does not exist is
	// not an error. Errors: unavailable, timeout.
	DeleteAccount(ctx context.Context, jid string) error
}

// Detail codes of account provisioning, shown to clients instead of the
// error code.
const (
	// DetailAccountsUnavailable: no AccountProvisioner is configured.
	DetailAccountsUnavailable = "accounts_unavailable"
	// DetailAccountExists: the XMPP account already exists.
	DetailAccountExists = "account_exists"
	// DetailAccountServerUnavailable: the XMPP server's admin interface
	// can't be reached, timed out, or refused iotgate's credential.
	DetailAccountServerUnavailable = "account_server_unavailable"
)

// Password bounds: a generated password has GeneratedPasswordLen
// characters (crypto/rand, 130 bits); one given by the client has
// MinPasswordLen to MaxPasswordLen bytes of printable UTF-8.
const (
	GeneratedPasswordLen = 26
	MinPasswordLen       = 12
	MaxPasswordLen       = 128
)

// accountCleanupTimeout bounds the removal of an account whose device
// could not be registered: it runs after the request's context may be
// done.
const accountCleanupTimeout = 10 * time.Second

// ValidatePassword checks a password given by a client for a device's
// account. Errors: invalid.
func ValidatePassword(p string) error {
	if len(p) < MinPasswordLen || len(p) > MaxPasswordLen {
		return iotgate.Errorf(iotgate.EInvalid, "account password must be %d to %d bytes long", MinPasswordLen, MaxPasswordLen)
	}
	if !utf8.ValidString(p) {
		return iotgate.Errorf(iotgate.EInvalid, "account password is not valid UTF-8")
	}
	for _, r := range p {
		// Control characters would end the password early on the
		// admin interfaces that read it as a line (prosodyctl).
		if unicode.IsControl(r) || !unicode.IsPrint(r) && r != ' ' {
			return iotgate.Errorf(iotgate.EInvalid, "account password has a control or unprintable character")
		}
	}
	return nil
}

// RegisterWithAccount registers d like Register and creates its XMPP
// account first, with password or, if it is "", a generated one, which it
// returns (the only time it is shown: it is stored nowhere). If the
// registration fails, the account is removed again. Errors: those of
// Register; invalid (bad password); unprocessable (detail
// accounts_unavailable: not configured); conflict (detail account_exists);
// unavailable (detail account_server_unavailable); timeout.
func (s *Service) RegisterWithAccount(ctx context.Context, d *iotgate.Device, password string) (*iotgate.Device, string, error) {
	if s.cfg.Accounts == nil {
		return nil, "", &iotgate.Error{Code: iotgate.EUnprocessable, Detail: DetailAccountsUnavailable,
			Message: "this iotgate does not create XMPP accounts (IOTGATE_XMPP_ACCOUNTS is not set)"}
	}
	if password == "" {
		password = rand.Text()
	} else if err := ValidatePassword(password); err != nil {
		return nil, "", err
	}
	// Everything Register would refuse is refused before the account
	// exists: no account is created for a device that can't be.
	if err := s.prepare(ctx, d); err != nil {
		return nil, "", err
	}
	if old, err := s.lookup(ctx, d.JID); err != nil {
		return nil, "", err
	} else if old != nil {
		return nil, "", iotgate.Errorf(iotgate.EConflict, "device %s is already registered", d.JID)
	}
	if err := s.cfg.Accounts.CreateAccount(ctx, d.JID, password); err != nil {
		return nil, "", fmt.Errorf("create account: %w", err)
	}
	out, err := s.Register(ctx, d)
	if err != nil {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), accountCleanupTimeout)
		defer cancel()
		if derr := s.cfg.Accounts.DeleteAccount(cctx, d.JID); derr != nil {
			s.log.Error("account created for a device whose registration failed is left on the XMPP server",
				"jid", d.JID, "register_err", err, "err", derr)
		} else {
			s.log.Info("account removed again: the device's registration failed", "jid", d.JID, "register_err", err)
		}
		return nil, "", err
	}
	return out, password, nil
}

// DeleteWithAccount removes a registered device like Delete and its XMPP
// account before it: should the device's removal fail, asking again
// finishes the job (removing an absent account is no error). Errors:
// those of Delete; unprocessable (detail accounts_unavailable);
// unavailable (detail account_server_unavailable); timeout.
func (s *Service) DeleteWithAccount(ctx context.Context, jid string) error {
	if s.cfg.Accounts == nil {
		return &iotgate.Error{Code: iotgate.EUnprocessable, Detail: DetailAccountsUnavailable,
			Message: "this iotgate does not remove XMPP accounts (IOTGATE_XMPP_ACCOUNTS is not set)"}
	}
	// Only a registered device's account: never any account on the
	// server.
	d, err := s.device(ctx, jid)
	if err != nil {
		return err
	}
	if err := s.cfg.Accounts.DeleteAccount(ctx, d.JID); err != nil {
		return fmt.Errorf("delete account: %w", err)
	}
	return s.Delete(ctx, d.JID)
}
