package memstore

import (
	"cmp"
	"context"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/iotgate/iotgate"
)

var _ iotgate.DeviceStore = (*DeviceStore)(nil)

// DeviceStore is an iotgate.DeviceStore in memory that behaves like the
// PostgreSQL one in what the device service's caches depend on: serial
// IDs that are never reused, readings deleted with their device,
// last_seen_at moved by each commit, and InsertReadings setting IDs (0
// for readings of deleted devices). It counts the queries the caches
// should save (Queries), and a hook (SetAfterRead) runs inside a query,
// after its answer is read, to stage a race. The zero value is an empty
// store, ready to embed in a store that overrides a method. Pages are never continued:
// a filter's Limit is honoured, its Cursor ignored, NextCursor empty.
type DeviceStore struct {
	mu     sync.Mutex
	nextID int64
	// nextRejection numbers rejections, as their own serial does.
	nextRejection int64
	devs          map[string]*iotgate.Device
	readings      map[int64][]*iotgate.Reading // by device ID
	rejections    []*iotgate.Rejection
	queries       map[string]int

	// afterRead runs inside Device and LatestReading, with the lock
	// released, after their answer is read.
	afterRead func(op, jid string)
}

// NewDeviceStore returns an empty store.
func NewDeviceStore() *DeviceStore { return &DeviceStore{} }

// ready makes the maps of a zero DeviceStore; m.mu is held.
func (m *DeviceStore) ready() {
	if m.devs == nil {
		m.devs, m.readings, m.queries = map[string]*iotgate.Device{}, map[int64][]*iotgate.Reading{}, map[string]int{}
	}
}

// SetAfterRead sets the hook Device and LatestReading call (op is the
// method's name) after their answer is read, outside the lock; nil
// removes it.
func (m *DeviceStore) SetAfterRead(f func(op, jid string)) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.afterRead = f
}

func (m *DeviceStore) hook(op, jid string) {
	m.mu.Lock()
	f := m.afterRead
	m.mu.Unlock()
	if f != nil {
		f(op, jid)
	}
}

// Queries returns how many times op ("Device", "LatestReading") was
// called.
func (m *DeviceStore) Queries(op string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.queries[op]
}

// Rejected returns every rejection recorded, oldest first.
func (m *DeviceStore) Rejected() []*iotgate.Rejection {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.rejections)
}

func clone(d *iotgate.Device) *iotgate.Device {
	c := *d
	c.Labels = maps.Clone(d.Labels)
	return &c
}

func notRegistered(jid string) error {
	return iotgate.Errorf(iotgate.ENotFound, "device %s is not registered", jid)
}

// CreateDevice stores d and sets its ID. Errors: conflict.
func (m *DeviceStore) CreateDevice(_ context.Context, d *iotgate.Device) error {
	m.mu.Lock()
	m.ready()
	defer m.mu.Unlock()
	if _, ok := m.devs[d.JID]; ok {
		return iotgate.Errorf(iotgate.EConflict, "device %s is already registered", d.JID)
	}
	m.nextID++
	d.ID = m.nextID
	m.devs[d.JID] = clone(d)
	return nil
}

// Device returns the device registered as jid. Errors: not_found.
func (m *DeviceStore) Device(_ context.Context, jid string) (*iotgate.Device, error) {
	m.mu.Lock()
	m.ready()
	m.queries["Device"]++
	d, ok := m.devs[jid]
	var c *iotgate.Device
	if ok {
		c = clone(d)
	}
	m.mu.Unlock()
	m.hook("Device", jid)
	if !ok {
		return nil, notRegistered(jid)
	}
	return c, nil
}

// Devices returns the devices that match f, ordered by JID.
func (m *DeviceStore) Devices(_ context.Context, f iotgate.DeviceFilter) (*iotgate.DevicePage, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	page := &iotgate.DevicePage{Items: []*iotgate.Device{}}
	for _, jid := range slices.Sorted(maps.Keys(m.devs)) {
		d := m.devs[jid]
		if f.Schema != "" && d.Schema != f.Schema || f.Online != nil && slices.Contains(f.OnlineJIDs, jid) != *f.Online {
			continue
		}
		match := true
		for k, v := range f.Labels {
			if d.Labels[k] != v {
				match = false
			}
		}
		if match && (f.Limit <= 0 || len(page.Items) < f.Limit) {
			page.Items = append(page.Items, clone(d))
		}
	}
	return page, nil
}

// UpdateDevice applies u to the device registered as jid. Errors:
// not_found.
func (m *DeviceStore) UpdateDevice(_ context.Context, jid string, u iotgate.DeviceUpdate, now time.Time) (*iotgate.Device, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	d, ok := m.devs[jid]
	if !ok {
		return nil, notRegistered(jid)
	}
	if u.Name != nil {
		d.Name = *u.Name
	}
	if u.Labels != nil {
		d.Labels = maps.Clone(*u.Labels)
	}
	if u.SchemaVersion != nil {
		d.SchemaVersion = *u.SchemaVersion
	}
	d.UpdatedAt = now
	return clone(d), nil
}

// DeleteDevice deletes the device with its readings and rejections.
// Errors: not_found.
func (m *DeviceStore) DeleteDevice(_ context.Context, jid string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	d, ok := m.devs[jid]
	if !ok {
		return notRegistered(jid)
	}
	delete(m.devs, jid)
	delete(m.readings, d.ID)
	m.rejections = slices.DeleteFunc(m.rejections, func(r *iotgate.Rejection) bool { return r.DeviceID == d.ID })
	return nil
}

