package iotgate

import (
	"context"
	"time"
)

// DeviceStore is the persistence the device service needs. Implementations return
// *Error values: not_found for unknown devices, conflict for duplicates.
type DeviceStore interface {
	CreateDevice(ctx context.Context, d *Device) error
	Device(ctx context.Context, jid string) (*Device, error)
	Devices(ctx context.Context, f DeviceFilter) (*DevicePage, error)
	UpdateDevice(ctx context.Context, jid string, u DeviceUpdate, now time.Time) (*Device, error)
	// DeleteDevice deletes the device with its readings and rejections.
	DeleteDevice(ctx context.Context, jid string) error
	// DeviceJIDs returns up to limit registered JIDs after after, in
	// order: a page of them (after "" for the first).
	DeviceJIDs(ctx context.Context, after string, limit int) ([]string, error)

	// InsertReadings stores readings and moves each device's last_seen_at,
	// and returns one error per reading (nil: stored). Readings of devices
	// deleted meanwhile are skipped (nil, ID 0). A reading the database
	// refuses fails alone, the others are stored. Errors: unavailable
	// when the database can't be reached; invalid for a reading with a
	// value the database refuses.
	InsertReadings(ctx context.Context, rs []*Reading) []error
	// InsertRejections records refused payloads, keeping only the newest
	// keep per device (0: all).
	InsertRejections(ctx context.Context, rs []*Rejection, keep int) error
	LatestReading(ctx context.Context, jid string) (*Reading, error)
	Readings(ctx context.Context, jid string, f ReadingFilter) (*ReadingPage, error)
	Rejections(ctx context.Context, jid string, f ReadingFilter) (*RejectionPage, error)
	// AggregateReadings returns the time buckets of a device's readings
	// with the aggregates q asks for (q valid, its fields numeric by the
	// device's schema), oldest first. Errors: unavailable, timeout.
	AggregateReadings(ctx context.Context, jid string, q AggregateQuery) ([]AggregateBucket, error)
}

// PresenceStore keeps the devices' available resources, shared by every
// instance, and their presence history.
type PresenceStore interface {
	// ApplyPresence applies changes in order, in one transaction, and
	// records each online/offline transition they make once (history
	// and presence event), whichever instances apply changes of the same
	// device at the same time. Changes of deleted devices are skipped.
	ApplyPresence(ctx context.Context, cs []PresenceChange) error
	// ExpirePresence removes the resources no change confirmed within
	// the last age by the store's clock (instances' clocks may differ; 0:
	// every resource), recording the devices that go offline at at.
	ExpirePresence(ctx context.Context, age time.Duration, at time.Time) error
	// DeviceResources returns the available resources of the devices
	// with these bare JIDs (of every device when jids is nil), by bare
	// JID; a device without any is absent.
	DeviceResources(ctx context.Context, jids []string) (map[string][]Resource, error)
}

// EventLog is the durable log of events. The stores write events in the
// same transaction as the change they describe; EventLog reads and trims
// them.
type EventLog interface {
	// Events returns events after q.After in id order, with each event's
	// Labels set. Errors: unavailable.
	Events(ctx context.Context, q EventQuery) (*EventBatch, error)
	// EventBounds returns the newest id and the trim horizon. Errors:
	// unavailable.
	EventBounds(ctx context.Context) (EventBounds, error)
	// TrimEvents deletes at most limit of the oldest events older than
	// before and returns how many it deleted. Errors: unavailable.
	TrimEvents(ctx context.Context, before time.Time, limit int) (int, error)
}
