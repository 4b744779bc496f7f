package devices

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/iotgate/iotgate"
	"mellium.im/xmpp/jid"
)

// requestHash identifies a request's content, for Idempotency-Key reuse checks.
func requestHash(r *iotgate.CommandRequest, deviceJID string) string {
	// Length-prefixed fields, so that no two requests hash the same input;
	// appended by hand, as fmt costs more than the hash on the hot path.
	b := make([]byte, 0, 128+len(r.Payload))
	for _, s := range []string{deviceJID, r.Type, string(r.Mode), r.Resource,
		strconv.FormatInt(r.Timeout.Milliseconds(), 10), strconv.FormatInt(r.ExpiresIn.Milliseconds(), 10), r.Payload} {
		b = strconv.AppendInt(b, int64(len(s)), 10)
		b = append(b, ':')
		b = append(b, s...)
		b = append(b, ';')
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// CommandSender sends command IQs. The XMPP component implements it.
type CommandSender interface {
	// SendCommand sends payload to the full JID `to` in an IQ of type
	// iqType ("get" or "set") and waits for the answer, result or error,
	// until ctx ends. Errors: unavailable (detail xmpp_unavailable) when
	// the stream is down or drops first, timeout when ctx ends first,
	// too_many_requests when too many IQs are waiting, invalid for a
	// payload that is not one XML element.
	SendCommand(ctx context.Context, to, iqType string, payload []byte) (iotgate.CommandReply, error)
}

// CommandDevices looks devices up; the device Service implements it.
type CommandDevices interface {
	// Device returns a registered device. Errors: invalid, not_found.
	Device(ctx context.Context, jid string) (*iotgate.Device, error)
}

// PresenceView tells which instances of a device are available; Presence
// implements it.
type PresenceView interface {
	// Resources returns the available resources, highest priority first.
	Resources(jid string) []iotgate.Resource
	// Online reports whether the device is online and whether presence
	// is stale (the XMPP stream is down).
	Online(jid string) (online, stale bool)
}

// CommandsConfig tunes the command service.
type CommandsConfig struct {
	// MaxInFlight bounds commands sent and not yet answered or timed out;
	// beyond it, commands are refused with too_many_requests (queued ones
	// wait). Default 1000.
	MaxInFlight int
	// LateAnswerGrace is how long after its timeout a command still
	// listens for a late answer to record. Default 60s.
	LateAnswerGrace time.Duration
	// SweepInterval is how often expired queued commands are marked.
	// Default 1s.
	SweepInterval time.Duration
	// RedeliverInterval is how often queued commands of online devices
	// are retried, in case a presence change was missed. Default 30s.
	RedeliverInterval time.Duration
	Clock             iotgate.Clock
	Logger            *slog.Logger
	// Observer receives each command's outcome; nil discards them.
	Observer Observer
}

// Commands is the command service: it validates, stores and delivers
// commands, and records their outcome. Create it with NewCommands, call
// Recover once at start, then Run.
type Commands struct {
	store    iotgate.CommandStore
	devs     CommandDevices
	schemas  iotgate.SchemaSource
	presence PresenceView
	sender   CommandSender
	cfg      CommandsConfig
	log      *slog.Logger

	// ctx is the life of the service: executions listen for answers
	// under it, and shutdown cancels it.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	sem    chan struct{}

	mu       sync.Mutex
	inflight map[string]*execution
	wanted   map[string]bool // devices whose queues to deliver
	// queuedFor are the devices with queued commands, so that the
	// presence storm after a reconnection only wakes those.
	queuedFor  map[string]bool
	delivering map[string]bool
	again      map[string]bool
	closed     bool // Run has stopped: nothing new starts
	draining   bool // shutting down: queued commands stay queued
	wake       chan struct{}
	stopped    chan struct{}

	// creates and updates group-commit the store writes of concurrent
	// commands: one transaction per batch, not per command.
	creates *groupCommit[*iotgate.Command]
	updates *groupCommit[iotgate.CommandUpdate]
}

// maxWriteBatch bounds the commands written in one transaction.
const maxWriteBatch = 256

// execution is one command on its way to a device.
type execution struct {
	mu      sync.Mutex
	cmd     *iotgate.Command
	schema  iotgate.PayloadSchema
	settled chan struct{} // closed when cmd is terminal or queued again
	once    sync.Once
	release func()
}

// NewCommands returns a command service.
func NewCommands(store iotgate.CommandStore, devs CommandDevices, schemas iotgate.SchemaSource, presence PresenceView, sender CommandSender, cfg CommandsConfig) *Commands {
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = 1000
	}
	if cfg.LateAnswerGrace <= 0 {
		cfg.LateAnswerGrace = 60 * time.Second
	}
	if cfg.SweepInterval <= 0 {
		cfg.SweepInterval = time.Second
	}
	if cfg.RedeliverInterval <= 0 {
		cfg.RedeliverInterval = 30 * time.Second
	}
	if cfg.Observer == nil {
		cfg.Observer = nopObserver{}
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Commands{
		store: store, devs: devs, schemas: schemas, presence: presence, sender: sender,
		cfg: cfg, log: cfg.Logger, ctx: ctx, cancel: cancel,
		sem:      make(chan struct{}, cfg.MaxInFlight),
		inflight: map[string]*execution{}, wanted: map[string]bool{}, queuedFor: map[string]bool{},
		delivering: map[string]bool{}, again: map[string]bool{},
		wake: make(chan struct{}, 1), stopped: make(chan struct{}),
	}
	// The batch's writes outlive any one request: they run under the
	// store's own timeout, not a caller's context.
	s.creates = &groupCommit[*iotgate.Command]{max: maxWriteBatch, write: func(cs []*iotgate.Command) []error {
		ctx, cancel := s.storeCtx()
		defer cancel()
		return store.CreateCommands(ctx, cs)
	}}
	s.updates = &groupCommit[iotgate.CommandUpdate]{max: maxWriteBatch,
		conflicts: func(a, b iotgate.CommandUpdate) bool { return a.Command.ID == b.Command.ID },
		write: func(us []iotgate.CommandUpdate) []error {
			ctx, cancel := s.storeCtx()
			defer cancel()
			return store.UpdateCommands(ctx, us)
		}}
	return s
}

// Reasons recorded on commands.
const (
	reasonRestarted = "iotgate restarted before the device answered"
	reasonShutdown  = "iotgate shut down before the device answered"
	reasonExpired   = "not delivered before it expired"
	reasonCanceled  = "canceled by request"
)

// Recover resolves the commands a previous run left unfinished: pending
// and sent ones fail (iotgate can't know whether the device acted on
// them). Queued ones stay queued. Call it once at start, before Run.
func (s *Commands) Recover(ctx context.Context) error {
	n, err := s.store.FailUnfinishedCommands(ctx, s.now(), iotgate.CmdErrRestarted, reasonRestarted)
	if err != nil {
		return fmt.Errorf("resolve unfinished commands: %w", err)
	}
	if n > 0 {
		s.log.Warn("commands left unfinished by the previous run marked failed", "commands", n)
	}
	jids, err := s.store.QueuedDeviceJIDs(ctx)
	if err != nil {
		return fmt.Errorf("list devices with queued commands: %w", err)
	}
	s.setQueued(jids)
	return nil
}

// setQueued replaces the set of devices with queued commands.
func (s *Commands) setQueued(jids []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.queuedFor)
	for _, j := range jids {
		s.queuedFor[j] = true
	}
}

func (s *Commands) markQueued(bare string, queued bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if queued {
		s.queuedFor[bare] = true
	} else {
		delete(s.queuedFor, bare)
	}
}

func (s *Commands) now() time.Time { return s.cfg.Clock().UTC() }

// timeoutStore bounds the store writes of executions, which outlive the
// requests that started them.
const timeoutStore = 5 * time.Second

func (s *Commands) storeCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), timeoutStore)
}

