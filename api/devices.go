package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/iotgate/iotgate"
	"github.com/iotgate/iotgate/devices"
)

// DeviceService is what the API needs of the device registry.
type DeviceService interface {
	// Register creates a device; SchemaVersion 0 means the schema's latest
	// version. Errors: invalid (bad or full JID, labels, unknown schema),
	// conflict (already registered).
	Register(ctx context.Context, d *iotgate.Device) (*iotgate.Device, error)
	// Device returns a device. Errors: invalid (bad JID), not_found.
	Device(ctx context.Context, jid string) (*iotgate.Device, error)
	// Devices lists devices. Errors: invalid (bad cursor).
	Devices(ctx context.Context, f iotgate.DeviceFilter) (*iotgate.DevicePage, error)
	// Update changes a device. Errors: invalid, not_found.
	Update(ctx context.Context, jid string, u iotgate.DeviceUpdate) (*iotgate.Device, error)
	// Delete removes a device with its readings and rejections.
	// Errors: invalid, not_found.
	Delete(ctx context.Context, jid string) error
	// State returns a device's current state. Errors: invalid, not_found.
	State(ctx context.Context, jid string) (*iotgate.State, error)
	// Readings returns a page of a device's readings.
	// Errors: invalid, not_found.
	Readings(ctx context.Context, jid string, f iotgate.ReadingFilter) (*iotgate.ReadingPage, error)
	// Rejections returns a page of a device's refused payloads.
	// Errors: invalid, not_found.
	Rejections(ctx context.Context, jid string, f iotgate.ReadingFilter) (*iotgate.RejectionPage, error)
	// Aggregate returns time buckets of a device's readings with
	// aggregates of numeric fields. Errors: invalid, not_found,
	// unprocessable (field_unknown, field_not_numeric,
	// too_many_buckets), unavailable, timeout.
	Aggregate(ctx context.Context, jid string, q iotgate.AggregateQuery) ([]iotgate.AggregateBucket, error)
	// States returns the states of many devices, and the JIDs of those
	// not registered or that show refuses. Errors: invalid, unavailable.
	States(ctx context.Context, jids []string, show func(*iotgate.Device) bool) ([]*iotgate.State, []string, error)
	// StatesOf returns the states of devices the caller holds, in
	// order. Errors: invalid (more than devices.MaxStates), unavailable.
	StatesOf(ctx context.Context, devs []*iotgate.Device) ([]*iotgate.State, error)
	// ReadingFields returns the paths of the scalar fields of the
	// device's readings by its schema, sorted. Errors: invalid,
	// not_found, unavailable.
	ReadingFields(ctx context.Context, jid string) ([]iotgate.FieldPath, error)
	// RegisterWithAccount registers a device and creates its XMPP
	// account, with password or a generated one (password ""), which it
	// returns. Errors: those of Register; unprocessable
	// (accounts_unavailable), conflict (account_exists), unavailable
	// (account_server_unavailable), timeout.
	RegisterWithAccount(ctx context.Context, d *iotgate.Device, password string) (*iotgate.Device, string, error)
	// DeleteWithAccount removes a device and its XMPP account. Errors:
	// those of Delete; unprocessable (accounts_unavailable), unavailable
	// (account_server_unavailable), timeout.
	DeleteWithAccount(ctx context.Context, jid string) error
}

var _ DeviceService = (*devices.Service)(nil)

// CreateDeviceRequest is the body of POST /v1/devices.
type CreateDeviceRequest struct {
	// JID is the device's bare JID. It is normalized (PRECIS) and stored
	// in its canonical form; a full JID (with a resource) is refused.
	JID string `json:"jid" validate:"required,max=3071" example:"thermo1@example.com"`
	// Schema is the name of the schema the device's readings follow.
	Schema string `json:"schema" validate:"required,max=64" example:"thermostat"`
	// SchemaVersion pins a version of the schema; absent (or 0) means
	// the latest version at registration.
	SchemaVersion int `json:"schema_version" validate:"min=0" example:"2"`
	// Name is free text for humans.
	Name string `json:"name" validate:"max=200" example:"Kitchen"`
	// Labels are key-value pairs to select devices by (GET
	// /v1/devices?label=room:kitchen).
	Labels map[string]string `json:"labels" validate:"max=64" example:"room:kitchen,site:berlin"`
	// Account, with create true, also creates the device's XMPP account
	// on the server (when iotgate is configured to: IOTGATE_XMPP_ACCOUNTS).
	Account *AccountRequest `json:"account"`
}

