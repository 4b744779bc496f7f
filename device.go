package iotgate

import (
	"fmt"
	"regexp"
	"strings"
	"time"

	"mellium.im/xmpp/jid"
)

// Device is an XMPP entity registered with iotgate: a bare JID and the
// schema its readings must follow.
type Device struct {
	// ID is the store's key for the device; never shown to clients.
	ID            int64             `json:"-"`
	JID           string            `json:"jid"`
	Name          string            `json:"name"`
	Labels        map[string]string `json:"labels"`
	Schema        string            `json:"schema"`
	SchemaVersion int               `json:"schema_version"`
	CreatedAt     time.Time         `json:"created_at"`
	UpdatedAt     time.Time         `json:"updated_at"`
	// LastSeenAt is when iotgate last received a reading from the device;
	// nil before the first.
	LastSeenAt *time.Time `json:"last_seen_at"`
	// Online is whether an instance of the device is available (from
	// presence; not stored).
	Online bool `json:"online"`
}

var labelKey = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9._/-]{0,62}[A-Za-z0-9])?$`)

// Limits on what a device record may hold.
const (
	MaxNameLen    = 200
	MaxLabels     = 64
	MaxLabelValue = 256
)

// Validate checks the device's invariants. Errors: invalid.
func (d *Device) Validate() error {
	if len(d.Name) > MaxNameLen {
		return Errorf(EInvalid, "name is longer than %d bytes", MaxNameLen)
	}
	if d.Schema == "" {
		return Errorf(EInvalid, "schema is required")
	}
	if d.SchemaVersion < 0 {
		return Errorf(EInvalid, "schema_version must be positive")
	}
	return ValidateLabels(d.Labels)
}

// ValidateLabels checks label keys and values. Errors: invalid.
func ValidateLabels(labels map[string]string) error {
	if len(labels) > MaxLabels {
		return Errorf(EInvalid, "at most %d labels", MaxLabels)
	}
	for k, v := range labels {
		if !labelKey.MatchString(k) {
			return Errorf(EInvalid, "label key %q must be 1-64 letters, digits, '.', '_', '-' or '/', starting and ending with a letter or digit", k)
		}
		if len(v) > MaxLabelValue {
			return Errorf(EInvalid, "label %q: value longer than %d bytes", k, MaxLabelValue)
		}
	}
	return nil
}

// NormalizeJID parses s as a device JID and returns its canonical bare form
// (PRECIS-normalized). A full JID (with a resource), a domain-only JID or an
// invalid one is refused. Errors: invalid.
func NormalizeJID(s string) (string, error) {
	j, err := jid.Parse(s)
	if err != nil {
		return "", &Error{Code: EInvalid, Message: fmt.Sprintf("%q is not a valid JID: %v", s, err)}
	}
	if j.Resourcepart() != "" {
		return "", Errorf(EInvalid, "%q is a full JID; register the bare JID %q", s, j.Bare().String())
	}
	if j.Localpart() == "" {
		return "", Errorf(EInvalid, "%q has no local part; a device JID looks like name@example.com", s)
	}
	return j.String(), nil
}

// BareJID returns the canonical bare JID of a (full or bare) JID, as the
// server stamped it on a stanza. Errors: invalid.
func BareJID(s string) (string, error) {
	if b, ok := plainBareJID(s); ok {
		return b, nil
	}
	j, err := jid.Parse(s)
	if err != nil {
		return "", &Error{Code: EInvalid, Message: fmt.Sprintf("%q is not a valid JID: %v", s, err)}
	}
	return j.Bare().String(), nil
}

// DeviceFilter selects devices in List.
type DeviceFilter struct {
	Schema string
	// Labels must all match (key -> value).
	Labels map[string]string
	Online *bool
	// OnlineJIDs is filled in by the service from presence when Online is
	// set; stores select by it.
	OnlineJIDs []string
	Limit      int
	// Cursor continues a previous page (opaque to clients).
	Cursor string
}

// DeviceUpdate changes a device; nil fields are left alone.
type DeviceUpdate struct {
	Name          *string
	Labels        *map[string]string
	SchemaVersion *int
}

// DevicePage is one page of devices.
type DevicePage struct {
	Items      []*Device `json:"items"`
	NextCursor string    `json:"next_cursor,omitempty"`
}

// State is a device's current state.
type State struct {
	JID    string `json:"jid"`
	Online bool   `json:"online"`
	// PresenceStale is true while the XMPP stream is down: nobody's
	// presence is known then, and Online is false for everyone.
	PresenceStale bool       `json:"presence_stale"`
	Resources     []Resource `json:"resources"`
	LastSeenAt    *time.Time `json:"last_seen_at"`
	Reading       *Reading   `json:"reading"`
	// ReadingEncoded, when not nil, is Reading as the API writes it,
	// kept by the device service with its cached newest reading so that
	// it is not encoded again at each request. Shared: not to be changed.
	ReadingEncoded []byte `json:"-"`
}

// Clock tells the time; injected so tests can fix it.
type Clock func() time.Time

// plainBareJID returns s's bare JID without PRECIS and IDNA when s is
// written as servers stamp devices' JIDs: a localpart of lowercase ASCII
// letters, digits and ._-, a domain of lowercase LDH labels, and a
// resource of printable ASCII. For those the full rules change nothing
// (FuzzBareJID checks it against them) and the bare JID is a substring:
// no allocation on the reading path. ok false: the full rules decide.
func plainBareJID(s string) (bare string, ok bool) {
	bare = s
	if i := strings.IndexByte(s, '/'); i >= 0 {
		res := s[i+1:]
		if res == "" || len(res) > 1023 {
			return "", false
		}
		for j := 0; j < len(res); j++ {
			if c := res[j]; c < 0x21 || c > 0x7e {
				return "", false
			}
		}
		bare = s[:i]
	}
	domain := bare
	if i := strings.IndexByte(bare, '@'); i >= 0 {
		local := bare[:i]
		if local == "" || len(local) > 1023 {
			return "", false
		}
		for j := 0; j < len(local); j++ {
			if c := local[j]; !lowerAlnum(c) && c != '.' && c != '_' && c != '-' {
				return "", false
			}
		}
		domain = bare[i+1:]
	}
	if domain == "" || len(domain) > 253 {
		return "", false
	}
	for label := range strings.SplitSeq(domain, ".") {
		// No empty label (nor a final dot, which the full rules strip),
		// no hyphen at either end or doubled (A-labels, xn--).
		if label == "" || label[0] == '-' || label[len(label)-1] == '-' || strings.Contains(label, "--") {
			return "", false
		}
		for j := 0; j < len(label); j++ {
			if c := label[j]; !lowerAlnum(c) && c != '-' {
				return "", false
			}
		}
	}
	return bare, true
}

func lowerAlnum(c byte) bool { return 'a' <= c && c <= 'z' || '0' <= c && c <= '9' }
