package iotgate

import (
	"encoding/json"
	"slices"
	"time"
)

// EventType says what an event is about.
type EventType string

// The event types. Every stored change of a reading, rejection, presence,
// command or device becomes one event, committed with the change.
const (
	EventReading   EventType = "reading"
	EventRejection EventType = "rejection"
	EventPresence  EventType = "presence"
	EventCommand   EventType = "command"
	EventDevice    EventType = "device"
	// EventGap is never stored: a stream starts with it when the events
	// after the id it resumes from have been trimmed already, so the
	// client knows to re-read state.
	EventGap EventType = "gap"
)

// EventTypes lists the stored event types, for validation and help texts.
var EventTypes = []EventType{EventReading, EventRejection, EventPresence, EventCommand, EventDevice}

// Device event actions.
const (
	DeviceRegistered = "registered"
	DeviceUpdated    = "updated"
	DeviceDeleted    = "deleted"
)

// Event limits and defaults.
const (
	// DefaultEventRetention is how long events are kept
	// (IOTGATE_EVENT_RETENTION).
	DefaultEventRetention = 24 * time.Hour
)

// Event is one entry of the event log. IDs grow in commit order across
// every instance sharing the database: a reader that has seen ID n has
// seen every event before it.
type Event struct {
	ID   int64     `json:"id" example:"4711"`
	Type EventType `json:"type" enums:"reading,rejection,presence,command,device,gap" example:"reading"`
	Time time.Time `json:"time" format:"date-time" example:"2026-01-02T15:04:05.000Z"`
	// Device is the device's bare JID ("" for gap).
	Device string `json:"device" example:"thermo1@example.com"`
	// Data is the event's body: ReadingEventData, RejectionEventData,
	// PresenceEventData, CommandView, DeviceEventData or GapEventData.
	Data json.RawMessage `json:"data" swaggertype:"object"`
	// Labels are the device's labels, read with the event, for selectors
	// (the device's labels then for device events, its labels now for
	// the others; nil when the device is gone). Never shown.
	Labels map[string]string `json:"-"`
	// Encoded is the event as JSON once a reader has encoded it (the
	// event hub does, once per instance): an event fanned out to many
	// streams is encoded once, not once per stream. Nil until then.
	Encoded []byte `json:"-"`
}

// JSON returns Encoded, or the event encoded now when it is not set.
func (e *Event) JSON() ([]byte, error) {
	if e.Encoded != nil {
		return e.Encoded, nil
	}
	return json.Marshal(e)
}

// ReadingEventData is a reading event's body: the reading as the readings
// page shows it, without its XML.
type ReadingEventData struct {
	ID         int64           `json:"id" example:"81234"`
	ReceivedAt time.Time       `json:"received_at" format:"date-time"`
	DeviceTime *time.Time      `json:"device_time" format:"date-time" extensions:"x-nullable"`
	Data       json.RawMessage `json:"data" swaggertype:"object"`
}

// RejectionEventData is a rejection event's body.
type RejectionEventData struct {
	ReceivedAt time.Time `json:"received_at" format:"date-time"`
	Via        string    `json:"via" enums:"message,iq" example:"message"`
	Reason     string    `json:"reason" example:"document does not match its schema"`
}

// PresenceEventData is a presence event's body.
type PresenceEventData struct {
	Online    bool       `json:"online" example:"true"`
	Resources []Resource `json:"resources"`
}

// DeviceEventData is a device event's body: what happened and the device
// as it is after (as it was, for deleted).
type DeviceEventData struct {
	Action string  `json:"action" enums:"registered,updated,deleted" example:"updated"`
	Device *Device `json:"device"`
}

// GapEventData is the body of the gap event.
type GapEventData struct {
	// After is the id the client asked to resume after.
	After int64 `json:"after" example:"17"`
	// Oldest is the oldest event id still kept.
	Oldest int64 `json:"oldest" example:"4000"`
}