// AccountRequest asks POST /v1/devices to create the device's XMPP
// account.
type AccountRequest struct {
	// Create must be true to create the account.
	Create bool `json:"create" example:"true"`
	// Password is the account's password (12 to 128 bytes of printable
	// UTF-8); absent: a random one of 26 characters is generated and
	// returned.
	Password string `json:"password" validate:"omitempty,min=12,max=128" example:"correct-horse-battery"`
}

// CreatedDevice is the answer of POST /v1/devices: the device, and its
// account when one was created.
type CreatedDevice struct {
	Device
	// Account is present when the request asked for the XMPP account.
	Account *CreatedAccount `json:"account,omitempty"`
}

// CreatedAccount is an XMPP account created with its device.
type CreatedAccount struct {
	// JID is the account's bare JID: the device's.
	JID string `json:"jid" example:"thermo1@example.com"`
	// Password is the account's password, shown this once: iotgate
	// stores it nowhere.
	Password string `json:"password" example:"MZXW6YTBOI7TQWKXOVXHI4LF3Q"`
}

// deleteDeviceQuery is the query of DELETE /v1/devices/{jid}.
type deleteDeviceQuery struct {
	// Account "delete" also removes the device's XMPP account.
	Account string `query:"account" validate:"omitempty,oneof=delete keep"`
}

// UpdateDeviceRequest is the body of PATCH /v1/devices/{jid}. Absent (or
// null) fields are left alone: hence the pointers.
type UpdateDeviceRequest struct {
	Name *string `json:"name" validate:"omitempty,max=200" example:"Kitchen (north wall)"`
	// Labels replace all the device's labels; {} removes them.
	Labels *map[string]string `json:"labels" validate:"omitempty,max=64" example:"room:kitchen,site:berlin"`
	// SchemaVersion moves the device to another version of its schema.
	SchemaVersion *int `json:"schema_version" validate:"omitempty,min=1" example:"3"`
}

// Device is a registered device.
type Device struct {
	JID           string            `json:"jid" example:"thermo1@example.com"`
	Name          string            `json:"name" example:"Kitchen"`
	Labels        map[string]string `json:"labels" example:"room:kitchen,site:berlin"`
	Schema        string            `json:"schema" example:"thermostat"`
	SchemaVersion int               `json:"schema_version" example:"2"`
	CreatedAt     time.Time         `json:"created_at" format:"date-time" example:"2026-01-02T15:04:05Z"`
	UpdatedAt     time.Time         `json:"updated_at" format:"date-time" example:"2026-01-02T15:04:05Z"`
	// LastSeenAt is when the device's last reading arrived; null before
	// the first.
	LastSeenAt *time.Time `json:"last_seen_at" format:"date-time" extensions:"x-nullable" example:"2026-01-02T16:00:00Z"`
	// Online is whether an instance of the device is available, from its
	// presence.
	Online bool `json:"online" example:"true"`
	// State is the device's current state (presence resources and
	// latest reading) as GET /v1/devices/{jid}/state gives it; only in
	// GET /v1/devices?include=state.
	State *DeviceState `json:"state,omitempty"`
}

// DeviceList is one page of devices.
type DeviceList struct {
	Items []Device `json:"items"`
	// NextCursor continues the list (pass it as cursor); absent on the
	// last page.
	NextCursor string `json:"next_cursor,omitempty" example:"dGhlcm1vMUBleGFtcGxlLmNvbQ"`
}

func deviceOf(d *iotgate.Device) Device {
	out := Device{
		JID: d.JID, Name: d.Name, Labels: d.Labels,
		Schema: d.Schema, SchemaVersion: d.SchemaVersion,
		CreatedAt: d.CreatedAt, UpdatedAt: d.UpdatedAt, LastSeenAt: d.LastSeenAt, Online: d.Online,
	}
	if out.Labels == nil {
		out.Labels = map[string]string{}
	}
	return out
}

