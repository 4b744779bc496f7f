package component

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"

	"github.com/iotgate/iotgate"
	"github.com/iotgate/iotgate/devices"
)

// presenceTracker is a PresenceService over a real devices.Presence,
// without a registry: every sender is a device.
type presenceTracker struct {
	p *devices.Presence
}

func (f presenceTracker) UpdatePresence(_ context.Context, u iotgate.PresenceUpdate) error {
	bare, _, _ := strings.Cut(u.From, "/")
	return f.p.Update(&iotgate.Device{JID: bare}, u)
}
func (presenceTracker) Registered(context.Context, string) (bool, error)          { return true, nil }
func (presenceTracker) DeviceJIDs(context.Context, string, int) ([]string, error) { return nil, nil }
func (f presenceTracker) PresenceStale()                                          { f.p.MarkStale() }
func (f presenceTracker) PresenceFresh()                                          { f.p.MarkFresh() }
func (f presenceTracker) PresenceProbing()                                        { f.p.ProbesSending() }
func (f presenceTracker) PresenceProbed()                                         { f.p.ProbesSent() }

// syncBuffer is a log sink safe for the stream's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestPresenceBounds plays a device that floods its presence: a status of
// megabytes, a made-up show, and more sessions than iotgate tracks. The
// status is cut, the show dropped, the sessions beyond the cap ignored
// (not answered: the stream goes on), with a bounded number of log lines.
func TestPresenceBounds(t *testing.T) {
	fs := newFakeServer(t, "s")
	c := startConn(t, fs.addr(), "s", func(cfg *Config) { cfg.MaxStanzaBytes = 8 << 20 })
	p := devices.NewPresence(nil, devices.PresenceConfig{MaxResources: 2})
	var logs syncBuffer
	h := NewPresenceHandler(c, presenceTracker{p}, slog.New(slog.NewTextHandler(&logs, nil)))
	c.SetHandler(h)
	fc := fs.conn()
	waitFor(t, "stream up", func() bool { return isUp(c) })

	huge := strings.Repeat("é", 1<<20) // 2 MiB
	fc.send(`<presence from='d@localhost/a' to='iot.localhost'><show>` + strings.Repeat("x", 10000) + `</show><status>` + huge + `</status></presence>`)
	fc.send(`<presence from='d@localhost/b' to='iot.localhost'><show>dnd</show><priority>1</priority></presence>`)
	for _, r := range []string{"c", "d", "e", "f", "g", "h", "i", "j"} {
		fc.send(`<presence from='d@localhost/` + r + `' to='iot.localhost'><priority>9</priority></presence>`)
	}
	// A probe's answer is the first stanza back: nothing answered the
	// presence before it.
	fc.send(`<presence type='probe' from='d@localhost/a' to='iot.localhost'/>`)
	if got := fc.read(t); got.XMLName.Local != "presence" || got.Type != "" || got.To != "d@localhost/a" {
		t.Fatalf("first stanza back = %+v, want the answer to the probe", got)
	}

	rs := p.Resources("d@localhost")
	if len(rs) != 2 || rs[0].JID != "d@localhost/b" || rs[1].JID != "d@localhost/a" {
		t.Fatalf("resources = %+v, want b then a only", rs)
	}
	a, b := rs[1], rs[0]
	if n := utf8.RuneCountInString(a.Status); n != maxStatus || !utf8.ValidString(a.Status) {
		t.Errorf("status of a: %d characters (valid UTF-8: %v), want %d", n, utf8.ValidString(a.Status), maxStatus)
	}
	if a.Show != "" || b.Show != "dnd" {
		t.Errorf("show = %q, %q; want \"\" (not an RFC 6121 value), dnd", a.Show, b.Show)
	}
	lines := strings.Count(logs.String(), "too many resources")
	if lines < 1 || lines > int(errorBurst) {
		t.Errorf("%d log lines about the 8 refused sessions, want 1 to %d", lines, int(errorBurst))
	}
}

func TestPresenceDetails(t *testing.T) {
	long := strings.Repeat("a", maxStatus+10)
	tests := []struct {
		name, inner  string
		show, status string
		priority     int
	}{
		{"Plain", `<show>away</show><status>on battery</status><priority>5</priority>`, "away", "on battery", 5},
		{"UnknownShow", `<show>haxx</show>`, "", "", 0},
		{"StatusCut", `<status>` + long + `</status>`, "", long[:maxStatus], 0},
		{"StatusCutOnRune", `<status>` + strings.Repeat("€", maxStatus+1) + `</status>`, "", strings.Repeat("€", maxStatus), 0},
		{"StatusAtLimit", `<status>` + long[:maxStatus] + `</status>`, "", long[:maxStatus], 0},
		{"PriorityOutOfRange", `<priority>1000</priority>`, "", "", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := &Stanza{Kind: KindPresence, From: "d@localhost/a", Inner: []byte(tt.inner)}
			show, status, prio := presenceDetails(st)
			if show != tt.show || status != tt.status || prio != tt.priority {
				t.Errorf("got %q, %d chars, %d; want %q, %d chars, %d", show, len(status), prio, tt.show, len(tt.status), tt.priority)
			}
		})
	}
}

// FuzzTruncateRunes: the cut keeps a prefix of at most n characters,
// never splits a character, and leaves a short enough text alone.
func FuzzTruncateRunes(f *testing.F) {
	f.Add("on battery", 4)
	f.Add(strings.Repeat("€", 10), 3)
	f.Add("a\xffb", 2)
	f.Fuzz(func(t *testing.T, s string, n int) {
		if n < 0 || n > 1<<16 {
			return
		}
		got := truncateRunes(s, n)
		if !strings.HasPrefix(s, got) {
			t.Fatalf("truncateRunes(%q, %d) = %q, not a prefix", s, n, got)
		}
		if c := utf8.RuneCountInString(got); c > n {
			t.Errorf("truncateRunes(%q, %d) = %q: %d characters", s, n, got, c)
		}
		if utf8.RuneCountInString(s) <= n && got != s {
			t.Errorf("truncateRunes(%q, %d) = %q, want it whole", s, n, got)
		}
		if utf8.ValidString(s) && !utf8.ValidString(got) {
			t.Errorf("truncateRunes(%q, %d) = %q split a character", s, n, got)
		}
	})
}
