package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/iotgate/iotgate"
	"github.com/iotgate/iotgate/devices"
)

// CommandService is what the API needs of the command service.
type CommandService interface {
	// Submit validates, stores and starts a command; replayed is true
	// when an earlier request with the same Idempotency-Key created it.
	// Outcomes known at once (device offline, stream down) come back as
	// a finished command (see iotgate.Command.Err). Errors: invalid,
	// not_found, unprocessable (payload; Idempotency-Key reused with
	// another request), too_many_requests, unavailable.
	Submit(ctx context.Context, req iotgate.CommandRequest) (c *iotgate.Command, replayed bool, err error)
	// Wait waits at most d for the command to finish and returns it as
	// it then is. Errors: not_found.
	Wait(ctx context.Context, id string, d time.Duration) (*iotgate.Command, error)
	// Command returns a command. Errors: not_found.
	Command(ctx context.Context, id string) (*iotgate.Command, error)
	// List returns a page of a device's commands, newest first.
	// Errors: invalid, not_found.
	List(ctx context.Context, jid string, f iotgate.CommandFilter) (*iotgate.CommandPage, error)
	// Cancel cancels a queued command. Errors: not_found, conflict.
	Cancel(ctx context.Context, id string) (*iotgate.Command, error)
}

var _ CommandService = (*devices.Commands)(nil)

// HeaderIdempotencyKey names the header that makes POST
// /v1/devices/{jid}/commands safe to retry.
const HeaderIdempotencyKey = "Idempotency-Key"

// HeaderIdempotentReplayed is set (to "true") on the answer to a request
// whose Idempotency-Key found the command an earlier request created.
const HeaderIdempotentReplayed = "Idempotent-Replayed"

// retryAfter is the Retry-After of a 429 to a command: in-flight commands
// finish within their timeouts, typically well under a second.
const retryAfter = "1"

// retryAfterQueueFull is the Retry-After of a 429 device_queue_full: a
// queue drains only once its device is back, which takes longer.
const retryAfterQueueFull = "60"

// setRetryAfter sets Retry-After on the answer to a command refused with
// err, if it is a too_many_requests.
func setRetryAfter(c echo.Context, err error) {
	var de *iotgate.Error
	if !errors.As(err, &de) || de.Code != iotgate.ETooMany {
		return
	}
	v := retryAfter
	if de.Detail == iotgate.DetailDeviceQueueFull {
		v = retryAfterQueueFull
	}
	c.Response().Header().Set("Retry-After", v)
}

// waitSlack is how much longer than a command's timeout a sync request
// waits for its outcome, which the service settles at the timeout itself.
const waitSlack = 5 * time.Second

// CreateCommandRequest is the body of POST /v1/devices/{jid}/commands.
type CreateCommandRequest struct {
	// Payload is the IQ's child element, one XML element that must be
	// valid against the device's schema, without comments, processing
	// instructions or a DOCTYPE. It is sent re-serialized (namespaces
	// declared, text escaped), not byte for byte. Send payload or data.
	Payload string `json:"payload" validate:"required_without=Data,excluded_with=Data" example:"<set xmlns='urn:example:thermostat'><target>21.5</target></set>"`
	// Data is the command as JSON, the alternative to payload: iotgate
	// builds the XML from the device's schema, the exact inverse of a
	// reading's rendering (keys are child elements in schema order,
	// "@name" attributes, "#text" simple content, arrays for elements that
	// may repeat), then validates it. See docs/commands.md and the JSON
	// Schema of the device's schema version.
	Data json.RawMessage `json:"data,omitempty" swaggertype:"object"`
	// Element is the local name of the command's root element, a global
	// element of the schema; absent, iotgate picks the one the data fits
	// (422 json_element_ambiguous naming the candidates if none or
	// several do). With data only.
	Element string `json:"element,omitempty" validate:"omitempty,max=255,excluded_without=Data" example:"set"`
	// Type is the IQ type.
	Type string `json:"type" validate:"omitempty,oneof=get set" enums:"set,get" default:"set" example:"set"`
	// TimeoutMS is how long to wait for the device's answer.
	TimeoutMS int `json:"timeout_ms" validate:"omitempty,min=1,max=300000" minimum:"1" maximum:"300000" default:"10000" example:"10000"`
	// Resource sends to that instance of the device (the part after the
	// '/' of its full JID); absent means the highest-priority available
	// one.
	Resource string `json:"resource" validate:"max=1023" example:"kitchen"`
	// Mode: sync waits for the outcome; async answers 202 at once; queue
	// also answers 202 and, if the device is offline, keeps the command
	// until it comes online or expires_in_ms passes.
	Mode string `json:"mode" validate:"omitempty,oneof=sync async queue" enums:"sync,async,queue" default:"sync" example:"sync"`
	// ExpiresInMS bounds how long a queued command waits (mode queue
	// only).
	ExpiresInMS int `json:"expires_in_ms" validate:"omitempty,min=1,max=604800000" minimum:"1" maximum:"604800000" default:"3600000" example:"3600000"`
}

