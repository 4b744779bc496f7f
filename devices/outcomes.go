package devices

import "github.com/iotgate/iotgate"

// The outcomes of a command: the reasons recorded on it, and the table
// from what happened on the way to the device to its error code.

// Reasons recorded on commands.
const (
	reasonRestarted = "iotgate restarted before the device answered"
	reasonShutdown  = "iotgate shut down before the device answered"
	reasonExpired   = "not delivered before it expired"
	reasonCanceled  = "canceled by request"
)

// offlineConditions are the stanza errors with which a server bounces an
// IQ to an unavailable resource (RFC 6120 §8.5.3.2.1, §10.5.3.1).
var offlineConditions = map[string]bool{"service-unavailable": true, "recipient-unavailable": true}

// notSent maps the error with which SendCommand failed to the command's
// error code and reason, and says whether a queued command may wait for
// another turn instead (it was never sent).
func (s *Commands) notSent(c *iotgate.Command, err error) (code, reason string, requeue bool) {
	code, reason = iotgate.EInternal, "the command could not be sent"
	switch {
	case s.ctx.Err() != nil:
		code, reason = iotgate.DetailRestarted, reasonShutdown
	case iotgate.ErrorCode(err) == iotgate.EUnavailable:
		code, reason = iotgate.DetailXMPPUnavailable, iotgate.ErrorMessage(err)
	case iotgate.ErrorCode(err) == iotgate.ETooMany:
		// Never sent: a queued command can wait for its turn.
		code, reason, requeue = iotgate.ETooMany, iotgate.ErrorMessage(err), true
	case iotgate.ErrorCode(err) == iotgate.ETimeout:
		code, reason = iotgate.ETimeout, iotgate.ErrorMessage(err)
	case iotgate.ErrorCode(err) == iotgate.EInvalid:
		reason = "the command could not be sent: " + iotgate.ErrorMessage(err)
	default:
		s.log.Error("command not sent", "command", c.ID, "err", err)
	}
	return code, reason, requeue
}