// devicePath is the URL path of a device.
func devicePath(jid string) string {
	return "/v1/devices/" + url.PathEscape(jid)
}

// listDevicesQuery is the query of GET /v1/devices, parsed by parseQuery; the
// query tags name the fields in validation errors.
type listDevicesQuery struct {
	Schema string            `query:"schema" validate:"max=64"`
	Labels map[string]string `query:"label" validate:"max=64"`
	Online *bool             `query:"online"`
	Limit  int               `query:"limit" validate:"min=1,max=1000"`
	// Cursor encodes a JID, which may be up to 3071 bytes long.
	Cursor string `query:"cursor" validate:"max=8192"`
	// Include "state" adds each device's state.
	Include string `query:"include" validate:"omitempty,oneof=state"`
}

// deviceHandler serves /v1/devices.
type deviceHandler struct {
	svc DeviceService
	// pageBytes is the byte budget of a page of readings or rejections
	// (0: the default).
	pageBytes int64
	// writeTimeout is the server's; a CSV export renews it per page.
	writeTimeout time.Duration
}

// jid returns the device JID of the path. It is not normalized here: the
// service does that, and says why a JID is invalid.
func (h *deviceHandler) jid(c echo.Context) (string, error) {
	return pathParam(c, "jid")
}

// create registers a device.
//
//	@Summary		Register a device
//	@Description	Registers an XMPP entity as a device whose readings follow the given schema. The JID is normalized (PRECIS) and stored bare: a full JID (with a resource) or an invalid one is refused with 400 saying why. schema_version absent means the schema's latest version at registration; the device stays on that version until changed with PATCH.
//	@Description	With "account": {"create": true}, iotgate also creates the device's XMPP account on the server (ejabberd's HTTP API or prosodyctl, per IOTGATE_XMPP_ACCOUNTS) before registering it, and removes it again if the registration fails. The password is the one given (12 to 128 bytes) or a generated one (26 characters), returned once in account.password and stored nowhere. Not configured: 422 accounts_unavailable; the account exists: 409 account_exists; the server's admin interface unreachable, timed out (10 s) or refusing iotgate's credential: 503 account_server_unavailable.
//	@Tags			devices
//	@Accept			json
//	@Produce		json
//	@Param			device	body		api.CreateDeviceRequest	true	"The device to register; with account.create true, its XMPP account is created too"
//	@Success		201		{object}	api.CreatedDevice	"The device; account (with the password, shown this once) when asked for"
//	@Header			201		{string}	Location									"URL path of the device, for example /v1/devices/thermo1@example.com"
//	@Failure		400		{object}	api.ErrorResponse{details=[]api.FieldError}	"Bad JSON, an unknown or missing field, a full or invalid JID, bad labels, or an unknown schema or version"
//	@Failure		403		{object}	api.ErrorResponse							"The token lacks the route's scope; labels outside its device selector; a JID outside IOTGATE_DEVICE_DOMAINS (code device_domain_not_allowed), or, for a token limited by a selector, a JID taken by a device it can't see (code forbidden)"
//	@Failure		409		{object}	api.ErrorResponse							"The JID is already registered (to a token limited by a selector: by a device it sees), or its XMPP account already exists (code account_exists)"
//	@Failure		422		{object}	api.ErrorResponse							"An account was asked for and this iotgate does not create accounts (code accounts_unavailable), or the server refused the name (code account_refused)"
//	@Failure		413		{object}	api.ErrorResponse							"Body too large"
//	@Failure		415		{object}	api.ErrorResponse							"Body is not JSON (Content-Type must be application/json)"
//	@Failure		500		{object}	api.ErrorResponse
//	@Failure		503		{object}	api.ErrorResponse	"The database, or the XMPP server's admin interface (code account_server_unavailable), is not available"
//	@Security		BearerAuth
//	@Failure		401	{object}	api.ErrorResponse	"Missing, unknown, expired or revoked token (code unauthorized; header WWW-Authenticate)"
//	@Failure		429	{object}	api.ErrorResponse	"The token's request rate is exceeded (code rate_limited)"
//	@Header			429	{integer}	Retry-After	"Seconds to wait before retrying"
//	@Router			/v1/devices [post]
func (h *deviceHandler) create(c echo.Context) error {
	var req CreateDeviceRequest
	if err := bind(c, &req); err != nil {
		return err
	}
	if err := mayLabel(c, req.Labels); err != nil {
		return err
	}
	dev := &iotgate.Device{
		JID: req.JID, Schema: req.Schema, SchemaVersion: req.SchemaVersion,
		Name: req.Name, Labels: req.Labels,
	}
	withAccount := req.Account != nil && req.Account.Create
	if req.Account != nil && !req.Account.Create && req.Account.Password != "" {
		return iotgate.Errorf(iotgate.EInvalid, "account.password is only for account.create true")
	}
	var (
		d        *iotgate.Device
		password string
		err      error
	)
	if withAccount {
		d, password, err = h.svc.RegisterWithAccount(c.Request().Context(), dev, req.Account.Password)
	} else {
		d, err = h.svc.Register(c.Request().Context(), dev)
	}
	var de *iotgate.Error
	if errors.As(err, &de) && de.Code == iotgate.EConflict && de.Detail == "" {
		return h.taken(c, req.JID, err)
	}
	if err != nil {
		return fmt.Errorf("register device: %w", err)
	}
	out := CreatedDevice{Device: deviceOf(d)}
	if withAccount {
		out.Account = &CreatedAccount{JID: d.JID, Password: password}
		// The password is in this answer only: no cache may keep it.
		c.Response().Header().Set(echo.HeaderCacheControl, "no-store")
	}
	c.Response().Header().Set(echo.HeaderLocation, devicePath(d.JID))
	return c.JSON(http.StatusCreated, out)
}