// CommandList is one page of commands.
type CommandList struct {
	Items []iotgate.CommandView `json:"items"`
	// NextCursor continues the list (pass it as cursor); absent on the
	// last page.
	NextCursor string `json:"next_cursor,omitempty" example:"MTc2NzM2OTYwMDEyMzAwMDAwMC5BQkM"`
}

// commandPath is the URL path of a command.
func commandPath(id string) string { return "/v1/commands/" + url.PathEscape(id) }

// listCommandsQuery is the query of GET /v1/devices/{jid}/commands.
type listCommandsQuery struct {
	Limit  int    `query:"limit" validate:"min=1,max=1000"`
	Cursor string `query:"cursor" validate:"max=1024"`
}

// commandHandler serves the command endpoints.
type commandHandler struct {
	svc CommandService
	// devs looks devices up for tokens limited to some devices; nil
	// hides every device from such tokens.
	devs DeviceService
	// pageBytes is the byte budget of a page of commands (0: the default).
	pageBytes int64
}

// visibleCommand returns the command if the request's token may see its
// device. Errors: not_found (also for a command of a device outside the
// token's selector).
func (h *commandHandler) visibleCommand(c echo.Context, id string) (*iotgate.Command, error) {
	cmd, err := h.svc.Command(c.Request().Context(), id)
	if err != nil {
		return nil, fmt.Errorf("get command: %w", err)
	}
	if err := visible(c, h.devs, cmd.DeviceJID); err != nil {
		if iotgate.ErrorCode(err) == iotgate.ENotFound {
			return nil, iotgate.Errorf(iotgate.ENotFound, "command %s not found", id)
		}
		return nil, err
	}
	return cmd, nil
}

