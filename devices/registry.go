package devices

import (
	"context"
	"fmt"
	"maps"
	"time"

	"github.com/iotgate/iotgate"
)

// Register creates a device. Version 0 means the schema's latest version.
// Errors: invalid (bad JID, labels, unknown schema), forbidden (domain
// outside ServiceConfig.DeviceDomains), conflict (already registered).
func (s *Service) Register(ctx context.Context, d *iotgate.Device) (*iotgate.Device, error) {
	if err := s.prepare(ctx, d); err != nil {
		return nil, err
	}
	now := s.cfg.Clock().UTC()
	d.CreatedAt, d.UpdatedAt = now, now
	if d.Labels == nil {
		d.Labels = map[string]string{}
	}
	if err := s.store.CreateDevice(ctx, d); err != nil {
		return nil, err
	}
	s.cache.forget(d.JID, true)
	s.ring.forget(d.JID)
	// Cached at once: its first reading needs no lookup, and is never
	// taken for a stranger's.
	rec := *d
	rec.Labels = maps.Clone(d.Labels)
	s.cache.putDevice(d.JID, &rec, s.cfg.Clock(), s.cache.currentEpoch())
	return d, nil
}

// prepare normalizes and checks d for registration: its JID (now
// canonical), domain, fields and schema (SchemaVersion now resolved).
// Errors: invalid, forbidden.
func (s *Service) prepare(ctx context.Context, d *iotgate.Device) error {
	j, err := iotgate.NormalizeJID(d.JID)
	if err != nil {
		return err
	}
	if err := s.cfg.DeviceDomains.Check(j); err != nil {
		return err
	}
	d.JID = j
	if err := d.Validate(); err != nil {
		return err
	}
	_, v, err := s.schemas.Compiled(ctx, d.Schema, d.SchemaVersion)
	if err != nil {
		if iotgate.ErrorCode(err) == iotgate.ENotFound {
			return &iotgate.Error{Code: iotgate.EInvalid, Message: err.Error(), Err: err}
		}
		return fmt.Errorf("resolve schema: %w", err)
	}
	d.SchemaVersion = v
	return nil
}

// Forget makes the service read device jid (a canonical bare JID; ""
// for every device) from the store again at its next use: the change
// notification of a write that another instance, or this one, committed.
// It does no I/O.
func (s *Service) Forget(jid string) {
	s.cache.stale(jid)
	s.ring.forget(jid)
}

// ReadingStored takes the change notification of a device's newest
// reading in a commit (key as iotgate.ReadingKey writes it; "" when
// notifications may have been lost): readings stored by another instance
// show in State and last_seen_at here too. It does no I/O.
func (s *Service) ReadingStored(key string) {
	if key == "" {
		s.cache.stale("") // records hold last_seen_at too
		s.ring.forget("")
		return
	}
	if r, ok := iotgate.ParseReadingKey(key); ok {
		s.cache.storedElsewhere(r)
		s.ring.notified(r, s.cfg.Clock())
	}
}

// Device returns a registered device, from memory when it can: it is
// what REST reads and every command look a device up with. The result is
// the caller's to change. Errors: invalid (bad JID), not_found,
// unavailable.
func (s *Service) Device(ctx context.Context, jid string) (*iotgate.Device, error) {
	d, err := s.device(ctx, jid)
	if err != nil {
		return nil, err
	}
	out := *d
	out.Labels = maps.Clone(d.Labels)
	out.LastSeenAt = s.lastSeen(d, nil)
	out.Online, _ = s.cfg.Presence.Online(d.JID)
	return &out, nil
}

// device returns the cached record of a device, which callers must not
// change. Errors: invalid, not_found, unavailable.
func (s *Service) device(ctx context.Context, jid string) (*iotgate.Device, error) {
	// A JID the cache holds a fresh record of is canonical (the cache is
	// keyed by canonical JIDs): its PRECIS normalization, a tenth of the
	// cost of a GET .../state served from memory, can be skipped.
	if d, ok, _ := s.cache.device(jid, s.cfg.Clock(), s.cfg.CacheTTL); ok && d != nil {
		return d, nil
	}
	j, err := iotgate.NormalizeJID(jid)
	if err != nil {
		return nil, err
	}
	d, err := s.lookup(ctx, j)
	if err != nil {
		return nil, err
	}
	if d == nil {
		return nil, iotgate.Errorf(iotgate.ENotFound, "device %s is not registered", j)
	}
	return d, nil
}

