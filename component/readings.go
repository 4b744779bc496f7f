package component

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"mellium.im/xmpp/stanza"

	"github.com/iotgate/iotgate"
	"github.com/iotgate/iotgate/devices"
)

// NSDelay is XEP-0203 Delayed Delivery; its stamp is kept as the device's
// own timestamp of a reading.
const NSDelay = "urn:xmpp:delay"

// Ingester is what the reading handler needs from the device service.
type Ingester interface {
	// Ingest takes a possible reading and calls done once, after the
	// reading is committed (nil) or refused (why). It may wait for the
	// database or a long validation: it is never called on the read loop.
	Ingest(ctx context.Context, in iotgate.IncomingReading, done func(error))
	// Sender tells, without I/O, what is known of a sender.
	Sender(jid string) devices.SenderStatus
}

// ReadingHandler turns device stanzas into readings: an IQ set is answered
// after its reading is committed (or with the reason it was refused); a
// message gets an error message back only when refused, at most a few per
// device per second so a broken device can't make iotgate flood it.
//
// Nothing slow happens on the stream's read loop: it checks the sender's
// rate and queues the stanza in its sender's lane; lookups, validation and
// presence handling run on a bounded pool of workers, one sender's stanzas
// in the order received, senders taken round-robin (devices.Scheduler).
// Registered devices and other senders have separate lanes, so strangers
// can neither fill the devices' queue nor take their workers.
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

	devices   *devices.Scheduler // senders cached as registered
	strangers *devices.Scheduler // everyone else, until a lookup tells

	limited  atomic.Uint64
	dropped  atomic.Uint64
	unserved atomic.Uint64
	// recording holds a token per rejection being recorded (oversize.go).
	recording chan struct{}
}

// The lanes' sizes. A device's lane holds what it may send in a burst
// (IOTGATE_DEVICE_BURST's default); strangers get little room and few
// workers: they cost a lookup each and are usually nobody.
var (
	deviceLane   = devices.SchedulerConfig{Workers: 8, Limits: devices.QueueLimits{PerSender: 1000, PerSenderBytes: 4 << 20, Total: 20000, TotalBytes: 64 << 20}}
	strangerLane = devices.SchedulerConfig{Workers: 2, Limits: devices.QueueLimits{PerSender: 20, PerSenderBytes: 1 << 20, Total: 2000, TotalBytes: 8 << 20}}
)

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
	h := &ReadingHandler{conn: conn, ing: ing, log: log, errors: newLimiter(errorRate, errorBurst),
		devices: devices.NewScheduler(deviceLane), strangers: devices.NewScheduler(strangerLane),
		recording: make(chan struct{}, maxRecording)}
	if lim.Rate > 0 {
		h.stanzas = newLimiter(lim.Rate, max(lim.Burst, 1))
	}
	return h
}

// RateLimited returns how many stanzas were refused for exceeding the
// per-device rate, or because too many strangers were looked up lately.
func (h *ReadingHandler) RateLimited() uint64 { return h.limited.Load() }

// QueueFull returns how many stanzas were refused because their sender's
// queue (or all of them) was full.
func (h *ReadingHandler) QueueFull() uint64 { return h.dropped.Load() }

// Queued returns how many stanzas wait for a worker.
func (h *ReadingHandler) Queued() int { return h.devices.Queued() + h.strangers.Queued() }

// Drain stops taking stanzas (IQs are answered wait, try later) and waits
// until the queued ones are handed to the device service, or ctx ends.
// Call it before the device service stops. Errors: ctx's.
func (h *ReadingHandler) Drain(ctx context.Context) error {
	return errors.Join(h.devices.Drain(ctx), h.strangers.Drain(ctx))
}

// overRate reports whether st exceeds its sender's rate, answering an IQ
// with policy-violation (type wait, so the device slows down and retries).
func (h *ReadingHandler) overRate(st *Stanza, bare string) bool {
	if h.stanzas == nil || h.stanzas.allow(bare) {
		return false
	}
	h.limited.Add(1)
	if st.Kind == KindIQ {
		h.send(st.ErrorReply(stanza.Wait, stanza.PolicyViolation, "too many readings: slow down and retry later"))
	}
	return true
}

