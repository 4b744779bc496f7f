package api

import (
	"context"
	"encoding/json"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/iotgate/iotgate"
	"github.com/iotgate/iotgate/auth"
	"github.com/iotgate/iotgate/schemas"
	"github.com/iotgate/iotgate/schemas/xsd"
)

// The fakes below keep state in memory and answer with the error codes the
// real implementations document: enough to test the HTTP mapping. The real
// stack is tested end to end in cmd/iotgate.

var testTime = time.Date(2026, 1, 2, 15, 4, 5, 0, time.UTC)

// brokenXSD makes fakeSchemas.RegisterAs fail as the registry does for an
// XSD that does not compile.
const brokenXSD = "<xs:schema xmlns:xs='http://www.w3.org/2001/XMLSchema'>\n<xs:element name='a' type='xs:nope'/></xs:schema>"

// compileIssues are the issues fakeSchemas reports for brokenXSD.
var compileIssues = []xsd.CompileIssue{
	{Line: 2, Message: "Element '{http://www.w3.org/2001/XMLSchema}element', attribute 'type': The QName value '{http://www.w3.org/2001/XMLSchema}nope' does not resolve to a(n) type definition."},
	{Line: 0, Message: "schema does not compile"},
}

// fakeSchemas is an in-memory SchemaRegistry.
type fakeSchemas struct {
	mu       sync.Mutex
	versions map[string][]*schemas.Schema
	// used are the versions devices use: Delete refuses them.
	used map[schemas.Ref]bool
	// err, when set, is what every method returns.
	err error
}

func newFakeSchemas() *fakeSchemas {
	return &fakeSchemas{versions: map[string][]*schemas.Schema{}, used: map[schemas.Ref]bool{}}
}

// add registers versions of name directly.
func (f *fakeSchemas) add(name string, n int) {
	for i := range n {
		f.versions[name] = append(f.versions[name], &schemas.Schema{
			Name: name, Version: i + 1, Description: name + " schema",
			TargetNamespace: "urn:example:" + name, GlobalElements: []string{"reading"},
			CreatedAt: testTime, XSD: "<xs:schema targetNamespace='urn:example:" + name + "'/>",
		})
	}
}

func (f *fakeSchemas) RegisterAs(_ context.Context, owner, name, src, description string) (*schemas.Schema, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return nil, f.err
	}
	if err := schemas.ValidateName(name); err != nil {
		return nil, err
	}
	if src == brokenXSD {
		return nil, &iotgate.Error{
			Code: iotgate.EUnprocessable, Message: "schema does not compile",
			Fields: compileIssues, Err: &xsd.CompileError{Issues: compileIssues},
		}
	}
	s := &schemas.Schema{
		Name: name, Version: len(f.versions[name]) + 1, Description: description,
		TargetNamespace: "urn:example:" + name, GlobalElements: []string{"reading", "state"},
		CreatedAt: testTime, XSD: src, CreatedBy: owner,
		Imports: map[string]schemas.Ref{"urn:example:units": {Name: "units", Version: 1}},
	}
	f.versions[name] = append(f.versions[name], s)
	return s, nil
}

func (f *fakeSchemas) Get(_ context.Context, name string, version int) (*schemas.Schema, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return nil, f.err
	}
	vs := f.versions[name]
	if version == 0 && len(vs) > 0 {
		return vs[len(vs)-1], nil
	}
	for _, s := range vs {
		if s.Version == version {
			return s, nil
		}
	}
	return nil, iotgate.Errorf(iotgate.ENotFound, "schema %s version %d not found", name, version)
}

// JSONSchema answers a stand-in document for an existing version (the
// generation is tested in schemas/xsd).
func (f *fakeSchemas) JSONSchema(ctx context.Context, name string, version int) (json.RawMessage, error) {
	s, err := f.Get(ctx, name, version)
	if err != nil {
		return nil, err
	}
	return json.RawMessage(`{"$schema":"https://json-schema.org/draft/2020-12/schema","title":"` + s.Name + `"}`), nil
}

func (f *fakeSchemas) Versions(_ context.Context, name string) ([]*schemas.Schema, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return nil, f.err
	}
	if len(f.versions[name]) == 0 {
		return nil, iotgate.Errorf(iotgate.ENotFound, "schema %s not found", name)
	}
	return slices.Clone(f.versions[name]), nil
}

