package devices

import (
	"context"

	"github.com/iotgate/iotgate"
)

// MaxStates bounds the devices of one States call.
const MaxStates = 500

// States returns the current state of many devices at once, in the order
// of jids (duplicates once), served from the device and reading caches
// where they hold them (a miss costs a store lookup, as State's). A JID
// that is not registered, or whose device show refuses (a token's
// selector: the caller's), is listed in missing, never told apart, so
// that a caller can't learn of devices it may not see. Errors: invalid
// (more than MaxStates JIDs, or a JID that is not a valid bare JID),
// unavailable.
func (s *Service) States(ctx context.Context, jids []string, show func(*iotgate.Device) bool) (states []*iotgate.State, missing []string, err error) {
	if len(jids) > MaxStates {
		return nil, nil, iotgate.Errorf(iotgate.EInvalid, "at most %d JIDs per call", MaxStates)
	}
	seen := make(map[string]bool, len(jids))
	var found []*iotgate.Device
	for _, jid := range jids {
		j, err := iotgate.NormalizeJID(jid)
		if err != nil {
			return nil, nil, err
		}
		if seen[j] {
			continue
		}
		seen[j] = true
		d, err := s.lookup(ctx, j)
		if err != nil {
			return nil, nil, err
		}
		if d == nil || show != nil && !show(d) {
			missing = append(missing, j)
			continue
		}
		found = append(found, d)
	}
	states, err = s.StatesOf(ctx, found)
	return states, missing, err
}

// StatesOf returns the current state of each of devs, in order: device
// records the caller holds (a page of Devices, already limited to what
// it may show), with their presence and latest reading from the caches
// (a reading not cached costs a store lookup, then is cached). At most
// MaxStates devices. Errors: invalid (too many), unavailable.
func (s *Service) StatesOf(ctx context.Context, devs []*iotgate.Device) ([]*iotgate.State, error) {
	if len(devs) > MaxStates {
		return nil, iotgate.Errorf(iotgate.EInvalid, "at most %d devices' states per call", MaxStates)
	}
	states := make([]*iotgate.State, 0, len(devs))
	for _, d := range devs {
		st, err := s.stateOf(ctx, d)
		if err != nil {
			return nil, err
		}
		states = append(states, st)
	}
	return states, nil
}
