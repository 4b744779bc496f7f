package devices

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/iotgate/iotgate"
)

func TestStateFromMemory(t *testing.T) {
	const jid = "d@example.com"
	tests := []struct {
		name string
		run  func(t *testing.T, f *cacheFixture)
	}{
		{"NoReadingThenIngest", func(t *testing.T, f *cacheFixture) {
			f.register(jid)
			if _, v := f.state(jid); v != -1 {
				t.Errorf("reading %d before any", v)
			}
			f.ingest(jid, 1)
			if _, v := f.state(jid); v != 1 {
				t.Errorf("reading %d after ingest, want 1", v)
			}
		}},
		{"IngestShownAtOnceWithoutQuery", func(t *testing.T, f *cacheFixture) {
			f.register(jid)
			for i := 1; i <= 5; i++ {
				f.ingest(jid, i)
				st, v := f.state(jid)
				if v != i || st.Reading.ID == 0 {
					t.Errorf("after ingest %d: reading %d (id %d)", i, v, st.Reading.ID)
				}
			}
			if n := f.store.Queries("LatestReading"); n != 0 {
				t.Errorf("%d LatestReading queries, want 0: the committer fills the cache", n)
			}
			if n := f.store.Queries("Device"); n != 0 {
				t.Errorf("%d Device queries, want 0: Register caches the record", n)
			}
		}},
		{"LoadedFromStoreOnce", func(t *testing.T, f *cacheFixture) {
			f.register(jid)
			f.ingest(jid, 7)
			// As after a restart: nothing in memory.
			f.svc.cache = newCache(10, 10, 10)
			for range 3 {
				if _, v := f.state(jid); v != 7 {
					t.Errorf("reading %d, want 7", v)
				}
			}
			if n := f.store.Queries("LatestReading"); n != 1 {
				t.Errorf("%d LatestReading queries, want 1", n)
			}
			f.ingest(jid, 8)
			if _, v := f.state(jid); v != 8 {
				t.Errorf("reading %d after a newer commit, want 8", v)
			}
		}},
		{"DeleteThenRegisterNoStaleReading", func(t *testing.T, f *cacheFixture) {
			old := f.register(jid)
			f.ingest(jid, 1)
			f.state(jid)
			if err := f.svc.Delete(context.Background(), jid); err != nil {
				t.Fatal(err)
			}
			if _, err := f.svc.State(context.Background(), jid); iotgate.ErrorCode(err) != iotgate.ENotFound {
				t.Fatalf("state of a deleted device: %v, want not_found", err)
			}
			d := f.register(jid)
			if d.ID == old.ID {
				t.Fatal("ID reused")
			}
			if _, v := f.state(jid); v != -1 {
				t.Errorf("re-registered device shows reading %d of the deleted one", v)
			}
			if got, err := f.svc.Device(context.Background(), jid); err != nil || got.LastSeenAt != nil || got.ID != d.ID {
				t.Errorf("device %+v, %v: want the new one, never seen", got, err)
			}
		}},
		{"UpdateShownAtOnce", func(t *testing.T, f *cacheFixture) {
			f.register(jid)
			f.ingest(jid, 1)
			if _, err := f.svc.Device(context.Background(), jid); err != nil {
				t.Fatal(err)
			}
			labels, version := map[string]string{"room": "kitchen"}, 2
			if _, err := f.svc.Update(context.Background(), jid, iotgate.DeviceUpdate{Labels: &labels, SchemaVersion: &version}); err != nil {
				t.Fatal(err)
			}
			got, err := f.svc.Device(context.Background(), jid)
			if err != nil || got.Labels["room"] != "kitchen" || got.SchemaVersion != 2 {
				t.Errorf("after update: %+v, %v", got, err)
			}
			if got.LastSeenAt == nil {
				t.Error("last_seen_at lost by the update")
			}
			if _, v := f.state(jid); v != 1 {
				t.Errorf("reading %d after update, want 1", v)
			}
		}},
		{"DeviceLastSeenMoves", func(t *testing.T, f *cacheFixture) {
			f.register(jid)
			if got, _ := f.svc.Device(context.Background(), jid); got.LastSeenAt != nil {
				t.Fatalf("last_seen_at %v before any reading", got.LastSeenAt)
			}
			for i := 1; i <= 3; i++ {
				f.ingest(jid, i)
				st, _ := f.state(jid)
				got, err := f.svc.Device(context.Background(), jid)
				if err != nil || got.LastSeenAt == nil || !got.LastSeenAt.Equal(*st.LastSeenAt) {
					t.Errorf("device last_seen_at %v, state's %v", got.LastSeenAt, st.LastSeenAt)
				}
			}
			if n := f.store.Queries("Device"); n != 0 {
				t.Errorf("%d Device queries, want 0: Register caches the record", n)
			}
		}},
		{"CallerCantChangeCache", func(t *testing.T, f *cacheFixture) {
			f.register(jid)
			got, _ := f.svc.Device(context.Background(), jid)
			got.Labels["room"] = "changed"
			got.Name = "changed"
			again, _ := f.svc.Device(context.Background(), jid)
			if again.Labels["room"] != "hall" || again.Name != "" {
				t.Errorf("cached record changed by a caller: %+v", again)
			}
		}},
		{"UnregisteredThenRegistered", func(t *testing.T, f *cacheFixture) {
			if _, err := f.svc.Device(context.Background(), jid); iotgate.ErrorCode(err) != iotgate.ENotFound {
				t.Fatalf("got %v, want not_found", err)
			}
			f.register(jid)
			if _, err := f.svc.Device(context.Background(), jid); err != nil {
				t.Errorf("registered device not found: %v", err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.run(t, newCacheFixture(t, ServiceConfig{}))
		})
	}
}

// TestCacheFillRaces stages writes between a fill's query and its
// caching: the fill must not leave an outdated entry behind.
func TestCacheFillRaces(t *testing.T) {
	const jid = "d@example.com"
	tests := []struct {
		name string
		// during runs once inside the first query op of a State call.
		op     string
		during func(t *testing.T, f *cacheFixture)
		check  func(t *testing.T, f *cacheFixture)
	}{
		{"CommitDuringReadingFill", "LatestReading",
			func(t *testing.T, f *cacheFixture) { f.ingest(jid, 2) },
			func(t *testing.T, f *cacheFixture) {
				if _, v := f.state(jid); v != 2 {
					t.Errorf("reading %d, want 2: an outdated fill was kept", v)
				}
			}},
		{"CommitAndEvictionDuringReadingFill", "LatestReading",
			func(t *testing.T, f *cacheFixture) {
				f.ingest(jid, 2)
				// Push the committed reading out of the cache.
				for i := range 3 {
					other := fmt.Sprintf("o%d@example.com", i)
					f.register(other)
					f.ingest(other, 1)
				}
			},
			func(t *testing.T, f *cacheFixture) {
				if _, v := f.state(jid); v != 2 {
					t.Errorf("reading %d, want 2: an outdated fill was kept", v)
				}
			}},
		{"DeleteAndRegisterDuringReadingFill", "LatestReading",
			func(t *testing.T, f *cacheFixture) {
				if err := f.svc.Delete(context.Background(), jid); err != nil {
					t.Fatal(err)
				}
				f.register(jid)
			},
			func(t *testing.T, f *cacheFixture) {
				if _, v := f.state(jid); v != -1 {
					t.Errorf("re-registered device shows reading %d of the deleted one", v)
				}
			}},
		{"UpdateDuringDeviceFill", "Device",
			func(t *testing.T, f *cacheFixture) {
				labels := map[string]string{"room": "kitchen"}
				if _, err := f.svc.Update(context.Background(), jid, iotgate.DeviceUpdate{Labels: &labels}); err != nil {
					t.Fatal(err)
				}
			},
			func(t *testing.T, f *cacheFixture) {
				if d, err := f.svc.Device(context.Background(), jid); err != nil || d.Labels["room"] != "kitchen" {
					t.Errorf("device %+v, %v: an outdated fill was kept", d, err)
				}
			}},
		{"CommitDuringDeviceFill", "Device",
			func(t *testing.T, f *cacheFixture) { f.ingest(jid, 2) },
			func(t *testing.T, f *cacheFixture) {
				st, v := f.state(jid)
				d, err := f.svc.Device(context.Background(), jid)
				if v != 2 || err != nil || d.LastSeenAt == nil || !d.LastSeenAt.Equal(*st.LastSeenAt) {
					t.Errorf("reading %d, device last seen %v, state's %v", v, d.LastSeenAt, st.LastSeenAt)
				}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newCacheFixture(t, ServiceConfig{CacheReadings: 2})
			f.register(jid)
			f.ingest(jid, 1)
			// Start cold, as after a restart, then race the first fill.
			f.svc.cache = newCache(100, 100, 2)
			// Once only: during's own queries run the hook too.
			var fired atomic.Bool
			f.store.SetAfterRead(func(op, j string) {
				if op == tt.op && j == jid && fired.CompareAndSwap(false, true) {
					tt.during(t, f)
				}
			})
			if _, err := f.svc.State(context.Background(), jid); err != nil {
				t.Fatal(err)
			}
			f.store.SetAfterRead(nil)
			tt.check(t, f)
		})
	}
}

// TestCacheBounded checks that the cache never holds more than its
// bounds, and that evicted entries are read again, right.
func TestCacheBounded(t *testing.T) {
	tests := []struct {
		name                  string
		maxDevices, maxLatest int
		devices               int
	}{
		{"Small", 4, 2, 20},
		{"ReadingsBelowDevices", 50, 5, 30},
		{"Roomy", 100, 100, 30},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newCacheFixture(t, ServiceConfig{CacheDevices: tt.maxDevices, CacheReadings: tt.maxLatest})
			jids := make([]string, tt.devices)
			for i := range jids {
				jids[i] = fmt.Sprintf("d%d@example.com", i)
				f.register(jids[i])
				f.ingest(jids[i], i)
			}
			for round := range 2 {
				for i, j := range jids {
					if _, v := f.state(j); v != i {
						t.Fatalf("round %d: %s shows reading %d, want %d", round, j, v, i)
					}
					devs, latest := f.svc.cache.sizes()
					if devs > tt.maxDevices || latest > tt.maxLatest {
						t.Fatalf("cache holds %d devices, %d readings; bounds %d, %d", devs, latest, tt.maxDevices, tt.maxLatest)
					}
				}
			}
		})
	}
}

