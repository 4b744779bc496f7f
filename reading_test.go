package iotgate

import (
	"testing"
	"time"
)

func TestReadingKey(t *testing.T) {
	r := &Reading{DeviceJID: "a@example.com", DeviceID: 7, ID: 123456789012, ReceivedAt: time.Date(2026, 12, 6, 2, 40, 1, 123456000, time.UTC)}
	got, ok := ParseReadingKey(ReadingKey(r))
	if !ok || got.DeviceJID != r.DeviceJID || got.DeviceID != r.DeviceID || got.ID != r.ID || !got.ReceivedAt.Equal(r.ReceivedAt) {
		t.Errorf("round trip: %+v, %v; want %+v", got, ok, r)
	}
	for _, bad := range []string{"", "a@example.com", "a@example.com 1 2", " 1 2 3", "a@example.com x 2 3", "a@example.com 1 2 3 4"} {
		if _, ok := ParseReadingKey(bad); ok {
			t.Errorf("ParseReadingKey(%q) ok", bad)
		}
	}
}
