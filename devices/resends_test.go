package devices

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/iotgate/iotgate"
)

func TestResends(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 3, 0, 0, 0, time.UTC)
	at := t0.Add(-time.Second)
	tests := []struct {
		name string
		// remembered: (dev, id) pairs remembered in order, payload "<a/>",
		// at t0 + i ms.
		remembered []resendKey
		takeDev    int64
		takeID     string
		takeXML    string
		after      time.Duration
		want       bool
	}{
		{name: "SameIDSamePayload", remembered: []resendKey{{1, "r1"}}, takeDev: 1, takeID: "r1", takeXML: "<a/>", want: true},
		{name: "OtherPayload", remembered: []resendKey{{1, "r1"}}, takeDev: 1, takeID: "r1", takeXML: "<b/>"},
		{name: "OtherID", remembered: []resendKey{{1, "r1"}}, takeDev: 1, takeID: "r2", takeXML: "<a/>"},
		{name: "OtherDevice", remembered: []resendKey{{1, "r1"}}, takeDev: 2, takeID: "r1", takeXML: "<a/>"},
		{name: "NoID", remembered: []resendKey{{1, ""}}, takeDev: 1, takeID: "", takeXML: "<a/>"},
		{name: "LongID", remembered: []resendKey{{1, strings.Repeat("x", maxResendID+1)}}, takeDev: 1, takeID: strings.Repeat("x", maxResendID+1), takeXML: "<a/>"},
		{name: "Expired", remembered: []resendKey{{1, "r1"}}, takeDev: 1, takeID: "r1", takeXML: "<a/>", after: time.Minute},
		{name: "NotYetExpired", remembered: []resendKey{{1, "r1"}}, takeDev: 1, takeID: "r1", takeXML: "<a/>", after: time.Minute - time.Millisecond, want: true},
		// max 3: the oldest of four is forgotten, the newest kept.
		{name: "OldestForgotten", remembered: []resendKey{{1, "r1"}, {1, "r2"}, {1, "r3"}, {1, "r4"}}, takeDev: 1, takeID: "r1", takeXML: "<a/>"},
		{name: "NewestKept", remembered: []resendKey{{1, "r1"}, {1, "r2"}, {1, "r3"}, {1, "r4"}}, takeDev: 1, takeID: "r4", takeXML: "<a/>", want: true},
		// Remembered again: one entry, not two.
		{name: "Again", remembered: []resendKey{{1, "r1"}, {1, "r1"}, {1, "r2"}, {1, "r3"}}, takeDev: 1, takeID: "r1", takeXML: "<a/>", want: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newResends(3, time.Minute)
			for i, k := range tt.remembered {
				r.remember(k.dev, k.id, "<a/>", at, t0.Add(time.Duration(i)*time.Millisecond))
			}
			now := t0.Add(tt.after)
			got, ok := r.take(tt.takeDev, tt.takeID, tt.takeXML, now)
			if ok != tt.want || (ok && !got.Equal(at)) {
				t.Fatalf("take = %v, %v; want %v", got, ok, tt.want)
			}
			if ok {
				if _, again := r.take(tt.takeDev, tt.takeID, tt.takeXML, now); again {
					t.Error("taken twice")
				}
			}
			if len(r.m) > 3 || len(r.order) > 6 {
				t.Errorf("%d remembered, %d in order: over the bound", len(r.m), len(r.order))
			}
		})
	}
}

// TestResendsChurn: attempts remembered and taken over and over (a device
// resending through an outage) keep the memory bounded.
func TestResendsChurn(t *testing.T) {
	r := newResends(3, time.Hour)
	t0 := time.Date(2026, 12, 7, 3, 0, 0, 0, time.UTC)
	for i := range 1000 {
		now := t0.Add(time.Duration(i) * time.Millisecond)
		r.remember(1, "r1", "<a/>", t0, now)
		r.remember(2, "r"+strconv.Itoa(i%5), "<a/>", t0, now)
		if _, ok := r.take(1, "r1", "<a/>", now); !ok {
			t.Fatalf("round %d: the attempt just remembered was not found", i)
		}
		if len(r.m) > 3 || len(r.order) > 2*3+1 {
			t.Fatalf("round %d: %d remembered, %d in order: over the bound", i, len(r.m), len(r.order))
		}
	}
}

// answerLostStore stores every reading, but answers the first attempt
// unavailable, as when the connection breaks during a commit that
// reached the database; a MaybeStored reading is looked for first, by
// device, receipt time and XML, as the PostgreSQL store does.
type answerLostStore struct {
	flakyStore
	lost bool
}

func (f *answerLostStore) InsertReadings(_ context.Context, rs []*iotgate.Reading) []error {
	f.mu.Lock()
	defer f.mu.Unlock()
	errs := make([]error, len(rs))
next:
	for i, r := range rs {
		if r.MaybeStored {
			for _, s := range f.stored {
				if s.DeviceID == r.DeviceID && s.ReceivedAt.Equal(r.ReceivedAt) && s.XML == r.XML {
					continue next
				}
			}
		}
		f.stored = append(f.stored, r)
		if !f.lost {
			f.lost = true
			errs[i] = &iotgate.Error{Code: iotgate.EUnavailable, Message: "connection lost during commit"}
		}
	}
	return errs
}

// TestIngestIQResend: an IQ reading answered unavailable after a commit
// that stored it is stored once when the device sends it again under the
// same id; another id or another payload is a new reading.
func TestIngestIQResend(t *testing.T) {
	tests := []struct {
		name       string
		id2, xml2  string
		wantStored int
	}{
		{name: "SameIDSamePayload", id2: "r1", xml2: `<x xmlns="urn:t">1</x>`, wantStored: 1},
		{name: "OtherID", id2: "r2", xml2: `<x xmlns="urn:t">1</x>`, wantStored: 2},
		{name: "OtherPayload", id2: "r1", xml2: `<x xmlns="urn:t">2</x>`, wantStored: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			store := &answerLostStore{}
			s := NewService(store, anySchema{}, ServiceConfig{})
			ctx, cancel := context.WithCancel(context.Background())
			t.Cleanup(func() { cancel(); <-s.Stopped() })
			go s.Run(ctx)
			send := func(id, xml string) error {
				var wg sync.WaitGroup
				var outcome error
				wg.Add(1)
				s.Ingest(ctx, iotgate.IncomingReading{From: "d@example.com/r", Via: "iq", ResendKey: id,
					Payloads: []iotgate.Payload{{Namespace: "urn:t", XML: []byte(xml)}}}, func(err error) { outcome = err; wg.Done() })
				wg.Wait()
				return outcome
			}
			if err := send("r1", `<x xmlns="urn:t">1</x>`); iotgate.ErrorCode(err) != iotgate.EUnavailable {
				t.Fatalf("first attempt: %v, want unavailable", err)
			}
			if err := send(tt.id2, tt.xml2); err != nil {
				t.Fatalf("resend: %v, want stored", err)
			}
			store.mu.Lock()
			defer store.mu.Unlock()
			if len(store.stored) != tt.wantStored {
				t.Errorf("stored %d readings, want %d", len(store.stored), tt.wantStored)
			}
		})
	}
}
