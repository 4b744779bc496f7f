package component

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/iotgate/iotgate/devices"
)

func TestReadingLanes(t *testing.T) {
	fs := newFakeServer(t, "s")
	c := startConn(t, fs.addr(), "s", nil)
	ing := &fakeIngester{gate: make(chan struct{}), blocked: make(chan struct{}, 1)}
	h := NewReadingHandler(c, ing, RateLimit{}, nil)
	h.devices = devices.NewScheduler(devices.SchedulerConfig{Workers: 2, Limits: devices.QueueLimits{PerSender: 5}})
	c.SetHandler(h)
	fc := fs.conn()
	waitFor(t, "stream up", func() bool { return isUp(c) })
	iq := func(id, from, payload string) string {
		return fmt.Sprintf(`<iq type='set' id='%s' from='%s/r' to='iot.localhost'><r xmlns='urn:x'>%s</r></iq>`, id, from, payload)
	}

	// A device whose validation hangs: its first reading runs, five
	// more wait in its lane, the seventh is refused at once.
	fc.send(iq("slow0", "slow@localhost", "block"))
	<-ing.blocked
	for i := 1; i < 7; i++ {
		fc.send(iq(fmt.Sprint("slow", i), "slow@localhost", "block"))
	}
	got := fc.read(t)
	if got.ID != "slow6" || got.Type != "error" || !strings.Contains(got.Inner, "policy-violation") || !strings.Contains(got.Inner, `type="wait"`) ||
		!strings.Contains(got.Inner, "too many readings queued") {
		t.Fatalf("7th reading of a stuck device: %+v, want wait/policy-violation, too many readings queued", got)
	}
	if h.QueueFull() != 1 {
		t.Errorf("QueueFull = %d, want 1", h.QueueFull())
	}

	t.Run("OthersNotDelayed", func(t *testing.T) {
		fc.send(iq("other", "d@localhost", "1"))
		if got := fc.read(t); got.ID != "other" || got.Type != "result" {
			t.Fatalf("another device's reading answered %+v while one device is stuck, want its result", got)
		}
	})
	t.Run("ThrottledStrangers", func(t *testing.T) {
		fc.send(`<message from='thr@localhost/r' to='iot.localhost'><r xmlns='urn:x'/></message>`)
		fc.send(iq("thr", "thr@localhost", "1"))
		got := fc.read(t)
		if got.ID != "thr" || !strings.Contains(got.Inner, "policy-violation") || !strings.Contains(got.Inner, `type="wait"`) {
			t.Fatalf("throttled stranger's IQ answered %+v, want wait/policy-violation (and its message nothing)", got)
		}
	})
	t.Run("StrangersInTheirOwnLane", func(t *testing.T) {
		fc.send(iq("stranger", "stranger@localhost", "1"))
		if got := fc.read(t); got.ID != "stranger" || !strings.Contains(got.Inner, "registration-required") {
			t.Fatalf("stranger's IQ answered %+v, want registration-required", got)
		}
	})
	t.Run("DrainAnswersEveryQueuedIQInOrder", func(t *testing.T) {
		close(ing.gate)
		if err := h.Drain(context.Background()); err != nil {
			t.Fatal(err)
		}
		for i := range 6 {
			if got := fc.read(t); got.ID != fmt.Sprint("slow", i) || got.Type != "result" {
				t.Fatalf("answer %d after the device got unstuck: %+v, want slow%d's result", i, got, i)
			}
		}
		fc.send(iq("late", "d@localhost", "1"))
		if got := fc.read(t); got.ID != "late" || !strings.Contains(got.Inner, "shutting down") || !strings.Contains(got.Inner, `type="wait"`) {
			t.Fatalf("reading after Drain answered %+v, want wait: shutting down", got)
		}
	})
}