// create sends a command to a device.
//
//	@Summary		Send a command to a device
//	@Description	The command is payload (XML) or data (JSON, with element naming the root element, optional when the data fits one global element only): iotgate builds the XML from data by the device's schema, the exact inverse of a reading's rendering; data with no XML form in the schema is 422 with code json_not_mappable and details {path, reason} naming the key, json_element_ambiguous or json_element_unknown.
//	@Description	Validates the payload against the device's schema (422 with the validator's reason; nothing is sent), stores the command and sends it as an IQ to the given resource, or to the device's highest-priority available one.
//	@Description	mode sync (default) waits up to timeout_ms for the outcome: 200 with the device's response; 502 (code xmpp_error) when the device answered with an IQ error; 504 (code timeout) when it did not answer in time (a late answer is still recorded on the command); 409 (code device_offline) at once when the device has no available resource or its server bounced the IQ; 503 (code xmpp_unavailable) when iotgate's XMPP stream is down or drops.
//	@Description	mode async answers 202 at once (or 409/503 as above); follow Location. mode queue answers 202 and, while the device is offline, keeps the command until it comes online (then delivers queued commands in order) or until expires_in_ms passes (status expired).
//	@Description	Every error answer about a command that was stored carries the command in details. With an Idempotency-Key header, a retry with the same key and the same body within 24 hours returns the first command (header Idempotent-Replayed: true) instead of sending another; the same key with another body is 422 (code idempotency_key_reused). A key is the token's, for this device: the same key from another token, or to another device, is another key (a token never finds, blocks or learns of another's commands by key). A command refused before it was sent (409, 503) does not hold its key.
//	@Tags			commands
//	@Accept			json
//	@Produce		json
//	@Param			jid				path		string						true	"Bare JID, URL-escaped"	extensions(x-example=thermo1@example.com)
//	@Param			Idempotency-Key	header		string						false	"Makes retries safe: up to 255 bytes, unique per intended command"
//	@Param			command			body		api.CreateCommandRequest	true	"The command"
//	@Success		200				{object}	iotgate.CommandView					"The device answered with a result (mode sync)"
//	@Success		202				{object}	iotgate.CommandView					"Sent or queued (mode async or queue), or still under way"
//	@Header			200,202			{string}	Location					"URL path of the command, /v1/commands/{id}"
//	@Failure		400				{object}	api.ErrorResponse{details=[]api.FieldError}	"Bad JSON, a bad or unknown field, not a valid bare JID or resource"
//	@Failure		404				{object}	api.ErrorResponse							"No such device"
//	@Failure		409				{object}	api.ErrorResponse{details=iotgate.CommandView}		"The device is offline (code device_offline)"
//	@Failure		413				{object}	api.ErrorResponse							"Body too large"
//	@Failure		415				{object}	api.ErrorResponse							"Body is not JSON (Content-Type must be application/json)"
//	@Failure		422				{object}	api.ErrorResponse							"The payload is not valid against the device's schema (code unprocessable); data has no XML form in it (codes json_not_mappable, json_element_ambiguous, json_element_unknown; details: iotgate.MappingIssue); it contains an XML comment, a processing instruction or a DOCTYPE, which XMPP does not allow on the stream (codes comment_forbidden, processing_instruction_forbidden, doctype_forbidden); or the Idempotency-Key was used for another request (code idempotency_key_reused)"
//	@Failure		429				{object}	api.ErrorResponse							"Too many commands in flight: in all (code too_many_requests), of this token (code token_commands_in_flight, IOTGATE_MAX_COMMANDS_IN_FLIGHT_PER_TOKEN) or to this device (code device_commands_in_flight, IOTGATE_MAX_COMMANDS_IN_FLIGHT_PER_DEVICE), mode queue excepted (it waits); the device's queue is full (code device_queue_full, IOTGATE_MAX_QUEUED_PER_DEVICE, Retry-After 60); or the token's request rate is exceeded (code rate_limited)"
//	@Header			429				{integer}	Retry-After									"Seconds to wait before retrying"
//	@Failure		500				{object}	api.ErrorResponse
//	@Failure		502				{object}	api.ErrorResponse{details=iotgate.CommandView}	"The device answered with an IQ error (code xmpp_error; details.xmpp_error has type, condition and text)"
//	@Failure		503				{object}	api.ErrorResponse{details=iotgate.CommandView}	"iotgate's XMPP stream is down (code xmpp_unavailable), or the database is"
//	@Failure		504				{object}	api.ErrorResponse{details=iotgate.CommandView}	"No answer within timeout_ms (code timeout)"
//	@Security		BearerAuth
//	@Failure		401	{object}	api.ErrorResponse	"Missing, unknown, expired or revoked token (code unauthorized; header WWW-Authenticate)"
//	@Failure		403	{object}	api.ErrorResponse	"The token lacks the route's scope (code forbidden)"
//	@Router			/v1/devices/{jid}/commands [post]
func (h *commandHandler) create(c echo.Context) error {
	jid, err := pathParam(c, "jid")
	if err != nil {
		return err
	}
	var req CreateCommandRequest
	if err := bind(c, &req); err != nil {
		return err
	}
	if err := visible(c, h.devs, jid); err != nil {
		return err
	}
	var tokenID, sentBy string
	if tok := tokenOf(c); tok != nil {
		tokenID, sentBy = tok.ID, tok.Name
	}
	ctx := c.Request().Context()
	cmd, replayed, err := h.svc.Submit(ctx, iotgate.CommandRequest{
		TokenID: tokenID, SentBy: sentBy,
		DeviceJID: jid, Type: req.Type, Payload: req.Payload, Resource: req.Resource,
		Data: string(req.Data), Element: req.Element,
		Mode: iotgate.CommandMode(req.Mode), Timeout: time.Duration(req.TimeoutMS) * time.Millisecond,
		ExpiresIn:      time.Duration(req.ExpiresInMS) * time.Millisecond,
		IdempotencyKey: strings.TrimSpace(c.Request().Header.Get(HeaderIdempotencyKey)),
	})
	if err != nil {
		setRetryAfter(c, err)
		return fmt.Errorf("send command: %w", err)
	}
	if replayed {
		c.Response().Header().Set(HeaderIdempotentReplayed, "true")
	}
	if cmd.Mode == iotgate.CommandSync && cmd.Status == iotgate.CommandSent {
		wait := cmd.Timeout + waitSlack
		// The server's write timeout is shorter than the longest command
		// timeout: extend it for this response. (Recorders in tests
		// don't support it, which is harmless.)
		_ = http.NewResponseController(c.Response()).SetWriteDeadline(time.Now().Add(wait + waitSlack))
		if cmd, err = h.svc.Wait(ctx, cmd.ID, wait); err != nil {
			return fmt.Errorf("wait for command: %w", err)
		}
	}
	return respondCommand(c, cmd)
}

