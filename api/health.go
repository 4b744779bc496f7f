package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/iotgate/iotgate"
)

// HealthCheck is a part of iotgate that /readyz asks whether it works (the
// XMPP connection, the database). Health reports whether it does, since
// when it has been in that state (up or down), and why it is down. It must
// honour ctx.
//
// The signature uses only standard types so that adapters satisfy it
// without importing api.
type HealthCheck interface {
	Health(ctx context.Context) (ok bool, since time.Time, err error)
}

// HealthCheckFunc adapts a function to HealthCheck.
type HealthCheckFunc func(ctx context.Context) (ok bool, since time.Time, err error)

// Health calls f.
func (f HealthCheckFunc) Health(ctx context.Context) (bool, time.Time, error) { return f(ctx) }

// StatusResponse is the body of GET /healthz.
type StatusResponse struct {
	Status string `json:"status" example:"ok"`
}

// InstanceInfo names this instance and says its role among the instances
// serving the component domain; instances.Registry implements it.
type InstanceInfo interface {
	ID() string
	Role(ctx context.Context) iotgate.Role
}

// ReadyResponse is the body of GET /readyz.
type ReadyResponse struct {
	// Status is "ok" when every check passes, else "unavailable".
	Status string `json:"status" enums:"ok,unavailable" example:"unavailable"`
	// Instance is this instance's ID (IOTGATE_INSTANCE_ID).
	Instance string `json:"instance,omitempty" example:"iot-1"`
	// Role is what this instance does for the component domain: active
	// (its stream is up, no other instance's is), member (its stream is up
	// and so is another's: ejabberd spreads the stanzas), standby (the
	// server refuses its stream while another instance holds the domain:
	// Prosody; it takes over when that one goes), disconnected.
	Role string `json:"role,omitempty" enums:"active,member,standby,disconnected" example:"standby"`
	// Checks has the result of each check, by name.
	Checks map[string]CheckResult `json:"checks"`
}

// CheckResult is the state of one part of iotgate.
type CheckResult struct {
	OK bool `json:"ok" example:"false"`
	// Since is when the part entered its current state; absent when the
	// check did not answer in time.
	Since *time.Time `json:"since,omitempty" example:"2026-01-02T15:04:05Z"`
	// Error says why the part is down, in general terms: never an
	// address or a driver's error (/readyz needs no token; the log has them).
	Error string `json:"error,omitempty" example:"the XMPP stream is not connected: the XMPP server refused the component secret (not-authorized)"`
}

// readyCacheTTL is how long /readyz reuses its last result: /readyz needs
// no token, and without it a flood of probes would be a flood of database
// queries. Probes come every few seconds; a second-old answer is fresh.
const readyCacheTTL = time.Second

// healthHandler serves the probes.
type healthHandler struct {
	checks   map[string]HealthCheck
	timeout  time.Duration
	instance InstanceInfo
	log      *slog.Logger
	now      func() time.Time

	// mu is held while the checks run, so that concurrent probes wait
	// for one run instead of starting their own.
	mu     sync.Mutex
	last   ReadyResponse
	lastAt time.Time
}

// healthz reports that the process is up.
//
//	@Summary		Liveness probe
//	@Description	Answers 200 while the process serves HTTP. It says nothing about the XMPP server or the database: see /readyz.
//	@Tags			health
//	@Produce		json
//	@Success		200	{object}	api.StatusResponse
//	@Failure		500	{object}	api.ErrorResponse
//	@Router			/healthz [get]
func (h *healthHandler) healthz(c echo.Context) error {
	c.Response().Header().Set(echo.HeaderCacheControl, "no-store")
	return c.JSON(http.StatusOK, StatusResponse{Status: "ok"})
}