// taken answers a registration refused because the JID is taken (err,
// conflict). A token limited by a selector gets 409 only for a device it
// may see; for any other it gets the 403 of a JID it may not register,
// never a 409 that would confirm that a device it can't see exists (GET
// of that device is 404 to it).
func (h *deviceHandler) taken(c echo.Context, jid string, err error) error {
	sel := selectorOf(c)
	if len(sel) == 0 {
		return fmt.Errorf("register device: %w", err)
	}
	d, gerr := h.svc.Device(c.Request().Context(), jid)
	if gerr == nil && sel.Matches(d.Labels) {
		return fmt.Errorf("register device: %w", err)
	}
	if gerr != nil && iotgate.ErrorCode(gerr) != iotgate.ENotFound {
		return fmt.Errorf("register device: %w", gerr)
	}
	return iotgate.Errorf(iotgate.EForbidden, "this token can't register device %s", jid)
}

// list lists devices.
//
//	@Summary		List devices
//	@Description	Lists devices, ordered by JID, a page at a time: pass next_cursor as cursor to get the next page; the last page has no next_cursor. Filters combine: a device must match all of them.
//	@Tags			devices
//	@Produce		json
//	@Param			schema	query		string		false	"Only devices of this schema"										extensions(x-example=thermostat)
//	@Param			label	query		[]string	false	"Only devices with this label, as key:value; repeat for several"	collectionFormat(multi)	extensions(x-example=room:kitchen)
//	@Param			online	query		bool		false	"Only devices whose presence is (true) or is not (false) available"
//	@Param			limit	query		int			false	"Page size"	minimum(1)	maximum(1000)	default(100)
//	@Param			cursor	query		string		false	"next_cursor of the previous page"
//	@Param			include	query		string		false	"state: each device also carries its state (presence resources, latest reading) as GET /v1/devices/{jid}/state gives it, from iotgate's caches; then limit is at most 500 and the request counts as heavy"	Enums(state)	extensions(x-example=state)
//	@Success		200		{object}	api.DeviceList
//	@Failure		400		{object}	api.ErrorResponse	"A bad label, online, limit, cursor or include (limit over 500 with include=state)"
//	@Failure		500		{object}	api.ErrorResponse
//	@Failure		503		{object}	api.ErrorResponse
//	@Security		BearerAuth
//	@Failure		401	{object}	api.ErrorResponse	"Missing, unknown, expired or revoked token (code unauthorized; header WWW-Authenticate)"
//	@Failure		403	{object}	api.ErrorResponse	"The token lacks the route's scope (code forbidden)"
//	@Failure		429	{object}	api.ErrorResponse	"The token's request rate is exceeded (code rate_limited), or with include=state it (or the server) has too many heavy requests in progress (code too_many_concurrent)"
//	@Header			429	{integer}	Retry-After	"Seconds to wait before retrying"
//	@Router			/v1/devices [get]
func (h *deviceHandler) list(c echo.Context) error {
	q := listDevicesQuery{Limit: DefaultPageLimit}
	if err := parseQuery(c, &q); err != nil {
		return err
	}
	if q.Include == includeState && q.Limit > devices.MaxStates {
		return iotgate.Errorf(iotgate.EInvalid, "limit must be at most %d with include=state", devices.MaxStates)
	}
	labels, ok := withSelector(q.Labels, selectorOf(c))
	if !ok {
		// The filter asks for devices outside the token's selector.
		return c.JSON(http.StatusOK, DeviceList{Items: []Device{}})
	}
	page, err := h.svc.Devices(c.Request().Context(), iotgate.DeviceFilter{
		Schema: q.Schema, Labels: labels, Online: q.Online, Limit: q.Limit, Cursor: q.Cursor,
	})
	if err != nil {
		return fmt.Errorf("list devices: %w", err)
	}
	if q.Include == includeState {
		return h.writeWithStates(c, page)
	}
	return c.JSON(http.StatusOK, DeviceList{Items: itemsOf(page.Items, deviceOf), NextCursor: page.NextCursor})
}

