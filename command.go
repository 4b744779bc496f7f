package iotgate

import (
	"context"
	"encoding/json"
	"time"
)

// CommandStatus is where a command is in its life. A command starts
// pending or queued and ends in one of the terminal statuses:
//
//	pending ─► sent ─► succeeded | failed | timed_out
//	pending ─► failed                      (offline, stream down: never sent)
//	pending ─► queued ─► sent ─► ...       (mode queue)
//	           queued ─► expired | canceled
//	           sent ─► queued               (mode queue: the server bounced the IQ)
//
// A timed_out command stays timed_out when the device answers late; the
// answer is recorded on it (LateAnswer).
type CommandStatus string

// Command statuses.
const (
	CommandPending   CommandStatus = "pending"
	CommandQueued    CommandStatus = "queued"
	CommandSent      CommandStatus = "sent"
	CommandSucceeded CommandStatus = "succeeded"
	CommandFailed    CommandStatus = "failed"
	CommandTimedOut  CommandStatus = "timed_out"
	CommandExpired   CommandStatus = "expired"
	CommandCanceled  CommandStatus = "canceled"
)

// Terminal reports whether s is final: nothing changes the status after it.
func (s CommandStatus) Terminal() bool {
	switch s {
	case CommandSucceeded, CommandFailed, CommandTimedOut, CommandExpired, CommandCanceled:
		return true
	}
	return false
}

// CommandMode says how a command is delivered and answered.
type CommandMode string

// Command modes.
const (
	// CommandSync waits for the device's answer and returns it.
	CommandSync CommandMode = "sync"
	// CommandAsync sends at once and returns before the answer.
	CommandAsync CommandMode = "async"
	// CommandQueue keeps the command while the device is offline and
	// delivers it when the device comes online, unless it expires first.
	CommandQueue CommandMode = "queue"
)

// Limits and defaults of commands.
const (
	DefaultCommandTimeout = 10 * time.Second
	MaxCommandTimeout     = 300 * time.Second
	DefaultCommandExpiry  = time.Hour
	MaxCommandExpiry      = 7 * 24 * time.Hour
	// IdempotencyWindow is how long an Idempotency-Key stands for the
	// command it first created. A key is scoped to the token and the
	// device: the same key from another token, or to another device, is
	// another key.
	IdempotencyWindow = 24 * time.Hour
	// MaxIdempotencyKeyLen bounds an Idempotency-Key.
	MaxIdempotencyKeyLen = 255
	// MaxResourceLen bounds a resourcepart (RFC 7622).
	MaxResourceLen = 1023
)

// Details of the command quotas (HTTP 429, with Retry-After).
const (
	DetailTokenCommandsInFlight  = "token_commands_in_flight"  // the token has its quota of commands in flight
	DetailDeviceCommandsInFlight = "device_commands_in_flight" // the device has its quota of commands in flight
	DetailDeviceQueueFull        = "device_queue_full"         // the device has its quota of queued commands
)

// Command is a request to a device, sent as an IQ, with everything that
// happened to it.
type Command struct {
	// ID is random and unguessable.
	ID        string
	DeviceID  int64
	DeviceJID string
	// Type is the IQ type: "get" or "set".
	Type string
	// Payload is the IQ's child element, valid against the device's
	// schema.
	Payload string
	// Resource is the resource the client asked for; "" means the
	// device's highest-priority available one.
	Resource string
	// Target is the full JID the IQ was (last) sent to.
	Target  string
	Mode    CommandMode
	Status  CommandStatus
	Timeout time.Duration
	// ExpiresAt bounds how long a queued command waits (mode queue only).
	ExpiresAt   *time.Time
	CreatedAt   time.Time
	SentAt      *time.Time
	CompletedAt *time.Time
	// AnsweredAt is when the device's answer arrived, even late.
	AnsweredAt *time.Time
	// Response is the device's result, if it answered with one.
	Response *CommandResponse
	// XMPPError is the device's (or its server's) IQ error, if any.
	XMPPError *XMPPError
	// ErrorCode says why the command did not succeed (CmdErr...), and
	// Error says it in words.
	ErrorCode string
	Error     string
	// LateAnswer is true when the answer arrived after the command timed
	// out: the status stays timed_out, the answer is recorded anyway.
	LateAnswer bool
	History    []CommandEvent
	// IdempotencyKey and RequestHash let a retried request find the
	// command it created (within IdempotencyWindow).
	IdempotencyKey string
	RequestHash    string
	// TokenID and SentBy identify the API token that sent the command (its
	// ID and its name then); empty for commands from before tokens.
	TokenID string
	SentBy  string
	// IQID is the id of the IQ the command was (last) sent in: random and
	// unguessable, so that an instance that did not send it can match
	// the device's answer to it (with Target).
	IQID string
	// Instance is the iotgate instance that runs the command (creates,
	// sends and waits for it); "" for commands from before instances.
	Instance string
}

// CommandResponse is the payload of a device's IQ result.
type CommandResponse struct {
	// XML is the result's child element as the device sent it; "" when
	// the result was empty.
	XML string
	// Data is XML rendered as JSON like readings are, when the element is
	// in the schema's namespace and valid; nil otherwise.
	Data json.RawMessage
	// Invalid says why the element was not rendered: it is in the
	// schema's namespace but not valid against it.
	Invalid string
}

