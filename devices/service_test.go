package devices

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/iotgate/iotgate"
)

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
			// Each stored one was held after a failed attempt that might
			// have committed it: the store must look before storing it.
			store.mu.Lock()
			defer store.mu.Unlock()
			for _, r := range store.stored {
				if !r.MaybeStored {
					t.Errorf("a held reading stored without MaybeStored")
				}
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
