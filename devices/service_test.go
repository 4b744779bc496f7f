package devices

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/iotgate/iotgate"
	"github.com/iotgate/iotgate/internal/memstore"
)

// flakyStore is a memstore.DeviceStore where every JID is a registered
// device, and whose InsertReadings fails with err while down, and refuses
// the readings refuse picks (as the database refuses a value out of its
// range) while storing the others.
type flakyStore struct {
	memstore.DeviceStore

	refuse func(*iotgate.Reading) error

	mu       sync.Mutex
	down     error
	stored   []*iotgate.Reading
	attempts int
}

func (f *flakyStore) Device(_ context.Context, jid string) (*iotgate.Device, error) {
	return &iotgate.Device{ID: 1, JID: jid, Schema: "s", SchemaVersion: 1}, nil
}

func (f *flakyStore) InsertReadings(_ context.Context, rs []*iotgate.Reading) []error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.attempts++
	errs := make([]error, len(rs))
	for i, r := range rs {
		switch {
		case f.down != nil:
			errs[i] = f.down
		case f.refuse != nil && f.refuse(r) != nil:
			errs[i] = f.refuse(r)
		default:
			f.stored = append(f.stored, r)
		}
	}
	return errs
}

func (f *flakyStore) setDown(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.down = err
}

func (f *flakyStore) count() (stored, attempts int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.stored), f.attempts
}

// anySchema accepts every payload in urn:t.
type anySchema struct{}

func (anySchema) TargetNamespace() string { return "urn:t" }
func (anySchema) ValidateAndRender(p []byte) (json.RawMessage, error) {
	return json.RawMessage(`{}`), nil
}
func (anySchema) Compiled(context.Context, string, int) (iotgate.PayloadSchema, int, error) {
	return anySchema{}, 1, nil
}

// TestIngestDatabaseDown checks what happens to readings whose commit
// fails: IQ readings are refused with unavailable (the device retries),
// message readings are held and committed once the database is back,
// unless the failure is not worth waiting for or the hold is full.
func TestIngestDatabaseDown(t *testing.T) {
	unavailable := &iotgate.Error{Code: iotgate.EUnavailable, Message: "database unavailable"}
	tests := []struct {
		name         string
		err          error
		maxHeld      int
		maxHeldBytes int
		via          string
		// outcomes of the 5 readings sent while the store fails
		wantRefused int
		wantStored  int // in the end, after the store is back
	}{
		{"MessageHeldThenStored", unavailable, 0, 0, "message", 0, 5},
		{"MessageHoldFull", unavailable, 2, 0, "message", 3, 2},
		{"MessageHoldBytesFull", unavailable, 0, 2 * (len(`<x xmlns="urn:t"/>`) + len(`{}`) + heldOverhead), "message", 3, 2},
		{"MessageNotRetryable", &iotgate.Error{Code: iotgate.EInternal, Message: "bug"}, 0, 0, "message", 5, 0},
		{"IQRefused", unavailable, 0, 0, "iq", 5, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			store := &flakyStore{down: tt.err}
			s := NewService(store, anySchema{}, ServiceConfig{MaxHeld: tt.maxHeld, MaxHeldBytes: tt.maxHeldBytes})
			ctx, cancel := context.WithCancel(context.Background())
			defer func() { cancel(); <-s.Stopped() }()
			go s.Run(ctx)

			var mu sync.Mutex
			var refused []error
			done := make(chan struct{}, 5)
			for range 5 {
				in := iotgate.IncomingReading{From: "d@example.com/r", Via: tt.via, Payloads: []iotgate.Payload{{Namespace: "urn:t", Local: "x", XML: []byte(`<x xmlns="urn:t"/>`)}}}
				s.Ingest(ctx, in, func(err error) {
					if err != nil {
						mu.Lock()
						refused = append(refused, err)
						mu.Unlock()
					}
					done <- struct{}{}
				})
				// One at a time, so that each is its own batch and
				// sees the hold as the previous ones left it.
				waitFor(t, func() bool { _, a := store.count(); return a >= 1 })
				time.Sleep(5 * time.Millisecond)
			}
			waitFor(t, func() bool {
				mu.Lock()
				defer mu.Unlock()
				return len(refused) >= tt.wantRefused
			})
			time.Sleep(150 * time.Millisecond) // a retry or two while down
			if stored, _ := store.count(); stored != 0 {
				t.Fatalf("stored %d while the store was down", stored)
			}
			store.setDown(nil)
			waitFor(t, func() bool { n, _ := store.count(); return n >= tt.wantStored })
			time.Sleep(50 * time.Millisecond)
			stored, attempts := store.count()
			mu.Lock()
			defer mu.Unlock()
			if len(refused) != tt.wantRefused || stored != tt.wantStored {
				t.Errorf("refused %d, stored %d (after %d attempts), want %d, %d", len(refused), stored, attempts, tt.wantRefused, tt.wantStored)
			}
			for _, err := range refused {
				if iotgate.ErrorCode(err) != iotgate.EUnavailable {
					t.Errorf("refused with %v, want unavailable", err)
				}
			}
			if held := s.Stats().Held; held != 0 {
				t.Errorf("still held: %d", held)
			}
		})
	}
}

// TestIngestHeldDroppedAtShutdown checks that held readings get one last
// commit attempt at shutdown and are refused if it fails, never left
// without an outcome.
func TestIngestHeldDroppedAtShutdown(t *testing.T) {
	store := &flakyStore{down: &iotgate.Error{Code: iotgate.EUnavailable, Message: "down"}}
	s := NewService(store, anySchema{}, ServiceConfig{})
	ctx, cancel := context.WithCancel(context.Background())
	go s.Run(ctx)
	outcome := make(chan error, 1)
	s.Ingest(ctx, iotgate.IncomingReading{From: "d@example.com/r", Via: "message", Payloads: []iotgate.Payload{{Namespace: "urn:t", XML: []byte(`<x xmlns="urn:t"/>`)}}}, func(err error) { outcome <- err })
	waitFor(t, func() bool { return s.Stats().Held == 1 })
	cancel()
	<-s.Stopped()
	select {
	case err := <-outcome:
		if iotgate.ErrorCode(err) != iotgate.EUnavailable {
			t.Errorf("outcome %v, want unavailable", err)
		}
	default:
		t.Fatal("held reading left without an outcome at shutdown")
	}
	if st := s.Stats(); st.Dropped != 1 || st.Held != 0 {
		t.Errorf("stats %+v, want 1 dropped, 0 held", st)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(time.Millisecond)
	}
}
