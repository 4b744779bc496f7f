package devices

import (
	"context"
	crand "crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strconv"
	"time"

	"github.com/iotgate/iotgate"
	"mellium.im/xmpp/jid"
)

// requestHash identifies a request's content, for Idempotency-Key reuse checks.
func requestHash(r *iotgate.CommandRequest, deviceJID string) string {
	// Length-prefixed fields, so that no two requests hash the same input;
	// appended by hand, as fmt costs more than the hash on the hot path.
	b := make([]byte, 0, 128+len(r.Payload)+len(r.Data))
	fields := []string{deviceJID, r.Type, string(r.Mode), r.Resource,
		strconv.FormatInt(r.Timeout.Milliseconds(), 10), strconv.FormatInt(r.ExpiresIn.Milliseconds(), 10), r.Payload}
	if r.Data != "" {
		// Only then: the hashes of XML commands stay what they were.
		fields = append(fields, "data", r.Element, r.Data)
	}
	for _, s := range fields {
		b = strconv.AppendInt(b, int64(len(s)), 10)
		b = append(b, ':')
		b = append(b, s...)
		b = append(b, ';')
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// Submit validates a command, stores it and starts delivering it. It
// returns the command as stored (a sync caller then waits with Wait), and
// whether it is the one an earlier request with the same Idempotency-Key
// created (then nothing new was sent).
//
// Outcomes decided at once are returned as a stored command, not an error:
// failed with device_offline (no available resource), failed with
// xmpp_unavailable (the stream is down); see Command.Err. Errors: invalid
// (bad request), not_found (device), unprocessable (payload not valid
// against the schema; a comment, processing instruction or DOCTYPE in it,
// details comment_forbidden, processing_instruction_forbidden,
// doctype_forbidden; an Idempotency-Key reused with another request,
// detail idempotency_key_reused), too_many_requests (MaxInFlight commands are in
// flight; details token_commands_in_flight, device_commands_in_flight when
// the token's or the device's quota is; device_queue_full when a queued
// command finds MaxQueuedPerDevice), unavailable (shutting down, store or schema unavailable).
func (s *Commands) Submit(ctx context.Context, req iotgate.CommandRequest) (*iotgate.Command, bool, error) {
	if s.ctx.Err() != nil {
		return nil, false, iotgate.Errorf(iotgate.EUnavailable, "iotgate is shutting down, try again later")
	}
	if err := req.Normalize(); err != nil {
		return nil, false, err
	}
	dev, err := s.devs.Device(ctx, req.DeviceJID)
	if err != nil {
		return nil, false, err
	}
	hash := requestHash(&req, dev.JID)
	now := s.now()
	if req.IdempotencyKey != "" {
		if c, ok, err := s.byKey(ctx, &req, dev.ID, hash, now); err != nil || ok {
			return c, ok, err
		}
	}
	target, err := fullJID(dev.JID, req.Resource)
	if err != nil {
		return nil, false, err
	}
	schema, _, err := s.schemas.Compiled(ctx, dev.Schema, dev.SchemaVersion)
	if err != nil {
		return nil, false, &iotgate.Error{Code: iotgate.EUnavailable, Message: "device schema unavailable, try again later", Err: err}
	}
	if req.Data != "" {
		if req.Payload, err = buildPayload(schema, req.Element, []byte(req.Data)); err != nil {
			return nil, false, err
		}
	}
	if err := validatePayload(schema, []byte(req.Payload)); err != nil {
		return nil, false, err
	}

	c := &iotgate.Command{
		ID: crand.Text(), DeviceID: dev.ID, DeviceJID: dev.JID,
		Type: req.Type, Payload: req.Payload, Resource: req.Resource, Mode: req.Mode,
		Status: iotgate.CommandPending, Timeout: req.Timeout, CreatedAt: now, Instance: s.cfg.Instance,
		IdempotencyKey: req.IdempotencyKey, RequestHash: hash,
		TokenID: req.TokenID, SentBy: req.SentBy,
		History: []iotgate.CommandEvent{{Status: iotgate.CommandPending, At: now}},
	}
	if req.Mode == iotgate.CommandQueue {
		exp := now.Add(req.ExpiresIn)
		c.ExpiresAt = &exp
	}
	to, stale := s.pick(dev.JID, target)
	var release func()
	switch {
	case req.Mode == iotgate.CommandQueue && (stale || to == ""):
		s.queue(c, now, offlineReason(stale, target))
	case stale:
		s.fail(c, now, iotgate.DetailXMPPUnavailable, "iotgate's XMPP stream is down: the device's presence is unknown")
	case to == "":
		s.fail(c, now, iotgate.DetailDeviceOffline, offlineReason(false, target))
	default:
		if release, err = s.slots.take(req.TokenID, dev.JID); err != nil {
			if req.Mode != iotgate.CommandQueue {
				return nil, false, err
			}
			s.queue(c, now, "too many commands in flight: "+iotgate.ErrorMessage(err))
		} else {
			s.markSent(c, to, now)
		}
	}
	if c.Status == iotgate.CommandFailed {
		// A command that was never sent doesn't hold its key: retrying
		// with the same key once the device is back must send it.
		c.IdempotencyKey = ""
	}
	if c.Status.Terminal() {
		s.observe(c)
	}
	if err := s.create(ctx, c, now); err != nil {
		if release != nil {
			release()
		}
		var de *iotgate.Error
		if errors.As(err, &de) && de.Detail == iotgate.DetailIdempotencyKeyTaken {
			// A concurrent request with the same key won the race.
			c, ok, err := s.byKey(ctx, &req, dev.ID, hash, now)
			if err == nil && !ok {
				err = iotgate.Errorf(iotgate.EUnavailable, "Idempotency-Key is in use, try again")
			}
			return c, ok, err
		}
		return nil, false, err
	}
	switch c.Status {
	case iotgate.CommandSent:
		c, _ = s.start(c, schema, release)
	case iotgate.CommandQueued:
		s.markQueued(dev.JID, true)
		// The device may have come online since we looked.
		if to, stale := s.pick(dev.JID, target); !stale && to != "" {
			s.wakeDelivery(dev.JID)
		}
	}
	return c, false, nil
}

// create stores a new command. Commands without an Idempotency-Key are
// group-committed with the others arriving at the same time; one with a
// key is stored alone, in a transaction that first releases the key from
// a holder older than IdempotencyWindow, and so is a queued one while
// queues are bounded (the bound is checked in its transaction).
func (s *Commands) create(ctx context.Context, c *iotgate.Command, now time.Time) error {
	if c.IdempotencyKey != "" || (c.Status == iotgate.CommandQueued && s.cfg.MaxQueuedPerDevice > 0) {
		return s.store.CreateCommand(ctx, c, now.Add(-iotgate.IdempotencyWindow), s.cfg.MaxQueuedPerDevice)
	}
	return s.creates.do(c)
}

func offlineReason(stale bool, target string) string {
	switch {
	case stale:
		return "iotgate's XMPP stream is down"
	case target != "":
		return "resource " + target + " is not available"
	}
	return "the device has no available resource"
}

// byKey finds the command req's token created with req's key for the
// device deviceID within the idempotency window: another token's
// commands are never found, so the 422 below names only the caller's own.
// ok is false when there is none. Errors: unprocessable when the key was
// used for another request.
func (s *Commands) byKey(ctx context.Context, req *iotgate.CommandRequest, deviceID int64, hash string, now time.Time) (*iotgate.Command, bool, error) {
	c, err := s.store.CommandByIdempotencyKey(ctx, req.TokenID, deviceID, req.IdempotencyKey, now.Add(-iotgate.IdempotencyWindow))
	if iotgate.ErrorCode(err) == iotgate.ENotFound {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	if c.RequestHash != hash {
		return nil, false, &iotgate.Error{Code: iotgate.EUnprocessable, Detail: iotgate.DetailIdempotencyKeyReused,
			Message: "this Idempotency-Key was used for another request (command " + c.ID + ") in the last 24 hours"}
	}
	if cur := s.snapshot(c.ID); cur != nil {
		c = cur
	}
	return c, true, nil
}

// pick returns the full JID to send to: the requested one if available,
// else the highest-priority available resource; "" when none is. stale
// means presence is unknown (the stream is down).
func (s *Commands) pick(bare, target string) (to string, stale bool) {
	online, stale := s.presence.Online(bare)
	if stale || !online {
		return "", stale
	}
	rs := s.presence.Resources(bare)
	if target == "" {
		if len(rs) == 0 {
			return "", false
		}
		return rs[0].JID, false
	}
	for _, r := range rs {
		if j, err := jid.Parse(r.JID); err == nil && j.String() == target {
			return r.JID, false
		}
	}
	return "", false
}

// fullJID returns bare/resource, normalized; "" for no resource.
// Errors: invalid.
func fullJID(bare, resource string) (string, error) {
	if resource == "" {
		return "", nil
	}
	j, err := jid.Parse(bare)
	if err == nil {
		j, err = j.WithResource(resource)
	}
	if err != nil {
		return "", iotgate.Errorf(iotgate.EInvalid, "resource %q is not a valid resourcepart: %v", resource, err)
	}
	return j.String(), nil
}
