package component

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/iotgate/iotgate"
)

func TestReadingHandler(t *testing.T) {
	fs := newFakeServer(t, "s")
	c := startConn(t, fs.addr(), "s", nil)
	ing := &fakeIngester{got: make(chan iotgate.IncomingReading, 100)}
	c.SetHandler(NewReadingHandler(c, ing, RateLimit{}, nil))
	fc := fs.conn()
	waitFor(t, "stream up", func() bool { return isUp(c) })

	tests := []struct {
		name      string
		in        string
		wantType  string // "" means no reply expected
		wantInner []string
	}{
		{"IQValid", `<iq type='set' id='a' from='d@localhost/r' to='iot.localhost'><r xmlns='urn:x'><v>1</v></r></iq>`, "result", nil},
		{"IQInvalid", `<iq type='set' id='b' from='d@localhost/r' to='iot.localhost'><r xmlns='urn:x'><v>bad</v></r></iq>`, "error",
			[]string{`type="modify"`, "bad-request", "is not a valid decimal"}},
		{"IQUnregistered", `<iq type='set' id='c' from='stranger@localhost/r' to='iot.localhost'><r xmlns='urn:x'/></iq>`, "error",
			[]string{`type="auth"`, "registration-required"}},
		{"IQDatabaseDown", `<iq type='set' id='d' from='d@localhost/r' to='iot.localhost'><r xmlns='urn:x'>dbdown</r></iq>`, "error",
			[]string{`type="wait"`, "service-unavailable"}},
		{"MessageInvalid", `<message id='e' from='d@localhost/r' to='iot.localhost'><body>x</body><r xmlns='urn:x'>bad</r></message>`, "error",
			[]string{"bad-request", "is not a valid decimal"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fc.send(tt.in)
			<-ing.got
			got := fc.read(t)
			if got.Type != tt.wantType {
				t.Fatalf("reply type %q, want %q: %s", got.Type, tt.wantType, got.Inner)
			}
			for _, w := range tt.wantInner {
				if !strings.Contains(got.Inner, w) {
					t.Errorf("reply %q lacks %q", got.Inner, w)
				}
			}
			if got.To != "d@localhost/r" && got.To != "stranger@localhost/r" {
				t.Errorf("reply to %q", got.To)
			}
		})
	}

	t.Run("DelayStampKept", func(t *testing.T) {
		fc.send(`<message from='d@localhost/r' to='iot.localhost'><r xmlns='urn:x'/><delay xmlns='urn:xmpp:delay' stamp='2026-01-02T03:04:05.5+01:00'/></message>`)
		in := <-ing.got
		if in.DeviceTime == nil || !in.DeviceTime.Equal(time.Date(2026, 1, 2, 2, 4, 5, 5e8, time.UTC)) {
			t.Errorf("device time = %v", in.DeviceTime)
		}
		if len(in.Payloads) != 1 || in.Payloads[0].Namespace != "urn:x" {
			t.Errorf("payloads = %+v, want only the reading", in.Payloads)
		}
	})

	t.Run("SilentCases", func(t *testing.T) {
		// Neither an error message from a device nor a message from an
		// unregistered JID is answered; a flood of bad messages gets at
		// most the burst of error replies.
		fc.send(`<message type='error' from='d@localhost/r' to='iot.localhost'><r xmlns='urn:x'>bad</r></message>`)
		fc.send(`<message from='stranger@localhost/r' to='iot.localhost'><r xmlns='urn:x'/></message>`)
		<-ing.got
		for i := range 30 {
			fc.send(fmt.Sprintf(`<message id='f%d' from='flood@localhost/r' to='iot.localhost'><r xmlns='urn:x'>bad</r></message>`, i))
		}
		for range 30 {
			<-ing.got
		}
		fc.send(`<iq type='get' id='marker' from='d@localhost/r' to='iot.localhost'><ping xmlns='urn:xmpp:ping'/></iq>`)
		errorsSeen := 0
		for {
			got := fc.read(t)
			if got.ID == "marker" {
				break
			}
			if !strings.HasPrefix(got.ID, "f") || got.To != "flood@localhost/r" {
				t.Errorf("unexpected reply %+v", got)
			}
			errorsSeen++
		}
		if errorsSeen < 1 || errorsSeen > int(errorBurst)+1 {
			t.Errorf("flood of 30 bad messages got %d error replies, want 1..%d", errorsSeen, int(errorBurst)+1)
		}
	})
}

func TestReadingRateLimit(t *testing.T) {
	fs := newFakeServer(t, "s")
	c := startConn(t, fs.addr(), "s", nil)
	ing := &fakeIngester{got: make(chan iotgate.IncomingReading, 100)}
	h := NewReadingHandler(c, ing, RateLimit{Rate: 0.001, Burst: 3}, nil)
	c.SetHandler(h)
	fc := fs.conn()
	waitFor(t, "stream up", func() bool { return isUp(c) })

	// The burst passes; the rest is refused with wait/policy-violation,
	// per device: another device is not affected.
	for i := range 5 {
		fc.send(fmt.Sprintf(`<iq type='set' id='r%d' from='d@localhost/r' to='iot.localhost'><r xmlns='urn:x'/></iq>`, i))
	}
	fc.send(`<iq type='set' id='other' from='e@localhost/r' to='iot.localhost'><r xmlns='urn:x'/></iq>`)
	results, limited := 0, 0
	for range 6 {
		got := fc.read(t)
		switch {
		case got.Type == "result":
			results++
		case strings.Contains(got.Inner, "policy-violation") && strings.Contains(got.Inner, `type="wait"`):
			limited++
			if got.To != "d@localhost/r" {
				t.Errorf("limited %s, want only the flooding device", got.To)
			}
		default:
			t.Errorf("unexpected reply %+v", got)
		}
	}
	if results != 4 || limited != 2 || h.RateLimited() != 2 {
		t.Errorf("results %d, limited %d (counted %d); want 4, 2, 2", results, limited, h.RateLimited())
	}
}
