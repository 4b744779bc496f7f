package devices

import (
	"context"
	"time"

	"github.com/iotgate/iotgate"
)

// Stats returns ingest counters.
func (s *Service) Stats() IngestStats {
	s.statsMu.Lock()
	defer s.statsMu.Unlock()
	return s.stats
}

func (s *Service) count(f func(*IngestStats)) {
	s.statsMu.Lock()
	f(&s.stats)
	s.statsMu.Unlock()
}

// lookup finds a device by canonical bare JID through the cache. It
// returns (nil, nil) for a JID that is not registered. The record is
// shared: callers must not change it.
func (s *Service) lookup(ctx context.Context, bare string) (*iotgate.Device, error) {
	now := s.cfg.Clock()
	d, ok, epoch := s.cache.device(bare, now, s.cfg.CacheTTL)
	if ok {
		return d, nil
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.LookupTimeout)
	defer cancel()
	d, err := s.store.Device(ctx, bare)
	if err != nil && iotgate.ErrorCode(err) != iotgate.ENotFound {
		return nil, err
	}
	s.cache.putDevice(bare, d, now, epoch)
	return d, nil
}

// errStrangersThrottled refuses a lookup of a sender not cached while
// lookups that found nobody exceed StrangerRate.
var errStrangersThrottled = &iotgate.Error{Code: iotgate.ETooMany, Message: "too many unknown senders lately, try again later"}

// lookupSender is lookup for a JID heard on the XMPP stream. A JID the
// cache doesn't know at all reserves a stranger lookup first, given back
// if it turns out registered: so a flood of new JIDs costs at most
// StrangerRate lookups a second plus StrangerBurst, however many of them
// were queued before the throttle showed at the read loop. Errors:
// too_many_requests, and lookup's.
func (s *Service) lookupSender(ctx context.Context, bare string) (*iotgate.Device, error) {
	registered, known := s.cache.sender(bare, s.cfg.Clock(), s.cfg.CacheTTL)
	if registered || known {
		return s.lookup(ctx, bare)
	}
	if !s.strangers.tryTake() {
		return nil, errStrangersThrottled
	}
	d, err := s.lookup(ctx, bare)
	if d != nil || err != nil {
		s.strangers.give()
	}
	return d, err
}

// registeredSender is lookupSender for a (full or bare) JID, refusing
// one that is not a registered device: what a presence update and a
// recorded rejection need. Errors: invalid for a bad JID,
// too_many_requests, unavailable when the registry can't be read,
// not_found (device_not_registered).
func (s *Service) registeredSender(ctx context.Context, from string) (*iotgate.Device, error) {
	bare, err := iotgate.BareJID(from)
	if err != nil {
		return nil, err
	}
	dev, err := s.lookupSender(ctx, bare)
	if iotgate.ErrorCode(err) == iotgate.ETooMany {
		return nil, err
	}
	if err != nil {
		return nil, &iotgate.Error{Code: iotgate.EUnavailable, Message: "device registry unavailable", Err: err}
	}
	if dev == nil {
		return nil, ErrNotRegistered
	}
	return dev, nil
}

// SenderStatus is what iotgate knows of a sender without I/O.
type SenderStatus int

const (
	// SenderUnseen: not cached; a lookup in the store will tell.
	SenderUnseen SenderStatus = iota
	// SenderRegistered: cached as a registered device (perhaps expired,
	// and then looked up again, but it was registered a moment ago).
	SenderRegistered
	// SenderNotRegistered: cached as not registered.
	SenderNotRegistered
	// SenderThrottled: not cached, and so many lookups found no device
	// lately that this one is not made now.
	SenderThrottled
)

// Sender tells what the cache knows of a bare JID, as BareJID returns
// it, without I/O: the XMPP read loop asks it to give registered devices,
// strangers and a flood of strangers each their own lane before any
// lookup. It does not parse bare again (the read loop has): a JID not in
// BareJID's form is simply not found.
func (s *Service) Sender(bare string) SenderStatus {
	switch registered, known := s.cache.sender(bare, s.cfg.Clock(), s.cfg.CacheTTL); {
	case registered:
		return SenderRegistered
	case known:
		return SenderNotRegistered
	case !s.strangers.ready():
		return SenderThrottled
	}
	return SenderUnseen
}

