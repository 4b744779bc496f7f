package component

import (
	"context"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/iotgate/iotgate"
)

// PresenceService is what presence handling needs from the device service.
type PresenceService interface {
	UpdatePresence(ctx context.Context, u iotgate.PresenceUpdate) error
	Registered(ctx context.Context, jid string) (bool, error)
	// DeviceJIDs returns up to limit registered JIDs after after, in order.
	DeviceJIDs(ctx context.Context, after string, limit int) ([]string, error)
	PresenceStale()
	PresenceFresh()
	// PresenceProbing and PresenceProbed bracket the probes after a
	// connection: the grace period for unanswered ones starts at the end.
	PresenceProbing()
	PresenceProbed()
}

// PresenceHandler keeps iotgate subscribed to its devices' presence:
// a registered device that sends subscribe gets subscribed and a subscribe
// back (so its server sends iotgate its presence from then on); anyone else
// gets unsubscribed. After the first connection it probes each registered
// device, after a reconnection it asks each for its subscription again
// (Resubscribe), and while the stream is down presence is marked stale.
type PresenceHandler struct {
	conn *Conn
	svc  PresenceService
	log  *slog.Logger
	// refusedLogs bounds the log lines about refused presence, per
	// device: a device with a thousand sessions must not flood the log.
	refusedLogs *limiter

	// pending holds the devices that asked for a subscription and have
	// not been seen available since: each is asked for iotgate's
	// subscription again every retry, at most subscribeAttempts times.
	mu      sync.Mutex
	pending map[string]*handshake
	retry   time.Duration
	// avail holds when each device's available presence was last seen,
	// for a while: a device handled in the strangers' lane (not yet known
	// as registered) may have its subscription request handled after its
	// presence, which proves the subscription already.
	avail map[string]time.Time
}

// handshake is a subscription exchange with a device not finished yet.
type handshake struct {
	due  time.Time
	left int
	// answered is false while the device's request is unanswered because
	// the store could not say whether it is registered.
	answered bool
}

// Bounds of the subscription retries. Measured on ejabberd with 10,000
// devices logging in at once (issue #17): without a dropped stream,
// about half of the devices never approved iotgate's subscription (or
// their approval never reached iotgate), and iotgate's probes then get
// nothing from them; asking again made all of them approve.
const (
	subscribeRetry    = 15 * time.Second
	subscribeAttempts = 4
	// maxPending bounds the devices tracked at once: only registered
	// devices get in, and beyond it the next reconnection's Resubscribe
	// is what asks them again.
	maxPending = 100_000
)

// NewPresenceHandler returns a handler for presence stanzas and registers
// its connect and disconnect hooks on conn.
func NewPresenceHandler(conn *Conn, svc PresenceService, log *slog.Logger) *PresenceHandler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	h := &PresenceHandler{conn: conn, svc: svc, log: log, refusedLogs: newLimiter(errorRate, errorBurst),
		pending: make(map[string]*handshake), retry: subscribeRetry, avail: make(map[string]time.Time)}
	conn.OnConnect(h.probeAll)
	conn.OnConnect(h.retryLoop)
	conn.OnDisconnect(svc.PresenceStale)
	return h
}

// HandleStanza implements Handler for presence stanzas.
func (h *PresenceHandler) HandleStanza(ctx context.Context, st *Stanza) bool {
	if st.Kind != KindPresence {
		return false
	}
	bare, err := st.bareFrom()
	if err != nil {
		return true
	}
	switch st.Type {
	case "subscribe":
		ok, err := h.svc.Registered(ctx, bare)
		if err != nil {
			// Try again later rather than refuse a real device: the
			// retries ask the store again (a device asks only once).
			h.log.Warn("subscription request not answered yet", "from", bare, "err", err)
			h.track(bare, false)
			return true
		}
		if !ok {
			h.send(&Stanza{Kind: KindPresence, Type: "unsubscribed", From: h.conn.Domain(), To: bare})
			return true
		}
		h.send(&Stanza{Kind: KindPresence, Type: "subscribed", From: h.conn.Domain(), To: bare})
		h.send(&Stanza{Kind: KindPresence, Type: "subscribe", From: h.conn.Domain(), To: bare})
		h.track(bare, true)
	case "subscribed":
		// The device accepted our subscription: ask for its presence now
		// rather than wait for its next change.
		h.send(&Stanza{Kind: KindPresence, Type: "probe", From: h.conn.Domain(), To: bare})
	case "unsubscribe":
		h.send(&Stanza{Kind: KindPresence, Type: "unsubscribed", From: h.conn.Domain(), To: bare})
	case "probe":
		// Someone asks whether iotgate is there: it is.
		h.send(&Stanza{Kind: KindPresence, From: h.conn.Domain(), To: st.From})
	case "", "unavailable":
		if st.Type == "" {
			h.untrack(bare) // its presence reaches iotgate: subscribed
		}
		u := iotgate.PresenceUpdate{From: st.From, Available: st.Type == ""}
		if u.Available {
			u.Show, u.Status, u.Priority = presenceDetails(st)
		}
		err := h.svc.UpdatePresence(ctx, u)
		switch iotgate.ErrorCode(err) {
		case "", iotgate.ENotFound:
		case iotgate.ETooMany:
			// One resource too many: ignored, not answered. A presence
			// error could make the device's server or client treat the
			// whole device as gone, the resources already tracked too.
			if h.refusedLogs.allow(bare) {
				h.log.Warn("presence ignored: too many resources", "from", st.From, "err", err)
			}
		default:
			h.log.Warn("presence not applied", "from", st.From, "err", err)
		}
	}
	return true
}