// Submit validates a command, stores it and starts delivering it. It
// returns the command as stored (a sync caller then waits with Wait), and
// whether it is the one an earlier request with the same Idempotency-Key
// created (then nothing new was sent).
//
// Outcomes decided at once are returned as a stored command, not an error:
// failed with device_offline (no available resource), failed with
// xmpp_unavailable (the stream is down); see Command.Err. Errors: invalid
// (bad request), not_found (device), unprocessable (payload not valid
// against the schema; a comment, processing instruction or DOCTYPE in it,
// details comment_forbidden, processing_instruction_forbidden,
// doctype_forbidden; an Idempotency-Key reused with another request,
// detail idempotency_key_reused), too_many_requests (MaxInFlight commands are in
// flight), unavailable (shutting down, store or schema unavailable).
func (s *Commands) Submit(ctx context.Context, req iotgate.CommandRequest) (*iotgate.Command, bool, error) {
	if s.ctx.Err() != nil {
		return nil, false, iotgate.Errorf(iotgate.EUnavailable, "iotgate is shutting down, try again later")
	}
	if err := req.Normalize(); err != nil {
		return nil, false, err
	}
	dev, err := s.devs.Device(ctx, req.DeviceJID)
	if err != nil {
		return nil, false, err
	}
	hash := requestHash(&req, dev.JID)
	now := s.now()
	if req.IdempotencyKey != "" {
		if c, ok, err := s.byKey(ctx, req.IdempotencyKey, hash, now); err != nil || ok {
			return c, ok, err
		}
	}
	target, err := fullJID(dev.JID, req.Resource)
	if err != nil {
		return nil, false, err
	}
	schema, _, err := s.schemas.Compiled(ctx, dev.Schema, dev.SchemaVersion)
	if err != nil {
		return nil, false, &iotgate.Error{Code: iotgate.EUnavailable, Message: "device schema unavailable, try again later", Err: err}
	}
	if err := validatePayload(schema, []byte(req.Payload)); err != nil {
		return nil, false, err
	}

	c := &iotgate.Command{
		ID: crand.Text(), DeviceID: dev.ID, DeviceJID: dev.JID,
		Type: req.Type, Payload: req.Payload, Resource: req.Resource, Mode: req.Mode,
		Status: iotgate.CommandPending, Timeout: req.Timeout, CreatedAt: now,
		IdempotencyKey: req.IdempotencyKey, RequestHash: hash,
		TokenID: req.TokenID, SentBy: req.SentBy,
		History: []iotgate.CommandEvent{{Status: iotgate.CommandPending, At: now}},
	}
	if req.Mode == iotgate.CommandQueue {
		exp := now.Add(req.ExpiresIn)
		c.ExpiresAt = &exp
	}
	to, stale := s.pick(dev.JID, target)
	var release func()
	switch {
	case req.Mode == iotgate.CommandQueue && (stale || to == ""):
		s.queue(c, now, offlineReason(stale, target))
	case stale:
		s.fail(c, now, iotgate.CmdErrXMPPUnavailable, "iotgate's XMPP stream is down: the device's presence is unknown")
	case to == "":
		s.fail(c, now, iotgate.CmdErrDeviceOffline, offlineReason(false, target))
	default:
		if release = s.tryAcquire(); release == nil {
			if req.Mode != iotgate.CommandQueue {
				return nil, false, iotgate.Errorf(iotgate.ETooMany, "%d commands are in flight, try again later", s.cfg.MaxInFlight)
			}
			s.queue(c, now, "too many commands in flight")
		} else {
			s.markSent(c, to, now)
		}
	}
	if c.Status == iotgate.CommandFailed {
		// A command that was never sent doesn't hold its key: retrying
		// with the same key once the device is back must send it.
		c.IdempotencyKey = ""
	}
	if c.Status.Terminal() {
		s.observe(c)
	}
	if err := s.create(ctx, c, now); err != nil {
		if release != nil {
			release()
		}
		var de *iotgate.Error
		if errors.As(err, &de) && de.Detail == "idempotency_key_taken" {
			// A concurrent request with the same key won the race.
			c, ok, err := s.byKey(ctx, req.IdempotencyKey, hash, now)
			if err == nil && !ok {
				err = iotgate.Errorf(iotgate.EUnavailable, "Idempotency-Key is in use, try again")
			}
			return c, ok, err
		}
		return nil, false, err
	}
	switch c.Status {
	case iotgate.CommandSent:
		c, _ = s.start(c, schema, release)
	case iotgate.CommandQueued:
		s.markQueued(dev.JID, true)
		// The device may have come online since we looked.
		if to, stale := s.pick(dev.JID, target); !stale && to != "" {
			s.wakeDelivery(dev.JID)
		}
	}
	return c, false, nil
}