// readyz answers with the result of the checks, run at most once per
// readyCacheTTL.
//
//	@Summary		Readiness probe
//	@Description	Answers 200 when every part iotgate depends on (the XMPP server, the database) works, else 503. The body says which part is down, since when and why (in general terms: the details, such as addresses, are in iotgate's log), and this instance's ID and role (active, member, standby, disconnected). A standby (Prosody refuses its stream while another instance holds the domain) answers 503: route traffic to the ready ones. The answer may be up to one second old: the checks run at most once a second however many probes come.
//	@Tags			health
//	@Produce		json
//	@Success		200	{object}	api.ReadyResponse
//	@Failure		500	{object}	api.ErrorResponse
//	@Failure		503	{object}	api.ReadyResponse
//	@Router			/readyz [get]
func (h *healthHandler) readyz(c echo.Context) error {
	resp := h.ready(c.Request().Context())
	c.Response().Header().Set(echo.HeaderCacheControl, "no-store")
	status := http.StatusOK
	if resp.Status != "ok" {
		status = http.StatusServiceUnavailable
	}
	return c.JSON(status, resp)
}

// ready returns the last result if it is younger than readyCacheTTL, else
// runs the checks.
func (h *healthHandler) ready(ctx context.Context) ReadyResponse {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.lastAt.IsZero() && h.now().Sub(h.lastAt) < readyCacheTTL {
		return h.last
	}
	// Not the probe's own context: the result serves other probes too,
	// and must not say "no answer" because the first prober hung up.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), h.timeout)
	defer cancel()
	h.last, h.lastAt = h.runAll(ctx), h.now()
	return h.last
}

// runAll runs every check concurrently, each bounded by ctx.
func (h *healthHandler) runAll(ctx context.Context) ReadyResponse {
	resp := ReadyResponse{Status: "ok", Checks: make(map[string]CheckResult, len(h.checks))}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for name, check := range h.checks {
		wg.Go(func() {
			r := h.run(ctx, name, check)
			mu.Lock()
			defer mu.Unlock()
			resp.Checks[name] = r
			if !r.OK {
				resp.Status = "unavailable"
			}
		})
	}
	wg.Wait()
	if h.instance != nil {
		resp.Instance, resp.Role = h.instance.ID(), string(h.instance.Role(ctx))
	}
	return resp
}

// run runs one check, giving up when ctx ends even if the check doesn't.
// A failure shows only the domain message of the check's error (see
// iotgate.ErrorMessage), or "down": /readyz needs no token, and driver or
// dial errors name hosts and users. The whole error goes to the log.
func (h *healthHandler) run(ctx context.Context, name string, check HealthCheck) CheckResult {
	type result struct {
		ok    bool
		since time.Time
		err   error
	}
	done := make(chan result, 1) // buffered: a late check must not block
	go func() {
		var r result
		defer func() {
			if p := recover(); p != nil {
				r = result{err: &iotgate.Error{Code: iotgate.EInternal, Message: "check panicked", Err: fmt.Errorf("%v", p)}}
			}
			done <- r
		}()
		r.ok, r.since, r.err = check.Health(ctx)
	}()

	select {
	case r := <-done:
		cr := CheckResult{OK: r.ok && r.err == nil}
		if !r.since.IsZero() {
			since := r.since.UTC()
			cr.Since = &since
		}
		switch {
		case r.err != nil:
			cr.Error = checkMessage(r.err)
			// Debug: the checks' owners log their changes of state
			// already; this is for an operator comparing with /readyz.
			h.log.Debug("readiness check failed", "check", name, "err", r.err)
		case !r.ok:
			cr.Error = "down"
		}
		return cr
	case <-ctx.Done():
		return CheckResult{Error: fmt.Sprintf("no answer within %s", h.timeout)}
	}
}

// checkMessage is what /readyz says of a check's error: the message of a
// domain error, "down" for any other.
func checkMessage(err error) string {
	var de *iotgate.Error
	if errors.As(err, &de) && de.Message != "" {
		return de.Message
	}
	return "down"
}