// track notes that bare asked for a subscription, and whether it was
// answered (and asked back).
func (h *PresenceHandler) track(bare string, answered bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.pending[bare]; !ok && len(h.pending) >= maxPending {
		return
	}
	if at, ok := h.avail[bare]; ok && time.Since(at) < h.availFor() {
		return // its presence came already
	}
	h.pending[bare] = &handshake{due: time.Now().Add(h.retry), left: subscribeAttempts, answered: answered}
}

// untrack notes that bare's presence reached iotgate.
func (h *PresenceHandler) untrack(bare string) {
	h.mu.Lock()
	delete(h.pending, bare)
	if len(h.avail) < maxPending {
		h.avail[bare] = time.Now()
	}
	h.mu.Unlock()
}

// availFor is how long a device's available presence is remembered.
func (h *PresenceHandler) availFor() time.Duration { return h.retry * subscribeAttempts }

// retryLoop asks the devices whose subscription exchange is late for
// iotgate's subscription again, while the stream is up.
func (h *PresenceHandler) retryLoop(ctx context.Context) {
	iotgate.Every(ctx, max(h.retry/10, 10*time.Millisecond), h.retryDue)
}

// retryDue asks again the devices whose retry is due, and forgets those
// out of attempts.
func (h *PresenceHandler) retryDue(ctx context.Context) {
	now := time.Now()
	var due []string
	gaveUp := 0
	h.mu.Lock()
	for j, at := range h.avail {
		if now.Sub(at) >= h.availFor() {
			delete(h.avail, j)
		}
	}
	for j, hs := range h.pending {
		if now.Before(hs.due) {
			continue
		}
		if hs.left == 0 {
			// Often a false alarm: its presence may have come
			// before its request was handled, longer ago than avail
			// remembers. Hence debug, and a count below.
			delete(h.pending, j)
			gaveUp++
			h.log.Debug("device asked for a subscription but its presence never came", "device", j, "attempts", subscribeAttempts)
			continue
		}
		hs.left--
		hs.due = now.Add(h.retry)
		due = append(due, j)
	}
	h.mu.Unlock()
	for _, j := range due {
		if ctx.Err() != nil {
			return
		}
		h.retryOne(ctx, j)
	}
	if len(due) > 0 || gaveUp > 0 {
		h.log.Info("asked devices again for their subscription", "devices", len(due), "gave_up", gaveUp)
	}
}

// retryOne asks j for iotgate's subscription again; if its request is
// still unanswered, it asks the store first and answers it.
func (h *PresenceHandler) retryOne(ctx context.Context, j string) {
	h.mu.Lock()
	hs := h.pending[j]
	answered := hs == nil || hs.answered
	h.mu.Unlock()
	if !answered {
		ok, err := h.svc.Registered(ctx, j)
		if err != nil {
			return // the next retry asks again
		}
		if !ok {
			h.untrack(j)
			h.send(&Stanza{Kind: KindPresence, Type: "unsubscribed", From: h.conn.Domain(), To: j})
			return
		}
		h.mu.Lock()
		if hs := h.pending[j]; hs != nil {
			hs.answered = true
		}
		h.mu.Unlock()
		h.send(&Stanza{Kind: KindPresence, Type: "subscribed", From: h.conn.Domain(), To: j})
	}
	h.send(&Stanza{Kind: KindPresence, Type: "subscribe", From: h.conn.Domain(), To: j})
}

// Bounds of what a presence stanza may set: each resource is a row, and
// part of every presence event of its device.
const (
	// maxStatus is the most characters of <status/> kept; longer text is
	// cut there (the start of a status says most).
	maxStatus = 1024
)

// presenceDetails reads <show/>, <status/> and <priority/>. A <show/>
// other than RFC 6121's four values and a priority outside -128..127 are
// ignored; <status/> is cut to maxStatus characters.
func presenceDetails(st *Stanza) (show, status string, priority int) {
	kids, _ := st.Children()
	for _, k := range kids {
		text := func() string {
			d := newSafeDecoder(strings.NewReader(string(k.Raw)))
			var v struct {
				Text string `xml:",chardata"`
			}
			if d.Decode(&v) != nil {
				return ""
			}
			return strings.TrimSpace(v.Text)
		}
		switch k.Name.Local {
		case "show":
			switch s := text(); s {
			case "away", "chat", "dnd", "xa":
				show = s
			}
		case "status":
			status = truncateRunes(text(), maxStatus)
		case "priority":
			if p, err := strconv.Atoi(text()); err == nil && p >= -128 && p <= 127 {
				priority = p
			}
		}
	}
	return show, status, priority
}