// lastSeen returns when d's newest reading arrived: the cached record
// may predate readings committed since it was read, and r (when not nil)
// is a reading of d that may be newer still.
func (s *Service) lastSeen(d *iotgate.Device, r *iotgate.Reading) *time.Time {
	t := d.LastSeenAt
	if at, ok := s.cache.lastSeen(d.ID); ok && (t == nil || at.After(*t)) {
		t = &at
	}
	if r != nil && (t == nil || r.ReceivedAt.After(*t)) {
		t = &r.ReceivedAt
	}
	if t != nil {
		at := *t
		return &at
	}
	return nil
}

// Devices lists devices. Errors: invalid (bad cursor or filter).
func (s *Service) Devices(ctx context.Context, f iotgate.DeviceFilter) (*iotgate.DevicePage, error) {
	f.Limit = iotgate.PageLimit(f.Limit)
	if f.Online != nil {
		f.OnlineJIDs = s.cfg.Presence.OnlineJIDs()
	}
	page, err := s.store.Devices(ctx, f)
	if err != nil {
		return nil, err
	}
	for _, d := range page.Items {
		d.Online, _ = s.cfg.Presence.Online(d.JID)
	}
	return page, nil
}

// Update changes a device. Errors: invalid, not_found.
func (s *Service) Update(ctx context.Context, jid string, u iotgate.DeviceUpdate) (*iotgate.Device, error) {
	j, err := iotgate.NormalizeJID(jid)
	if err != nil {
		return nil, err
	}
	if u.Name != nil && len(*u.Name) > iotgate.MaxNameLen {
		return nil, iotgate.Errorf(iotgate.EInvalid, "name is longer than %d bytes", iotgate.MaxNameLen)
	}
	if u.Labels != nil {
		if err := iotgate.ValidateLabels(*u.Labels); err != nil {
			return nil, err
		}
	}
	if u.SchemaVersion != nil {
		cur, err := s.store.Device(ctx, j)
		if err != nil {
			return nil, err
		}
		if _, _, err := s.schemas.Compiled(ctx, cur.Schema, *u.SchemaVersion); err != nil {
			if iotgate.ErrorCode(err) == iotgate.ENotFound {
				return nil, &iotgate.Error{Code: iotgate.EInvalid, Message: err.Error(), Err: err}
			}
			return nil, err
		}
	}
	d, err := s.store.UpdateDevice(ctx, j, u, s.cfg.Clock().UTC())
	s.cache.forget(j, false)
	s.ring.forget(j)
	if err != nil {
		return nil, err
	}
	d.LastSeenAt = s.lastSeen(d, nil)
	d.Online, _ = s.cfg.Presence.Online(d.JID)
	return d, nil
}

// Delete removes a device with all its readings and rejections.
// Errors: invalid, not_found.
func (s *Service) Delete(ctx context.Context, jid string) error {
	j, err := iotgate.NormalizeJID(jid)
	if err != nil {
		return err
	}
	err = s.store.DeleteDevice(ctx, j)
	s.cache.forget(j, true)
	s.ring.forget(j)
	s.cfg.Presence.Forget(j)
	return err
}

// State returns a device's current state. It is served from memory once
// the device and its newest reading are cached: the committer updates
// the reading before it acknowledges a batch, so a reading is shown as
// soon as it is acknowledged. Errors: invalid, not_found, unavailable.
func (s *Service) State(ctx context.Context, jid string) (*iotgate.State, error) {
	d, err := s.device(ctx, jid)
	if err != nil {
		return nil, err
	}
	return s.stateOf(ctx, d)
}

