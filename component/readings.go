package component

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"mellium.im/xmpp/stanza"

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
	// Namespaces, when set, decides which stanzas are for iotgate at all
	// (see notServed); nil serves every namespace.
	Namespaces Namespaces

	errors  *limiter // error messages sent back, per device
	stanzas *limiter // readings accepted, per device

	limited  atomic.Uint64
	unserved atomic.Uint64
	// recording holds a token per rejection being recorded (oversize.go).
	recording chan struct{}
}

// RateLimit bounds the readings one device may send: Rate per second on
// average, bursts of up to Burst. Zero Rate means no limit.
type RateLimit struct {
	Rate  float64
	Burst float64
}

// NewReadingHandler returns a handler that feeds readings arriving on conn to
// ing, at most lim per device. Install it with conn.SetHandler.
func NewReadingHandler(conn *Conn, ing Ingester, lim RateLimit, log *slog.Logger) *ReadingHandler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	h := &ReadingHandler{conn: conn, ing: ing, log: log, errors: newLimiter(errorRate, errorBurst), recording: make(chan struct{}, maxRecording)}
	if lim.Rate > 0 {
		h.stanzas = newLimiter(lim.Rate, max(lim.Burst, 1))
	}
	return h
}

// RateLimited returns how many stanzas were refused for exceeding the
// per-device rate.
func (h *ReadingHandler) RateLimited() uint64 { return h.limited.Load() }

// overRate reports whether st exceeds its sender's rate, answering an IQ
// with policy-violation (type wait, so the device slows down and retries).
func (h *ReadingHandler) overRate(st *Stanza) bool {
	if h.stanzas == nil {
		return false
	}
	bare, err := devices.BareJID(st.From)
	if err != nil || h.stanzas.allow(bare) {
		return false
	}
	h.limited.Add(1)
	if st.Kind == KindIQ {
		h.send(st.ErrorReply(stanza.Wait, stanza.PolicyViolation, "too many readings: slow down and retry later"))
	}
	return true
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
		if h.overRate(st) {
			return true
		}
		in, err := h.payloads(st, "iq")
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
		if st.Type == TypeError || h.overRate(st) {
			return true
		}
		in, err := h.payloads(st, "message")
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
	if errors.As(err, &e) && (e.Detail == "device_not_registered" || e.Detail == DetailNotServed) {
		// Unknown senders get nothing back: answering would let anyone
		// use iotgate to probe or reflect traffic. Nor does a message
		// that is not for iotgate (a chat, a receipt).
		return
	}
	bare, berr := devices.BareJID(st.From)
	if berr != nil || !h.errors.allow(bare) {
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

// limiter is a set of token buckets, one per key, bounded in number.
type limiter struct {
	rate, burst float64
	mu          sync.Mutex
	buckets     map[string]*bucket
}

// bucket is a small token bucket.
type bucket struct {
	tokens float64
	last   time.Time
}

const (
	errorRate  = 1.0 // error messages per second per device
	errorBurst = 5.0
)

func newLimiter(rate, burst float64) *limiter {
	return &limiter{rate: rate, burst: burst, buckets: make(map[string]*bucket)}
}

func (l *limiter) allow(key string) bool {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[key]
	if b == nil {
		if len(l.buckets) > 100000 {
			// Crude bound: forgetting gives every device a fresh burst,
			// which is harmless; growing without bound is not.
			clear(l.buckets)
		}
		b = &bucket{tokens: l.burst, last: now}
		l.buckets[key] = b
	}
	b.tokens = min(l.burst, b.tokens+now.Sub(b.last).Seconds()*l.rate)
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}
