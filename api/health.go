package api

import (
	"context"
	"fmt"
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
	// Error says why the part is down.
	Error string `json:"error,omitempty" example:"secret refused by server (not-authorized)"`
}

// healthHandler serves the probes.
type healthHandler struct {
	checks   map[string]HealthCheck
	timeout  time.Duration
	instance InstanceInfo
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

// readyz runs every check concurrently, each bounded by h.timeout.
//
//	@Summary		Readiness probe
//	@Description	Answers 200 when every part iotgate depends on (the XMPP server, the database) works, else 503. The body says which part is down, since when and why, and this instance's ID and role (active, member, standby, disconnected). A standby (Prosody refuses its stream while another instance holds the domain) answers 503: route traffic to the ready ones.
//	@Tags			health
//	@Produce		json
//	@Success		200	{object}	api.ReadyResponse
//	@Failure		500	{object}	api.ErrorResponse
//	@Failure		503	{object}	api.ReadyResponse
//	@Router			/readyz [get]
func (h *healthHandler) readyz(c echo.Context) error {
	ctx, cancel := context.WithTimeout(c.Request().Context(), h.timeout)
	defer cancel()

	resp := ReadyResponse{Status: "ok", Checks: make(map[string]CheckResult, len(h.checks))}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for name, check := range h.checks {
		wg.Go(func() {
			r := h.run(ctx, check)
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

	c.Response().Header().Set(echo.HeaderCacheControl, "no-store")
	status := http.StatusOK
	if resp.Status != "ok" {
		status = http.StatusServiceUnavailable
	}
	return c.JSON(status, resp)
}

// run runs one check, giving up when ctx ends even if the check doesn't.
func (h *healthHandler) run(ctx context.Context, check HealthCheck) CheckResult {
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
				r = result{err: fmt.Errorf("check panicked: %v", p)}
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
		if r.err != nil {
			cr.Error = r.err.Error()
		} else if !r.ok {
			cr.Error = "down"
		}
		return cr
	case <-ctx.Done():
		return CheckResult{Error: fmt.Sprintf("no answer within %s", h.timeout)}
	}
}