func (h *PresenceHandler) send(st *Stanza) {
	ctx, cancel := context.WithTimeout(context.Background(), replyTimeout)
	defer cancel()
	if err := h.conn.Send(ctx, st); err != nil {
		h.log.Debug("presence not sent", "to", st.To, "type", st.Type, "err", err)
	}
}

// probeAll asks the server for every registered device's presence, once
// the stream is up. After a reconnection it asks each for its subscription
// instead (see Resubscribe): what went astray while the stream was down
// includes subscriptions.
func (h *PresenceHandler) probeAll(ctx context.Context) {
	h.svc.PresenceFresh()
	h.svc.PresenceProbing()
	defer h.svc.PresenceProbed()
	if h.conn.Reconnects() > 0 {
		h.Resubscribe(ctx)
		return
	}
	h.Probe(ctx)
}

// Probe asks the server for every registered device's presence. After
// another instance died, it recovers presence that instance received and
// had not yet stored: the online devices answer again.
func (h *PresenceHandler) Probe(ctx context.Context) {
	n := h.sweep(ctx, "probe")
	h.log.Info("probed device presence", "devices", n)
}

// Resubscribe sends every registered device a subscription request, which
// a probe can't replace after a dropped stream: a device that subscribed
// to iotgate while the stream was down (its request bounced), or whose
// answer from iotgate was still queued when the stream dropped, has no
// subscription, and its server answers iotgate's probes with nothing. A
// device already subscribed costs one stanza more than a probe: its
// server answers subscribed on its behalf (RFC 6121 3.1.3; ejabberd and
// Prosody do), and that answer makes iotgate probe it (HandleStanza). The
// others are asked, and the device approves as it approved the first time.
func (h *PresenceHandler) Resubscribe(ctx context.Context) {
	n := h.sweep(ctx, "subscribe")
	h.log.Info("asked devices for their subscription after a reconnection", "devices", n)
}

// sweep sends a presence of type typ from the component to every
// registered device, paced, and returns how many went.
func (h *PresenceHandler) sweep(ctx context.Context, typ string) int {
	// A batch at a time from the store, one more than a batch to know
	// whether another follows (no ping after the last).
	after, n := "", 0
	for {
		jids, err := h.svc.DeviceJIDs(ctx, after, probeBatch+1)
		if err != nil {
			h.log.Warn("cannot list devices to ask for their presence", "type", typ, "err", err, "sent", n)
			return n
		}
		more := len(jids) > probeBatch
		if more {
			jids = jids[:probeBatch]
		}
		for _, j := range jids {
			if ctx.Err() != nil {
				return n
			}
			if err := h.conn.Send(ctx, &Stanza{Kind: KindPresence, Type: typ, From: h.conn.Domain(), To: j}); err != nil {
				h.log.Debug("presence not sent", "to", j, "type", typ, "err", err)
				return n
			}
			n++
		}
		if !more {
			return n
		}
		after = jids[len(jids)-1]
		h.awaitServer(ctx)
	}
}

// probeBatch is how many probes Probe sends before it waits for the
// server to answer a ping. The server handles a stream's stanzas in order,
// so the answer means it has handled the batch: its backlog stays one batch
// long. Unpaced, a million probes queued up in the server (Prosody) for
// minutes; the keepalive ping, behind them, timed out; the stream was
// dropped and every reconnection probed the million devices again.
const probeBatch = 1000

// probePingTimeout bounds the wait for that answer. A server slower than
// this gets the next batch anyway: pacing must not stop the probes.
const probePingTimeout = 30 * time.Second

// awaitServer sends a ping to the server and waits for any answer (an
// error answer counts: the server has read the ping), at most
// probePingTimeout.
func (h *PresenceHandler) awaitServer(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, probePingTimeout)
	defer cancel()
	ping := &Stanza{Kind: KindIQ, Type: TypeGet, To: h.conn.cfg.PingTo, Inner: []byte(`<ping xmlns="urn:xmpp:ping"/>`)}
	if _, err := h.conn.SendIQ(ctx, ping); err != nil {
		h.log.Debug("probe pacing: no ping answer", "err", err)
	}
}

// truncateRunes returns s cut to at most n characters (runes), never in the
// middle of one.
func truncateRunes(s string, n int) string {
	if len(s) <= n {
		return s // fewer bytes than n: fewer runes too
	}
	i := 0
	for pos := range s {
		if i == n {
			return s[:pos]
		}
		i++
	}
	return s
}
