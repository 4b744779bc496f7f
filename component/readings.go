package component

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/iotgate/iotgate/devices"
)

// NSDelay is XEP-0203 Delayed Delivery; its stamp is kept as the device's
// own timestamp of a reading.
const NSDelay = "urn:xmpp:delay"

// Ingester is what the reading handler needs from the device service.
type Ingester interface {
	// Ingest takes a possible reading and calls done once, after the
	// reading is committed (nil) or refused (why).
	Ingest(ctx context.Context, in devices.IncomingReading, done func(error))
}

// ReadingHandler turns device stanzas into readings: an IQ set is answered
// after its reading is committed (or with the reason it was refused); a
// message gets an error message back only when refused, at most a few per
// device per second so a broken device can't make iotgate flood it.
type ReadingHandler struct {
	conn *Conn
	ing  Ingester
	log  *slog.Logger
	// Presence, when set, receives presence stanzas.
	Presence Handler

	limMu    sync.Mutex
	limiters map[string]*bucket
}

// NewReadingHandler returns a handler that feeds readings arriving on conn to
// ing. Install it with conn.SetHandler.
func NewReadingHandler(conn *Conn, ing Ingester, log *slog.Logger) *ReadingHandler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &ReadingHandler{conn: conn, ing: ing, log: log, limiters: make(map[string]*bucket)}
}

// replyTimeout bounds how long a reply may wait for room in the output queue.
const replyTimeout = 5 * time.Second

// HandleStanza implements Handler.
func (h *ReadingHandler) HandleStanza(ctx context.Context, st *Stanza) bool {
	switch st.Kind {
	case KindPresence:
		if h.Presence != nil {
			return h.Presence.HandleStanza(ctx, st)
		}
		return true
	case KindIQ:
		if st.Type != TypeSet {
			return false
		}
		in, err := incoming(st, "iq")
		if err != nil {
			h.send(ErrorReplyFor(st, err))
			return true
		}
		h.ing.Ingest(ctx, in, func(err error) {
			if err != nil {
				h.send(ErrorReplyFor(st, err))
				return
			}
			h.send(st.Result(nil))
		})
		return true
	case KindMessage:
		// Never answer an error with an error: that is how loops start.
		if st.Type == TypeError {
			return true
		}
		in, err := incoming(st, "message")
		if err != nil {
			h.refuseMessage(st, err)
			return true
		}
		h.ing.Ingest(ctx, in, func(err error) {
			if err != nil {
				h.refuseMessage(st, err)
			}
		})
		return true
	}
	return false
}

func (h *ReadingHandler) refuseMessage(st *Stanza, err error) {
	var e *devices.Error
	if errors.As(err, &e) && e.Detail == "device_not_registered" {
		// Unknown senders get nothing back: answering would let anyone
		// use iotgate to probe or reflect traffic.
		return
	}
	bare, berr := devices.BareJID(st.From)
	if berr != nil || !h.allow(bare) {
		return
	}
	h.send(ErrorReplyFor(st, err))
}

func (h *ReadingHandler) send(st *Stanza) {
	ctx, cancel := context.WithTimeout(context.Background(), replyTimeout)
	defer cancel()
	if err := h.conn.Send(ctx, st); err != nil {
		h.log.Debug("reply to device not sent", "to", st.To, "err", err)
	}
}

// incoming extracts the payloads and the delay stamp of a stanza.
func incoming(st *Stanza, via string) (devices.IncomingReading, error) {
	kids, err := st.Children()
	if err != nil {
		return devices.IncomingReading{}, &devices.Error{Code: devices.EInvalid, Message: err.Error()}
	}
	in := devices.IncomingReading{From: st.From, Via: via, Payloads: make([]devices.Payload, 0, len(kids))}
	for _, k := range kids {
		if k.Name.Space == NSDelay && k.Name.Local == "delay" {
			if t, err := time.Parse(time.RFC3339Nano, k.AttrValue("stamp")); err == nil {
				t = t.UTC()
				in.DeviceTime = &t
			}
			continue
		}
		in.Payloads = append(in.Payloads, devices.Payload{Namespace: k.Name.Space, Local: k.Name.Local, XML: k.Raw})
	}
	return in, nil
}

// bucket is a small token bucket: rate tokens per second, up to burst.
type bucket struct {
	tokens float64
	last   time.Time
}

const (
	errorRate  = 1.0 // error messages per second per device
	errorBurst = 5.0
)

func (h *ReadingHandler) allow(key string) bool {
	now := time.Now()
	h.limMu.Lock()
	defer h.limMu.Unlock()
	b := h.limiters[key]
	if b == nil {
		if len(h.limiters) > 100000 {
			clear(h.limiters)
		}
		b = &bucket{tokens: errorBurst, last: now}
		h.limiters[key] = b
	}
	b.tokens = min(errorBurst, b.tokens+now.Sub(b.last).Seconds()*errorRate)
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}
