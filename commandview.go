package iotgate

import (
	"encoding/json"
	"time"
)

// CommandView is a command as the API shows it (GET /v1/commands/{id})
// and as command events carry it.
type CommandView struct {
	// ID is random; GET /v1/commands/{id} returns the command.
	ID string `json:"id" example:"MZXW6YTBOI2GK3TUMVZXIZLSEB2GK"`
	// Device is the device's bare JID.
	Device  string `json:"device" example:"thermo1@example.com"`
	Type    string `json:"type" enums:"get,set" example:"set"`
	Payload string `json:"payload" example:"<set xmlns='urn:example:thermostat'><target>21.5</target></set>"`
	// Resource is the resource asked for, if any.
	Resource string `json:"resource,omitempty" example:"kitchen"`
	// Target is the full JID the IQ was (last) sent to.
	Target string `json:"target,omitempty" example:"thermo1@example.com/kitchen"`
	Mode   string `json:"mode" enums:"sync,async,queue" example:"sync"`
	// Status: pending, then queued (mode queue, device offline) or sent;
	// finally succeeded, failed, timed_out, expired (queued too long) or
	// canceled.
	Status    string `json:"status" enums:"pending,queued,sent,succeeded,failed,timed_out,expired,canceled" example:"succeeded"`
	TimeoutMS int64  `json:"timeout_ms" example:"10000"`
	// ExpiresAt is when a queued command gives up (mode queue only).
	ExpiresAt   *time.Time `json:"expires_at" format:"date-time" extensions:"x-nullable" example:"2026-01-02T16:04:05Z"`
	CreatedAt   time.Time  `json:"created_at" format:"date-time" example:"2026-01-02T15:04:05.000Z"`
	SentAt      *time.Time `json:"sent_at" format:"date-time" extensions:"x-nullable" example:"2026-01-02T15:04:05.001Z"`
	CompletedAt *time.Time `json:"completed_at" format:"date-time" extensions:"x-nullable" example:"2026-01-02T15:04:05.020Z"`
	// AnsweredAt is when the device's answer arrived, even after the
	// timeout.
	AnsweredAt *time.Time `json:"answered_at" format:"date-time" extensions:"x-nullable" example:"2026-01-02T15:04:05.020Z"`
	// Response is the device's result; null unless it answered with one.
	Response *CommandResponseView `json:"response" extensions:"x-nullable"`
	// XMPPError is the IQ error the device (or, when it is offline, its
	// server) answered with; null otherwise.
	XMPPError *XMPPError `json:"xmpp_error" extensions:"x-nullable"`
	// ErrorCode says why the command did not succeed.
	ErrorCode string `json:"error_code,omitempty" enums:"device_offline,xmpp_error,xmpp_unavailable,timeout,too_many_requests,restarted,internal" example:"xmpp_error"`
	// Error says it in words.
	Error string `json:"error,omitempty" example:"the device answered with an error: not-acceptable: target out of range"`
	// LateAnswer is true when the answer (response or xmpp_error) arrived
	// after the command timed out; the status stays timed_out.
	LateAnswer bool `json:"late_answer" example:"false"`
	// History lists every status the command went through, oldest first.
	History []CommandEventView `json:"history"`
	// IdempotencyKey is the request's Idempotency-Key, if any.
	IdempotencyKey string `json:"idempotency_key,omitempty" example:"b7c1a0e2-set-21.5"`
	// SentBy is the name of the API token that sent the command
	// ("bootstrap" for IOTGATE_ADMIN_TOKEN); absent for commands from
	// before tokens.
	SentBy string `json:"sent_by,omitempty" example:"ops-berlin"`
	// TokenID is the ID of that token.
	TokenID string `json:"token_id,omitempty" example:"tok_q3bx7k2mzv4wd9hc"`
}

// CommandResponseView is a device's IQ result as CommandView shows it.
type CommandResponseView struct {
	// XML is the result's child element as the device sent it; "" for an
	// empty result.
	XML string `json:"xml" example:"<state xmlns='urn:example:thermostat'><temperature>19.75</temperature><target>21.5</target><mode>heat</mode><heating>true</heating></state>"`
	// Data is XML rendered as JSON like readings are, when the element is
	// in the schema's namespace and valid against it; null otherwise.
	Data json.RawMessage `json:"data" swaggertype:"object" extensions:"x-nullable"`
	// Invalid says why Data is null although the element is in the
	// schema's namespace.
	Invalid string `json:"invalid,omitempty" example:"document does not match its schema; line 1: /state/mode: 'warm' is not a valid value"`
}

// CommandEventView is one status change of a command as CommandView
// shows it.
type CommandEventView struct {
	Status string    `json:"status" enums:"pending,queued,sent,succeeded,failed,timed_out,expired,canceled" example:"sent"`
	At     time.Time `json:"at" format:"date-time" example:"2026-01-02T15:04:05.001Z"`
	Reason string    `json:"reason,omitempty" example:"to thermo1@example.com/kitchen"`
}

// View returns c as the API shows it.
func (c *Command) View() CommandView {
	out := CommandView{
		ID: c.ID, Device: c.DeviceJID, Type: c.Type, Payload: c.Payload, Resource: c.Resource, Target: c.Target,
		Mode: string(c.Mode), Status: string(c.Status), TimeoutMS: c.Timeout.Milliseconds(),
		ExpiresAt: c.ExpiresAt, CreatedAt: c.CreatedAt, SentAt: c.SentAt, CompletedAt: c.CompletedAt, AnsweredAt: c.AnsweredAt,
		ErrorCode: c.ErrorCode, Error: c.Error, LateAnswer: c.LateAnswer, IdempotencyKey: c.IdempotencyKey,
		SentBy: c.SentBy, TokenID: c.TokenID,
		History: make([]CommandEventView, 0, len(c.History)),
	}
	if r := c.Response; r != nil {
		out.Response = &CommandResponseView{XML: r.XML, Data: r.Data, Invalid: r.Invalid}
	}
	if e := c.XMPPError; e != nil {
		x := *e
		out.XMPPError = &x
	}
	for _, e := range c.History {
		out.History = append(out.History, CommandEventView{Status: string(e.Status), At: e.At, Reason: e.Reason})
	}
	return out
}