// respondCommand answers with a command: 200 when it succeeded, the error
// of its outcome (with the command in details) when it did not, 202 while
// it is under way.
func respondCommand(c echo.Context, cmd *iotgate.Command) error {
	c.Response().Header().Set(echo.HeaderLocation, commandPath(cmd.ID))
	if err := cmd.Err(); err != nil {
		var de *iotgate.Error
		if errors.As(err, &de) {
			out := *de
			out.Fields = cmd.View()
			setRetryAfter(c, &out)
			return &out
		}
		return err
	}
	if cmd.Status == iotgate.CommandSucceeded {
		return c.JSON(http.StatusOK, cmd.View())
	}
	return c.JSON(http.StatusAccepted, cmd.View())
}

// get returns a command.
//
//	@Summary		Get a command
//	@Description	Returns a command with its status, timings, outcome (response or xmpp_error, even when the answer came after the timeout) and history.
//	@Tags			commands
//	@Produce		json
//	@Param			id	path		string	true	"Command ID"
//	@Success		200	{object}	iotgate.CommandView
//	@Failure		404	{object}	api.ErrorResponse	"No such command"
//	@Failure		500	{object}	api.ErrorResponse
//	@Failure		503	{object}	api.ErrorResponse
//	@Security		BearerAuth
//	@Failure		401	{object}	api.ErrorResponse	"Missing, unknown, expired or revoked token (code unauthorized; header WWW-Authenticate)"
//	@Failure		403	{object}	api.ErrorResponse	"The token lacks the route's scope (code forbidden)"
//	@Failure		429	{object}	api.ErrorResponse	"The token's request rate is exceeded (code rate_limited)"
//	@Header			429	{integer}	Retry-After	"Seconds to wait before retrying"
//	@Router			/v1/commands/{id} [get]
func (h *commandHandler) get(c echo.Context) error {
	id, err := pathParam(c, "id")
	if err != nil {
		return err
	}
	cmd, err := h.visibleCommand(c, id)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, cmd.View())
}

