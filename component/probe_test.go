package component

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/iotgate/iotgate/devices"
)

// manyDevices is a presence tracker with n registered devices to probe.
type manyDevices struct {
	presenceTracker
	n int
}

func (m manyDevices) DeviceJIDs(_ context.Context, after string, limit int) ([]string, error) {
	var jids []string
	for i := range m.n {
		// Zero-padded: in order as strings too.
		if j := fmt.Sprintf("d%07d@localhost", i); j > after && len(jids) < limit {
			jids = append(jids, j)
		}
	}
	return jids, nil
}

// TestProbePaced: after a connection the registered devices are probed in
// batches of probeBatch, each followed by a ping whose answer the next
// batch waits for (so the server's backlog stays one batch long), and
// none after the last batch.
func TestProbePaced(t *testing.T) {
	for _, tt := range []struct {
		name    string
		devices int
	}{
		{"OneShortBatch", probeBatch - 1},
		{"ExactBatch", probeBatch},
		{"ThreeBatches", 2*probeBatch + probeBatch/2},
	} {
		t.Run(tt.name, func(t *testing.T) {
			fs := newFakeServer(t, "s")
			// The handler's connect hook must be in place before the
			// stream comes up: the connection is started by hand.
			c := newTestConn(t, fs.addr(), "s", nil)
			p := devices.NewPresence(nil, devices.PresenceConfig{})
			h := NewPresenceHandler(c, manyDevices{presenceTracker{p}, tt.devices}, nil)
			c.SetHandler(h)
			runConn(t, c)
			fc := fs.conn()
			var got []string // "p" for a probe, "ping" for a ping
			probes := 0
			for probes < tt.devices {
				st := fc.readAny(t)
				switch {
				case st.XMLName.Local == "presence" && st.Type == "probe":
					if want := fmt.Sprintf("d%07d@localhost", probes); st.To != want {
						t.Fatalf("probe %d to %s, want %s", probes, st.To, want)
					}
					probes++
					got = append(got, "p")
				case strings.Contains(st.Inner, "urn:xmpp:ping"):
					got = append(got, "ping")
					// Answered late: the next batch must wait for it.
					time.Sleep(50 * time.Millisecond)
					fc.send(fmt.Sprintf(`<iq type='result' id='%s' from='%s' to='%s'/>`, st.ID, st.To, st.From))
				default:
					t.Fatalf("unexpected stanza %+v", st)
				}
			}
			var want []string
			for i := range tt.devices {
				if i > 0 && i%probeBatch == 0 {
					want = append(want, "ping")
				}
				want = append(want, "p")
			}
			if g, w := strings.Join(got, ","), strings.Join(want, ","); g != w {
				t.Errorf("pings after probes %v, want after %v", pingsAt(got), pingsAt(want))
			}
		})
	}
}

// pingsAt returns how many probes came before each ping of seq.
func pingsAt(seq []string) []int {
	var at []int
	n := 0
	for _, s := range seq {
		if s == "ping" {
			at = append(at, n)
		} else {
			n++
		}
	}
	return at
}

// TestResubscribeAfterReconnect: the first stream probes the registered
// devices; a stream that follows a dropped one asks each for its
// subscription instead (a subscription sent while the stream was down is
// lost, and a probe doesn't repair it), and a device's subscribed answer
// is followed by a probe of that device.
func TestResubscribeAfterReconnect(t *testing.T) {
	const n = 3
	fs := newFakeServer(t, "s")
	c := newTestConn(t, fs.addr(), "s", nil)
	p := devices.NewPresence(nil, devices.PresenceConfig{})
	h := NewPresenceHandler(c, manyDevices{presenceTracker{p}, n}, nil)
	c.SetHandler(h)
	runConn(t, c)

	// readTypes reads n presence stanzas and returns "type to" of each.
	readTypes := func(fc *fakeConn) []string {
		t.Helper()
		var got []string
		for len(got) < n {
			st := fc.read(t)
			if st.XMLName.Local != "presence" {
				t.Fatalf("unexpected stanza %+v", st)
			}
			got = append(got, st.Type+" "+st.To)
		}
		return got
	}
	want := func(typ string) []string {
		var w []string
		for i := range n {
			w = append(w, fmt.Sprintf("%s d%07d@localhost", typ, i))
		}
		return w
	}
	for _, step := range []struct {
		name, typ string
	}{
		{"FirstConnection", "probe"},
		{"AfterDrop", "subscribe"},
		{"AfterSecondDrop", "subscribe"},
	} {
		fc := fs.conn()
		if got, w := strings.Join(readTypes(fc), ","), strings.Join(want(step.typ), ","); got != w {
			t.Fatalf("%s: sent %s, want %s", step.name, got, w)
		}
		if step.typ == "subscribe" {
			// The device's server answers for an already subscribed
			// device: iotgate then probes it.
			fc.send(`<presence type='subscribed' from='d0000001@localhost' to='iot.localhost'/>`)
			st := fc.read(t)
			if st.Type != "probe" || st.To != "d0000001@localhost" {
				t.Fatalf("%s: after subscribed got %+v, want a probe of d0000001@localhost", step.name, st)
			}
		}
		fc.Close() // the stream drops
	}
}

