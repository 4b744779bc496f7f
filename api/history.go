package api

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/iotgate/iotgate"
)

// Reading is one payload a device sent that its schema accepted.
type Reading struct {
	ID         int64     `json:"id" example:"4711"`
	ReceivedAt time.Time `json:"received_at" format:"date-time" example:"2026-01-02T16:00:00.123Z"`
	// DeviceTime is the time the device stamped on the reading, if any.
	DeviceTime *time.Time `json:"device_time" format:"date-time" extensions:"x-nullable" example:"2026-01-02T16:00:00Z"`
	// XML is the payload element as the device sent it.
	XML string `json:"xml" example:"<reading xmlns='urn:example:thermostat'><temperature>21.5</temperature><mode>heat</mode></reading>"`
	// Data is the payload rendered as JSON, typed by its schema, for
	// example {"temperature": 21.5, "mode": "heat"}.
	Data json.RawMessage `json:"data" swaggertype:"object"`
}

// ReadingList is one page of readings.
type ReadingList struct {
	Items []Reading `json:"items"`
	// NextCursor continues the list (pass it as cursor); absent on the
	// last page.
	NextCursor string `json:"next_cursor,omitempty" example:"MTc2NzM2OTYwMDEyMzAwMDAwMC40NzEx"`
}

// Rejection is a payload that iotgate refused, kept for the operator.
type Rejection struct {
	ID         int64     `json:"id" example:"17"`
	ReceivedAt time.Time `json:"received_at" format:"date-time" example:"2026-01-02T16:00:00.123Z"`
	// Via is the stanza that carried the payload.
	Via string `json:"via" enums:"message,iq" example:"iq"`
	// Reason is why the payload was refused.
	Reason string `json:"reason" example:"document does not match its schema; line 1: /reading/temperature: '999' is greater than the maximum value allowed ('150')"`
	// Payload is the refused payload, truncated.
	Payload string `json:"payload" example:"<reading xmlns='urn:example:thermostat'><temperature>999</temperature><mode>heat</mode></reading>"`
}

// RejectionList is one page of rejections.
type RejectionList struct {
	Items []Rejection `json:"items"`
	// NextCursor continues the list (pass it as cursor); absent on the
	// last page.
	NextCursor string `json:"next_cursor,omitempty" example:"MTc2NzM2OTYwMDEyMzAwMDAwMC4xNw"`
}

// DeviceState is a device's current state.
type DeviceState struct {
	JID string `json:"jid" example:"thermo1@example.com"`
	// Online is whether an instance of the device is available, from its
	// presence; false until iotgate has seen its presence.
	Online bool `json:"online" example:"true"`
	// PresenceStale is true while iotgate's XMPP stream is down: then no
	// presence is known and online is false for every device.
	PresenceStale bool `json:"presence_stale" example:"false"`
	// Resources are the device's available instances (full JIDs),
	// highest priority first.
	Resources []Resource `json:"resources"`
	// LastSeenAt is when the device's last reading arrived; null before
	// the first.
	LastSeenAt *time.Time `json:"last_seen_at" format:"date-time" extensions:"x-nullable" example:"2026-01-02T16:00:00Z"`
	// Reading is the latest reading; null before the first.
	Reading *Reading `json:"reading" extensions:"x-nullable"`
}

// Resource is one available instance of a device.
type Resource struct {
	JID      string    `json:"jid" example:"thermo1@example.com/sensor"`
	Show     string    `json:"show,omitempty" enums:"away,chat,dnd,xa" example:"away"`
	Status   string    `json:"status,omitempty" example:"on battery"`
	Priority int       `json:"priority" example:"0"`
	Since    time.Time `json:"since" format:"date-time" example:"2026-01-02T15:04:05Z"`
}

// pageQuery is the query of the readings and rejections of a device,
// parsed by parseQuery; the query tags name the fields in validation
// errors.
type pageQuery struct {
	Since  *time.Time `query:"since"`
	Until  *time.Time `query:"until"`
	Limit  int        `query:"limit" validate:"min=1,max=1000"`
	Cursor string     `query:"cursor" validate:"max=1024"`
	Order  string     `query:"order" validate:"oneof=asc desc"`
}