func (f *fakeSchemas) List(context.Context) ([]*schemas.Schema, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return nil, f.err
	}
	var out []*schemas.Schema
	for _, name := range slices.Sorted(maps.Keys(f.versions)) {
		if vs := f.versions[name]; len(vs) > 0 {
			out = append(out, vs[len(vs)-1])
		}
	}
	return out, nil
}

func (f *fakeSchemas) Delete(_ context.Context, name string, version int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return f.err
	}
	if f.used[schemas.Ref{Name: name, Version: version}] {
		return iotgate.Errorf(iotgate.EConflict, "schema %s version %d is used by devices", name, version)
	}
	vs := f.versions[name]
	for i, s := range vs {
		if s.Version == version {
			f.versions[name] = slices.Delete(vs, i, i+1)
			return nil
		}
	}
	return iotgate.Errorf(iotgate.ENotFound, "schema %s version %d not found", name, version)
}

// fakeDevices is an in-memory DeviceService. It knows one schema,
// "thermostat", at versions 1 and 2, and records the arguments of its
// last calls.
type fakeDevices struct {
	mu         sync.Mutex
	devs       map[string]*iotgate.Device
	online     map[string]bool
	readings   map[string][]*iotgate.Reading
	rejections map[string][]*iotgate.Rejection
	err        error
	// accounts are the XMPP accounts made by RegisterWithAccount, by
	// JID, with their passwords.
	accounts map[string]string

	lastJID           string
	lastDeviceFilter  iotgate.DeviceFilter
	lastUpdate        iotgate.DeviceUpdate
	lastReadingFilter iotgate.ReadingFilter
	lastAggregate     iotgate.AggregateQuery
}

func newFakeDevices() *fakeDevices {
	return &fakeDevices{
		devs:       map[string]*iotgate.Device{},
		online:     map[string]bool{},
		readings:   map[string][]*iotgate.Reading{},
		rejections: map[string][]*iotgate.Rejection{},
	}
}

// add registers a device directly.
func (f *fakeDevices) add(jid string, labels map[string]string) *iotgate.Device {
	d := &iotgate.Device{JID: jid, Name: jid, Labels: labels, Schema: "thermostat", SchemaVersion: 2, CreatedAt: testTime, UpdatedAt: testTime}
	f.devs[jid] = d
	return d
}

const latestThermostat = 2

func (f *fakeDevices) Register(_ context.Context, d *iotgate.Device) (*iotgate.Device, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return nil, f.err
	}
	j, err := iotgate.NormalizeJID(d.JID)
	if err != nil {
		return nil, err
	}
	d.JID = j
	if err := d.Validate(); err != nil {
		return nil, err
	}
	if d.Schema != "thermostat" || d.SchemaVersion > latestThermostat {
		return nil, iotgate.Errorf(iotgate.EInvalid, "schema %s version %d not found", d.Schema, d.SchemaVersion)
	}
	if d.SchemaVersion == 0 {
		d.SchemaVersion = latestThermostat
	}
	if _, ok := f.devs[j]; ok {
		return nil, iotgate.Errorf(iotgate.EConflict, "device %s is already registered", j)
	}
	d.CreatedAt, d.UpdatedAt = testTime, testTime
	if d.Labels == nil {
		d.Labels = map[string]string{}
	}
	f.devs[j] = d
	return d, nil
}

// device looks a device up as the service does; f.mu must be held.
func (f *fakeDevices) device(jid string) (*iotgate.Device, error) {
	f.lastJID = jid
	if f.err != nil {
		return nil, f.err
	}
	j, err := iotgate.NormalizeJID(jid)
	if err != nil {
		return nil, err
	}
	d, ok := f.devs[j]
	if !ok {
		return nil, iotgate.Errorf(iotgate.ENotFound, "device %s is not registered", j)
	}
	return d, nil
}

func (f *fakeDevices) Device(_ context.Context, jid string) (*iotgate.Device, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.device(jid)
}