// list lists a device's commands.
//
//	@Summary		List a device's commands
//	@Description	Lists the commands sent (or queued) to a device, newest first, a page at a time: pass next_cursor as cursor to get the next page; the last page has no next_cursor. A page also ends once its rows reach IOTGATE_MAX_PAGE_BYTES (4 MiB by default; at least one row), so it may hold fewer rows than limit and still have a next_cursor.
//	@Tags			commands
//	@Produce		json
//	@Param			jid		path		string	true	"Bare JID, URL-escaped"	extensions(x-example=thermo1@example.com)
//	@Param			limit	query		int		false	"Page size"				minimum(1)	maximum(1000)	default(100)
//	@Param			cursor	query		string	false	"next_cursor of the previous page"
//	@Success		200		{object}	api.CommandList
//	@Failure		400		{object}	api.ErrorResponse{details=[]api.FieldError}	"Not a valid bare JID, or a bad limit or cursor"
//	@Failure		404		{object}	api.ErrorResponse							"No such device"
//	@Failure		500		{object}	api.ErrorResponse
//	@Failure		503		{object}	api.ErrorResponse
//	@Security		BearerAuth
//	@Failure		401	{object}	api.ErrorResponse	"Missing, unknown, expired or revoked token (code unauthorized; header WWW-Authenticate)"
//	@Failure		403	{object}	api.ErrorResponse	"The token lacks the route's scope (code forbidden)"
//	@Failure		429	{object}	api.ErrorResponse	"The token's request rate is exceeded (code rate_limited), or it (or the server) has too many list requests in progress (code too_many_concurrent)"
//	@Header			429	{integer}	Retry-After	"Seconds to wait before retrying"
//	@Router			/v1/devices/{jid}/commands [get]
func (h *commandHandler) list(c echo.Context) error {
	jid, err := pathParam(c, "jid")
	if err != nil {
		return err
	}
	q := listCommandsQuery{Limit: DefaultPageLimit}
	if err := parseQuery(c, &q); err != nil {
		return err
	}
	if err := visible(c, h.devs, jid); err != nil {
		return err
	}
	page, err := h.svc.List(c.Request().Context(), jid, iotgate.CommandFilter{Limit: q.Limit, Cursor: q.Cursor, MaxBytes: h.pageBytes})
	if err != nil {
		return fmt.Errorf("list commands: %w", err)
	}
	// Streamed as a CommandList: a page of large answers is not encoded
	// whole.
	return writeList(c, len(page.Items), func(b []byte, i int) ([]byte, error) {
		return appendJSON(b, page.Items[i].View())
	}, page.NextCursor)
}

// cancel cancels a queued command.
//
//	@Summary		Cancel a queued command
//	@Description	Cancels a command that waits in the queue for its device (status queued); it will not be delivered. A command in any other status can't be canceled (409, code command_not_queued): one already sent may already have been acted on.
//	@Tags			commands
//	@Produce		json
//	@Param			id	path		string	true	"Command ID"
//	@Success		200	{object}	iotgate.CommandView	"Canceled"
//	@Failure		404	{object}	api.ErrorResponse	"No such command"
//	@Failure		409	{object}	api.ErrorResponse	"The command is not queued (code command_not_queued)"
//	@Failure		500	{object}	api.ErrorResponse
//	@Failure		503	{object}	api.ErrorResponse
//	@Security		BearerAuth
//	@Failure		401	{object}	api.ErrorResponse	"Missing, unknown, expired or revoked token (code unauthorized; header WWW-Authenticate)"
//	@Failure		403	{object}	api.ErrorResponse	"The token lacks the route's scope (code forbidden)"
//	@Failure		429	{object}	api.ErrorResponse	"The token's request rate is exceeded (code rate_limited)"
//	@Header			429	{integer}	Retry-After	"Seconds to wait before retrying"
//	@Router			/v1/commands/{id}/cancel [post]
func (h *commandHandler) cancel(c echo.Context) error {
	id, err := pathParam(c, "id")
	if err != nil {
		return err
	}
	if _, err := h.visibleCommand(c, id); err != nil {
		return err
	}
	cmd, err := h.svc.Cancel(c.Request().Context(), id)
	if err != nil {
		return fmt.Errorf("cancel command: %w", err)
	}
	return c.JSON(http.StatusOK, cmd.View())
}
