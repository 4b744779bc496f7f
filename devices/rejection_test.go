package devices

import (
	"context"
	"strings"
	"testing"

	"github.com/iotgate/iotgate"
)

// knownStore knows one device, known@example.com.
type knownStore struct{ iotgate.DeviceStore }

func (knownStore) Device(_ context.Context, jid string) (*iotgate.Device, error) {
	if jid != "known@example.com" {
		return nil, iotgate.Errorf(iotgate.ENotFound, "no device %s", jid)
	}
	return &iotgate.Device{ID: 7, JID: jid, Schema: "s", SchemaVersion: 1}, nil
}

func TestRecordRejection(t *testing.T) {
	reason := iotgate.Errorf(iotgate.EInvalid, "stanza too large: the limit is 10 bytes")
	tests := []struct {
		name     string
		from     string
		wantCode string // "" for recorded
	}{
		{"OK", "known@example.com/r", ""},
		{"ErrUnknownDevice", "stranger@example.com/r", iotgate.ENotFound},
		{"ErrBadJID", "@@", iotgate.EInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := NewService(knownStore{}, anySchema{}, ServiceConfig{RejectionPayloadBytes: 16})
			err := s.RecordRejection(context.Background(), tt.from, "iq", []byte(`<iq id="1" from="known@example.com/r"/>`), reason)
			if got := iotgate.ErrorCode(err); err != nil && got != tt.wantCode || err == nil && tt.wantCode != "" {
				t.Fatalf("err = %v, want code %q", err, tt.wantCode)
			}
			if tt.wantCode != "" {
				if len(s.rejections) != 0 {
					t.Error("a rejection was queued")
				}
				return
			}
			r := <-s.rejections
			if r.DeviceID != 7 || r.Via != "iq" || !strings.Contains(r.Reason, "the limit is 10 bytes") || len(r.Payload) != 16 {
				t.Errorf("rejection = %+v", r)
			}
		})
	}
}
