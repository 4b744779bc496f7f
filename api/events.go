package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/iotgate/iotgate"
	"github.com/iotgate/iotgate/auth"
	"github.com/iotgate/iotgate/events"
)

// DefaultEventPing is how often an idle event stream gets a comment line,
// so that proxies don't close it.
const DefaultEventPing = 15 * time.Second

// DetailInvalidEventID is the problem code of a bad Last-Event-ID or after.
const DetailInvalidEventID = "invalid_event_id"

// eventsPath is the event stream's route: the one that also takes a ticket.
const eventsPath = "/v1/events"

// EventHub is what the event stream needs: subscriptions to the event
// log, live and resumed.
type EventHub interface {
	// Subscribe opens a subscription for tokenID; after, when set, is the
	// id to resume after. Errors: too_many_requests, unavailable.
	Subscribe(ctx context.Context, tokenID string, f iotgate.EventFilter, after *int64) (*events.Subscription, error)
}

var (
	_ EventHub   = (*events.Hub)(nil)
	_ EventStats = (*events.Hub)(nil)
)

// TicketService issues and redeems the single-use tickets that let a
// browser's EventSource open a stream without an Authorization header.
type TicketService interface {
	// Issue returns a ticket's secret for tok and its expiry. Errors:
	// unavailable.
	Issue(ctx context.Context, tok *iotgate.Token) (string, time.Time, error)
	// Redeem uses up a ticket and returns its token, read again.
	// Errors: unauthorized, unavailable.
	Redeem(ctx context.Context, secret string) (*iotgate.Token, error)
}

var _ TicketService = (*auth.Tickets)(nil)

// EventTicket is the answer to POST /v1/events/tickets.
type EventTicket struct {
	// URL opens the event stream once, within a minute, with the
	// permissions of the token that asked for it. Filters may be
	// appended (&types=reading).
	URL       string    `json:"url" example:"/v1/events?ticket=iotgt_q7tqAqgY2lQ6sXz0S7L5bW9j1vE3kH4cR8nJ0mPaUdI"`
	ExpiresAt time.Time `json:"expires_at" format:"date-time"`
}

// EventData documents, for the API description only, the data of each
// event type: an event's data is the object of its type below, not this
// object (Swagger 2 has no oneOf). Never sent.
type EventData struct {
	Reading   *iotgate.ReadingEventData   `json:"reading,omitempty"`
	Rejection *iotgate.RejectionEventData `json:"rejection,omitempty"`
	Presence  *iotgate.PresenceEventData  `json:"presence,omitempty"`
	Command   *iotgate.CommandView        `json:"command,omitempty"`
	Device    *iotgate.DeviceEventData    `json:"device,omitempty"`
	Gap       *iotgate.GapEventData       `json:"gap,omitempty"`
}

type eventHandler struct {
	hub     EventHub
	tickets TicketService
	// auth re-reads a stream's token every ping interval: a revoked or
	// expired token's streams end.
	auth Authenticator
	ping time.Duration
	// stop is closed when the server shuts down: streams end then.
	stop <-chan struct{}
	log  *slog.Logger
}

// authenticateTicket authenticates the event stream: with an
// Authorization header as every route, or, without one, with a ticket=
// (single-use, from POST /v1/events/tickets). A bearer token in the query
// string is never accepted: URLs end up in logs and histories.
func (s *Server) authenticateTicket(tickets TicketService) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		bearer := s.authenticate(next)
		return func(c echo.Context) error {
			ticket := c.QueryParam("ticket")
			if c.Request().Header.Get(echo.HeaderAuthorization) != "" || ticket == "" || tickets == nil {
				return bearer(c)
			}
			tok, err := tickets.Redeem(c.Request().Context(), ticket)
			if err != nil {
				if iotgate.ErrorCode(err) == iotgate.EUnauthorized {
					return s.authFailed(c, fmt.Errorf("redeem event ticket: %w", err))
				}
				return fmt.Errorf("redeem event ticket: %w", err)
			}
			c.Set(tokenKey, tok)
			return next(c)
		}
	}
}

