package iotgate

import "time"

// Resource is one connected instance (full JID) of a device, as its
// presence says.
type Resource struct {
	JID      string    `json:"jid"`
	Show     string    `json:"show,omitempty"`
	Status   string    `json:"status,omitempty"`
	Priority int       `json:"priority"`
	Since    time.Time `json:"since"`
}

// PresenceUpdate is one presence stanza from a device.
type PresenceUpdate struct {
	// From is the sender's full JID.
	From      string
	Available bool
	Show      string
	Status    string
	Priority  int
}

// PresenceEvent records a device going online or offline.
type PresenceEvent struct {
	DeviceID  int64
	DeviceJID string
	At        time.Time
	Online    bool
	// Resources are the device's available resources after the change,
	// for the presence event.
	Resources []Resource
}
