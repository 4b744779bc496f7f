package devices

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/iotgate/iotgate"
	"github.com/iotgate/iotgate/internal/memstore"
)

// The fakes below stand in for the store, the device registry, the schema,
// presence and the XMPP component; the real ones are tested together in
// postgres and end to end in cmd/iotgate. Stores are the shared ones of
// internal/memstore, or embed one where a test needs a store to misbehave.

const testNS = "urn:example:t"

// storedCommand returns command id as the store holds it.
func storedCommand(t *testing.T, store *memstore.CommandStore, id string) *iotgate.Command {
	t.Helper()
	c, err := store.Command(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

type fakeDevs map[string]*iotgate.Device

func (f fakeDevs) Device(_ context.Context, jid string) (*iotgate.Device, error) {
	j, err := iotgate.NormalizeJID(jid)
	if err != nil {
		return nil, err
	}
	d, ok := f[j]
	if !ok {
		return nil, iotgate.Errorf(iotgate.ENotFound, "device %s is not registered", j)
	}
	return d, nil
}

// fakeSchema accepts payloads without "bad" in them and renders them as
// {"ok":true}.
type fakeSchema struct{}

func (fakeSchema) TargetNamespace() string { return testNS }

func (fakeSchema) ValidateAndRender(p []byte) (json.RawMessage, error) {
	if bytes.Contains(p, []byte("bad")) {
		return nil, iotgate.Errorf(iotgate.EUnprocessable, "document does not match its schema; line 1: bad")
	}
	return json.RawMessage(`{"ok":true}`), nil
}

// BuildCommand wraps the data's JSON in element (a stand-in for the real
// builder, tested in schemas/xsd); data with "unmappable" in it is refused.
func (fakeSchema) BuildCommand(element string, data []byte) ([]byte, error) {
	if bytes.Contains(data, []byte("unmappable")) {
		return nil, &iotgate.Error{Code: iotgate.EUnprocessable, Detail: iotgate.DetailJSONNotMappable,
			Message: "data has no XML form in the schema", Fields: iotgate.MappingIssue{Path: "data.unmappable", Reason: "unknown key"}}
	}
	if element == "" {
		element = "set"
	}
	return []byte("<" + element + ` xmlns="` + testNS + `">` + string(data) + "</" + element + ">"), nil
}

type fakeSchemaSource struct{}

func (fakeSchemaSource) Compiled(context.Context, string, int) (iotgate.PayloadSchema, int, error) {
	return fakeSchema{}, 1, nil
}

type fakePresence struct {
	mu    sync.Mutex
	res   map[string][]iotgate.Resource
	stale bool
}

func (p *fakePresence) set(jid string, full ...string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var rs []iotgate.Resource
	for _, f := range full {
		rs = append(rs, iotgate.Resource{JID: f})
	}
	p.res[jid] = rs
}

func (p *fakePresence) setStale(v bool) {
	p.mu.Lock()
	p.stale = v
	p.mu.Unlock()
}

func (p *fakePresence) Resources(jid string) []iotgate.Resource {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stale {
		return nil
	}
	return slices.Clone(p.res[jid])
}

func (p *fakePresence) Online(jid string) (bool, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return !p.stale && len(p.res[jid]) > 0, p.stale
}

// call is one SendCommand the fake sender received; answer it with reply.
type call struct {
	to, typ, payload string
	reply            chan sendResult
}

type sendResult struct {
	rep iotgate.CommandReply
	err error
}

// fakeSender hands each command to the test on calls and waits for the
// answer, the context, or the stream to "drop".
type fakeSender struct {
	calls chan call
	mu    sync.Mutex
	down  error         // returned at once when set
	drop  chan struct{} // closing it fails every waiting call
	// waiting counts the calls under way: each holds a goroutine (and,
	// in the component, a pending IQ).
	waiting atomic.Int64
}

func newFakeSender() *fakeSender {
	return &fakeSender{calls: make(chan call, 100), drop: make(chan struct{})}
}

func (f *fakeSender) SendCommand(ctx context.Context, to, typ, _ string, payload []byte) (iotgate.CommandReply, error) {
	f.mu.Lock()
	down, drop := f.down, f.drop
	f.mu.Unlock()
	if down != nil {
		return iotgate.CommandReply{}, down
	}
	c := call{to: to, typ: typ, payload: string(payload), reply: make(chan sendResult, 1)}
	f.waiting.Add(1)
	defer f.waiting.Add(-1)
	f.calls <- c
	select {
	case r := <-c.reply:
		return r.rep, r.err
	case <-drop:
		return iotgate.CommandReply{}, &iotgate.Error{Code: iotgate.EUnavailable, Detail: "xmpp_unavailable", Message: "the XMPP stream is not connected"}
	case <-ctx.Done():
		return iotgate.CommandReply{}, &iotgate.Error{Code: iotgate.ETimeout, Message: "no reply to IQ in time", Err: ctx.Err()}
	}
}

func (f *fakeSender) next(t *testing.T) call {
	t.Helper()
	select {
	case c := <-f.calls:
		return c
	case <-time.After(5 * time.Second):
		t.Fatal("no command was sent")
		return call{}
	}
}

func (f *fakeSender) none(t *testing.T, within time.Duration) {
	t.Helper()
	select {
	case c := <-f.calls:
		t.Fatalf("unexpected command sent to %s: %s", c.to, c.payload)
	case <-time.After(within):
	}
}

func result(payload string) sendResult {
	return sendResult{rep: iotgate.CommandReply{Type: "result", Payload: []byte(payload), Namespace: testNS}}
}

func iqError(cond, text string) sendResult {
	return sendResult{rep: iotgate.CommandReply{Type: "error", Error: &iotgate.XMPPError{Type: "cancel", Condition: cond, Text: text}}}
}

const (
	devJID   = "thermo1@example.com"
	devFull  = "thermo1@example.com/kitchen"
	dev2JID  = "thermo2@example.com"
	dev2Full = "thermo2@example.com/hall"
	payload  = `<set xmlns="urn:example:t"><target>21.5</target></set>`
)

func statuses(c *iotgate.Command) []iotgate.CommandStatus {
	var out []iotgate.CommandStatus
	for _, e := range c.History {
		out = append(out, e.Status)
	}
	return out
}

func wantHistory(t *testing.T, c *iotgate.Command, want ...iotgate.CommandStatus) {
	t.Helper()
	if got := statuses(c); !slices.Equal(got, want) {
		t.Errorf("history = %v, want %v", got, want)
	}
}

func wantErr(t *testing.T, err error, code, detail string) {
	t.Helper()
	var e *iotgate.Error
	if !errors.As(err, &e) || e.Code != code || e.Detail != detail {
		t.Fatalf("err = %#v, want code %q detail %q", err, code, detail)
	}
}

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

// batchStore records the devices of each committed batch and holds
// every commit until gate closes, and those with flood readings until
// floodGate closes too.
type batchStore struct {
	flakyStore
	gate, floodGate chan struct{}

	mu      sync.Mutex
	calls   int
	batched [][]string
}

func (r *batchStore) InsertReadings(ctx context.Context, rs []*iotgate.Reading) []error {
	r.mu.Lock()
	r.calls++
	var jids []string
	for _, x := range rs {
		jids = append(jids, x.DeviceJID)
	}
	r.batched = append(r.batched, jids)
	r.mu.Unlock()
	if slices.Contains(jids, "flood@example.com") {
		<-r.floodGate
	}
	<-r.gate
	return r.flakyStore.InsertReadings(ctx, rs)
}

func (r *batchStore) waiting() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.calls
}

func (r *batchStore) batches() [][]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.batched)
}

func (r *batchStore) batchSizes() []int {
	var out []int
	for _, b := range r.batches() {
		out = append(out, len(b))
	}
	return out
}

// versionedSchema accepts payloads in urn:t and renders their v
// attribute, so that a reading's value can be read back from its data.
type versionedSchema struct{}

func (versionedSchema) TargetNamespace() string { return "urn:t" }

func (versionedSchema) ValidateAndRender(p []byte) (json.RawMessage, error) {
	var v int
	if _, err := fmt.Sscanf(string(p), `<x xmlns="urn:t" v="%d"/>`, &v); err != nil {
		return nil, iotgate.Errorf(iotgate.EUnprocessable, "bad payload %q", p)
	}
	return json.RawMessage(fmt.Sprintf(`{"v":%d}`, v)), nil
}

func (versionedSchema) Compiled(_ context.Context, _ string, version int) (iotgate.PayloadSchema, int, error) {
	if version > 2 {
		return nil, 0, iotgate.Errorf(iotgate.ENotFound, "no version %d", version)
	}
	return versionedSchema{}, max(version, 1), nil
}