// state returns a device's current state.
//
//	@Summary		Get a device's state
//	@Description	Returns whether the device is online (false until iotgate has seen its presence), when its last reading arrived and that reading (null before the first).
//	@Tags			devices
//	@Produce		json
//	@Param			jid	path		string	true	"Bare JID, URL-escaped"	extensions(x-example=thermo1@example.com)
//	@Success		200	{object}	api.DeviceState
//	@Failure		400	{object}	api.ErrorResponse	"Not a valid bare JID"
//	@Failure		404	{object}	api.ErrorResponse	"No such device"
//	@Failure		500	{object}	api.ErrorResponse
//	@Failure		503	{object}	api.ErrorResponse
//	@Security		BearerAuth
//	@Failure		401	{object}	api.ErrorResponse	"Missing, unknown, expired or revoked token (code unauthorized; header WWW-Authenticate)"
//	@Failure		403	{object}	api.ErrorResponse	"The token lacks the route's scope (code forbidden)"
//	@Failure		429	{object}	api.ErrorResponse	"The token's request rate is exceeded (code rate_limited)"
//	@Header			429	{integer}	Retry-After	"Seconds to wait before retrying"
//	@Router			/v1/devices/{jid}/state [get]
func (h *deviceHandler) state(c echo.Context) error {
	jid, err := h.jid(c)
	if err != nil {
		return err
	}
	if err := visible(c, h.svc, jid); err != nil {
		return err
	}
	st, err := h.svc.State(c.Request().Context(), jid)
	if err != nil {
		return fmt.Errorf("get device state: %w", err)
	}
	return writeState(c, st)
}

// readings lists a device's readings.
//
//	@Summary		List a device's readings
//	@Description	Lists the readings a device sent that its schema accepted, newest first by default, a page at a time: pass next_cursor as cursor (with the same since, until and order) to get the next page; the last page has no next_cursor. A page also ends once its rows reach IOTGATE_MAX_PAGE_BYTES (4 MiB by default; at least one row), so it may hold fewer rows than limit and still have a next_cursor. With Accept: text/csv the readings are exported as CSV instead, every page of them in one response (see docs/devices-and-readings.md): columns received_at, device_time, then one per scalar field of the device's schema (dotted paths, sorted); limit is then the size of the pages read, cursor where to start; an export stops after 10 minutes, with the cursor to continue in the X-Next-Cursor trailer.
//	@Tags			devices
//	@Produce		json
//	@Produce		text/csv
//	@Param			jid		path		string	true	"Bare JID, URL-escaped"														extensions(x-example=thermo1@example.com)
//	@Param			since	query		string	false	"Only readings received at or after this time (RFC 3339; escape + as %2B)"	format(date-time)	extensions(x-example=2026-01-02T00:00:00Z)
//	@Param			until	query		string	false	"Only readings received before this time (RFC 3339; escape + as %2B)"		format(date-time)	extensions(x-example=2026-01-03T00:00:00Z)
//	@Param			limit	query		int		false	"Page size"																	minimum(1)			maximum(1000)	default(100)
//	@Param			cursor	query		string	false	"next_cursor of the previous page"
//	@Param			order	query		string	false	"Newest (desc) or oldest (asc) first"	Enums(desc, asc)	default(desc)
//	@Success		200		{object}	api.ReadingList
//	@Failure		400		{object}	api.ErrorResponse{details=[]api.FieldError}	"Not a valid bare JID, or a bad since, until, limit, cursor or order"
//	@Failure		404		{object}	api.ErrorResponse							"No such device"
//	@Failure		500		{object}	api.ErrorResponse
//	@Failure		503		{object}	api.ErrorResponse
//	@Security		BearerAuth
//	@Failure		401	{object}	api.ErrorResponse	"Missing, unknown, expired or revoked token (code unauthorized; header WWW-Authenticate)"
//	@Failure		403	{object}	api.ErrorResponse	"The token lacks the route's scope (code forbidden)"
//	@Failure		429	{object}	api.ErrorResponse	"The token's request rate is exceeded (code rate_limited), or it (or the server) has too many list requests in progress (code too_many_concurrent)"
//	@Header			429	{integer}	Retry-After	"Seconds to wait before retrying"
//	@Router			/v1/devices/{jid}/readings [get]
func (h *deviceHandler) readings(c echo.Context) error {
	if acceptsCSV(c.Request().Header.Get(echo.HeaderAccept)) {
		return h.readingsCSV(c)
	}
	jid, f, err := h.jidAndFilter(c)
	if err != nil {
		return err
	}
	page, err := h.svc.Readings(c.Request().Context(), jid, f)
	if err != nil {
		return fmt.Errorf("list readings: %w", err)
	}
	return writeReadings(c, page)
}

