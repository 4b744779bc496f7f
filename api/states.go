package api

import (
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/iotgate/iotgate"
	"github.com/iotgate/iotgate/schemas/xsd"
)

// StatesRequest is the body of POST /v1/devices/states.
type StatesRequest struct {
	// JIDs are the devices' bare JIDs, at most 500 (duplicates count
	// once).
	JIDs []string `json:"jids" validate:"required,min=1,max=500,dive,max=3071" example:"thermo1@example.com,thermo2@example.com"`
}

// StatesResponse is the answer of POST /v1/devices/states.
type StatesResponse struct {
	// Items are the states of the devices found, in the order asked.
	Items []DeviceState `json:"items"`
	// NotFound are the JIDs of no device the token may see (not
	// registered, or outside its selector: the two are not told apart),
	// normalized.
	NotFound []string `json:"not_found" example:"gone@example.com"`
}

// states returns the current state of many devices at once.
//
//	@Summary		Get many devices' states
//	@Description	Returns the state of each listed device (online, presence resources, last_seen_at and the latest reading), as GET /v1/devices/{jid}/state does for one, in one call, served from iotgate's caches where they hold the device and its reading. At most 500 JIDs. A JID of no device the token may see (not registered, or outside its selector) is listed in not_found, never told apart. Counted as a heavy request.
//	@Tags			devices
//	@Accept			json
//	@Produce		json
//	@Param			request	body		api.StatesRequest	true	"The devices"
//	@Success		200		{object}	api.StatesResponse
//	@Failure		400		{object}	api.ErrorResponse{details=[]api.FieldError}	"Bad JSON, no JIDs or more than 500, or a JID that is not a valid bare JID"
//	@Failure		413		{object}	api.ErrorResponse							"Body too large"
//	@Failure		415		{object}	api.ErrorResponse							"Body is not JSON (Content-Type must be application/json)"
//	@Failure		500		{object}	api.ErrorResponse
//	@Failure		503		{object}	api.ErrorResponse
//	@Security		BearerAuth
//	@Failure		401	{object}	api.ErrorResponse	"Missing, unknown, expired or revoked token (code unauthorized; header WWW-Authenticate)"
//	@Failure		403	{object}	api.ErrorResponse	"The token lacks the route's scope (code forbidden)"
//	@Failure		429	{object}	api.ErrorResponse	"The token's request rate is exceeded (code rate_limited), or it (or the server) has too many heavy requests in progress (code too_many_concurrent)"
//	@Header			429	{integer}	Retry-After	"Seconds to wait before retrying"
//	@Router			/v1/devices/states [post]
func (h *deviceHandler) states(c echo.Context) error {
	var req StatesRequest
	if err := bind(c, &req); err != nil {
		return err
	}
	sel := selectorOf(c)
	sts, missing, err := h.svc.States(c.Request().Context(), req.JIDs, func(d *iotgate.Device) bool { return sel.Matches(d.Labels) })
	if err != nil {
		return fmt.Errorf("get device states: %w", err)
	}
	// Streamed as writeList does: 500 states with their readings are
	// bounded, but not small.
	w := c.Response()
	bp := pagePool.Get().(*[]byte)
	defer func() {
		if cap(*bp) <= 1<<20 {
			pagePool.Put(bp)
		}
	}()
	b := append((*bp)[:0], `{"items":[`...)
	for i, st := range sts {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendState(b, st)
		if len(b) >= listChunk {
			if !w.Committed {
				w.Header().Set(echo.HeaderContentType, echo.MIMEApplicationJSON)
				w.WriteHeader(http.StatusOK)
			}
			if _, err := w.Write(b); err != nil {
				*bp = b
				return err
			}
			b = b[:0]
		}
	}
	b = append(b, `],"not_found":[`...)
	for i, j := range missing {
		if i > 0 {
			b = append(b, ',')
		}
		b = xsd.AppendJSONString(b, j)
	}
	b = append(b, "]}\n"...)
	*bp = b
	if !w.Committed {
		return c.JSONBlob(http.StatusOK, b)
	}
	_, err = w.Write(b)
	return err
}

// includeState is the include value of GET /v1/devices that adds each
// device's state.
const includeState = "state"

// includesState says whether a device list asks for its devices' states:
// it is then heavy, as POST /v1/devices/states.
func includesState(c echo.Context) bool { return c.QueryParam("include") != "" }

// writeWithStates answers a page of devices with each one's state, from
// the same primitive as POST /v1/devices/states (the device service's
// StatesOf) and rendered by the same appendState, streamed as writeList
// does. The page is already limited to the token's selector.
func (h *deviceHandler) writeWithStates(c echo.Context, page *iotgate.DevicePage) error {
	sts, err := h.svc.StatesOf(c.Request().Context(), page.Items)
	if err != nil {
		return fmt.Errorf("get device states: %w", err)
	}
	return writeList(c, len(page.Items), func(b []byte, i int) ([]byte, error) {
		d, err := json.Marshal(deviceOf(page.Items[i]))
		if err != nil {
			return b, err
		}
		b = append(b, d[:len(d)-1]...) // the object, open for one more key
		b = append(b, `,"state":`...)
		b = appendState(b, sts[i])
		return append(b, '}'), nil
	}, page.NextCursor)
}