// XMPPError is a stanza error (RFC 6120 §8.3) an IQ was answered with.
// The HTTP API shows it as is (api.Command's xmpp_error), hence its JSON
// and OpenAPI tags.
type XMPPError struct {
	Type      string `json:"type" enums:"auth,cancel,continue,modify,wait" example:"modify"`
	Condition string `json:"condition" example:"not-acceptable"`
	Text      string `json:"text,omitempty" example:"target out of range"`
}

// CommandEvent is one status change of a command.
type CommandEvent struct {
	Status CommandStatus
	At     time.Time
	Reason string
}

// Clone returns a deep copy of c.
func (c *Command) Clone() *Command {
	out := *c
	cp := func(t *time.Time) *time.Time {
		if t == nil {
			return nil
		}
		v := *t
		return &v
	}
	out.ExpiresAt, out.SentAt, out.CompletedAt, out.AnsweredAt = cp(c.ExpiresAt), cp(c.SentAt), cp(c.CompletedAt), cp(c.AnsweredAt)
	if c.Response != nil {
		r := *c.Response
		out.Response = &r
	}
	if c.XMPPError != nil {
		e := *c.XMPPError
		out.XMPPError = &e
	}
	out.History = append([]CommandEvent(nil), c.History...)
	return &out
}

// Err returns the outcome of a finished command as an *Error a transport
// maps to its own terms, or nil when it succeeded or is still under way.
// Codes: conflict (detail device_offline), bad_gateway (detail xmpp_error:
// the device answered with an error), unavailable (detail
// xmpp_unavailable), timeout, too_many_requests, internal; timeout (detail
// command_expired) and conflict (detail command_canceled) for queued
// commands that were never delivered.
func (c *Command) Err() error {
	switch c.Status {
	case CommandTimedOut:
		return &Error{Code: ETimeout, Message: c.Error}
	case CommandExpired:
		return &Error{Code: ETimeout, Detail: DetailCommandExpired, Message: c.Error}
	case CommandCanceled:
		return &Error{Code: EConflict, Detail: DetailCommandCanceled, Message: c.Error}
	case CommandFailed:
	default:
		return nil
	}
	switch c.ErrorCode {
	case DetailDeviceOffline:
		return &Error{Code: EConflict, Detail: DetailDeviceOffline, Message: c.Error}
	case DetailXMPPError:
		return &Error{Code: EBadGateway, Detail: DetailXMPPError, Message: c.Error}
	case DetailXMPPUnavailable:
		return &Error{Code: EUnavailable, Detail: DetailXMPPUnavailable, Message: c.Error}
	case ETimeout:
		return &Error{Code: ETimeout, Message: c.Error}
	case ETooMany:
		return &Error{Code: ETooMany, Message: c.Error}
	case DetailRestarted:
		return &Error{Code: EUnavailable, Message: c.Error}
	}
	// Transports show internal errors as "internal error"; the command
	// itself (GET) keeps the reason.
	return &Error{Code: EInternal, Message: c.Error}
}

// CommandRequest is what a client asks for.
type CommandRequest struct {
	DeviceJID string
	// Type is "get" or "set"; "" means set.
	Type    string
	Payload string
	// Data is the command as JSON, the alternative to Payload: the XML is
	// built from it by the device's schema (see CommandBuilder), as the
	// global element Element ("" picks the one the data fits).
	Data    string
	Element string
	// Resource targets one instance of the device; "" means the
	// highest-priority available one.
	Resource string
	// Mode "" means sync.
	Mode CommandMode
	// Timeout 0 means DefaultCommandTimeout; at most MaxCommandTimeout.
	Timeout time.Duration
	// ExpiresIn (mode queue only) 0 means DefaultCommandExpiry; at most
	// MaxCommandExpiry.
	ExpiresIn      time.Duration
	IdempotencyKey string
	// TokenID and SentBy identify who sends the command (the API token's
	// ID and name); they are recorded with it.
	TokenID, SentBy string
}

