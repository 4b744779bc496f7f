package devices

import (
	"context"

	"github.com/iotgate/iotgate"
)

// UpdatePresence applies a presence stanza from a device. Errors: not_found
// (detail device_not_registered), unavailable, too_many_requests (one
// resource more than PresenceConfig.MaxResources).
func (s *Service) UpdatePresence(ctx context.Context, u iotgate.PresenceUpdate) error {
	d, err := s.registeredSender(ctx, u.From)
	if err != nil {
		return err
	}
	return s.cfg.Presence.Update(d, u)
}

// Registered reports whether a (bare or full) JID is a registered device.
// Errors: invalid, unavailable.
func (s *Service) Registered(ctx context.Context, jid string) (bool, error) {
	bare, err := iotgate.BareJID(jid)
	if err != nil {
		return false, err
	}
	d, err := s.lookup(ctx, bare)
	if err != nil {
		return false, &iotgate.Error{Code: iotgate.EUnavailable, Message: "device registry unavailable", Err: err}
	}
	return d != nil, nil
}

// DeviceJIDs returns up to limit registered JIDs after after, in order,
// for presence probes.
func (s *Service) DeviceJIDs(ctx context.Context, after string, limit int) ([]string, error) {
	return s.store.DeviceJIDs(ctx, after, limit)
}

// PresenceStale marks presence unknown (the stream is down).
func (s *Service) PresenceStale() { s.cfg.Presence.MarkStale() }

// PresenceFresh marks presence known again (the stream is up).
func (s *Service) PresenceFresh() { s.cfg.Presence.MarkFresh() }

// PresenceProbing says the probes of the round PresenceFresh started are
// going out; PresenceProbed that they went (see Presence.ProbesSending).
func (s *Service) PresenceProbing() { s.cfg.Presence.ProbesSending() }

// PresenceProbed: see PresenceProbing.
func (s *Service) PresenceProbed() { s.cfg.Presence.ProbesSent() }
