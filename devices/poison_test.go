package devices

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/iotgate/iotgate"
)

// TestIngestPoisonReading checks that a reading the database refuses
// (a value out of its range) is refused alone, with the reason, and
// recorded as a rejection, while the readings committed with it are
// stored and acknowledged.
func TestIngestPoisonReading(t *testing.T) {
	store := &flakyStore{refuse: func(r *iotgate.Reading) error {
		if strings.Contains(r.XML, "poison") {
			return iotgate.Errorf(iotgate.EInvalid, "store readings: invalid value")
		}
		return nil
	}}
	s := NewService(store, anySchema{}, ServiceConfig{})
	ctx, cancel := context.WithCancel(context.Background())
	defer func() { cancel(); <-s.Stopped() }()

	readings := []struct {
		from, via, xml string
		wantRefused    bool
	}{
		{"a@example.com/r", "iq", `<x xmlns="urn:t"/>`, false},
		{"b@example.com/r", "iq", `<x xmlns="urn:t">poison</x>`, true},
		{"c@example.com/r", "message", `<x xmlns="urn:t"/>`, false},
		{"d@example.com/r", "message", `<x xmlns="urn:t">poison</x>`, true},
		{"e@example.com/r", "iq", `<x xmlns="urn:t"/>`, false},
	}
	var wg sync.WaitGroup
	got := make([]error, len(readings))
	// Queued before Run starts: one batch.
	for i, r := range readings {
		wg.Add(1)
		s.Ingest(ctx, iotgate.IncomingReading{From: r.from, Via: r.via, Payloads: []iotgate.Payload{{Namespace: "urn:t", XML: []byte(r.xml)}}},
			func(err error) { got[i] = err; wg.Done() })
	}
	go s.Run(ctx)
	wg.Wait()

	for i, r := range readings {
		switch err := got[i]; {
		case r.wantRefused && (iotgate.ErrorCode(err) != iotgate.EInvalid || !strings.Contains(iotgate.ErrorMessage(err), "the database refused a value")):
			t.Errorf("%s: %v, want invalid saying the database refused a value", r.from, err)
		case !r.wantRefused && err != nil:
			t.Errorf("%s: %v, want stored", r.from, err)
		}
	}
	if stored, attempts := store.count(); stored != 3 || attempts != 1 {
		t.Errorf("stored %d in %d attempts, want 3 in 1", stored, attempts)
	}
	st := s.Stats()
	if st.Accepted != 3 || st.Rejected != 2 || st.Dropped != 0 || st.Held != 0 {
		t.Errorf("stats %+v, want 3 accepted, 2 rejected", st)
	}
	waitFor(t, func() bool { return len(store.Rejected()) == 2 })
	for _, rej := range store.Rejected() {
		if !strings.Contains(rej.Payload, "poison") || !strings.Contains(rej.Reason, "the database refused a value") {
			t.Errorf("rejection %+v, want the poison payload and the reason", rej)
		}
	}
}

// TestIngestDeviceTime checks the range of delay stamps: one PostgreSQL
// can't store is refused at ingest, with a reason, before it can reach a
// batch.
func TestIngestDeviceTime(t *testing.T) {
	stamp := func(s string) *time.Time {
		t.Helper()
		v, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			t.Fatal(err)
		}
		return &v
	}
	for _, tc := range []struct {
		name  string
		stamp *time.Time
		ok    bool
	}{
		{"None", nil, true},
		{"Now", stamp("2026-12-05T09:00:00.123456789+01:00"), true},
		{"First", stamp("0001-01-01T00:00:00Z"), true},
		{"Last", stamp("9999-12-31T23:59:59.999999Z"), true},
		{"ErrYearZero", stamp("0000-01-01T00:00:00Z"), false},
		{"ErrOffsetToYearZero", stamp("0001-01-01T00:30:00+01:00"), false},
		{"ErrOffsetToYear10000", stamp("9999-12-31T23:00:00-05:00"), false},
		{"ErrRoundsToYear10000", stamp("9999-12-31T23:59:59.9999996Z"), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			store := &flakyStore{}
			s := NewService(store, anySchema{}, ServiceConfig{})
			ctx, cancel := context.WithCancel(context.Background())
			defer func() { cancel(); <-s.Stopped() }()
			go s.Run(ctx)
			outcome := make(chan error, 1)
			s.Ingest(ctx, iotgate.IncomingReading{From: "d@example.com/r", Via: "iq", DeviceTime: tc.stamp,
				Payloads: []iotgate.Payload{{Namespace: "urn:t", XML: []byte(`<x xmlns="urn:t"/>`)}}}, func(err error) { outcome <- err })
			err := <-outcome
			if tc.ok {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if iotgate.ErrorCode(err) != iotgate.EInvalid || !strings.Contains(iotgate.ErrorMessage(err), "out of range") {
				t.Fatalf("err = %v, want invalid saying the stamp is out of range", err)
			}
			if stored, attempts := store.count(); stored != 0 || attempts != 0 {
				t.Errorf("reached the store: %d stored, %d attempts", stored, attempts)
			}
		})
	}
}

// TestCommandAnswerRefusedByStore checks that an answer whose JSON
// rendering the store refuses is stored without it: the command's outcome
// is stored, with the XML and why the JSON is missing.
func TestCommandAnswerRefusedByStore(t *testing.T) {
	f := newCmdFixture(t, CommandsConfig{})
	f.store.SetRefuseUpdate(func(c *iotgate.Command) error {
		// What fakeSchema renders, refused as PostgreSQL refuses a number out of its range.
		if c.Response != nil && bytes.Contains(c.Response.Data, []byte(`"ok"`)) {
			return iotgate.Errorf(iotgate.EInvalid, "update command: invalid value")
		}
		return nil
	})
	c := f.submit(t, iotgate.CommandRequest{})
	f.sender.next(t).reply <- result(`<state xmlns="urn:example:t"><target>21.5</target></state>`)
	if c = f.wait(t, c.ID); c.Status != iotgate.CommandSucceeded {
		t.Fatalf("status = %s, want succeeded", c.Status)
	}
	stored := f.waitStored(t, c.ID, iotgate.CommandSucceeded, nil)
	wantHistory(t, stored, iotgate.CommandPending, iotgate.CommandSent, iotgate.CommandSucceeded)
	if r := stored.Response; r == nil || r.Data != nil || !strings.Contains(r.Invalid, "the database refused") || !strings.Contains(r.XML, "<target>") {
		t.Errorf("stored response %+v, want the XML and why the JSON is missing", r)
	}
}