func newEvent(t EventType, at time.Time, device string, body any) Event {
	data, err := json.Marshal(body)
	if err != nil {
		// The bodies are plain structs whose raw parts are valid JSON
		// already; failing here is a bug.
		panic("iotgate: marshal event: " + err.Error())
	}
	return Event{Type: t, Time: at, Device: device, Data: data}
}

// ReadingEvent returns the event announcing a stored reading (its ID set).
func ReadingEvent(r *Reading) Event {
	return newEvent(EventReading, r.ReceivedAt, r.DeviceJID, ReadingEventData{ID: r.ID, ReceivedAt: r.ReceivedAt, DeviceTime: r.DeviceTime, Data: r.Data})
}

// RejectionEvent returns the event announcing a refused reading.
func RejectionEvent(r *Rejection) Event {
	return newEvent(EventRejection, r.ReceivedAt, r.DeviceJID, RejectionEventData{ReceivedAt: r.ReceivedAt, Via: r.Via, Reason: r.Reason})
}

// PresenceChangeEvent returns the event announcing a device going online or
// offline.
func PresenceChangeEvent(p PresenceEvent) Event {
	res := p.Resources
	if res == nil {
		res = []Resource{}
	}
	return newEvent(EventPresence, p.At, p.DeviceJID, PresenceEventData{Online: p.Online, Resources: res})
}

// CommandChangeEvent returns the event announcing a command's new status,
// at the time of its last history entry.
func CommandChangeEvent(c *Command) Event {
	at := c.CreatedAt
	if n := len(c.History); n > 0 {
		at = c.History[n-1].At
	}
	return newEvent(EventCommand, at, c.DeviceJID, c.View())
}

// DeviceChangeEvent returns the event announcing that a device was
// registered, updated or deleted (action: Device*).
func DeviceChangeEvent(action string, d *Device, at time.Time) Event {
	e := newEvent(EventDevice, at, d.JID, DeviceEventData{Action: action, Device: d})
	e.Labels = d.Labels
	return e
}

// EventFilter selects events; its parts combine with AND.
type EventFilter struct {
	// Types selects these types; empty selects all.
	Types []EventType
	// Devices selects these bare JIDs; empty selects all.
	Devices []string
	// Labels selects devices with these labels (the label= filter).
	Labels Selector
	// Scope is the token's own selector: events of devices outside it
	// are never seen, not even their ids.
	Scope Selector
}

// Matches reports whether f selects e. An event whose device is gone (nil
// Labels) matches only filters without selectors.
func (f *EventFilter) Matches(e *Event) bool {
	if len(f.Types) > 0 && !slices.Contains(f.Types, e.Type) {
		return false
	}
	if len(f.Devices) > 0 && !slices.Contains(f.Devices, e.Device) {
		return false
	}
	if len(f.Labels)+len(f.Scope) > 0 && e.Labels == nil {
		return false
	}
	return f.Labels.Matches(e.Labels) && f.Scope.Matches(e.Labels)
}

// EventQuery asks the event log for events after an id.
type EventQuery struct {
	// After is the last id the caller has seen.
	After int64
	// Limit bounds how many events are returned.
	Limit int
	// Filter, when set, is applied by the store (what it can) and must
	// still be checked with Matches by the caller.
	Filter *EventFilter
}

// EventBatch is the answer to an EventQuery.
type EventBatch struct {
	// Events are in id order.
	Events []*Event
	// Next is the id to continue after: at least the last event's id,
	// more when the store skipped ids that the filter doesn't select.
	// Scanning is bounded per call, so Events may be empty while Next
	// moves on.
	Next int64
	// More is true when ids after Next exist already.
	More bool
}

// EventBounds describes the log: Last is the newest event's id (0: none)
// and Trimmed the highest id retention has removed (0: none), so an id
// before Trimmed can't be resumed from without a gap.
type EventBounds struct {
	Last, Trimmed int64
}