// ErrNotRegistered is returned (wrapped in *Error, detail
// device_not_registered) for readings from unknown JIDs.
var ErrNotRegistered = &iotgate.Error{Code: iotgate.ENotFound, Detail: iotgate.DetailDeviceNotRegistered, Message: "this JID is not registered as a device"}

// Ingest takes a stanza that may carry a reading. It never blocks on the
// database: done is called once, later, with nil after the reading is
// committed, or with the reason it was refused (unprocessable, with the
// validator's reason; invalid when no payload is in the schema's
// namespace), not stored (unavailable, too_many_requests), or not accepted
// (not_found with detail device_not_registered).
func (s *Service) Ingest(ctx context.Context, in iotgate.IncomingReading, done func(error)) {
	if done == nil {
		done = func(error) {}
	}
	if s.closing.Load() {
		s.cfg.Observer.ReadingRefused(RefusedUnavailable)
		done(&iotgate.Error{Code: iotgate.EUnavailable, Message: "iotgate is shutting down, try again later"})
		return
	}
	bare := in.Bare
	if bare == "" {
		var err error
		if bare, err = iotgate.BareJID(in.From); err != nil {
			done(err)
			return
		}
	}
	dev, err := s.lookupSender(ctx, bare)
	if iotgate.ErrorCode(err) == iotgate.ETooMany {
		s.cfg.Observer.ReadingRefused(RefusedUnavailable)
		done(err)
		return
	}
	if err != nil {
		s.cfg.Observer.ReadingRefused(RefusedUnavailable)
		done(&iotgate.Error{Code: iotgate.EUnavailable, Message: "device registry unavailable, try again later", Err: err})
		return
	}
	if dev == nil {
		s.count(func(st *IngestStats) { st.Unregistered++ })
		s.cfg.Observer.ReadingRefused(RefusedUnregistered)
		done(ErrNotRegistered)
		return
	}
	schema, _, err := s.schemas.Compiled(ctx, dev.Schema, dev.SchemaVersion)
	if err != nil {
		s.cfg.Observer.ReadingRefused(RefusedUnavailable)
		done(&iotgate.Error{Code: iotgate.EUnavailable, Message: "device schema unavailable, try again later", Err: err})
		return
	}
	now := s.cfg.Clock().UTC()
	var payload *iotgate.Payload
	for i := range in.Payloads {
		if in.Payloads[i].Namespace == schema.TargetNamespace() {
			payload = &in.Payloads[i]
			break
		}
	}
	if payload == nil {
		err := iotgate.Errorf(iotgate.EInvalid, "no payload element in namespace %q (the namespace of schema %s version %d)", schema.TargetNamespace(), dev.Schema, dev.SchemaVersion)
		s.reject(dev, in, nil, err, now)
		done(err)
		return
	}
	if err := checkDeviceTime(in.DeviceTime); err != nil {
		s.reject(dev, in, payload.XML, err, now)
		done(err)
		return
	}
	data, err := schema.ValidateAndRender(payload.XML)
	if err != nil {
		s.reject(dev, in, payload.XML, err, now)
		done(err)
		return
	}
	// PostgreSQL keeps microseconds: round the times here, so that the
	// reading the cache keeps after the commit is the one stored.
	r := &iotgate.Reading{DeviceID: dev.ID, DeviceJID: dev.JID, ReceivedAt: now.Round(time.Microsecond), XML: string(payload.XML), Data: data}
	if in.DeviceTime != nil {
		t := in.DeviceTime.UTC().Round(time.Microsecond)
		r.DeviceTime = &t
	}
	if at, ok := s.resends.take(dev.ID, in.ResendKey, r.XML, now); ok {
		// The same reading again: an earlier attempt may have stored it.
		r.ReceivedAt, r.MaybeStored = at, true
	}
	s.queueMu.Lock()
	if s.queue.len() == 0 {
		s.firstAt = time.Now()
	}
	_, err = s.queue.push(dev.JID, &pendingReading{r: r, done: done, via: in.Via, at: now, resendKey: in.ResendKey}, len(r.XML)+len(r.Data))
	if err == nil && in.Via == "iq" {
		s.iqQueued++
	}
	s.queueMu.Unlock()
	if err != nil {
		s.count(func(st *IngestStats) { st.Dropped++ })
		s.cfg.Observer.ReadingRefused(RefusedQueueFull)
		done(err)
		return
	}
	s.signal()
}