// ticket issues an event-stream ticket.
//
//	@Summary		Get a ticket for the event stream
//	@Description	Returns a single-use URL of GET /v1/events, valid for 60 s, for the browser's EventSource, which can't send an Authorization header: `new EventSource(ticket.url)`. The stream runs with this token's permissions (its device selector applies); a ticket of a token revoked or expired meanwhile is refused. Filters may be appended to the URL (`&types=reading`). A bearer token in the query string is never accepted.
//	@Tags			events
//	@Produce		json
//	@Success		201	{object}	api.EventTicket
//	@Failure		500	{object}	api.ErrorResponse
//	@Failure		503	{object}	api.ErrorResponse
//	@Security		BearerAuth
//	@Failure		401	{object}	api.ErrorResponse	"Missing, unknown, expired or revoked token (code unauthorized; header WWW-Authenticate)"
//	@Failure		403	{object}	api.ErrorResponse	"The token lacks the route's scope (code forbidden)"
//	@Failure		429	{object}	api.ErrorResponse	"The token's request rate is exceeded (code rate_limited)"
//	@Header			429	{integer}	Retry-After	"Seconds to wait before retrying"
//	@Router			/v1/events/tickets [post]
func (h *eventHandler) ticket(c echo.Context) error {
	secret, exp, err := h.tickets.Issue(c.Request().Context(), tokenOf(c))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusCreated, EventTicket{URL: eventsPath + "?ticket=" + url.QueryEscape(secret), ExpiresAt: exp.UTC()})
}

// eventFilter reads the stream's filters and resume id from the request.
// Errors: invalid (DetailInvalidEventID for the resume id).
func eventFilter(c echo.Context) (iotgate.EventFilter, *int64, error) {
	var f iotgate.EventFilter
	q := c.QueryParams()
	if ts := q.Get("types"); ts != "" {
		for _, t := range strings.Split(ts, ",") {
			et := iotgate.EventType(strings.TrimSpace(t))
			if !slices.Contains(iotgate.EventTypes, et) {
				return f, nil, iotgate.Errorf(iotgate.EInvalid, "types: unknown event type %q; the types are reading, rejection, presence, command, device", t)
			}
			if !slices.Contains(f.Types, et) {
				f.Types = append(f.Types, et)
			}
		}
	}
	for _, d := range q["device"] {
		jid, err := iotgate.NormalizeJID(d)
		if err != nil {
			return f, nil, fmt.Errorf("device: %w", err)
		}
		f.Devices = append(f.Devices, jid)
	}
	labels, err := labelsQuery(q["label"])
	if err != nil {
		return f, nil, err
	}
	f.Labels = labels
	f.Scope = selectorOf(c)

	// EventSource sends Last-Event-ID when it reconnects; it wins over
	// the after= of the URL it was opened with.
	from, name := c.Request().Header.Get("Last-Event-ID"), "Last-Event-ID"
	if from == "" {
		from, name = q.Get("after"), "after"
	}
	if from == "" {
		return f, nil, nil
	}
	after, err := strconv.ParseInt(strings.TrimSpace(from), 10, 64)
	if err != nil || after < 0 {
		return f, nil, &iotgate.Error{Code: iotgate.EInvalid, Detail: DetailInvalidEventID,
			Message: fmt.Sprintf("%s must be an event id (a non-negative integer), not %q", name, from)}
	}
	return f, &after, nil
}