// TestCacheConcurrent runs ingest, reads and writes at once, for the
// race detector, and checks that what is read is never older than what
// was acknowledged before the read began.
func TestCacheConcurrent(t *testing.T) {
	f := newCacheFixture(t, ServiceConfig{CacheReadings: 3})
	jids := []string{"a@example.com", "b@example.com", "c@example.com", "d@example.com"}
	for _, j := range jids {
		f.register(j)
	}
	var acked sync.Map // jid -> last acknowledged value
	var wg sync.WaitGroup
	for _, j := range jids {
		wg.Add(2)
		go func() {
			defer wg.Done()
			for i := 1; i <= 50; i++ {
				f.ingest(j, i)
				acked.Store(j, i)
			}
		}()
		go func() {
			defer wg.Done()
			for range 100 {
				before, _ := acked.Load(j)
				st, err := f.svc.State(context.Background(), j)
				if err != nil {
					t.Error(err)
					return
				}
				if before == nil {
					continue
				}
				var v struct{ V int }
				if st.Reading == nil || json.Unmarshal(st.Reading.Data, &v) != nil || v.V < before.(int) {
					t.Errorf("%s: state %+v older than acknowledged %d", j, st.Reading, before)
					return
				}
				if _, err := f.svc.Device(context.Background(), j); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := range 20 {
			labels := map[string]string{"n": fmt.Sprint(i)}
			if _, err := f.svc.Update(context.Background(), jids[0], iotgate.DeviceUpdate{Labels: &labels}); err != nil {
				t.Error(err)
			}
		}
	}()
	wg.Wait()
}

// TestStrangers floods the service with readings from rotating JIDs that
// are not registered: registered devices stay cached, the store sees at
// most the strangers' burst of lookups (then Sender says throttled), and
// a JID looked up once is known without another query.
func TestStrangers(t *testing.T) {
	f := newCacheFixture(t, ServiceConfig{CacheDevices: 10, CacheStrangers: 50, StrangerRate: 0.001, StrangerBurst: 20})
	devs := []string{"a@example.com", "b@example.com", "c@example.com"}
	for _, j := range devs {
		f.register(j)
	}
	if got := f.svc.Sender("a@example.com"); got != SenderRegistered {
		t.Errorf("registered device: Sender = %d, want SenderRegistered", got)
	}
	if got := f.svc.Sender("x0@example.com"); got != SenderUnseen {
		t.Errorf("new JID: Sender = %d, want SenderUnseen", got)
	}

	lookups := 0
	for i := range 1000 {
		jid := fmt.Sprintf("x%d@example.com", i)
		switch f.svc.Sender(jid) {
		case SenderThrottled:
			continue // the reading handler drops it unread
		case SenderRegistered:
			t.Fatalf("%s taken for a registered device", jid)
		}
		lookups++
		done := make(chan error, 1)
		f.svc.Ingest(context.Background(), iotgate.IncomingReading{From: jid + "/r", Via: "message"}, func(err error) { done <- err })
		if err := <-done; err != ErrNotRegistered {
			t.Fatalf("%s: %v, want ErrNotRegistered", jid, err)
		}
	}
	if lookups > 21 {
		t.Errorf("%d stranger lookups let through, want at most the burst (20) and one", lookups)
	}
	if got := f.svc.Sender("x3@example.com"); got != SenderNotRegistered {
		t.Errorf("stranger looked up: Sender = %d, want SenderNotRegistered", got)
	}
	before := f.store.Queries("Device")
	for _, j := range devs {
		if got := f.svc.Sender(j); got != SenderRegistered {
			t.Errorf("%s evicted by the strangers: Sender = %d", j, got)
		}
		f.ingest(j, 1)
	}
	if n := f.store.Queries("Device") - before; n != 0 {
		t.Errorf("%d lookups for registered devices after the flood, want 0", n)
	}
	n, _ := f.svc.cache.sizes()
	f.svc.cache.mu.Lock()
	strangers := len(f.svc.cache.strangers)
	f.svc.cache.mu.Unlock()
	if n > 10 || strangers > 50 {
		t.Errorf("cache holds %d devices, %d strangers; bounds 10, 50", n, strangers)
	}
}

// TestStrangersQueuedBeforeThrottle checks the bound on lookups when many
// strangers passed the read loop's check (Sender) before the throttle
// showed: each reserves its lookup, so at most the burst are looked up and
// the rest are told to wait; a registered device not cached yet gives its
// reservation back.
func TestStrangersQueuedBeforeThrottle(t *testing.T) {
	f := newCacheFixture(t, ServiceConfig{CacheStrangers: 500, StrangerRate: 0.001, StrangerBurst: 5})
	f.register("dev@example.com")
	f.svc.cache.forget("dev@example.com", false) // as after a restart
	var queued []string
	for i := range 50 {
		jid := fmt.Sprintf("x%d@example.com", i)
		if got := f.svc.Sender(jid); got != SenderUnseen {
			t.Fatalf("%s: Sender = %d before any lookup, want SenderUnseen", jid, got)
		}
		queued = append(queued, jid)
	}
	before := f.store.Queries("Device")
	f.ingest("dev@example.com", 1) // reserves, finds the device, gives back
	if n := f.store.Queries("Device") - before; n != 1 {
		t.Fatalf("registered device: %d lookups, want 1", n)
	}
	answers := map[error]int{}
	for _, jid := range queued {
		done := make(chan error, 1)
		f.svc.Ingest(context.Background(), iotgate.IncomingReading{From: jid + "/r", Via: "message"}, func(err error) { done <- err })
		err := <-done
		if err != ErrNotRegistered && iotgate.ErrorCode(err) != iotgate.ETooMany {
			t.Fatalf("%s: %v, want not registered or too many", jid, err)
		}
		answers[err]++
	}
	lookups := f.store.Queries("Device") - before - 1
	if lookups != 5 || answers[ErrNotRegistered] != 5 {
		t.Errorf("%d strangers looked up (%d not registered), want the burst: 5", lookups, answers[ErrNotRegistered])
	}
}

// TestStateReadingExpired checks that a cached newest reading older than
// the reading retention is shown as none, as the store's answer will be
// once its partition is dropped.
func TestStateReadingExpired(t *testing.T) {
	const jid = "d@example.com"
	f := newCacheFixture(t, ServiceConfig{ReadingRetention: time.Hour})
	f.register(jid)
	f.ingest(jid, 1)
	if _, v := f.state(jid); v != 1 {
		t.Fatalf("reading %d, want 1", v)
	}
	f.mu.Lock()
	f.now = f.now.Add(time.Hour)
	f.mu.Unlock()
	// Not f.state: the device was seen, it keeps its last_seen_at.
	st, err := f.svc.State(context.Background(), jid)
	if err != nil || st.Reading != nil || st.LastSeenAt == nil {
		t.Errorf("an hour later: %+v, %v; want no reading, a last_seen_at", st, err)
	}
	f.ingest(jid, 2)
	if _, v := f.state(jid); v != 2 {
		t.Errorf("reading %d after a new one, want 2", v)
	}
}
