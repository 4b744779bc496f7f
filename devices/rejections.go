package devices

import (
	"context"
	"time"

	"github.com/iotgate/iotgate"
)

// RecordRejection records, for the operator, a stanza from the device at
// from that was refused before it could be read as a reading (one over the
// stanza size limit): payload is what is left of it, via "message" or "iq".
// It does not wait for the database. Errors: invalid for a bad JID,
// not_found (device_not_registered) for a JID that is not a device,
// unavailable when the registry can't be read.
func (s *Service) RecordRejection(ctx context.Context, from, via string, payload []byte, reason error) error {
	dev, err := s.registeredSender(ctx, from)
	if err != nil {
		return err
	}
	s.reject(dev, iotgate.IncomingReading{From: from, Via: via}, payload, reason, s.cfg.Clock().UTC())
	return nil
}

// The device times a reading may carry: the years RFC 3339 writes with
// four digits, as UTC. Go parses a stamp of year 0 (or one whose offset
// moves it to year 0 or 10000), which PostgreSQL refuses; such a reading
// would fail the batch it is committed with.
var (
	minDeviceTime = time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC)
	maxDeviceTime = time.Date(9999, 12, 31, 23, 59, 59, 999999000, time.UTC)
)

// checkDeviceTime refuses a device time (a delay stamp) out of range
// (nil: none). A stamp is the device's claim about its reading: storing
// the reading without it would drop what the device said, so the device
// is told, and can fix its clock. Errors: invalid.
func checkDeviceTime(t *time.Time) error {
	if t == nil {
		return nil
	}
	if u := t.UTC().Round(time.Microsecond); u.Before(minDeviceTime) || u.After(maxDeviceTime) {
		return iotgate.Errorf(iotgate.EInvalid, "delay stamp %s is out of range: a reading's time must be from 0001-01-01 to 9999-12-31 UTC",
			t.UTC().Format(time.RFC3339Nano))
	}
	return nil
}

func (s *Service) reject(dev *iotgate.Device, in iotgate.IncomingReading, payload []byte, reason error, now time.Time) {
	s.count(func(st *IngestStats) { st.Rejected++ })
	s.cfg.Observer.ReadingRefused(RefusedInvalid)
	if payload == nil && len(in.Payloads) > 0 {
		payload = in.Payloads[0].XML
	}
	if len(payload) > s.cfg.RejectionPayloadBytes {
		payload = payload[:s.cfg.RejectionPayloadBytes]
	}
	s.record(&iotgate.Rejection{DeviceID: dev.ID, DeviceJID: dev.JID, ReceivedAt: now, Via: in.Via, Reason: iotgate.ErrorMessage(reason), Payload: string(payload)})
}

// record queues a rejection for the store.
func (s *Service) record(rej *iotgate.Rejection) {
	select {
	case s.rejections <- rej:
	default:
		// A flood of bad payloads must not grow memory; the counter
		// still says how many were refused.
	}
}

// clip cuts a refused payload to what is kept of it.
func (s *Service) clip(payload string) string {
	if len(payload) > s.cfg.RejectionPayloadBytes {
		return payload[:s.cfg.RejectionPayloadBytes]
	}
	return payload
}

func (s *Service) runRejections(ctx context.Context) {
	writeBatches(ctx, s.rejections, 500, func(batch []*iotgate.Rejection) {
		if err := s.store.InsertRejections(context.WithoutCancel(ctx), batch, s.cfg.KeepRejections); err != nil {
			s.log.Error("store rejections failed", "rejections", len(batch), "err", err)
		}
	})
}