// Normalize applies defaults and checks ranges. Errors: invalid.
func (r *CommandRequest) Normalize() error {
	switch r.Type {
	case "":
		r.Type = "set"
	case "get", "set":
	default:
		return Errorf(EInvalid, "type must be get or set, not %q", r.Type)
	}
	switch r.Mode {
	case "":
		r.Mode = CommandSync
	case CommandSync, CommandAsync, CommandQueue:
	default:
		return Errorf(EInvalid, "mode must be sync, async or queue, not %q", r.Mode)
	}
	switch {
	case r.Timeout == 0:
		r.Timeout = DefaultCommandTimeout
	case r.Timeout < time.Millisecond || r.Timeout > MaxCommandTimeout:
		return Errorf(EInvalid, "timeout must be between 1 ms and %s", MaxCommandTimeout)
	}
	switch {
	case r.Mode != CommandQueue && r.ExpiresIn != 0:
		return Errorf(EInvalid, "expires_in_ms applies to mode queue only")
	case r.Mode != CommandQueue:
	case r.ExpiresIn == 0:
		r.ExpiresIn = DefaultCommandExpiry
	case r.ExpiresIn < time.Millisecond || r.ExpiresIn > MaxCommandExpiry:
		return Errorf(EInvalid, "expires_in must be between 1 ms and %s", MaxCommandExpiry)
	}
	if len(r.IdempotencyKey) > MaxIdempotencyKeyLen {
		return Errorf(EInvalid, "Idempotency-Key is longer than %d bytes", MaxIdempotencyKeyLen)
	}
	if len(r.Resource) > MaxResourceLen {
		return Errorf(EInvalid, "resource is longer than %d bytes", MaxResourceLen)
	}
	switch {
	case r.Payload == "" && r.Data == "":
		return Errorf(EInvalid, "payload (XML) or data (JSON) is required")
	case r.Payload != "" && r.Data != "":
		return Errorf(EInvalid, "payload and data exclude each other: send one")
	case r.Element != "" && r.Data == "":
		return Errorf(EInvalid, "element applies to data only")
	}
	return nil
}

// CommandFilter selects a page of a device's commands, newest first.
type CommandFilter struct {
	Limit  int
	Cursor string
	// MaxBytes is the page's byte budget (see PageBytes; 0: the default).
	MaxBytes int64
}

// CommandPage is one page of commands.
type CommandPage struct {
	Items      []*Command
	NextCursor string
}

// CommandReply is a device's answer to a command IQ.
type CommandReply struct {
	// Type is "result" or "error".
	Type string
	// Payload is the result's child element (nil if none) and Namespace
	// its namespace.
	Payload   []byte
	Namespace string
	// Error is set for an error reply.
	Error *XMPPError
}

// CommandStore is the persistence of commands. Implementations return
// *Error values.
type CommandStore interface {
	// CreateCommand inserts c with its history. An idempotency key held
	// in c's scope (its TokenID and device) by a command created before
	// reuseBefore is released first. A queued c is refused when its
	// device already has maxQueued queued commands (0: no bound), checked
	// atomically with the insert. Errors: conflict (detail
	// idempotency_key_taken) when the key is held by a newer command;
	// too_many_requests (detail device_queue_full); not_found when the
	// device is gone.
	CreateCommand(ctx context.Context, c *Command, reuseBefore time.Time, maxQueued int) error
	// CommandByIdempotencyKey returns the command the token tokenID (""
	// for none) sent to device deviceID with key, created at or after
	// since: keys are scoped to (token, device), so no token ever finds,
	// or blocks, another's command by its key. Errors: not_found.
	CommandByIdempotencyKey(ctx context.Context, tokenID string, deviceID int64, key string, since time.Time) (*Command, error)
	// Command returns one command with its history. Errors: not_found.
	Command(ctx context.Context, id string) (*Command, error)
	// Commands returns a page of a device's commands, newest first.
	// Errors: invalid (cursor).
	Commands(ctx context.Context, deviceJID string, f CommandFilter) (*CommandPage, error)
	// UpdateCommand writes c's status, timestamps and outcome, and
	// appends ev to its history if not nil, provided the stored status
	// is one of from. Errors: conflict when it is not, not_found.
	UpdateCommand(ctx context.Context, c *Command, from []CommandStatus, ev *CommandEvent) error
	// CreateCommands inserts commands that have no idempotency key, with
	// their history, in one transaction, and returns one error per
	// command, as CreateCommand would (nil: stored).
	CreateCommands(ctx context.Context, cs []*Command) []error
	// UpdateCommands applies updates in one transaction and returns one
	// error per update, as UpdateCommand would; a conflict of one does
	// not undo the others. A command appears at most once.
	UpdateCommands(ctx context.Context, us []CommandUpdate) []error
	// QueuedCommands returns up to limit queued commands of a device,
	// oldest first.
	QueuedCommands(ctx context.Context, deviceJID string, limit int) ([]*Command, error)
	// QueuedDeviceJIDs returns the devices that have queued commands.
	QueuedDeviceJIDs(ctx context.Context) ([]string, error)
	// ExpireCommands moves queued commands whose expires_at is not after
	// now to expired, with reason, and returns their IDs.
	ExpireCommands(ctx context.Context, now time.Time, reason string) ([]string, error)
	// FailUnfinishedCommands moves every pending or sent command of
	// instance (and of no instance: from before instances) to failed
	// with the error code and reason given, and returns how many.
	FailUnfinishedCommands(ctx context.Context, instance string, now time.Time, code, reason string) (int, error)
	// CommandByIQ returns the command last sent in the IQ with this id.
	// Errors: not_found.
	CommandByIQ(ctx context.Context, iqID string) (*Command, error)
}

// CommandUpdate is one status change for CommandStore.UpdateCommands:
// the command as it now is, the statuses it may be stored in, and the
// history entry to append (nil: none).
type CommandUpdate struct {
	Command *Command
	From    []CommandStatus
	Event   *CommandEvent
	// Notify tells the other instances that the command changed (an
	// answer to a command one of them runs).
	Notify bool
}
