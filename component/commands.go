package component

import (
	"context"

	"mellium.im/xmpp/stanza"

	"github.com/iotgate/iotgate"
	"github.com/iotgate/iotgate/devices"
)

// The component delivers commands to devices.
var _ devices.CommandSender = (*Conn)(nil)

// SendCommand sends payload, one XML element, to the full JID `to` in an IQ
// of type iqType ("get" or "set") and waits for the device's answer: a
// result (its first child element as payload) or an error (its stanza
// error). The reply counts only if it comes from `to` (see SendIQ).
//
// The element is re-serialized from its tokens (AppendCleanElement), never
// copied: an XML declaration, comments and processing instructions are
// dropped, so no payload, even one stored before the API refused such
// things, can make the server close the stream. Errors: invalid (not
// exactly one element, a DOCTYPE, bad iqType), unavailable (detail
// xmpp_unavailable) when the stream is down or drops before the answer,
// timeout when ctx ends first, too_many_requests when MaxPendingIQs are
// already waiting.
func (c *Conn) SendCommand(ctx context.Context, to, iqType, id string, payload []byte) (iotgate.CommandReply, error) {
	if iqType != TypeGet && iqType != TypeSet {
		return iotgate.CommandReply{}, iotgate.Errorf(iotgate.EInvalid, "a command is an IQ get or set, not %q", iqType)
	}
	inner, err := AppendCleanElement(make([]byte, 0, len(payload)+32), payload)
	if err != nil {
		return iotgate.CommandReply{}, err
	}
	rep, err := c.SendIQ(ctx, &Stanza{Kind: KindIQ, Type: iqType, ID: id, To: to, Inner: inner})
	if err != nil {
		return iotgate.CommandReply{}, err
	}
	return CommandReply(rep), nil
}

// CommandReply turns an IQ result or error into a command's reply.
func CommandReply(rep *Stanza) iotgate.CommandReply {
	if rep.Type == TypeError {
		out := iotgate.CommandReply{Type: TypeError}
		if se, ok := rep.StanzaError(); ok {
			out.Error = &iotgate.XMPPError{Type: string(se.Type), Condition: string(se.Condition), Text: ErrorText(se)}
		} else {
			out.Error = &iotgate.XMPPError{Type: string(stanza.Cancel), Condition: string(stanza.UndefinedCondition), Text: "the error reply carried no valid <error/> element"}
		}
		return out
	}
	out := iotgate.CommandReply{Type: TypeResult}
	if el, ok := rep.FirstChild(); ok {
		out.Payload, out.Namespace = el.Raw, el.Name.Space
	}
	return out
}

// CommandAnswers records answers to commands that another instance sent;
// devices.Commands implements it.
type CommandAnswers interface {
	ForeignAnswer(from, iqID string, rep iotgate.CommandReply)
}

// ForwardStrayAnswers hands every IQ reply no IQ of c waits for to a, as
// the answer to a command another instance may have sent. Each costs the
// receiver a lookup, so a device making them up is held to
// strayRate a second (strayBurst at once), as its readings are to theirs.
func (c *Conn) ForwardStrayAnswers(a CommandAnswers) {
	lim := newLimiter(strayRate, strayBurst)
	c.OnStrayReply(func(st *Stanza) {
		bare, err := st.bareFrom()
		if err != nil || !lim.allow(bare) {
			c.log.Debug("stray IQ reply dropped: its sender sends too many", "from", st.From)
			return
		}
		a.ForeignAnswer(st.From, st.ID, CommandReply(st))
	})
}

// A device answers the commands sent to it: a few a second at most, and a
// burst after its queue is delivered.
const (
	strayRate  = 50.0
	strayBurst = 200.0
)