func (f *fakeDevices) Devices(_ context.Context, filter iotgate.DeviceFilter) (*iotgate.DevicePage, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lastDeviceFilter = filter
	if f.err != nil {
		return nil, f.err
	}
	page := &iotgate.DevicePage{Items: []*iotgate.Device{}}
	for _, j := range slices.Sorted(maps.Keys(f.devs)) {
		d := f.devs[j]
		switch {
		case filter.Cursor != "" && j <= filter.Cursor,
			filter.Schema != "" && d.Schema != filter.Schema,
			filter.Online != nil && f.online[j] != *filter.Online:
			continue
		}
		match := true
		for k, v := range filter.Labels {
			if d.Labels[k] != v {
				match = false
			}
		}
		if !match {
			continue
		}
		if len(page.Items) == filter.Limit {
			page.NextCursor = page.Items[len(page.Items)-1].JID
			break
		}
		page.Items = append(page.Items, d)
	}
	return page, nil
}

func (f *fakeDevices) Update(_ context.Context, jid string, u iotgate.DeviceUpdate) (*iotgate.Device, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lastUpdate = u
	d, err := f.device(jid)
	if err != nil {
		return nil, err
	}
	if u.Labels != nil {
		if err := iotgate.ValidateLabels(*u.Labels); err != nil {
			return nil, err
		}
	}
	if u.SchemaVersion != nil && *u.SchemaVersion > latestThermostat {
		return nil, iotgate.Errorf(iotgate.EInvalid, "that schema version does not exist")
	}
	out := *d
	if u.Name != nil {
		out.Name = *u.Name
	}
	if u.Labels != nil {
		out.Labels = *u.Labels
	}
	if u.SchemaVersion != nil {
		out.SchemaVersion = *u.SchemaVersion
	}
	out.UpdatedAt = testTime.Add(time.Hour)
	f.devs[d.JID] = &out
	return &out, nil
}

func (f *fakeDevices) Delete(_ context.Context, jid string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	d, err := f.device(jid)
	if err != nil {
		return err
	}
	delete(f.devs, d.JID)
	delete(f.readings, d.JID)
	delete(f.rejections, d.JID)
	return nil
}

func (f *fakeDevices) State(_ context.Context, jid string) (*iotgate.State, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	d, err := f.device(jid)
	if err != nil {
		return nil, err
	}
	st := &iotgate.State{JID: d.JID, Online: f.online[d.JID], LastSeenAt: d.LastSeenAt}
	if rs := f.readings[d.JID]; len(rs) > 0 {
		st.Reading = rs[len(rs)-1]
	}
	return st, nil
}

// States returns the states of the devices of jids that show accepts,
// through State, and the others (normalized, duplicates once) as missing.
func (f *fakeDevices) States(ctx context.Context, jids []string, show func(*iotgate.Device) bool) ([]*iotgate.State, []string, error) {
	var sts []*iotgate.State
	var missing []string
	seen := map[string]bool{}
	for _, jid := range jids {
		j, err := iotgate.NormalizeJID(jid)
		if err != nil {
			return nil, nil, err
		}
		if seen[j] {
			continue
		}
		seen[j] = true
		f.mu.Lock()
		d := f.devs[j]
		f.mu.Unlock()
		if d == nil || !show(d) {
			missing = append(missing, j)
			continue
		}
		st, err := f.State(ctx, j)
		if err != nil {
			return nil, nil, err
		}
		sts = append(sts, st)
	}
	return sts, missing, nil
}

// StatesOf returns the states of devs through State.
func (f *fakeDevices) StatesOf(ctx context.Context, devs []*iotgate.Device) ([]*iotgate.State, error) {
	sts := make([]*iotgate.State, 0, len(devs))
	for _, d := range devs {
		st, err := f.State(ctx, d.JID)
		if err != nil {
			return nil, err
		}
		sts = append(sts, st)
	}
	return sts, nil
}

// ReadingFields returns the thermostat's scalar fields the fixture's
// readings use, plus one they never have.
func (f *fakeDevices) ReadingFields(_ context.Context, jid string) ([]iotgate.FieldPath, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, err := f.device(jid); err != nil {
		return nil, err
	}
	return []iotgate.FieldPath{{"@unit"}, {"mode"}, {"temperature"}}, nil
}

