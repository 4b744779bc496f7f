package devices

import (
	"context"
	"strings"

	"mellium.im/xmpp/jid"

	"github.com/iotgate/iotgate"
)

// Several instances: the answer to a command may reach an instance that
// did not send it (ejabberd spreads a domain's stanzas over every
// component connection). That instance records it in the store and
// notifies; the sending instance, told by Changed, hands the stored
// outcome to its waiting client.

// Bounds on the store lookups that stray answers cost: a device can send
// IQ results with made-up ids, and each one of our ids' shape costs a
// query. The component holds each device to a rate (ForwardStrayAnswers);
// here a bounded queue and a few workers bound the memory and the
// database connections they take, whatever the number of devices.
const (
	foreignQueue    = 4096
	foreignWorkers  = 8
	foreignAttempts = 3 // a status that changed under us is re-read
)

// foreignAnswer is an answer waiting for its lookup.
type foreignAnswer struct {
	from, iqID string
	rep        iotgate.CommandReply
}

// ForeignAnswer records the answer to a command this instance is not
// waiting for: an IQ result or error from the full JID from, with id iqID,
// that matched no IQ of this instance. It never blocks: the lookup runs
// in the background (once Run runs), and answers beyond the queue's bound
// are dropped (a command whose answer is lost times out as it would with
// one instance).
func (s *Commands) ForeignAnswer(from, iqID string, rep iotgate.CommandReply) {
	if !plausibleIQID(iqID) {
		return
	}
	select {
	case s.foreign <- foreignAnswer{from: from, iqID: iqID, rep: rep}:
	default:
		s.log.Warn("stray IQ answer dropped: too many waiting for their lookup", "from", from, "id", iqID)
	}
}

// recordForeigns records queued stray answers until ctx ends (Run starts
// foreignWorkers of them).
func (s *Commands) recordForeigns(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case a := <-s.foreign:
			s.recordForeign(a.from, a.iqID, a.rep)
		}
	}
}

// plausibleIQID reports whether id could be one markSent made
// (rand.Text: 26 characters of base32).
func plausibleIQID(id string) bool {
	if len(id) != 26 {
		return false
	}
	for _, r := range id {
		if !strings.ContainsRune("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", r) {
			return false
		}
	}
	return true
}

func (s *Commands) recordForeign(from, iqID string, rep iotgate.CommandReply) {
	ctx, cancel := s.storeCtx()
	defer cancel()
	for range foreignAttempts {
		c, err := s.store.CommandByIQ(ctx, iqID)
		if err != nil {
			if iotgate.ErrorCode(err) != iotgate.ENotFound {
				s.log.Warn("stray IQ answer not recorded", "from", from, "id", iqID, "err", err)
			}
			return
		}
		// Only the entity the IQ went to can answer it, as on the stream.
		if !sameJID(c.Target, from) {
			s.log.Debug("stray IQ answer from another entity than the command's target", "from", from, "command", c.ID)
			return
		}
		// A command of this instance that has just timed out (its IQ no
		// longer waits) may still be settling: the answer goes to its
		// execution, after the timeout's write, never around it.
		s.mu.Lock()
		e := s.inflight[c.ID]
		s.mu.Unlock()
		if e != nil {
			s.answered(e, rep, nil)
			return
		}
		var schema iotgate.PayloadSchema
		if dev, err := s.devs.Device(ctx, c.DeviceJID); err == nil {
			schema, _, _ = s.schemas.Compiled(ctx, dev.Schema, dev.SchemaVersion)
		}
		fromStatuses, ev, ok := s.applyAnswer(c, schema, rep, s.now())
		if !ok {
			return
		}
		err = s.write(iotgate.CommandUpdate{Command: c, From: fromStatuses, Event: ev, Notify: true})
		if iotgate.ErrorCode(err) == iotgate.EConflict {
			continue // its instance timed it out or failed it meanwhile
		}
		if err != nil {
			s.log.Warn("stray IQ answer not recorded", "command", c.ID, "err", err)
		} else {
			s.log.Debug("answer recorded for another instance's command", "command", c.ID, "instance", c.Instance)
		}
		return
	}
}

// sameJID compares two JIDs once normalized, as the stream matches the
// sender of a reply to its own IQs.
func sameJID(a, b string) bool {
	ja, erra := jid.Parse(a)
	jb, errb := jid.Parse(b)
	return erra == nil && errb == nil && ja.String() == jb.String()
}

// Changed tells the service that another instance changed command id: if
// this instance runs it and the store now has the device's answer, the
// stored outcome settles it (the waiting client gets it) and the wait
// for the IQ ends. id "" means any command may have changed
// (notifications were lost): every command in flight is re-read. It
// never blocks.
func (s *Commands) Changed(id string) {
	s.mu.Lock()
	var es []*execution
	if id == "" {
		for _, e := range s.inflight {
			es = append(es, e)
		}
	} else if e := s.inflight[id]; e != nil {
		es = append(es, e)
	}
	if len(es) == 0 || s.closed {
		s.mu.Unlock()
		return
	}
	s.wg.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.wg.Done()
		for _, e := range es {
			s.adopt(e)
		}
	}()
}

// adopt takes the stored command's answer when another instance recorded
// it. Only an answer is taken: the store may lag behind this instance's
// own writes (group commit), never ahead of them otherwise.
func (s *Commands) adopt(e *execution) {
	e.mu.Lock()
	id := e.cmd.ID
	e.mu.Unlock()
	ctx, cancel := context.WithTimeout(s.ctx, timeoutStore)
	defer cancel()
	cur, err := s.store.Command(ctx, id)
	if err != nil {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if cur.AnsweredAt == nil || e.cmd.AnsweredAt != nil {
		return
	}
	e.cmd = cur
	if cur.Status.Terminal() || cur.Status == iotgate.CommandQueued {
		e.settle()
	}
	if e.stop != nil {
		e.stop()
	}
}