// rejections lists a device's refused payloads.
//
//	@Summary		List a device's rejections
//	@Description	Lists the payloads iotgate refused from a device (not valid against its schema, or in no namespace of it) with the reason, newest first by default, paged like the readings (bounded in rows and in bytes). Payloads are truncated.
//	@Tags			devices
//	@Produce		json
//	@Param			jid		path		string	true	"Bare JID, URL-escaped"												extensions(x-example=thermo1@example.com)
//	@Param			since	query		string	false	"Only rejections at or after this time (RFC 3339; escape + as %2B)"	format(date-time)	extensions(x-example=2026-01-02T00:00:00Z)
//	@Param			until	query		string	false	"Only rejections before this time (RFC 3339; escape + as %2B)"		format(date-time)	extensions(x-example=2026-01-03T00:00:00Z)
//	@Param			limit	query		int		false	"Page size"															minimum(1)			maximum(1000)	default(100)
//	@Param			cursor	query		string	false	"next_cursor of the previous page"
//	@Param			order	query		string	false	"Newest (desc) or oldest (asc) first"	Enums(desc, asc)	default(desc)
//	@Success		200		{object}	api.RejectionList
//	@Failure		400		{object}	api.ErrorResponse{details=[]api.FieldError}	"Not a valid bare JID, or a bad since, until, limit, cursor or order"
//	@Failure		404		{object}	api.ErrorResponse							"No such device"
//	@Failure		500		{object}	api.ErrorResponse
//	@Failure		503		{object}	api.ErrorResponse
//	@Security		BearerAuth
//	@Failure		401	{object}	api.ErrorResponse	"Missing, unknown, expired or revoked token (code unauthorized; header WWW-Authenticate)"
//	@Failure		403	{object}	api.ErrorResponse	"The token lacks the route's scope (code forbidden)"
//	@Failure		429	{object}	api.ErrorResponse	"The token's request rate is exceeded (code rate_limited), or it (or the server) has too many list requests in progress (code too_many_concurrent)"
//	@Header			429	{integer}	Retry-After	"Seconds to wait before retrying"
//	@Router			/v1/devices/{jid}/rejections [get]
func (h *deviceHandler) rejections(c echo.Context) error {
	jid, f, err := h.jidAndFilter(c)
	if err != nil {
		return err
	}
	page, err := h.svc.Rejections(c.Request().Context(), jid, f)
	if err != nil {
		return fmt.Errorf("list rejections: %w", err)
	}
	return writeList(c, len(page.Items), func(b []byte, i int) ([]byte, error) {
		return appendJSON(b, rejectionOf(page.Items[i]))
	}, page.NextCursor)
}

func rejectionOf(r *iotgate.Rejection) Rejection {
	return Rejection{ID: r.ID, ReceivedAt: r.ReceivedAt, Via: r.Via, Reason: r.Reason, Payload: r.Payload}
}

// jidAndFilter reads the device (which the token must see) and the
// paging of a history endpoint.
func (h *deviceHandler) jidAndFilter(c echo.Context) (string, iotgate.ReadingFilter, error) {
	jid, err := h.jid(c)
	if err != nil {
		return "", iotgate.ReadingFilter{}, err
	}
	f, err := readingFilter(c)
	if err != nil {
		return "", iotgate.ReadingFilter{}, err
	}
	f.MaxBytes = h.pageBytes
	return jid, f, visible(c, h.svc, jid)
}

// readingFilter parses and validates the paging query of readings and
// rejections. Errors: invalid.
func readingFilter(c echo.Context) (iotgate.ReadingFilter, error) {
	q := pageQuery{Limit: DefaultPageLimit, Order: "desc"}
	if err := parseQuery(c, &q); err != nil {
		return iotgate.ReadingFilter{}, err
	}
	if q.Since != nil && q.Until != nil && q.Until.Before(*q.Since) {
		return iotgate.ReadingFilter{}, iotgate.Errorf(iotgate.EInvalid, "until is before since")
	}
	return iotgate.ReadingFilter{Since: q.Since, Until: q.Until, Limit: q.Limit, Cursor: q.Cursor, Desc: q.Order == "desc"}, nil
}