// page returns the items after the cursor (an index), limit at most.
func page[T any](items []T, filter iotgate.ReadingFilter) ([]T, string) {
	start := 0
	if filter.Cursor != "" {
		start = len(filter.Cursor) // the fake's cursors are "+", "++", ...
	}
	start = min(start, len(items))
	end := min(start+filter.Limit, len(items))
	next := ""
	if end < len(items) {
		next = strings.Repeat("+", end)
	}
	return items[start:end], next
}

func (f *fakeDevices) Readings(_ context.Context, jid string, filter iotgate.ReadingFilter) (*iotgate.ReadingPage, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lastReadingFilter = filter
	d, err := f.device(jid)
	if err != nil {
		return nil, err
	}
	items, next := page(f.readings[d.JID], filter)
	return &iotgate.ReadingPage{Items: items, NextCursor: next}, nil
}

func (f *fakeDevices) Rejections(_ context.Context, jid string, filter iotgate.ReadingFilter) (*iotgate.RejectionPage, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lastReadingFilter = filter
	d, err := f.device(jid)
	if err != nil {
		return nil, err
	}
	items, next := page(f.rejections[d.JID], filter)
	return &iotgate.RejectionPage{Items: items, NextCursor: next}, nil
}

// Aggregate checks the device and returns one bucket at q.From with a
// value "1" for every field and aggregate; it records q.
func (f *fakeDevices) Aggregate(_ context.Context, jid string, q iotgate.AggregateQuery) ([]iotgate.AggregateBucket, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lastAggregate = q
	if _, err := f.device(jid); err != nil {
		return nil, err
	}
	b := iotgate.AggregateBucket{Start: q.From, Readings: 1, Values: make([][]json.Number, len(q.Fields))}
	for i := range b.Values {
		b.Values[i] = make([]json.Number, len(q.Funcs))
		for j := range b.Values[i] {
			b.Values[i][j] = "1"
		}
	}
	return []iotgate.AggregateBucket{b}, nil
}

// testToken is the secret of the admin token that test requests send
// unless they say otherwise.
const testToken = "test-admin-token"

// fakeAuth is an in-memory Authenticator: secret to token.
type fakeAuth struct {
	mu     sync.Mutex
	tokens map[string]*iotgate.Token
	// calls counts Authenticate calls.
	calls int
}

// newFakeAuth knows testToken (admin, all devices) and the given tokens.
func newFakeAuth(more map[string]*iotgate.Token) *fakeAuth {
	f := &fakeAuth{tokens: map[string]*iotgate.Token{
		testToken: {ID: "tok_test", Name: "test", Scopes: []iotgate.Scope{iotgate.ScopeAdmin}},
	}}
	maps.Copy(f.tokens, more)
	return f
}

func (f *fakeAuth) Authenticate(_ context.Context, secret string) (*iotgate.Token, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	t, ok := f.tokens[secret]
	if !ok {
		return nil, iotgate.Errorf(iotgate.EUnauthorized, "unknown token")
	}
	return t.Clone(), nil
}

func (f *fakeAuth) Current(_ context.Context, id string) (*iotgate.Token, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, t := range f.tokens {
		if t.ID == id {
			return t.Clone(), nil
		}
	}
	return nil, iotgate.Errorf(iotgate.EUnauthorized, "unknown token")
}

// revoke forgets the token whose secret this is.
func (f *fakeAuth) revoke(secret string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.tokens, secret)
}

// fakeTokens is an in-memory TokenService.
type fakeTokens struct {
	tokens map[string]*iotgate.Token
	last   auth.CreateRequest
}

func (f *fakeTokens) Create(_ context.Context, req auth.CreateRequest) (*iotgate.Token, string, error) {
	f.last = req
	t := &iotgate.Token{ID: "tok_new", Name: req.Name, Scopes: req.Scopes, Devices: req.Devices, CreatedAt: testTime}
	f.tokens[t.ID] = t
	return t, auth.Prefix + "secret", nil
}

func (f *fakeTokens) List(context.Context) ([]*iotgate.Token, error) {
	var out []*iotgate.Token
	for _, t := range f.tokens {
		out = append(out, t)
	}
	return out, nil
}

func (f *fakeTokens) Get(_ context.Context, id string) (*iotgate.Token, error) {
	t, ok := f.tokens[id]
	if !ok {
		return nil, iotgate.Errorf(iotgate.ENotFound, "token %s not found", id)
	}
	return t, nil
}