// enqueue runs job in bare's lane, off the read loop. When it can't (the
// lane is full, strangers are throttled, shutdown), it answers an IQ
// with the reason (wait: the device retries later) and drops anything
// else, counted; it reports whether job was queued.
func (h *ReadingHandler) enqueue(st *Stanza, bare string, job func()) bool {
	lane := h.devices
	var err error
	status := h.ing.Sender(bare)
	switch status {
	case devices.SenderRegistered:
	case devices.SenderThrottled:
		h.limited.Add(1)
		err = &iotgate.Error{Code: iotgate.ETooMany, Message: "too many unknown senders lately, try again later"}
	default:
		lane = h.strangers
	}
	if err == nil {
		if err = lane.Submit(bare, len(st.Inner), job); err != nil && iotgate.ErrorCode(err) == iotgate.ETooMany {
			h.dropped.Add(1)
		}
	}
	if err == nil {
		return true
	}
	switch {
	case st.Kind == KindIQ:
		h.send(ErrorReplyFor(st, err))
	case st.Kind == KindMessage && status == devices.SenderRegistered:
		// Strangers get nothing back, as in refuseMessage.
		h.refuseMessage(st.head(), err)
	}
	h.log.Debug("stanza not queued", "from", st.From, "kind", st.Kind, "err", err)
	return false
}

// replyTimeout bounds how long a reply may wait for room in the output queue.
const replyTimeout = 5 * time.Second

// HandleStanza implements Handler.
func (h *ReadingHandler) HandleStanza(ctx context.Context, st *Stanza) bool {
	// The workers' context outlives the stream: a reading queued before
	// the stream dropped is still committed.
	wctx := context.WithoutCancel(ctx)
	switch st.Kind {
	case KindPresence:
		if h.Presence == nil {
			return true
		}
		bare, err := st.bareFrom()
		if err != nil {
			return true
		}
		h.enqueue(st, bare, func() { h.Presence.HandleStanza(wctx, st) })
		return true
	case KindIQ:
		if st.Type != TypeSet {
			return false
		}
		bare, err := st.bareFrom()
		if err != nil {
			h.send(ErrorReplyFor(st, err))
			return true
		}
		if h.overRate(st, bare) {
			return true
		}
		h.enqueue(st, bare, func() {
			// Only the header lives on until the commit: the payload
			// is released once validated.
			hd := st.head()
			in, err := h.payloads(st, "iq")
			if err != nil {
				h.send(ErrorReplyFor(hd, err))
				return
			}
			in.ResendKey = hd.ID
			h.ing.Ingest(wctx, in, func(err error) {
				if err != nil {
					h.send(ErrorReplyFor(hd, err))
					return
				}
				h.send(hd.Result(nil))
			})
		})
		return true
	case KindMessage:
		// Never answer an error with an error: that is how loops start.
		if st.Type == TypeError {
			return true
		}
		bare, err := st.bareFrom()
		if err != nil || h.overRate(st, bare) {
			return true
		}
		h.enqueue(st, bare, func() {
			hd := st.head()
			in, err := h.payloads(st, "message")
			if err != nil {
				h.refuseMessage(hd, err)
				return
			}
			h.ing.Ingest(wctx, in, func(err error) {
				if err != nil {
					h.refuseMessage(hd, err)
				}
			})
		})
		return true
	}
	return false
}

func (h *ReadingHandler) refuseMessage(st *Stanza, err error) {
	var e *iotgate.Error
	if errors.As(err, &e) && (e.Detail == iotgate.DetailDeviceNotRegistered || e.Detail == iotgate.DetailNamespaceNotServed) {
		// Unknown senders get nothing back: answering would let anyone
		// use iotgate to probe or reflect traffic. Nor does a message
		// that is not for iotgate (a chat, a receipt).
		return
	}
	bare, berr := st.bareFrom()
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
func incoming(st *Stanza, via string) (iotgate.IncomingReading, error) {
	kids, err := st.Children()
	if err != nil {
		return iotgate.IncomingReading{}, &iotgate.Error{Code: iotgate.EInvalid, Message: err.Error()}
	}
	in := iotgate.IncomingReading{From: st.From, Via: via, Payloads: make([]iotgate.Payload, 0, len(kids))}
	in.Bare, _ = st.bareFrom() // cached: no second parse
	for _, k := range kids {
		if k.Name.Space == NSDelay && k.Name.Local == "delay" {
			if t, err := time.Parse(time.RFC3339Nano, k.AttrValue("stamp")); err == nil {
				t = t.UTC()
				in.DeviceTime = &t
			}
			continue
		}
		in.Payloads = append(in.Payloads, iotgate.Payload{Namespace: k.Name.Space, Local: k.Name.Local, XML: k.Raw})
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