// payloadValidator is implemented by schemas that can validate a payload
// without rendering it, which is cheaper.
type payloadValidator interface {
	// Validate validates a payload element. Errors: unprocessable.
	Validate(payload []byte) error
}

// validatePayload checks a command's payload against the device's schema.
// Errors: unprocessable, with the validator's reason, or with one of the
// details of plainXML.
func validatePayload(schema iotgate.PayloadSchema, payload []byte) error {
	if err := plainXML(payload); err != nil {
		return err
	}
	if v, ok := schema.(payloadValidator); ok {
		return v.Validate(payload)
	}
	_, err := schema.ValidateAndRender(payload)
	return err
}

// Details of the payloads plainXML refuses; a DOCTYPE has the code the
// schema validator gives it in a reading.
const (
	CmdPayloadComment = "comment_forbidden"
	CmdPayloadPI      = "processing_instruction_forbidden"
	CmdPayloadDTD     = "doctype_forbidden"
)

// plainXML refuses comments, processing instructions and DOCTYPEs (or any
// other <!...> directive) in a command payload. The schema validator skips
// them, but an XMPP server closes the stream of a component that sends them
// (RFC 6120 11.1), which would cut every device off. The component drops
// them anyway (it re-serializes what it sends); refusing them here tells
// the client at once. An XML declaration at the very start is allowed, and
// so is CDATA: it is only text, and goes out escaped. What does not parse
// is left to the validator, which says where. Errors: unprocessable.
func plainXML(payload []byte) error {
	d := xml.NewDecoder(bytes.NewReader(payload))
	d.Strict = true
	for {
		off := d.InputOffset()
		tok, err := d.Token()
		if err != nil {
			return nil
		}
		switch t := tok.(type) {
		case xml.Comment:
			return &iotgate.Error{Code: iotgate.EUnprocessable, Detail: CmdPayloadComment, Message: "a command payload must not contain XML comments"}
		case xml.ProcInst:
			if t.Target == "xml" && len(bytes.TrimSpace(payload[:off])) == 0 {
				continue
			}
			return &iotgate.Error{Code: iotgate.EUnprocessable, Detail: CmdPayloadPI, Message: "a command payload must not contain processing instructions"}
		case xml.Directive:
			return &iotgate.Error{Code: iotgate.EUnprocessable, Detail: CmdPayloadDTD, Message: "a command payload must not contain a DOCTYPE or other <!...> declaration"}
		}
	}
}

