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
	// DeviceJIDs returns every registered JID.
	DeviceJIDs(ctx context.Context) ([]string, error)

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
}

// PresenceStore records presence history.
type PresenceStore interface {
	InsertPresenceEvents(ctx context.Context, evs []PresenceEvent) error
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
