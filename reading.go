package iotgate

import (
	"encoding/json"
	"strconv"
	"strings"
	"time"
)

// Payload is one child element of an incoming stanza.
type Payload struct {
	Namespace string
	Local     string
	XML       []byte
}

// IncomingReading is a stanza a device sent to iotgate that may carry a
// reading.
type IncomingReading struct {
	// From is the sender's full JID, as stamped by the XMPP server.
	From string
	// Bare is From's bare JID as BareJID returns it, when the transport
	// has parsed From already (so the JID is parsed once per stanza);
	// empty means not known.
	Bare string
	// Via is "message" or "iq".
	Via string
	// ResendKey is the IQ's id: a reading answered unavailable, which may
	// have been stored all the same, is not stored twice when the device
	// sends it again under the same id with the same payload. Empty for
	// messages.
	ResendKey  string
	Payloads   []Payload
	DeviceTime *time.Time
}

// Reading is one validated payload a device sent, as stored.
type Reading struct {
	ID         int64           `json:"id"`
	DeviceID   int64           `json:"-"`
	DeviceJID  string          `json:"-"`
	ReceivedAt time.Time       `json:"received_at"`
	DeviceTime *time.Time      `json:"device_time"`
	XML        string          `json:"xml"`
	Data       json.RawMessage `json:"data" swaggertype:"object"`
	// MaybeStored says an earlier attempt to store this reading failed in
	// a way that may have committed it (the connection to the database
	// broke during the commit): the store must not store it twice.
	MaybeStored bool `json:"-"`
}

// Rejection records a payload that iotgate refused, for the operator.
type Rejection struct {
	ID         int64     `json:"id"`
	DeviceID   int64     `json:"-"`
	DeviceJID  string    `json:"-"`
	ReceivedAt time.Time `json:"received_at"`
	// Via is "message" or "iq".
	Via     string `json:"via"`
	Reason  string `json:"reason"`
	Payload string `json:"payload"`
}

// ReadingFilter selects a device's readings.
type ReadingFilter struct {
	Since, Until *time.Time
	Limit        int
	Cursor       string
	// Desc orders newest first (the default).
	Desc bool
	// MaxBytes is the page's byte budget (see PageBytes; 0: the default).
	MaxBytes int64
}

// ReadingPage is one page of readings.
type ReadingPage struct {
	Items      []*Reading `json:"items"`
	NextCursor string     `json:"next_cursor,omitempty"`
	// Encoded, when not nil, holds each item of Items as the API writes
	// it (the page came from the device service's memory, which keeps
	// readings encoded). The items and their encodings are shared:
	// callers must not change them.
	Encoded [][]byte `json:"-"`
}

// RejectionPage is one page of rejections.
type RejectionPage struct {
	Items      []*Rejection `json:"items"`
	NextCursor string       `json:"next_cursor,omitempty"`
}

// ReadingKey is the key of a reading's change notification: what another
// instance needs to know of a device's newest stored reading to keep its
// cache coherent without reading it (device JID, device ID, reading ID,
// received_at in Unix microseconds, space-separated).
func ReadingKey(r *Reading) string {
	return r.DeviceJID + " " + strconv.FormatInt(r.DeviceID, 10) + " " + strconv.FormatInt(r.ID, 10) + " " +
		strconv.FormatInt(r.ReceivedAt.UnixMicro(), 10)
}

// ParseReadingKey reads what ReadingKey wrote into a Reading holding
// only those fields; ok is false for anything else.
func ParseReadingKey(key string) (r *Reading, ok bool) {
	f := strings.Split(key, " ")
	if len(f) != 4 || f[0] == "" {
		return nil, false
	}
	var n [3]int64
	for i, s := range f[1:] {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return nil, false
		}
		n[i] = v
	}
	return &Reading{DeviceJID: f[0], DeviceID: n[0], ID: n[1], ReceivedAt: time.UnixMicro(n[2]).UTC()}, true
}