// stateOf returns the state of d, a cached record. Errors: unavailable.
func (s *Service) stateOf(ctx context.Context, d *iotgate.Device) (*iotgate.State, error) {
	r, err := s.latestReading(ctx, d)
	if err != nil {
		return nil, err
	}
	st := &iotgate.State{JID: d.JID, LastSeenAt: s.lastSeen(d, r), Reading: r}
	if r != nil && s.cfg.EncodeReading != nil {
		st.ReadingEncoded = s.cache.encodedLatest(d.JID, d.ID, r, s.cfg.EncodeReading)
	}
	st.Online, st.PresenceStale = s.cfg.Presence.Online(d.JID)
	st.Resources = s.cfg.Presence.Resources(d.JID)
	return st, nil
}

// latestReading returns d's newest reading, nil if it has none, from the
// cache or else from the store (and then caches it).
func (s *Service) latestReading(ctx context.Context, d *iotgate.Device) (*iotgate.Reading, error) {
	r, ok, _ := s.cache.latestReading(d.JID, d.ID)
	if ok {
		return s.unexpired(r), nil
	}
	epoch := s.cache.currentEpoch()
	r, err := s.store.LatestReading(ctx, d.JID)
	switch {
	case iotgate.ErrorCode(err) == iotgate.ENotFound:
		r = nil
	case err != nil:
		return nil, err
	case r.DeviceID != d.ID:
		// The JID was deleted and registered again meanwhile: this
		// reading is the new device's, not d's.
		return nil, nil
	}
	return s.unexpired(s.cache.putLatest(d.JID, d.ID, r, epoch)), nil
}

// unexpired returns r, or nil if it is older than the reading retention.
func (s *Service) unexpired(r *iotgate.Reading) *iotgate.Reading {
	if r == nil || s.cfg.ReadingRetention <= 0 || r.ReceivedAt.After(s.cfg.Clock().Add(-s.cfg.ReadingRetention)) {
		return r
	}
	return nil
}

// Readings returns a page of a device's readings (f as the API checked it; the
// limit is clamped). The newest pages of a device are served from memory
// (see readingRing), byte for byte as the store would serve them; the
// first such page of a device seeds its memory from the store.
// Errors: invalid (cursor), not_found.
func (s *Service) Readings(ctx context.Context, jid string, f iotgate.ReadingFilter) (*iotgate.ReadingPage, error) {
	d, err := s.device(ctx, jid)
	if err != nil {
		return nil, err
	}
	f.Limit = iotgate.PageLimit(f.Limit)
	if s.ring == nil {
		return s.store.Readings(ctx, d.JID, f)
	}
	if page, ok := s.ring.page(d.JID, d.ID, f, s.cfg.Clock()); ok {
		return page, nil
	}
	// A recent page (newest first, from the top) that the ring could
	// answer once seeded.
	if f.Desc && f.Cursor == "" && f.Limit < s.cfg.RingPerDevice {
		if t, ok := s.ring.startFill(d.JID, d.ID); ok {
			seed, err := s.store.Readings(ctx, d.JID, iotgate.ReadingFilter{Desc: true, Limit: s.cfg.RingPerDevice, MaxBytes: ringSeedBytes})
			if err != nil {
				s.ring.abandon(t)
				return nil, err
			}
			s.ring.fill(t, seed.Items, seed.NextCursor == "")
			if page, ok := s.ring.page(d.JID, d.ID, f, s.cfg.Clock()); ok {
				return page, nil
			}
		}
	}
	return s.store.Readings(ctx, d.JID, f)
}

// ringSeedBytes is the store's page byte budget of a seed of the
// reading ring.
const ringSeedBytes = 1 << 20

// Rejections returns a page of a device's refused payloads.
// Errors: invalid, not_found.
func (s *Service) Rejections(ctx context.Context, jid string, f iotgate.ReadingFilter) (*iotgate.RejectionPage, error) {
	d, err := s.device(ctx, jid)
	if err != nil {
		return nil, err
	}
	f.Limit = iotgate.PageLimit(f.Limit)
	return s.store.Rejections(ctx, d.JID, f)
}
