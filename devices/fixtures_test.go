package devices

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/iotgate/iotgate"
	"github.com/iotgate/iotgate/internal/memstore"
)

// The fixtures of the tests: a running device service over a
// memstore.DeviceStore with a clock the test moves (cacheFixture), and a
// running command service over a memstore.CommandStore with fake devices,
// presence and sender (cmdFixture).

// cacheFixture is a running service over a memstore.DeviceStore, with a clock the
// test moves.
type cacheFixture struct {
	t     *testing.T
	store *memstore.DeviceStore
	svc   *Service
	mu    sync.Mutex
	now   time.Time
}

func newCacheFixture(t *testing.T, cfg ServiceConfig) *cacheFixture {
	t.Helper()
	f := &cacheFixture{t: t, store: memstore.NewDeviceStore(), now: time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)}
	cfg.Clock = f.clock
	f.svc = NewService(f.store, versionedSchema{}, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	go f.svc.Run(ctx)
	t.Cleanup(func() { cancel(); <-f.svc.Stopped() })
	return f
}

// clock returns a time that moves by a millisecond at each call, so
// that readings are ordered by time.
func (f *cacheFixture) clock() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.now = f.now.Add(time.Millisecond)
	return f.now
}

func (f *cacheFixture) register(jid string) *iotgate.Device {
	f.t.Helper()
	d, err := f.svc.Register(context.Background(), &iotgate.Device{JID: jid, Schema: "s", Labels: map[string]string{"room": "hall"}})
	if err != nil {
		f.t.Fatal(err)
	}
	return d
}

// ingest sends a reading of jid with value v and waits for its
// acknowledgement.
func (f *cacheFixture) ingest(jid string, v int) {
	f.t.Helper()
	done := make(chan error, 1)
	xml := fmt.Sprintf(`<x xmlns="urn:t" v="%d"/>`, v)
	f.svc.Ingest(context.Background(), iotgate.IncomingReading{From: jid + "/r", Via: "iq", Payloads: []iotgate.Payload{{Namespace: "urn:t", XML: []byte(xml)}}}, func(err error) { done <- err })
	select {
	case err := <-done:
		if err != nil {
			f.t.Fatalf("ingest %s: %v", jid, err)
		}
	case <-time.After(5 * time.Second):
		f.t.Fatal("ingest not acknowledged")
	}
}

// state returns the state of jid and the value of its reading (-1:
// none), after checking that last_seen_at agrees with the reading.
func (f *cacheFixture) state(jid string) (*iotgate.State, int) {
	f.t.Helper()
	st, err := f.svc.State(context.Background(), jid)
	if err != nil {
		f.t.Fatalf("state of %s: %v", jid, err)
	}
	if st.Reading == nil {
		if st.LastSeenAt != nil {
			f.t.Errorf("%s: last_seen_at %v without a reading", jid, st.LastSeenAt)
		}
		return st, -1
	}
	if st.LastSeenAt == nil || !st.LastSeenAt.Equal(st.Reading.ReceivedAt) {
		f.t.Errorf("%s: last_seen_at %v, reading received at %v", jid, st.LastSeenAt, st.Reading.ReceivedAt)
	}
	var v struct{ V int }
	if err := json.Unmarshal(st.Reading.Data, &v); err != nil {
		f.t.Fatal(err)
	}
	return st, v.V
}

type cmdFixture struct {
	svc      *Commands
	store    *memstore.CommandStore
	presence *fakePresence
	sender   *fakeSender
	stop     func()
}

func newCmdFixture(t testing.TB, cfg CommandsConfig) *cmdFixture {
	t.Helper()
	return newCmdFixtureOn(t, memstore.NewCommandStore(), cfg)
}

// newCmdFixtureOn is newCmdFixture on store, which another fixture (another
// instance) may share.
func newCmdFixtureOn(t testing.TB, store *memstore.CommandStore, cfg CommandsConfig) *cmdFixture {
	t.Helper()
	f := &cmdFixture{
		store:    store,
		presence: &fakePresence{res: map[string][]iotgate.Resource{}},
		sender:   newFakeSender(),
	}
	f.presence.set(devJID, devFull)
	f.presence.set(dev2JID, dev2Full)
	devs := fakeDevs{devJID: {ID: 1, JID: devJID, Schema: "t", SchemaVersion: 1},
		dev2JID: {ID: 2, JID: dev2JID, Schema: "t", SchemaVersion: 1}}
	if cfg.SweepInterval == 0 {
		cfg.SweepInterval = 10 * time.Millisecond
	}
	f.svc = NewCommands(f.store, devs, fakeSchemaSource{}, f.presence, f.sender, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { f.svc.Run(ctx); close(done) }()
	var once sync.Once
	f.stop = func() {
		once.Do(func() {
			cancel()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Error("Run did not return")
			}
		})
	}
	t.Cleanup(f.stop)
	return f
}

func (f *cmdFixture) submit(t *testing.T, req iotgate.CommandRequest) *iotgate.Command {
	t.Helper()
	if req.DeviceJID == "" {
		req.DeviceJID = devJID
	}
	if req.Payload == "" {
		req.Payload = payload
	}
	c, _, err := f.svc.Submit(context.Background(), req)
	if err != nil {
		t.Fatalf("Submit: %v", err)
	}
	return c
}

func (f *cmdFixture) wait(t *testing.T, id string) *iotgate.Command {
	t.Helper()
	c, err := f.svc.Wait(context.Background(), id, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// waitStored polls the store until the command has status want.
func (f *cmdFixture) waitStored(t *testing.T, id string, want iotgate.CommandStatus, cond func(*iotgate.Command) bool) *iotgate.Command {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		c := storedCommand(t, f.store, id)
		if c.Status == want && (cond == nil || cond(c)) {
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("command %s is %s (%+v), want %s", id, c.Status, c, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