// stream serves the event stream.
//
//	@Summary		Stream events (Server-Sent Events)
//	@Description	A text/event-stream of events: each as `id:` (the event id), `event:` (its type) and one `data:` line, the Event as JSON (its data: ReadingEventData, RejectionEventData, PresenceEventData, CommandView, DeviceEventData or GapEventData), then a blank line. An idle stream gets a comment line (`: ping`) every 15 s. Filters combine with AND; the token's device selector always applies. With Last-Event-ID (as EventSource sends it on reconnecting) or after, the stream first replays every matching event after that id, then continues live, with no gap and no duplicate; when some of them have been trimmed already (retention), it starts with a `gap` event, and the client should re-read state. A client that does not read fast enough is disconnected after a bounded backlog (it resumes with Last-Event-ID). Browsers, whose EventSource can't send an Authorization header, use a ticket from POST /v1/events/tickets; a bearer token in the query string is not accepted.
//	@Tags			events
//	@Produce		text/event-stream
//	@Param			types			query		string				false	"Only these event types, comma-separated (reading, rejection, presence, command, device)"	extensions(x-example=reading)
//	@Param			device			query		[]string			false	"Only this device's events (bare JID); repeat for several"									collectionFormat(multi)	extensions(x-example=thermo1@example.com)
//	@Param			label			query		[]string			false	"Only events of devices with this label, as key:value; repeat for several"				collectionFormat(multi)	extensions(x-example=room:kitchen)
//	@Param			after			query		int					false	"Replay the events after this id first"
//	@Param			Last-Event-ID	header		int					false	"Replay the events after this id first (wins over after)"
//	@Param			ticket			query		string				false	"A ticket from POST /v1/events/tickets, instead of the Authorization header"
//	@Success		200				{object}	iotgate.Event{data=api.EventData}	"The stream; each data: line is one Event, whose data is the member of EventData named by its type"
//	@Failure		400				{object}	api.ErrorResponse	"A bad type, device or label; a bad Last-Event-ID or after (code invalid_event_id)"
//	@Failure		429				{object}	api.ErrorResponse	"Too many streams open for this token or this server (code too_many_requests), or the token's request rate is exceeded (code rate_limited)"
//	@Failure		500				{object}	api.ErrorResponse
//	@Failure		503				{object}	api.ErrorResponse
//	@Security		BearerAuth
//	@Failure		401	{object}	api.ErrorResponse	"Missing, unknown, expired or revoked token or ticket (code unauthorized; header WWW-Authenticate)"
//	@Failure		403	{object}	api.ErrorResponse	"The token lacks the route's scope (code forbidden)"
//	@Router			/v1/events [get]
func (h *eventHandler) stream(c echo.Context) error {
	f, after, err := eventFilter(c)
	if err != nil {
		return err
	}
	req := c.Request()
	sub, err := h.hub.Subscribe(req.Context(), tokenIDOf(c), f, after)
	if err != nil {
		return fmt.Errorf("subscribe to events: %w", err)
	}
	defer sub.Close()

	// The server's read and write timeouts are for requests, not for a
	// stream that lasts hours; the errors only say the connection is not
	// a net.Conn's (tests' recorders).
	rc := http.NewResponseController(c.Response())
	_ = rc.SetWriteDeadline(time.Time{})
	_ = rc.SetReadDeadline(time.Time{})
	hdr := c.Response().Header()
	hdr.Set(echo.HeaderContentType, "text/event-stream")
	hdr.Set(echo.HeaderCacheControl, "no-cache")
	// nginx buffers responses unless told not to.
	hdr.Set("X-Accel-Buffering", "no")
	c.Response().WriteHeader(http.StatusOK)
	w := c.Response()
	// The headers go out now, so the client knows the stream is open.
	if err := rc.Flush(); err != nil {
		return nil
	}
	// Each pass writes once and flushes: the events of a wake-up (all
	// the frames in one buffer) or a comment.
	comment := func(text string) error {
		if _, err := w.Write([]byte(text)); err != nil {
			return err
		}
		return rc.Flush()
	}

	ctx, cancel := context.WithCancel(req.Context())
	defer cancel()
	go func() {
		select {
		case <-h.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	checked := time.Now()
	// One timer for the stream, not a deadline per wait: a busy stream
	// waits once per wake-up of the hub.
	ping := time.NewTimer(h.ping)
	defer ping.Stop()
	for {
		if h.auth != nil && time.Since(checked) >= h.ping {
			checked = time.Now()
			if _, err := h.auth.Current(ctx, tokenIDOf(c)); iotgate.ErrorCode(err) == iotgate.EUnauthorized {
				_ = comment(": closed: the token was revoked or has expired\n\n")
				return nil
			}
		}
		evs, err := sub.TryNext(ctx)
		if err == nil && len(evs) == 0 {
			select {
			case <-ctx.Done():
			case <-sub.Ready():
				continue
			case <-ping.C:
				ping.Reset(h.ping)
				if err := comment(": ping\n\n"); err != nil {
					return nil
				}
				continue
			}
		}
		switch {
		case ctx.Err() != nil:
			// The client left or the server shuts down.
			return nil
		case errors.Is(err, events.ErrSlowSubscriber):
			_ = comment(": closed: this client reads too slowly; resume with Last-Event-ID\n\n")
			return nil
		case errors.Is(err, events.ErrClosed):
			return nil
		case err != nil:
			// Headers are sent: the client sees the stream end and
			// reconnects with Last-Event-ID.
			h.log.Warn("event stream", "err", err, "request_id", requestIDOf(c))
			return nil
		}
		if err := writeEvents(w, evs); err != nil {
			return nil
		}
		if err := rc.Flush(); err != nil {
			return nil
		}
		ping.Reset(h.ping)
	}
}

// frames holds the buffers writeEvents fills: as many as streams write at
// once, not one per stream.
var frames = sync.Pool{New: func() any { return new([]byte) }}

// maxPooledFrames bounds the buffers kept for reuse; a larger one (a long
// replay's batch) is left to the collector.
const maxPooledFrames = 1 << 20

// writeEvents writes evs in the event-stream format: id, type, and the
// whole event as one line of JSON (encoding/json writes no newline), all
// in one Write. The JSON is the hub's, encoded once for every stream.
func writeEvents(w io.Writer, evs []*iotgate.Event) error {
	bp := frames.Get().(*[]byte)
	b := (*bp)[:0]
	for _, e := range evs {
		data, err := e.JSON()
		if err != nil {
			return err
		}
		b = append(b, "id: "...)
		b = strconv.AppendInt(b, e.ID, 10)
		b = append(b, "\nevent: "...)
		b = append(b, e.Type...)
		b = append(b, "\ndata: "...)
		b = append(b, data...)
		b = append(b, "\n\n"...)
	}
	_, err := w.Write(b)
	if cap(b) <= maxPooledFrames {
		*bp = b
		frames.Put(bp)
	}
	return err
}