func (f *fakeTokens) Revoke(ctx context.Context, id string) (*iotgate.Token, error) {
	t, err := f.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	at := testTime
	t.RevokedAt = &at
	return t, nil
}

// fakeCommands is a CommandService whose Submit outcome the test sets; it
// records the requests it gets.
type fakeCommands struct {
	mu      sync.Mutex
	cmds    map[string]*iotgate.Command
	lastReq iotgate.CommandRequest
	// submit decides Submit's answer from the request.
	submit func(req iotgate.CommandRequest) (*iotgate.Command, bool, error)
	// settle, if set, is what Wait turns a command into.
	settle     func(c *iotgate.Command) *iotgate.Command
	lastFilter iotgate.CommandFilter
	waited     time.Duration
}

func (f *fakeCommands) Submit(_ context.Context, req iotgate.CommandRequest) (*iotgate.Command, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lastReq = req
	c, replay, err := f.submit(req)
	if c != nil {
		f.cmds[c.ID] = c
	}
	return c, replay, err
}

func (f *fakeCommands) Wait(_ context.Context, id string, d time.Duration) (*iotgate.Command, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.waited = d
	c, ok := f.cmds[id]
	if !ok {
		return nil, iotgate.Errorf(iotgate.ENotFound, "command %s not found", id)
	}
	if f.settle != nil {
		c = f.settle(c)
		f.cmds[id] = c
	}
	return c, nil
}

func (f *fakeCommands) Command(_ context.Context, id string) (*iotgate.Command, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.cmds[id]
	if !ok {
		return nil, iotgate.Errorf(iotgate.ENotFound, "command %s not found", id)
	}
	return c, nil
}

func (f *fakeCommands) List(_ context.Context, jid string, filter iotgate.CommandFilter) (*iotgate.CommandPage, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lastFilter = filter
	if jid != "thermo1@example.com" {
		return nil, iotgate.Errorf(iotgate.ENotFound, "device %s is not registered", jid)
	}
	page := &iotgate.CommandPage{Items: []*iotgate.Command{}, NextCursor: "next"}
	for _, c := range f.cmds {
		page.Items = append(page.Items, c)
	}
	return page, nil
}

func (f *fakeCommands) Cancel(_ context.Context, id string) (*iotgate.Command, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.cmds[id]
	if !ok {
		return nil, iotgate.Errorf(iotgate.ENotFound, "command %s not found", id)
	}
	if c.Status != iotgate.CommandQueued {
		return nil, &iotgate.Error{Code: iotgate.EConflict, Detail: "command_not_queued", Message: "command " + id + " is " + string(c.Status) + "; only queued commands can be canceled"}
	}
	out := *c
	out.Status = iotgate.CommandCanceled
	f.cmds[id] = &out
	return &out, nil
}

// fakeXMPPStats is the XMPP side of the metrics: up or down, with fixed
// counters.
type fakeXMPPStats struct{ up bool }

func (f fakeXMPPStats) Health(context.Context) (bool, time.Time, error) {
	return f.up, time.Time{}, nil
}
func (fakeXMPPStats) Reconnects() uint64 { return 3 }
func (fakeXMPPStats) PendingIQs() int    { return 7 }

// fakePassword is what the fake's RegisterWithAccount generates.
const fakePassword = "generated-password-0123"

// RegisterWithAccount registers d like Register; the account is only
// recorded (accounts), with password or fakePassword.
func (f *fakeDevices) RegisterWithAccount(ctx context.Context, d *iotgate.Device, password string) (*iotgate.Device, string, error) {
	if password == "" {
		password = fakePassword
	}
	out, err := f.Register(ctx, d)
	if err != nil {
		return nil, "", err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.accounts == nil {
		f.accounts = map[string]string{}
	}
	f.accounts[out.JID] = password
	return out, password, nil
}

// DeleteWithAccount deletes the device like Delete and forgets its
// account.
func (f *fakeDevices) DeleteWithAccount(ctx context.Context, jid string) error {
	if err := f.Delete(ctx, jid); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	j, _ := iotgate.NormalizeJID(jid)
	delete(f.accounts, j)
	return nil
}
