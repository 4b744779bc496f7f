package component

import (
	"context"
	"log/slog"
	"strconv"
	"strings"

	"github.com/iotgate/iotgate"
)

// PresenceService is what presence handling needs from the device service.
type PresenceService interface {
	UpdatePresence(ctx context.Context, u iotgate.PresenceUpdate) error
	Registered(ctx context.Context, jid string) (bool, error)
	DeviceJIDs(ctx context.Context) ([]string, error)
	PresenceStale()
	PresenceFresh()
}

// PresenceHandler keeps iotgate subscribed to its devices' presence:
// a registered device that sends subscribe gets subscribed and a subscribe
// back (so its server sends iotgate its presence from then on); anyone else
// gets unsubscribed. After every (re)connection it probes each registered
// device, and while the stream is down presence is marked stale.
type PresenceHandler struct {
	conn *Conn
	svc  PresenceService
	log  *slog.Logger
}

// NewPresenceHandler returns a handler for presence stanzas and registers
// its connect and disconnect hooks on conn.
func NewPresenceHandler(conn *Conn, svc PresenceService, log *slog.Logger) *PresenceHandler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	h := &PresenceHandler{conn: conn, svc: svc, log: log}
	conn.OnConnect(h.probeAll)
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
			// Try again later rather than refuse a real device.
			h.log.Warn("subscription request not answered", "from", bare, "err", err)
			return true
		}
		if !ok {
			h.send(&Stanza{Kind: KindPresence, Type: "unsubscribed", From: h.conn.Domain(), To: bare})
			return true
		}
		h.send(&Stanza{Kind: KindPresence, Type: "subscribed", From: h.conn.Domain(), To: bare})
		h.send(&Stanza{Kind: KindPresence, Type: "subscribe", From: h.conn.Domain(), To: bare})
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
		u := iotgate.PresenceUpdate{From: st.From, Available: st.Type == ""}
		if u.Available {
			u.Show, u.Status, u.Priority = presenceDetails(st)
		}
		if err := h.svc.UpdatePresence(ctx, u); err != nil && iotgate.ErrorCode(err) != iotgate.ENotFound {
			h.log.Warn("presence not applied", "from", st.From, "err", err)
		}
	}
	return true
}

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
			show = text()
		case "status":
			if s := text(); len(s) <= 1024 {
				status = s
			}
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
// the stream is up.
func (h *PresenceHandler) probeAll(ctx context.Context) {
	h.svc.PresenceFresh()
	h.Probe(ctx)
}

// Probe asks the server for every registered device's presence. After
// another instance died, it recovers presence that instance received and
// had not yet stored: the online devices answer again.
func (h *PresenceHandler) Probe(ctx context.Context) {
	jids, err := h.svc.DeviceJIDs(ctx)
	if err != nil {
		h.log.Warn("cannot list devices to probe their presence", "err", err)
		return
	}
	for _, j := range jids {
		if ctx.Err() != nil {
			return
		}
		if err := h.conn.Send(ctx, &Stanza{Kind: KindPresence, Type: "probe", From: h.conn.Domain(), To: j}); err != nil {
			h.log.Debug("probe not sent", "to", j, "err", err)
			return
		}
	}
	h.log.Info("probed device presence", "devices", len(jids))
}