// TestSubscriptionRetried: a device that asked for a subscription and was
// asked back is asked again while its presence doesn't come, at most
// subscribeAttempts times; once its presence comes, no more. A request
// left unanswered because the store could not say whether the device is
// registered is answered by a retry.
func TestSubscriptionRetried(t *testing.T) {
	const retry = 100 * time.Millisecond
	tests := []struct {
		name      string
		storeErrs int32 // Registered fails this many times first
		available int   // its presence comes after this many subscribe requests; -1: never
		// availableFirst sends its presence before its request.
		availableFirst bool
		want           string
	}{
		{name: "ApprovesAfterOneRetry", available: 2, want: "subscribed,subscribe,subscribe"},
		{name: "NeverApproves", available: -1, want: "subscribed,subscribe,subscribe,subscribe,subscribe,subscribe"},
		{name: "StoreDownOnce", storeErrs: 1, available: 1, want: "subscribed,subscribe"},
		{name: "StoreDownTwice", storeErrs: 2, available: 1, want: "subscribed,subscribe"},
		// Its presence was handled before its request (the strangers'
		// lane is slower): already subscribed, not asked again.
		{name: "AvailableFirst", availableFirst: true, available: -1, want: "subscribed,subscribe"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := newFakeServer(t, "s")
			c := newTestConn(t, fs.addr(), "s", nil)
			p := devices.NewPresence(nil, devices.PresenceConfig{})
			svc := &flakyRegistry{manyDevices: manyDevices{presenceTracker{p}, 0}}
			svc.fails.Store(tt.storeErrs)
			h := NewPresenceHandler(c, svc, nil)
			h.retry = retry
			c.SetHandler(h)
			runConn(t, c)
			fc := fs.conn()

			if tt.availableFirst {
				fc.send(`<presence from='d@localhost/r' to='iot.localhost'/>`)
			}
			fc.send(`<presence type='subscribe' from='d@localhost' to='iot.localhost'/>`)
			var got []string
			subscribes := 0
			deadline := time.Now().Add(time.Duration(subscribeAttempts+4) * retry)
			for time.Now().Before(deadline) {
				fc.SetReadDeadline(deadline)
				start, err := fc.nextStart()
				if err != nil {
					break
				}
				var st fakeStanza
				if err := fc.dec.DecodeElement(&st, &start); err != nil {
					t.Fatal(err)
				}
				if st.To != "d@localhost" {
					t.Fatalf("unexpected %+v", st)
				}
				got = append(got, st.Type)
				if st.Type == "subscribe" {
					subscribes++
					if subscribes == tt.available {
						fc.send(`<presence from='d@localhost/r' to='iot.localhost'/>`)
					}
				}
			}
			if g := strings.Join(got, ","); g != tt.want {
				t.Errorf("sent %s, want %s", g, tt.want)
			}
		})
	}
}

// flakyRegistry fails Registered as many times as fails says first.
type flakyRegistry struct {
	manyDevices
	fails atomic.Int32
}

func (f *flakyRegistry) Registered(ctx context.Context, j string) (bool, error) {
	if f.fails.Add(-1) >= 0 {
		return false, errors.New("store unavailable")
	}
	return f.manyDevices.Registered(ctx, j)
}