// create stores a new command. Commands without an Idempotency-Key are
// group-committed with the others arriving at the same time; one with a
// key is stored alone, in a transaction that first releases the key from
// a holder older than IdempotencyWindow.
func (s *Commands) create(ctx context.Context, c *iotgate.Command, now time.Time) error {
	if c.IdempotencyKey != "" {
		return s.store.CreateCommand(ctx, c, now.Add(-iotgate.IdempotencyWindow))
	}
	return s.creates.do(c)
}

func offlineReason(stale bool, target string) string {
	switch {
	case stale:
		return "iotgate's XMPP stream is down"
	case target != "":
		return "resource " + target + " is not available"
	}
	return "the device has no available resource"
}

// byKey finds the command created with key within the idempotency window.
// ok is false when there is none. Errors: unprocessable when the key was
// used for another request.
func (s *Commands) byKey(ctx context.Context, key, hash string, now time.Time) (*iotgate.Command, bool, error) {
	c, err := s.store.CommandByIdempotencyKey(ctx, key, now.Add(-iotgate.IdempotencyWindow))
	if iotgate.ErrorCode(err) == iotgate.ENotFound {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	if c.RequestHash != hash {
		return nil, false, &iotgate.Error{Code: iotgate.EUnprocessable, Detail: "idempotency_key_reused",
			Message: "this Idempotency-Key was used for another request (command " + c.ID + ") in the last 24 hours"}
	}
	if cur := s.snapshot(c.ID); cur != nil {
		c = cur
	}
	return c, true, nil
}

// pick returns the full JID to send to: the requested one if available,
// else the highest-priority available resource; "" when none is. stale
// means presence is unknown (the stream is down).
func (s *Commands) pick(bare, target string) (to string, stale bool) {
	online, stale := s.presence.Online(bare)
	if stale || !online {
		return "", stale
	}
	rs := s.presence.Resources(bare)
	if target == "" {
		if len(rs) == 0 {
			return "", false
		}
		return rs[0].JID, false
	}
	for _, r := range rs {
		if j, err := jid.Parse(r.JID); err == nil && j.String() == target {
			return r.JID, false
		}
	}
	return "", false
}

// fullJID returns bare/resource, normalized; "" for no resource.
// Errors: invalid.
func fullJID(bare, resource string) (string, error) {
	if resource == "" {
		return "", nil
	}
	j, err := jid.Parse(bare)
	if err == nil {
		j, err = j.WithResource(resource)
	}
	if err != nil {
		return "", iotgate.Errorf(iotgate.EInvalid, "resource %q is not a valid resourcepart: %v", resource, err)
	}
	return j.String(), nil
}

func (s *Commands) tryAcquire() func() {
	select {
	case s.sem <- struct{}{}:
		var once sync.Once
		return func() { once.Do(func() { <-s.sem }) }
	default:
		return nil
	}
}

func (s *Commands) acquire(ctx context.Context) func() {
	select {
	case s.sem <- struct{}{}:
		var once sync.Once
		return func() { once.Do(func() { <-s.sem }) }
	case <-ctx.Done():
		return nil
	}
}

// State changes on the in-memory command; callers store them.

func (s *Commands) queue(c *iotgate.Command, now time.Time, reason string) {
	c.Status = iotgate.CommandQueued
	c.History = append(c.History, iotgate.CommandEvent{Status: iotgate.CommandQueued, At: now, Reason: reason})
}

func (s *Commands) fail(c *iotgate.Command, now time.Time, code, reason string) {
	c.Status, c.ErrorCode, c.Error, c.CompletedAt = iotgate.CommandFailed, code, reason, &now
	c.History = append(c.History, iotgate.CommandEvent{Status: iotgate.CommandFailed, At: now, Reason: reason})
}

func (s *Commands) markSent(c *iotgate.Command, to string, now time.Time) {
	c.Status, c.Target, c.SentAt = iotgate.CommandSent, to, &now
	c.History = append(c.History, iotgate.CommandEvent{Status: iotgate.CommandSent, At: now, Reason: "to " + to})
}

// start runs the execution of a stored sent command. It returns a
// snapshot of the command and a channel closed when it settles.
func (s *Commands) start(c *iotgate.Command, schema iotgate.PayloadSchema, release func()) (*iotgate.Command, <-chan struct{}) {
	e := &execution{cmd: c, schema: schema, settled: make(chan struct{}), release: release}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		// Run has stopped: fail it as a shutdown would have.
		e.mu.Lock()
		s.fail(c, s.now(), iotgate.CmdErrRestarted, reasonShutdown)
		s.update(c, []iotgate.CommandStatus{iotgate.CommandSent}, &c.History[len(c.History)-1])
		e.settle()
		e.mu.Unlock()
		return c.Clone(), e.settled
	}
	s.inflight[c.ID] = e
	s.wg.Add(1)
	s.mu.Unlock()
	snap := c.Clone()
	go s.execute(e)
	return snap, e.settled
}

