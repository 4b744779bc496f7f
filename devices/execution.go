package devices

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"time"

	"github.com/iotgate/iotgate"
)

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
	// A fresh unguessable IQ id per send: the answer may reach another
	// instance, which finds the command by it (and the sender).
	c.IQID, c.Instance = rand.Text(), s.cfg.Instance
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
		s.fail(c, s.now(), iotgate.DetailRestarted, reasonShutdown)
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
	// The wait ends at the timeout: the IQ's pending entry, the
	// execution's slot and this goroutine are freed then, not a grace
	// period later. An answer that comes after it reaches
	// ForeignAnswer as a stray reply, which finds the command by its IQ
	// id and records it as a late answer. What the send needs is read
	// once, not cloned with the whole command (a dozen allocations).
	e.mu.Lock()
	c := e.cmd
	id, target, iqType, iqID, payload := c.ID, c.Target, c.Type, c.IQID, c.Payload
	ctx, cancel := context.WithTimeout(s.ctx, max(c.Timeout-s.now().Sub(*c.SentAt), 0))
	e.stop = cancel
	e.mu.Unlock()
	defer func() {
		s.mu.Lock()
		if s.inflight[id] == e {
			delete(s.inflight, id)
		}
		s.mu.Unlock()
		e.mu.Lock()
		e.settle()
		e.mu.Unlock()
	}()
	defer cancel()
	rep, err := s.sender.SendCommand(ctx, target, iqType, iqID, []byte(payload))
	if err != nil && errors.Is(ctx.Err(), context.DeadlineExceeded) {
		s.timedOut(e)
		return
	}
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
	c.Status, c.ErrorCode, c.Error, c.CompletedAt = iotgate.CommandTimedOut, iotgate.ETimeout, reason, &now
	ev := iotgate.CommandEvent{Status: iotgate.CommandTimedOut, At: now, Reason: reason}
	c.History = append(c.History, ev)
	s.update(c, []iotgate.CommandStatus{iotgate.CommandSent}, &ev)
	e.settle()
}

// answered records the outcome of SendCommand.
func (s *Commands) answered(e *execution, rep iotgate.CommandReply, err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	c := e.cmd
	now := s.now()
	if err != nil {
		if c.Status != iotgate.CommandSent {
			return
		}
		from := []iotgate.CommandStatus{iotgate.CommandSent}
		code, reason, requeue := s.notSent(c, err)
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
	if from, ev, ok := s.applyAnswer(c, e.schema, rep, now); ok {
		s.update(c, from, ev)
	}
	e.settle()
}

// applyAnswer puts the device's answer on c and returns the statuses c
// may be stored from and its history entry (nil for a late answer, which
// changes no status). ok is false when c takes no answer (it is queued,
// or finished with an answer already).
func (s *Commands) applyAnswer(c *iotgate.Command, schema iotgate.PayloadSchema, rep iotgate.CommandReply, now time.Time) (from []iotgate.CommandStatus, ev *iotgate.CommandEvent, ok bool) {
	switch {
	case c.Status == iotgate.CommandTimedOut,
		// An answer to a command whose instance died before it came.
		c.Status == iotgate.CommandFailed && c.ErrorCode == iotgate.DetailRestarted && c.AnsweredAt == nil:
		s.recordAnswer(c, schema, rep, now)
		c.LateAnswer = true
		return []iotgate.CommandStatus{c.Status}, nil, true
	case c.Status != iotgate.CommandSent:
		return nil, nil, false
	}
	s.recordAnswer(c, schema, rep, now)
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
		s.fail(c, now, iotgate.DetailDeviceOffline, fmt.Sprintf("the device is offline: the server answered %s", rep.Error.Condition))
	default:
		msg := "the device answered with an error: " + rep.Error.Condition
		if rep.Error.Text != "" {
			msg += ": " + rep.Error.Text
		}
		s.fail(c, now, iotgate.DetailXMPPError, msg)
	}
	return []iotgate.CommandStatus{iotgate.CommandSent}, &c.History[len(c.History)-1], true
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
	if err := s.write(iotgate.CommandUpdate{Command: c, From: from, Event: ev}); err != nil {
		s.log.Error("command state not stored", "command", c.ID, "status", c.Status, "err", err)
	}
}

// write is update's write, which returns the store's error.
func (s *Commands) write(u iotgate.CommandUpdate) error {
	c := u.Command
	if u.Event != nil && c.Status.Terminal() {
		s.observe(c)
	}
	err := s.updates.do(u)
	if iotgate.ErrorCode(err) == iotgate.EInvalid && c.Response != nil && len(c.Response.Data) > 0 {
		c.Response.Data = nil
		c.Response.Invalid = "the database refused the answer's JSON rendering: " + iotgate.ErrorMessage(err)
		err = s.updates.do(u)
	}
	return err
}