// withSelector adds a token's selector to a label filter, so that a list
// shows only the devices the token may see; ok is false when the filter
// contradicts the selector (no device can match both).
func withSelector(filter map[string]string, sel map[string]string) (map[string]string, bool) {
	if len(sel) == 0 {
		return filter, true
	}
	out := make(map[string]string, len(filter)+len(sel))
	for k, v := range filter {
		out[k] = v
	}
	for k, v := range sel {
		if got, ok := out[k]; ok && got != v {
			return nil, false
		}
		out[k] = v
	}
	return out, true
}

// get returns a device.
//
//	@Summary		Get a device
//	@Description	Returns a registered device. The JID in the path must be URL-escaped (thermo1%40example.com).
//	@Tags			devices
//	@Produce		json
//	@Param			jid	path		string	true	"Bare JID, URL-escaped"	extensions(x-example=thermo1@example.com)
//	@Success		200	{object}	api.Device
//	@Failure		400	{object}	api.ErrorResponse	"Not a valid bare JID"
//	@Failure		404	{object}	api.ErrorResponse	"No such device"
//	@Failure		500	{object}	api.ErrorResponse
//	@Failure		503	{object}	api.ErrorResponse
//	@Security		BearerAuth
//	@Failure		401	{object}	api.ErrorResponse	"Missing, unknown, expired or revoked token (code unauthorized; header WWW-Authenticate)"
//	@Failure		403	{object}	api.ErrorResponse	"The token lacks the route's scope (code forbidden)"
//	@Failure		429	{object}	api.ErrorResponse	"The token's request rate is exceeded (code rate_limited)"
//	@Header			429	{integer}	Retry-After	"Seconds to wait before retrying"
//	@Router			/v1/devices/{jid} [get]
func (h *deviceHandler) get(c echo.Context) error {
	jid, err := h.jid(c)
	if err != nil {
		return err
	}
	d, err := h.svc.Device(c.Request().Context(), jid)
	if err != nil {
		return fmt.Errorf("get device: %w", err)
	}
	if !selectorOf(c).Matches(d.Labels) {
		return deviceNotFound(d.JID)
	}
	return c.JSON(http.StatusOK, deviceOf(d))
}