// snapshot returns a copy of an in-flight command, or nil.
func (s *Commands) snapshot(id string) *iotgate.Command {
	s.mu.Lock()
	e := s.inflight[id]
	s.mu.Unlock()
	if e == nil {
		return nil
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.cmd.Clone()
}

// settle wakes waiters and frees the command's in-flight slot; e.mu held.
func (e *execution) settle() {
	e.once.Do(func() {
		close(e.settled)
		if e.release != nil {
			e.release()
		}
	})
}

// execute sends the command and records what happens: the answer, the
// timeout (and a late answer), the stream dropping, a bounce.
func (s *Commands) execute(e *execution) {
	defer s.wg.Done()
	e.mu.Lock()
	c := e.cmd.Clone()
	e.mu.Unlock()
	defer func() {
		s.mu.Lock()
		if s.inflight[c.ID] == e {
			delete(s.inflight, c.ID)
		}
		s.mu.Unlock()
		e.mu.Lock()
		e.settle()
		e.mu.Unlock()
	}()

	wait := c.Timeout - s.now().Sub(*c.SentAt)
	timer := time.AfterFunc(max(wait, 0), func() { s.timedOut(e) })
	defer timer.Stop()
	ctx, cancel := context.WithTimeout(s.ctx, max(wait, 0)+s.cfg.LateAnswerGrace)
	defer cancel()
	rep, err := s.sender.SendCommand(ctx, c.Target, c.Type, []byte(c.Payload))
	timer.Stop()
	s.answered(e, rep, err)
}

// timedOut marks a command that got no answer in time.
func (s *Commands) timedOut(e *execution) {
	e.mu.Lock()
	defer e.mu.Unlock()
	c := e.cmd
	if c.Status != iotgate.CommandSent {
		return
	}
	now := s.now()
	reason := fmt.Sprintf("the device did not answer within %s", c.Timeout)
	c.Status, c.ErrorCode, c.Error, c.CompletedAt = iotgate.CommandTimedOut, iotgate.CmdErrTimeout, reason, &now
	ev := iotgate.CommandEvent{Status: iotgate.CommandTimedOut, At: now, Reason: reason}
	c.History = append(c.History, ev)
	s.update(c, []iotgate.CommandStatus{iotgate.CommandSent}, &ev)
	e.settle()
}

// offlineConditions are the stanza errors with which a server bounces an
// IQ to an unavailable resource (RFC 6120 §8.5.3.2.1, §10.5.3.1).
var offlineConditions = map[string]bool{"service-unavailable": true, "recipient-unavailable": true}

// answered records the outcome of SendCommand.
func (s *Commands) answered(e *execution, rep iotgate.CommandReply, err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	c := e.cmd
	now := s.now()
	if c.Status == iotgate.CommandTimedOut {
		if err == nil {
			s.recordAnswer(c, e.schema, rep, now)
			c.LateAnswer = true
			s.update(c, []iotgate.CommandStatus{iotgate.CommandTimedOut}, nil)
		}
		return
	}
	if c.Status != iotgate.CommandSent {
		return
	}
	from := []iotgate.CommandStatus{iotgate.CommandSent}
	if err != nil {
		code, reason := iotgate.CmdErrInternal, "the command could not be sent"
		requeue := false
		switch {
		case s.ctx.Err() != nil:
			code, reason = iotgate.CmdErrRestarted, reasonShutdown
		case iotgate.ErrorCode(err) == iotgate.EUnavailable:
			code, reason = iotgate.CmdErrXMPPUnavailable, iotgate.ErrorMessage(err)
		case iotgate.ErrorCode(err) == iotgate.ETooMany:
			// Never sent: a queued command can wait for its turn.
			code, reason, requeue = iotgate.CmdErrTooMany, iotgate.ErrorMessage(err), true
		case iotgate.ErrorCode(err) == iotgate.ETimeout:
			code, reason = iotgate.CmdErrTimeout, iotgate.ErrorMessage(err)
		case iotgate.ErrorCode(err) == iotgate.EInvalid:
			reason = "the command could not be sent: " + iotgate.ErrorMessage(err)
		default:
			s.log.Error("command not sent", "command", c.ID, "err", err)
		}
		if requeue && c.Mode == iotgate.CommandQueue {
			s.queue(c, now, reason)
			s.update(c, from, &c.History[len(c.History)-1])
			s.markQueued(c.DeviceJID, true)
		} else {
			s.fail(c, now, code, reason)
			s.update(c, from, &c.History[len(c.History)-1])
		}
		e.settle()
		return
	}
	s.recordAnswer(c, e.schema, rep, now)
	switch {
	case rep.Type != "error":
		c.Status, c.CompletedAt = iotgate.CommandSucceeded, &now
		c.History = append(c.History, iotgate.CommandEvent{Status: iotgate.CommandSucceeded, At: now})
	case offlineConditions[rep.Error.Condition] && c.Mode == iotgate.CommandQueue:
		reason := fmt.Sprintf("the server bounced the IQ (%s): the device went offline", rep.Error.Condition)
		c.Response, c.XMPPError, c.AnsweredAt = nil, nil, nil
		s.queue(c, now, reason)
		s.markQueued(c.DeviceJID, true)
	case offlineConditions[rep.Error.Condition]:
		s.fail(c, now, iotgate.CmdErrDeviceOffline, fmt.Sprintf("the device is offline: the server answered %s", rep.Error.Condition))
	default:
		msg := "the device answered with an error: " + rep.Error.Condition
		if rep.Error.Text != "" {
			msg += ": " + rep.Error.Text
		}
		s.fail(c, now, iotgate.CmdErrXMPP, msg)
	}
	s.update(c, from, &c.History[len(c.History)-1])
	e.settle()
}

// recordAnswer puts the device's answer on c.
func (s *Commands) recordAnswer(c *iotgate.Command, schema iotgate.PayloadSchema, rep iotgate.CommandReply, now time.Time) {
	c.AnsweredAt = &now
	if rep.Type == "error" {
		if rep.Error == nil {
			rep.Error = &iotgate.XMPPError{Type: "cancel", Condition: "undefined-condition"}
		}
		e := *rep.Error
		c.XMPPError = &e
		return
	}
	r := &iotgate.CommandResponse{XML: string(rep.Payload)}
	if len(rep.Payload) > 0 && schema != nil && rep.Namespace == schema.TargetNamespace() {
		data, err := schema.ValidateAndRender(rep.Payload)
		if err != nil {
			r.Invalid = iotgate.ErrorMessage(err)
		} else {
			r.Data = data
		}
	}
	c.Response = r
}

// update stores a state change of an execution. A failure is logged: the
// in-memory outcome still answers the waiting client, and a command left
// sent in the store is resolved at the next start. An answer whose JSON
// rendering the database refuses (a value out of its range) is stored
// without it, as an answer that does not validate is: the outcome is
// what matters, and the XML is kept.
func (s *Commands) update(c *iotgate.Command, from []iotgate.CommandStatus, ev *iotgate.CommandEvent) {
	if ev != nil && c.Status.Terminal() {
		s.observe(c)
	}
	err := s.updates.do(iotgate.CommandUpdate{Command: c, From: from, Event: ev})
	if iotgate.ErrorCode(err) == iotgate.EInvalid && c.Response != nil && len(c.Response.Data) > 0 {
		c.Response.Data = nil
		c.Response.Invalid = "the database refused the answer's JSON rendering: " + iotgate.ErrorMessage(err)
		err = s.updates.do(iotgate.CommandUpdate{Command: c, From: from, Event: ev})
	}
	if err != nil {
		s.log.Error("command state not stored", "command", c.ID, "status", c.Status, "err", err)
	}
}

// Wait waits until the command is finished (or queued again), at most d or
// until ctx ends, and returns it as it then is. Errors: not_found.
func (s *Commands) Wait(ctx context.Context, id string, d time.Duration) (*iotgate.Command, error) {
	s.mu.Lock()
	e := s.inflight[id]
	s.mu.Unlock()
	if e == nil {
		return s.store.Command(ctx, id)
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-e.settled:
	case <-t.C:
	case <-ctx.Done():
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.cmd.Clone(), nil
}

// Command returns a command. Errors: not_found.
func (s *Commands) Command(ctx context.Context, id string) (*iotgate.Command, error) {
	if c := s.snapshot(id); c != nil {
		return c, nil
	}
	return s.store.Command(ctx, id)
}

// Commands returns a page of a device's commands, newest first.
// Errors: invalid (JID, limit, cursor), not_found (device).
func (s *Commands) Commands(ctx context.Context, deviceJID string, f iotgate.CommandFilter) (*iotgate.CommandPage, error) {
	d, err := s.devs.Device(ctx, deviceJID)
	if err != nil {
		return nil, err
	}
	if f.Limit <= 0 {
		f.Limit = 100
	}
	if f.Limit > 1000 {
		return nil, iotgate.Errorf(iotgate.EInvalid, "limit must be at most 1000")
	}
	return s.store.Commands(ctx, d.JID, f)
}

// Cancel cancels a queued command. Errors: not_found, conflict (the
// command is not queued).
func (s *Commands) Cancel(ctx context.Context, id string) (*iotgate.Command, error) {
	c, err := s.store.Command(ctx, id)
	if err != nil {
		return nil, err
	}
	notQueued := func(st iotgate.CommandStatus) error {
		return &iotgate.Error{Code: iotgate.EConflict, Detail: "command_not_queued", Message: fmt.Sprintf("command %s is %s; only queued commands can be canceled", c.ID, st)}
	}
	if c.Status != iotgate.CommandQueued {
		return nil, notQueued(c.Status)
	}
	now := s.now()
	c.Status, c.CompletedAt, c.Error = iotgate.CommandCanceled, &now, reasonCanceled
	ev := iotgate.CommandEvent{Status: iotgate.CommandCanceled, At: now, Reason: reasonCanceled}
	c.History = append(c.History, ev)
	if err := s.store.UpdateCommand(ctx, c, []iotgate.CommandStatus{iotgate.CommandQueued}, &ev); err != nil {
		if iotgate.ErrorCode(err) == iotgate.EConflict {
			cur, gerr := s.Command(ctx, id)
			if gerr == nil {
				return nil, notQueued(cur.Status)
			}
		}
		return nil, err
	}
	return c, nil
}

// DeviceOnline tells the service that a device gained an available
// resource, so its queued commands are delivered. It never blocks.
func (s *Commands) DeviceOnline(bareJID string) {
	s.mu.Lock()
	if !s.queuedFor[bareJID] {
		s.mu.Unlock()
		return
	}
	s.mu.Unlock()
	s.wakeDelivery(bareJID)
}

// wakeDelivery has Run deliver a device's queued commands.
func (s *Commands) wakeDelivery(bareJID string) {
	s.mu.Lock()
	s.wanted[bareJID] = true
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Stopped is closed when Run has returned.
func (s *Commands) Stopped() <-chan struct{} { return s.stopped }

// Drain is the first step of a graceful shutdown: it gives the commands
// in flight until ctx ends to be answered, and starts no delivery of
// queued ones (they stay queued for the next start). It returns when none
// is in flight or ctx ends; then cancel Run's context, which fails the
// rest with "restarted".
func (s *Commands) Drain(ctx context.Context) {
	s.mu.Lock()
	s.draining = true
	s.mu.Unlock()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		s.mu.Lock()
		n := len(s.inflight)
		s.mu.Unlock()
		if n == 0 {
			return
		}
		select {
		case <-ctx.Done():
			s.log.Warn("shutdown: commands still waiting for their device fail", "commands", n)
			return
		case <-tick.C:
		}
	}
}

// Run delivers queued commands, expires them, and retries deliveries that
// a missed presence change would strand, until ctx ends. Then it stops
// every execution: commands still waiting for an answer fail with reason
// "iotgate shut down before the device answered".
func (s *Commands) Run(ctx context.Context) {
	defer close(s.stopped)
	sweep := time.NewTicker(s.cfg.SweepInterval)
	defer sweep.Stop()
	redeliver := time.NewTicker(s.cfg.RedeliverInterval)
	defer redeliver.Stop()
	for {
		select {
		case <-ctx.Done():
			s.mu.Lock()
			s.closed = true
			s.mu.Unlock()
			s.cancel()
			s.wg.Wait()
			return
		case <-s.wake:
			s.mu.Lock()
			for j := range s.wanted {
				if s.delivering[j] {
					s.again[j] = true
				} else if !s.closed && !s.draining {
					s.delivering[j] = true
					s.wg.Add(1)
					go s.deliver(j)
				}
			}
			clear(s.wanted)
			s.mu.Unlock()
		case <-sweep.C:
			s.expire()
		case <-redeliver.C:
			s.redeliver()
		}
	}
}

func (s *Commands) expire() {
	ctx, cancel := s.storeCtx()
	defer cancel()
	ids, err := s.store.ExpireCommands(ctx, s.now(), reasonExpired)
	if err != nil {
		s.log.Warn("expiring queued commands failed", "err", err)
		return
	}
	if len(ids) > 0 {
		s.log.Info("queued commands expired", "commands", len(ids))
	}
	for range ids {
		s.cfg.Observer.CommandFinished(iotgate.CommandExpired, "", 0)
	}
}

// observe reports a command that reached a terminal status, with how long
// it took from creation.
func (s *Commands) observe(c *iotgate.Command) {
	var d time.Duration
	if c.CompletedAt != nil {
		d = c.CompletedAt.Sub(c.CreatedAt)
	}
	s.cfg.Observer.CommandFinished(c.Status, c.ErrorCode, d)
}

func (s *Commands) redeliver() {
	ctx, cancel := s.storeCtx()
	defer cancel()
	jids, err := s.store.QueuedDeviceJIDs(ctx)
	if err != nil {
		s.log.Warn("listing devices with queued commands failed", "err", err)
		return
	}
	s.setQueued(jids)
	for _, j := range jids {
		if online, stale := s.presence.Online(j); online && !stale {
			s.DeviceOnline(j)
		}
	}
}

// deliver sends a device's queued commands, oldest first, one at a time,
// until none is left or the device is offline again.
func (s *Commands) deliver(bare string) {
	defer s.wg.Done()
	for {
		s.deliverQueue(bare)
		s.mu.Lock()
		if !s.again[bare] || s.ctx.Err() != nil {
			delete(s.delivering, bare)
			delete(s.again, bare)
			s.mu.Unlock()
			return
		}
		delete(s.again, bare)
		s.mu.Unlock()
	}
}

const deliverBatch = 100

func (s *Commands) deliverQueue(bare string) {
	skipped := map[string]bool{}
	for s.ctx.Err() == nil {
		ctx, cancel := s.storeCtx()
		cmds, err := s.store.QueuedCommands(ctx, bare, deliverBatch+len(skipped))
		cancel()
		if err != nil {
			s.log.Warn("reading queued commands failed", "device", bare, "err", err)
			return
		}
		// Whatever happens next, the device's next online event must
		// wake delivery again, unless nothing is queued.
		s.markQueued(bare, len(cmds) > 0)
		if len(cmds) == 0 {
			return
		}
		progress := false
		for _, c := range cmds {
			if skipped[c.ID] {
				continue
			}
			if c.ExpiresAt != nil && !s.now().Before(*c.ExpiresAt) {
				skipped[c.ID] = true // the sweeper marks it
				continue
			}
			target, err := fullJID(bare, c.Resource)
			if err != nil {
				skipped[c.ID] = true
				continue
			}
			to, stale := s.pick(bare, target)
			if stale {
				return
			}
			if to == "" {
				if target == "" {
					return // the device is offline again
				}
				skipped[c.ID] = true // waits for its resource
				continue
			}
			done, ok := s.deliverOne(c, to)
			if !ok {
				return
			}
			progress = true
			<-done
			if cur, err := s.Command(s.ctx, c.ID); err == nil && (cur.Status == iotgate.CommandQueued || cur.ErrorCode == iotgate.CmdErrXMPPUnavailable) {
				return // bounced, or the stream is down: wait for the next online
			}
		}
		if !progress || len(cmds) < deliverBatch+len(skipped) {
			return
		}
	}
}

// deliverOne moves a queued command to sent and starts it. ok is false
// when delivery should stop (shutting down, store failing).
func (s *Commands) deliverOne(c *iotgate.Command, to string) (done <-chan struct{}, ok bool) {
	release := s.acquire(s.ctx)
	if release == nil {
		return nil, false
	}
	dev, err := s.devs.Device(s.ctx, c.DeviceJID)
	var schema iotgate.PayloadSchema
	if err == nil {
		schema, _, err = s.schemas.Compiled(s.ctx, dev.Schema, dev.SchemaVersion)
	}
	if err != nil {
		release()
		if iotgate.ErrorCode(err) == iotgate.ENotFound {
			return closedChan, true // device deleted: its commands go with it
		}
		s.log.Warn("queued command not delivered", "command", c.ID, "err", err)
		return nil, false
	}
	now := s.now()
	s.markSent(c, to, now)
	err = s.updates.do(iotgate.CommandUpdate{Command: c, From: []iotgate.CommandStatus{iotgate.CommandQueued}, Event: &c.History[len(c.History)-1]})
	if err != nil {
		release()
		if iotgate.ErrorCode(err) == iotgate.EConflict || iotgate.ErrorCode(err) == iotgate.ENotFound {
			return closedChan, true // canceled or expired meanwhile
		}
		s.log.Warn("queued command not delivered", "command", c.ID, "err", err)
		return nil, false
	}
	_, settled := s.start(c, schema, release)
	return settled, true
}

var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()