// DeviceJIDs returns up to limit registered JIDs after after, sorted.
func (m *DeviceStore) DeviceJIDs(_ context.Context, after string, limit int) ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	all := slices.Sorted(maps.Keys(m.devs))
	i, _ := slices.BinarySearch(all, after)
	if i < len(all) && all[i] == after {
		i++
	}
	return slices.Clone(all[i:min(len(all), i+max(limit, 0))]), nil
}

// InsertReadings stores rs, setting their IDs (0 for readings of devices
// not registered), and moves each device's last_seen_at. It never fails.
func (m *DeviceStore) InsertReadings(_ context.Context, rs []*iotgate.Reading) []error {
	m.mu.Lock()
	m.ready()
	defer m.mu.Unlock()
	live := map[int64]*iotgate.Device{}
	for _, d := range m.devs {
		live[d.ID] = d
	}
	for _, r := range rs {
		d, ok := live[r.DeviceID]
		if !ok {
			r.ID = 0
			continue
		}
		m.nextID++
		r.ID = m.nextID
		c := *r
		m.readings[r.DeviceID] = append(m.readings[r.DeviceID], &c)
		if d.LastSeenAt == nil || r.ReceivedAt.After(*d.LastSeenAt) {
			t := r.ReceivedAt
			d.LastSeenAt = &t
		}
	}
	return make([]error, len(rs))
}

// InsertRejections records rs, keeping only the newest keep per device
// (0: all).
func (m *DeviceStore) InsertRejections(_ context.Context, rs []*iotgate.Rejection, keep int) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, r := range rs {
		c := *r
		m.nextRejection++
		c.ID = m.nextRejection
		m.rejections = append(m.rejections, &c)
	}
	if keep > 0 {
		n := map[int64]int{}
		for i := len(m.rejections) - 1; i >= 0; i-- {
			if id := m.rejections[i].DeviceID; n[id] < keep {
				n[id]++
			} else {
				m.rejections = slices.Delete(m.rejections, i, i+1)
			}
		}
	}
	return nil
}

// newer orders readings as the store does: by received_at, then by ID.
func newer(a, b *iotgate.Reading) bool {
	if c := a.ReceivedAt.Compare(b.ReceivedAt); c != 0 {
		return c > 0
	}
	return a.ID > b.ID
}

// LatestReading returns the device's newest reading. Errors: not_found.
func (m *DeviceStore) LatestReading(_ context.Context, jid string) (*iotgate.Reading, error) {
	m.mu.Lock()
	m.ready()
	m.queries["LatestReading"]++
	var latest *iotgate.Reading
	if d, ok := m.devs[jid]; ok {
		for _, r := range m.readings[d.ID] {
			if latest == nil || newer(r, latest) {
				latest = r
			}
		}
	}
	var c iotgate.Reading
	if latest != nil {
		c = *latest
	}
	m.mu.Unlock()
	m.hook("LatestReading", jid)
	if latest == nil {
		return nil, iotgate.Errorf(iotgate.ENotFound, "device %s has no readings", jid)
	}
	return &c, nil
}

// window returns copies of the items within f (Since inclusive, Until
// exclusive), ordered as the store orders them, by received_at then ID,
// newest first if f.Desc, and at most f.Limit of them (0: all).
func window[T any](items []*T, f iotgate.ReadingFilter, key func(*T) (time.Time, int64)) []*T {
	out := []*T{}
	for _, it := range items {
		at, _ := key(it)
		if (f.Since == nil || !at.Before(*f.Since)) && (f.Until == nil || at.Before(*f.Until)) {
			c := *it
			out = append(out, &c)
		}
	}
	slices.SortFunc(out, func(a, b *T) int {
		at, aid := key(a)
		bt, bid := key(b)
		c := at.Compare(bt)
		if c == 0 {
			c = cmp.Compare(aid, bid)
		}
		if f.Desc {
			return -c
		}
		return c
	})
	if f.Limit > 0 && len(out) > f.Limit {
		out = out[:f.Limit]
	}
	return out
}

// Readings returns the device's readings within f. Errors: not_found.
func (m *DeviceStore) Readings(_ context.Context, jid string, f iotgate.ReadingFilter) (*iotgate.ReadingPage, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	d, ok := m.devs[jid]
	if !ok {
		return nil, notRegistered(jid)
	}
	return &iotgate.ReadingPage{Items: window(m.readings[d.ID], f, func(r *iotgate.Reading) (time.Time, int64) { return r.ReceivedAt, r.ID })}, nil
}

// Rejections returns the device's rejections within f. Errors: not_found.
func (m *DeviceStore) Rejections(_ context.Context, jid string, f iotgate.ReadingFilter) (*iotgate.RejectionPage, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	d, ok := m.devs[jid]
	if !ok {
		return nil, notRegistered(jid)
	}
	mine := slices.DeleteFunc(slices.Clone(m.rejections), func(r *iotgate.Rejection) bool { return r.DeviceID != d.ID })
	return &iotgate.RejectionPage{Items: window(mine, f, func(r *iotgate.Rejection) (time.Time, int64) { return r.ReceivedAt, r.ID })}, nil
}

// AggregateReadings is not computed in memory: aggregates are
// PostgreSQL's (tests of them run against it). Errors: unavailable.
func (s *DeviceStore) AggregateReadings(ctx context.Context, jid string, q iotgate.AggregateQuery) ([]iotgate.AggregateBucket, error) {
	return nil, iotgate.Errorf(iotgate.EUnavailable, "memstore: aggregates are computed by PostgreSQL only")
}