// update changes a device.
//
//	@Summary		Change a device
//	@Description	Changes a device's name, labels or schema version; absent fields are left alone. labels replaces all labels ({} removes them). schema_version moves the device to another version of its schema, which must exist.
//	@Tags			devices
//	@Accept			json
//	@Produce		json
//	@Param			jid		path		string					true	"Bare JID, URL-escaped"	extensions(x-example=thermo1@example.com)
//	@Param			changes	body		api.UpdateDeviceRequest	true	"The changes"
//	@Success		200		{object}	api.Device
//	@Failure		400		{object}	api.ErrorResponse{details=[]api.FieldError}	"Bad JSON, an unknown field, not a valid bare JID, bad labels, or an unknown schema version"
//	@Failure		404		{object}	api.ErrorResponse							"No such device"
//	@Failure		413		{object}	api.ErrorResponse							"Body too large"
//	@Failure		415		{object}	api.ErrorResponse							"Body is not JSON (Content-Type must be application/json)"
//	@Failure		500		{object}	api.ErrorResponse
//	@Failure		503		{object}	api.ErrorResponse
//	@Security		BearerAuth
//	@Failure		401	{object}	api.ErrorResponse	"Missing, unknown, expired or revoked token (code unauthorized; header WWW-Authenticate)"
//	@Failure		403	{object}	api.ErrorResponse	"The token lacks the route's scope (code forbidden)"
//	@Failure		429	{object}	api.ErrorResponse	"The token's request rate is exceeded (code rate_limited)"
//	@Header			429	{integer}	Retry-After	"Seconds to wait before retrying"
//	@Router			/v1/devices/{jid} [patch]
func (h *deviceHandler) update(c echo.Context) error {
	jid, err := h.jid(c)
	if err != nil {
		return err
	}
	var req UpdateDeviceRequest
	if err := bind(c, &req); err != nil {
		return err
	}
	if err := visible(c, h.svc, jid); err != nil {
		return err
	}
	if req.Labels != nil {
		if err := mayLabel(c, *req.Labels); err != nil {
			return err
		}
	}
	d, err := h.svc.Update(c.Request().Context(), jid, iotgate.DeviceUpdate{
		Name: req.Name, Labels: req.Labels, SchemaVersion: req.SchemaVersion,
	})
	if err != nil {
		return fmt.Errorf("update device: %w", err)
	}
	return c.JSON(http.StatusOK, deviceOf(d))
}

// delete removes a device.
//
//	@Summary		Delete a device
//	@Description	Deletes a device together with all its readings and rejections; they cannot be recovered. The XMPP account itself is not touched, unless account=delete: then it is removed first (an account already gone is fine), and the device after it; should the device's removal fail, the same request can be made again.
//	@Tags			devices
//	@Produce		json
//	@Param			jid		path	string	true	"Bare JID, URL-escaped"	extensions(x-example=thermo1@example.com)
//	@Param			account	query	string	false	"delete: remove the device's XMPP account too (needs IOTGATE_XMPP_ACCOUNTS); keep (the default): leave it"	Enums(delete, keep)
//	@Success		204	"Deleted, with its readings and rejections"
//	@Failure		400	{object}	api.ErrorResponse	"Not a valid bare JID, or a bad account value"
//	@Failure		404	{object}	api.ErrorResponse	"No such device"
//	@Failure		422	{object}	api.ErrorResponse	"account=delete and this iotgate does not remove accounts (code accounts_unavailable)"
//	@Failure		500	{object}	api.ErrorResponse
//	@Failure		503	{object}	api.ErrorResponse	"The database, or the XMPP server's admin interface (code account_server_unavailable), is not available; the device is kept"
//	@Security		BearerAuth
//	@Failure		401	{object}	api.ErrorResponse	"Missing, unknown, expired or revoked token (code unauthorized; header WWW-Authenticate)"
//	@Failure		403	{object}	api.ErrorResponse	"The token lacks the route's scope (code forbidden)"
//	@Failure		429	{object}	api.ErrorResponse	"The token's request rate is exceeded (code rate_limited)"
//	@Header			429	{integer}	Retry-After	"Seconds to wait before retrying"
//	@Router			/v1/devices/{jid} [delete]
func (h *deviceHandler) delete(c echo.Context) error {
	jid, err := h.jid(c)
	if err != nil {
		return err
	}
	var q deleteDeviceQuery
	if err := parseQuery(c, &q); err != nil {
		return err
	}
	if err := visible(c, h.svc, jid); err != nil {
		return err
	}
	if q.Account == "delete" {
		if err := h.svc.DeleteWithAccount(c.Request().Context(), jid); err != nil {
			return fmt.Errorf("delete device and account: %w", err)
		}
		return c.NoContent(http.StatusNoContent)
	}
	if err := h.svc.Delete(c.Request().Context(), jid); err != nil {
		return fmt.Errorf("delete device: %w", err)
	}
	return c.NoContent(http.StatusNoContent)
}
