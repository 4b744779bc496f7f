package iotgate

import (
	"cmp"
	"slices"
	"strings"
	"time"
)

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

// PresenceChange is a presence stanza from a registered device, as an
// instance received it at At.
type PresenceChange struct {
	DeviceID  int64
	DeviceJID string
	At        time.Time
	PresenceUpdate
}

// ApplyPresence applies u, received at, to a device's resources (by full
// JID) and reports whether it added a resource. A resource keeps its
// Since while it stays available. Unavailable from the bare JID (how
// servers answer a probe of an account with no session) ends them all.
func ApplyPresence(rs map[string]Resource, u PresenceUpdate, at time.Time) (added bool) {
	if !u.Available {
		if strings.Contains(u.From, "/") {
			delete(rs, u.From)
		} else {
			clear(rs)
		}
		return false
	}
	r, ok := rs[u.From]
	if !ok {
		r = Resource{JID: u.From, Since: at}
	}
	r.Show, r.Status, r.Priority = u.Show, u.Status, u.Priority
	rs[u.From] = r
	return !ok
}

// SortedResources returns rs highest priority first, then most recent.
func SortedResources(rs map[string]Resource) []Resource {
	out := make([]Resource, 0, len(rs))
	for _, r := range rs {
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b Resource) int {
		if c := cmp.Compare(b.Priority, a.Priority); c != 0 {
			return c
		}
		if c := b.Since.Compare(a.Since); c != 0 {
			return c
		}
		return strings.Compare(a.JID, b.JID)
	})
	return out
}
