package devices

import (
	"context"
	"strings"
	"testing"

	"github.com/iotgate/iotgate"
	"github.com/iotgate/iotgate/internal/memstore"
)

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
			store := memstore.NewDeviceStore()
			known := &iotgate.Device{JID: "known@example.com", Schema: "s", SchemaVersion: 1}
			if err := store.CreateDevice(context.Background(), known); err != nil {
				t.Fatal(err)
			}
			s := NewService(store, anySchema{}, ServiceConfig{RejectionPayloadBytes: 16})
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
			if r.DeviceID != known.ID || r.Via != "iq" || !strings.Contains(r.Reason, "the limit is 10 bytes") || len(r.Payload) != 16 {
				t.Errorf("rejection = %+v", r)
			}
		})
	}
}
