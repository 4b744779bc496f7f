package component

import (
	"context"
	"fmt"

	"mellium.im/xmpp/stanza"

	"github.com/iotgate/iotgate"
)

// DefaultMaxStanzaBytes is the default Config.MaxStanzaBytes: what a server
// with default settings can forward to a component. Prosody (0.12) and
// ejabberd (as packaged) let clients send stanzas of up to 256 KiB
// (c2s_stanza_size_limit, max_stanza_size), and neither limits what it sends
// on the component listener (Prosody's component_stanza_size_limit applies
// to what the component sends it). Servers re-serialize what they forward:
// Prosody escapes ' and " in text as &apos; and &quot;, so 256 KiB of
// apostrophes arrive as 1.5 MiB. 2 MiB is that, plus room for the stanza's
// own markup.
const DefaultMaxStanzaBytes = 2 << 20

// OversizeHandler is implemented by a Handler that wants to know of the
// stanzas skipped for exceeding Config.MaxStanzaBytes or MaxStanzaDepth: a
// message or an IQ get or set, whose sender has been answered already.
type OversizeHandler interface {
	// HandleOversize is called on the read loop with the stanza's
	// attributes (no payload) and the reason given to its sender. It must
	// not block.
	HandleOversize(ctx context.Context, st *Stanza, reason string)
}

// Oversize returns how many incoming stanzas were skipped for exceeding
// MaxStanzaBytes or MaxStanzaDepth.
func (c *Conn) Oversize() uint64 { return c.oversize.Load() }

// skipped deals with a stanza the framer skipped: it tells the sender why
// (an IQ get or set gets an error; a message an error message, at most a few
// per sender per second; an error or a result is never answered), and an
// answer to one of our IQs fails its waiter at once.
func (c *Conn) skipped(ctx context.Context, sess *session, e *skippedError) {
	c.oversize.Add(1)
	reason := fmt.Sprintf("stanza too large: the limit is %d bytes", c.cfg.MaxStanzaBytes)
	if e.deep {
		reason = fmt.Sprintf("stanza nested too deeply: the limit is %d levels", c.cfg.MaxStanzaDepth)
	}
	st := e.st
	if st == nil {
		c.log.Warn("skipped an element over the limit; not even its start tag was kept", "bytes", e.size, "reason", reason)
		return
	}
	c.log.Warn("skipped a stanza over the limit", "kind", st.Kind, "type", st.Type, "from", st.From, "bytes", e.size, "reason", reason)
	switch {
	case st.Kind == KindIQ && (st.Type == TypeResult || st.Type == TypeError):
		// Waiting for the IQ timeout would hide why it failed.
		c.deliverReply(sess, &Stanza{Kind: KindIQ, Type: TypeError, ID: st.ID, From: st.From, To: st.To,
			Inner: AppendStanzaError(nil, stanza.Modify, stanza.PolicyViolation, "iotgate discarded the answer: "+reason)})
		return
	case st.Kind == KindIQ && (st.Type == TypeGet || st.Type == TypeSet):
		c.reply(sess, st.ErrorReply(stanza.Modify, stanza.PolicyViolation, reason))
	case st.Kind == KindMessage && st.Type != TypeError:
		// Rate-limited: big messages from many senders must not turn
		// iotgate into a flood of errors.
		if bare, err := st.bareFrom(); err == nil && c.skipErrors.allow(bare) {
			c.reply(sess, st.ErrorReply(stanza.Modify, stanza.PolicyViolation, reason))
		}
	default:
		// Presence and errors are never answered.
		return
	}
	if hp := c.handler.Load(); hp != nil {
		if oh, ok := (*hp).(OversizeHandler); ok {
			oh.HandleOversize(ctx, st, reason)
		}
	}
}

// RejectionRecorder is what the reading handler needs to record, for the
// operator, a stanza refused before it could be read (one over the size
// limit). An Ingester that implements it gets such stanzas recorded.
type RejectionRecorder interface {
	// RecordRejection records that the stanza from `from`, received via
	// "message" or "iq", was refused for reason. Errors: not_found
	// (device_not_registered) when from is not a registered device.
	RecordRejection(ctx context.Context, from, via string, payload []byte, reason error) error
}

// maxRecording bounds the rejections being recorded at once: a flood of
// big stanzas must not become a flood of goroutines.
const maxRecording = 8

// HandleOversize implements OversizeHandler: a skipped reading (a message or
// an IQ set) from a registered device is recorded as a rejection, off the
// read loop, since finding the device may need the database.
func (h *ReadingHandler) HandleOversize(ctx context.Context, st *Stanza, reason string) {
	via := "message"
	if st.Kind == KindIQ {
		if st.Type != TypeSet {
			return
		}
		via = "iq"
	}
	rec, ok := h.ing.(RejectionRecorder)
	if !ok {
		return
	}
	select {
	case h.recording <- struct{}{}:
	default:
		h.log.Debug("oversize stanza not recorded: too many being recorded", "from", st.From)
		return
	}
	payload := st.AppendXML(nil)
	go func() {
		defer func() { <-h.recording }()
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), replyTimeout)
		defer cancel()
		err := rec.RecordRejection(rctx, st.From, via, payload, &iotgate.Error{Code: iotgate.EInvalid, Message: reason})
		if err != nil && iotgate.ErrorCode(err) != iotgate.ENotFound {
			h.log.Warn("oversize stanza not recorded", "from", st.From, "err", err)
		}
	}()
}
