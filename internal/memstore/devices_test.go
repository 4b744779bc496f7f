package memstore

import (
	"context"
	"testing"
	"time"

	"github.com/iotgate/iotgate"
)

func TestDeviceStore(t *testing.T) {
	ctx := context.Background()
	var m DeviceStore // the zero value is ready
	t0 := time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC)
	a := &iotgate.Device{JID: "a@example.com", Schema: "s"}
	if err := m.CreateDevice(ctx, a); err != nil {
		t.Fatal(err)
	}
	if err := m.CreateDevice(ctx, &iotgate.Device{JID: "a@example.com"}); iotgate.ErrorCode(err) != iotgate.EConflict {
		t.Errorf("second CreateDevice = %v, want conflict", err)
	}
	rs := []*iotgate.Reading{
		{DeviceID: a.ID, DeviceJID: a.JID, ReceivedAt: t0.Add(2 * time.Second)},
		{DeviceID: a.ID, DeviceJID: a.JID, ReceivedAt: t0},
		{DeviceID: 99, DeviceJID: "gone@example.com", ReceivedAt: t0},
	}
	for i, err := range m.InsertReadings(ctx, rs) {
		if err != nil {
			t.Errorf("reading %d: %v", i, err)
		}
	}
	if rs[0].ID == 0 || rs[1].ID <= rs[0].ID || rs[2].ID != 0 {
		t.Errorf("IDs %d %d %d, want serial, 0 for an unknown device", rs[0].ID, rs[1].ID, rs[2].ID)
	}
	d, err := m.Device(ctx, a.JID)
	if err != nil || d.LastSeenAt == nil || !d.LastSeenAt.Equal(rs[0].ReceivedAt) {
		t.Errorf("Device = %+v, %v, want last seen at the newest reading", d, err)
	}
	if r, err := m.LatestReading(ctx, a.JID); err != nil || r.ID != rs[0].ID {
		t.Errorf("LatestReading = %+v, %v, want reading %d", r, err, rs[0].ID)
	}
	page, err := m.Readings(ctx, a.JID, iotgate.ReadingFilter{Desc: true, Limit: 1})
	if err != nil || len(page.Items) != 1 || page.Items[0].ID != rs[0].ID {
		t.Errorf("Readings(desc, 1) = %+v, %v", page, err)
	}
	since := t0.Add(time.Second)
	page, err = m.Readings(ctx, a.JID, iotgate.ReadingFilter{})
	if err != nil || len(page.Items) != 2 || page.Items[0].ID != rs[1].ID {
		t.Errorf("Readings(asc) = %+v, %v, want the oldest first", page, err)
	}
	page, err = m.Readings(ctx, a.JID, iotgate.ReadingFilter{Since: &since})
	if err != nil || len(page.Items) != 1 || page.Items[0].ID != rs[0].ID {
		t.Errorf("Readings(since) = %+v, %v", page, err)
	}
	if n := m.Queries("Device") + m.Queries("LatestReading"); n != 2 {
		t.Errorf("queries counted %d, want 2", n)
	}
	rej := []*iotgate.Rejection{{DeviceID: a.ID, Reason: "1"}, {DeviceID: a.ID, Reason: "2"}, {DeviceID: a.ID, Reason: "3"}}
	if err := m.InsertRejections(ctx, rej, 2); err != nil {
		t.Fatal(err)
	}
	if got := m.Rejected(); len(got) != 2 || got[0].Reason != "2" || got[1].Reason != "3" {
		t.Errorf("rejections kept %+v, want the newest 2", got)
	}
	if rp, err := m.Rejections(ctx, a.JID, iotgate.ReadingFilter{Desc: true}); err != nil || len(rp.Items) != 2 || rp.Items[0].Reason != "3" {
		t.Errorf("Rejections(desc) = %+v, %v, want the newest first", rp, err)
	}
	if err := m.DeleteDevice(ctx, a.JID); err != nil {
		t.Fatal(err)
	}
	b := &iotgate.Device{JID: "a@example.com"}
	if err := m.CreateDevice(ctx, b); err != nil || b.ID <= rs[1].ID {
		t.Errorf("re-created with ID %d (%v), want a new one", b.ID, err)
	}
	if _, err := m.LatestReading(ctx, b.JID); iotgate.ErrorCode(err) != iotgate.ENotFound {
		t.Errorf("LatestReading after delete = %v, want not_found (readings deleted with the device)", err)
	}
	if len(m.Rejected()) != 0 {
		t.Error("rejections outlived their device")
	}
}
