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
