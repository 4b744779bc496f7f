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
		st, err := s.stateOf(ctx, d)
		if err != nil {
			return nil, nil, err
		}
		states = append(states, st)
	}
	return states, missing, nil
}
