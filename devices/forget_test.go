package devices

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/iotgate/iotgate"
)

// TestForget checks that a device written by another instance (straight
// into the store here) is seen as written once its notification calls
// Forget, with the key or with "" (a reconnected listener), including
// when the write and its notification land between a lookup's read and
// its caching.
func TestForget(t *testing.T) {
	const jid = "d@example.com"
	ctx := context.Background()
	relabel := func(t *testing.T, f *cacheFixture) {
		labels := map[string]string{"room": "kitchen"}
		if _, err := f.store.UpdateDevice(ctx, jid, iotgate.DeviceUpdate{Labels: &labels}, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	wantKitchen := func(t *testing.T, f *cacheFixture) {
		if d, err := f.svc.Device(ctx, jid); err != nil || d.Labels["room"] != "kitchen" {
			t.Errorf("device %+v, %v; want the labels written elsewhere", d, err)
		}
	}
	remove := func(t *testing.T, f *cacheFixture) {
		if err := f.store.DeleteDevice(ctx, jid); err != nil {
			t.Fatal(err)
		}
	}
	wantGone := func(t *testing.T, f *cacheFixture) {
		if _, err := f.svc.Device(ctx, jid); iotgate.ErrorCode(err) != iotgate.ENotFound {
			t.Errorf("err = %v, want not_found", err)
		}
		if s := f.svc.Sender(jid); s == SenderRegistered {
			t.Errorf("after a lookup: Sender = %d, want it no more registered", s)
		}
	}
	create := func(t *testing.T, f *cacheFixture) {
		if err := f.store.CreateDevice(ctx, &iotgate.Device{JID: jid, Schema: "s", Labels: map[string]string{}}); err != nil {
			t.Fatal(err)
		}
	}
	wantRegistered := func(t *testing.T, f *cacheFixture) {
		if s := f.svc.Sender(jid); s == SenderNotRegistered {
			t.Error("still known as a stranger")
		}
		f.ingest(jid, 1)
	}

	tests := []struct {
		name string
		// registered: jid is registered (and cached) before the change;
		// otherwise it is cached as a stranger.
		registered bool
		change     func(*testing.T, *cacheFixture)
		check      func(*testing.T, *cacheFixture)
	}{
		{"Update", true, relabel, wantKitchen},
		{"Delete", true, remove, wantGone},
		{"RegisterStranger", false, create, wantRegistered},
	}
	for _, tt := range tests {
		for _, key := range []string{jid, ""} {
			for _, race := range []bool{false, true} {
				name := tt.name
				if key == "" {
					name += "/All"
				}
				if race {
					name += "/DuringFill"
				}
				t.Run(name, func(t *testing.T) {
					f := newCacheFixture(t, ServiceConfig{CacheTTL: time.Hour})
					if tt.registered {
						f.register(jid)
					}
					changeElsewhere := func() { tt.change(t, f); f.svc.Forget(key) }
					if race {
						// Cold, as after a restart: the first lookup reads
						// the old row, then the change and its notification
						// land before it caches what it read.
						f.svc.cache = newCache(100, 100, 100)
						var fired atomic.Bool
						f.store.SetAfterRead(func(op, j string) {
							if op == "Device" && j == jid && fired.CompareAndSwap(false, true) {
								changeElsewhere()
							}
						})
					}
					// Cache jid (as a device or as a stranger).
					f.svc.Device(ctx, jid)
					f.store.SetAfterRead(nil)
					if !race {
						changeElsewhere()
					}
					tt.check(t, f)
				})
			}
		}
	}
}

// TestForgetKeepsSenderRegistered checks that forgetting every device (a
// listener reconnected) doesn't turn registered devices into strangers
// queued behind the stranger throttle.
func TestForgetKeepsSenderRegistered(t *testing.T) {
	f := newCacheFixture(t, ServiceConfig{StrangerRate: 0.001, StrangerBurst: 1})
	f.register("a@example.com")
	f.register("b@example.com")
	f.svc.Forget("")
	for _, j := range []string{"a@example.com", "b@example.com"} {
		if s := f.svc.Sender(j); s != SenderRegistered {
			t.Errorf("%s: Sender = %d, want SenderRegistered", j, s)
		}
		f.ingest(j, 1)
	}
	if n := f.store.Queries("Device"); n != 2 {
		t.Errorf("%d Device queries, want 2: each device read again once", n)
	}
}

// TestReadingStored checks that a reading another instance stored (into
// the store here) shows in State and last_seen_at once its notification
// arrives, also when it lands between a fill's read and its caching, and
// after "" (notifications lost).
func TestReadingStored(t *testing.T) {
	const jid = "d@example.com"
	ctx := context.Background()
	tests := []struct {
		name string
		// cold empties the cache first; during stores the reading
		// inside the first LatestReading query; lost notifies "" instead
		// of the key.
		cold, during, lost bool
	}{
		{name: "Cached"},
		{name: "Lost", lost: true},
		{name: "DuringFill", cold: true, during: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newCacheFixture(t, ServiceConfig{})
			d := f.register(jid)
			f.ingest(jid, 1)
			if _, v := f.state(jid); v != 1 {
				t.Fatalf("reading %d, want 1", v)
			}
			var remote *iotgate.Reading
			storeElsewhere := func() {
				remote = &iotgate.Reading{DeviceID: d.ID, DeviceJID: jid, ReceivedAt: f.clock(), XML: `<x xmlns="urn:t" v="9"/>`, Data: []byte(`{"v":9}`)}
				if err := f.store.InsertReadings(ctx, []*iotgate.Reading{remote})[0]; err != nil {
					t.Fatal(err)
				}
				key := iotgate.ReadingKey(remote)
				if tt.lost {
					key = ""
				}
				f.svc.ReadingStored(key)
			}
			if tt.cold {
				f.svc.cache = newCache(100, 100, 100)
			}
			if tt.during {
				var fired atomic.Bool
				f.store.SetAfterRead(func(op, j string) {
					if op == "LatestReading" && j == jid && fired.CompareAndSwap(false, true) {
						storeElsewhere()
					}
				})
				// This State read before the change: whatever it shows.
				if _, err := f.svc.State(ctx, jid); err != nil {
					t.Fatal(err)
				}
				f.store.SetAfterRead(nil)
			} else {
				storeElsewhere()
			}
			if _, v := f.state(jid); v != 9 {
				t.Errorf("reading %d, want 9 (stored elsewhere)", v)
			}
			if got, err := f.svc.Device(ctx, jid); err != nil || got.LastSeenAt == nil || !got.LastSeenAt.Equal(remote.ReceivedAt) {
				t.Errorf("device last seen %v, %v; want %v", got.LastSeenAt, err, remote.ReceivedAt)
			}
		})
	}
}
