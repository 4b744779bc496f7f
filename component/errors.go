package component

import (
	"errors"

	"mellium.im/xmpp/stanza"

	"github.com/iotgate/iotgate"
)

// stanzaErrors maps domain error codes to the stanza error a device is told.
// This table is the one place where iotgate's errors become XMPP errors.
var stanzaErrors = map[string]struct {
	typ  stanza.ErrorType
	cond stanza.Condition
}{
	iotgate.ENotFound:     {stanza.Cancel, stanza.ItemNotFound},
	iotgate.EConflict:     {stanza.Cancel, stanza.Conflict},
	iotgate.EInvalid:      {stanza.Modify, stanza.BadRequest},
	iotgate.EUnauthorized: {stanza.Auth, stanza.NotAuthorized},
	iotgate.EForbidden:    {stanza.Auth, stanza.Forbidden},
	iotgate.EUnavailable:  {stanza.Wait, stanza.ServiceUnavailable},
	iotgate.ETimeout:      {stanza.Wait, stanza.RemoteServerTimeout},
	iotgate.ETooMany:      {stanza.Wait, stanza.PolicyViolation},
	iotgate.EInternal:     {stanza.Wait, stanza.InternalServerError},

	// XMPP has no "unprocessable": a device fixes a reading its schema
	// refuses the same way as a malformed one.
	iotgate.EUnprocessable: {stanza.Modify, stanza.BadRequest},

	// Another entity (a device) refused what iotgate relayed; XMPP has no
	// closer condition for "the one behind me said no".
	iotgate.EBadGateway: {stanza.Cancel, stanza.UndefinedCondition},
}

// detailErrors overrides the table for specific details.
var detailErrors = map[string]struct {
	typ  stanza.ErrorType
	cond stanza.Condition
}{
	iotgate.DetailDeviceNotRegistered: {stanza.Auth, stanza.RegistrationRequired},
	// RFC 6120 8.4: a namespace the entity does not serve; cancel, as
	// retrying will not help.
	iotgate.DetailNamespaceNotServed: {stanza.Cancel, stanza.ServiceUnavailable},
	// Permanent: the operator does not serve the sender's domain.
	iotgate.DetailDeviceDomainNotAllowed: {stanza.Cancel, stanza.NotAllowed},
}

// ErrorReplyFor returns the error stanza that answers st for err, with a
// <text/> safe to show the sender (internal details are never shown).
func ErrorReplyFor(st *Stanza, err error) *Stanza {
	typ, cond := StanzaCondition(err)
	return st.ErrorReply(typ, cond, iotgate.ErrorMessage(err))
}

// StanzaCondition returns the stanza error type and condition for err.
func StanzaCondition(err error) (stanza.ErrorType, stanza.Condition) {
	var e *iotgate.Error
	if errors.As(err, &e) {
		if m, ok := detailErrors[e.Detail]; ok {
			return m.typ, m.cond
		}
	}
	m, ok := stanzaErrors[iotgate.ErrorCode(err)]
	if !ok {
		m = stanzaErrors[iotgate.EInternal]
	}
	return m.typ, m.cond
}
