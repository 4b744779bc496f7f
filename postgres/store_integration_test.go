//go:build integration

package postgres_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/iotgate/iotgate"
	"github.com/iotgate/iotgate/devices"
	"github.com/iotgate/iotgate/internal/servers"
	"github.com/iotgate/iotgate/postgres"
	"github.com/iotgate/iotgate/schemas"
	"github.com/iotgate/iotgate/schemas/examples"
)

// newStack returns a migrated database and the domain services over it.
func newStack(t testing.TB) (*postgres.DB, *schemas.Registry, *devices.Service) {
	t.Helper()
	return newStackOn(t, servers.DatabaseForTest(t))
}

// newStackOn is newStack on the database at dsn.
func newStackOn(t testing.TB, dsn string) (*postgres.DB, *schemas.Registry, *devices.Service) {
	t.Helper()
	ctx := context.Background()
	db, err := postgres.Open(ctx, dsn, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	reg := schemas.NewRegistry(db, schemas.Config{})
	svc := devices.NewService(db, reg, devices.ServiceConfig{})
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { svc.Run(rctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return db, reg, svc
}

// thermostats registers the thermostat schema and a device of it for each
// JID, and returns the devices in order.
func thermostats(t testing.TB, reg *schemas.Registry, svc *devices.Service, jids ...string) []*iotgate.Device {
	t.Helper()
	ctx := context.Background()
	if _, err := reg.Register(ctx, "thermostat", string(examples.Thermostat()), ""); err != nil {
		t.Fatal(err)
	}
	devs := make([]*iotgate.Device, 0, len(jids))
	for _, jid := range jids {
		d, err := svc.Register(ctx, &iotgate.Device{JID: jid, Schema: "thermostat"})
		if err != nil {
			t.Fatal(err)
		}
		devs = append(devs, d)
	}
	return devs
}

func ingest(t *testing.T, svc *devices.Service, in iotgate.IncomingReading) error {
	t.Helper()
	ch := make(chan error, 1)
	svc.Ingest(context.Background(), in, func(err error) { ch <- err })
	select {
	case err := <-ch:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("ingest did not complete")
		return nil
	}
}

func reading(temp string) []byte {
	return []byte(`<reading xmlns="urn:example:thermostat" unit="C"><temperature>` + temp + `</temperature><mode>heat</mode></reading>`)
}

func TestSchemasDevicesReadings(t *testing.T) {
	ctx := context.Background()
	_, reg, svc := newStack(t)

	t.Run("SchemaVersions", func(t *testing.T) {
		s1, err := reg.Register(ctx, "thermostat", string(examples.Thermostat()), "v1")
		if err != nil {
			t.Fatal(err)
		}
		s2, err := reg.Register(ctx, "thermostat", string(examples.Thermostat()), "v2")
		if err != nil {
			t.Fatal(err)
		}
		if s1.Version != 1 || s2.Version != 2 || s2.TargetNamespace != examples.ThermostatNS {
			t.Errorf("versions %d, %d ns %q", s1.Version, s2.Version, s2.TargetNamespace)
		}
		latest, err := reg.Get(ctx, "thermostat", 0)
		if err != nil || latest.Version != 2 {
			t.Errorf("latest = %+v, %v", latest, err)
		}
		_, err = reg.Register(ctx, "broken", `<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema"><xs:element name="a" type="nope"/></xs:schema>`, "")
		if iotgate.ErrorCode(err) != iotgate.EUnprocessable {
			t.Errorf("broken XSD: %v, want unprocessable", err)
		}
		if _, err := reg.Get(ctx, "nope", 0); iotgate.ErrorCode(err) != iotgate.ENotFound {
			t.Errorf("unknown schema: %v", err)
		}
	})

	t.Run("ConcurrentVersionsAreDistinct", func(t *testing.T) {
		var wg sync.WaitGroup
		versions := make(chan int, 8)
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				s, err := reg.Register(ctx, "multi", string(examples.Multisensor()), "")
				if err != nil {
					t.Error(err)
					return
				}
				versions <- s.Version
			}()
		}
		wg.Wait()
		close(versions)
		seen := map[int]bool{}
		for v := range versions {
			if seen[v] {
				t.Errorf("version %d handed out twice", v)
			}
			seen[v] = true
		}
	})

	t.Run("Devices", func(t *testing.T) {
		tests := []struct {
			name string
			dev  iotgate.Device
			code string
		}{
			{"OK", iotgate.Device{JID: "Thermo1@Example.COM", Schema: "thermostat", Name: "Kitchen", Labels: map[string]string{"room": "kitchen"}}, ""},
			{"ErrDuplicate", iotgate.Device{JID: "thermo1@example.com", Schema: "thermostat"}, iotgate.EConflict},
			{"ErrFullJID", iotgate.Device{JID: "thermo2@example.com/res", Schema: "thermostat"}, iotgate.EInvalid},
			{"ErrBadJID", iotgate.Device{JID: "@@", Schema: "thermostat"}, iotgate.EInvalid},
			{"ErrUnknownSchema", iotgate.Device{JID: "thermo3@example.com", Schema: "nope"}, iotgate.EInvalid},
			{"ErrUnknownVersion", iotgate.Device{JID: "thermo4@example.com", Schema: "thermostat", SchemaVersion: 9}, iotgate.EInvalid},
			{"ErrLabelKey", iotgate.Device{JID: "thermo5@example.com", Schema: "thermostat", Labels: map[string]string{"bad key": "x"}}, iotgate.EInvalid},
			{"PinnedVersion", iotgate.Device{JID: "thermo6@example.com", Schema: "thermostat", SchemaVersion: 1, Labels: map[string]string{"room": "hall"}}, ""},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				d := tt.dev
				got, err := svc.Register(ctx, &d)
				if iotgate.ErrorCode(err) != tt.code {
					t.Fatalf("err = %v, want code %q", err, tt.code)
				}
				if err == nil && (got.SchemaVersion == 0 || got.JID != strings.ToLower(got.JID)) {
					t.Errorf("registered %+v", got)
				}
			})
		}
		d, err := svc.Device(ctx, "thermo1@example.com")
		if err != nil || d.SchemaVersion != 2 || d.Labels["room"] != "kitchen" {
			t.Fatalf("device = %+v, %v", d, err)
		}
		page, err := svc.Devices(ctx, iotgate.DeviceFilter{Labels: map[string]string{"room": "hall"}})
		if err != nil || len(page.Items) != 1 || page.Items[0].JID != "thermo6@example.com" {
			t.Errorf("label filter: %+v, %v", page, err)
		}
		page, err = svc.Devices(ctx, iotgate.DeviceFilter{Limit: 1})
		if err != nil || len(page.Items) != 1 || page.NextCursor == "" {
			t.Fatalf("page 1: %+v, %v", page, err)
		}
		page2, err := svc.Devices(ctx, iotgate.DeviceFilter{Limit: 1, Cursor: page.NextCursor})
		if err != nil || len(page2.Items) != 1 || page2.Items[0].JID == page.Items[0].JID || page2.NextCursor != "" {
			t.Errorf("page 2: %+v, %v", page2, err)
		}
		name := "Kitchen 2"
		if u, err := svc.Update(ctx, "thermo1@example.com", iotgate.DeviceUpdate{Name: &name}); err != nil || u.Name != name {
			t.Errorf("update: %+v, %v", u, err)
		}
		if err := reg.Delete(ctx, "thermostat", 1); iotgate.ErrorCode(err) != iotgate.EConflict {
			t.Errorf("delete used schema version: %v, want conflict", err)
		}
	})

	t.Run("Readings", func(t *testing.T) {
		from := "thermo1@example.com/sensor"
		if err := ingest(t, svc, iotgate.IncomingReading{From: from, Via: "iq", Payloads: []iotgate.Payload{{Namespace: examples.ThermostatNS, XML: reading("21.5")}}}); err != nil {
			t.Fatalf("valid reading: %v", err)
		}
		err := ingest(t, svc, iotgate.IncomingReading{From: from, Via: "iq", Payloads: []iotgate.Payload{{Namespace: examples.ThermostatNS, XML: reading("999")}}})
		if iotgate.ErrorCode(err) != iotgate.EUnprocessable || !strings.Contains(err.Error(), "temperature") {
			t.Errorf("out-of-range reading: %v, want unprocessable naming the element", err)
		}
		err = ingest(t, svc, iotgate.IncomingReading{From: from, Via: "message", Payloads: []iotgate.Payload{{Namespace: "urn:other", XML: []byte(`<x xmlns="urn:other"/>`)}}})
		if iotgate.ErrorCode(err) != iotgate.EInvalid {
			t.Errorf("payload in another namespace: %v", err)
		}
		err = ingest(t, svc, iotgate.IncomingReading{From: "stranger@example.com/x", Via: "iq", Payloads: []iotgate.Payload{{Namespace: examples.ThermostatNS, XML: reading("20")}}})
		if e, ok := err.(*iotgate.Error); !ok || e.Detail != "device_not_registered" {
			t.Errorf("unregistered: %v", err)
		}
		stamp := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
		for i := range 25 {
			if err := ingest(t, svc, iotgate.IncomingReading{From: from, Via: "message", DeviceTime: &stamp,
				Payloads: []iotgate.Payload{{Namespace: examples.ThermostatNS, XML: reading(fmt.Sprintf("%d.25", i))}}}); err != nil {
				t.Fatal(err)
			}
		}

		st, err := svc.State(ctx, "thermo1@example.com")
		if err != nil || st.Reading == nil || st.LastSeenAt == nil {
			t.Fatalf("state = %+v, %v", st, err)
		}
		var data map[string]any
		if err := json.Unmarshal(st.Reading.Data, &data); err != nil {
			t.Fatal(err)
		}
		if data["temperature"] != 24.25 || data["mode"] != "heat" {
			t.Errorf("latest data = %v, want temperature 24.25", data)
		}
		if st.Reading.DeviceTime == nil || !st.Reading.DeviceTime.Equal(stamp) {
			t.Errorf("device time = %v", st.Reading.DeviceTime)
		}

		// Paging through all 26 readings, newest first, 10 at a time.
		var all []*iotgate.Reading
		f := iotgate.ReadingFilter{Limit: 10, Desc: true}
		for {
			p, err := svc.Readings(ctx, "thermo1@example.com", f)
			if err != nil {
				t.Fatal(err)
			}
			all = append(all, p.Items...)
			if p.NextCursor == "" {
				break
			}
			f.Cursor = p.NextCursor
		}
		if len(all) != 26 {
			t.Fatalf("paged %d readings, want 26", len(all))
		}
		for i := 1; i < len(all); i++ {
			if all[i].ID >= all[i-1].ID {
				t.Errorf("order broken at %d: %d then %d", i, all[i-1].ID, all[i].ID)
			}
		}
		if _, err := svc.Readings(ctx, "thermo1@example.com", iotgate.ReadingFilter{Cursor: "garbage"}); iotgate.ErrorCode(err) != iotgate.EInvalid {
			t.Errorf("bad cursor: %v", err)
		}

		// Rejections are written asynchronously.
		deadline := time.Now().Add(5 * time.Second)
		for {
			p, err := svc.Rejections(ctx, "thermo1@example.com", iotgate.ReadingFilter{Desc: true})
			if err != nil {
				t.Fatal(err)
			}
			if len(p.Items) == 2 {
				if !strings.Contains(p.Items[1].Reason, "temperature") || !strings.Contains(p.Items[1].Payload, "999") {
					t.Errorf("rejection = %+v", p.Items[1])
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("rejections = %d, want 2", len(p.Items))
			}
			time.Sleep(50 * time.Millisecond)
		}

		if err := svc.Delete(ctx, "thermo1@example.com"); err != nil {
			t.Fatal(err)
		}
		if _, err := svc.Readings(ctx, "thermo1@example.com", iotgate.ReadingFilter{}); iotgate.ErrorCode(err) != iotgate.ENotFound {
			t.Errorf("readings of deleted device: %v", err)
		}
	})
}

// BenchmarkIngest measures the ingest path from validated reading to
// commit (validation, queueing, group commit) against a real PostgreSQL,
// with 64 readings in flight, as IQ readings would be.
//
//	go test -tags integration -run '^$' -bench BenchmarkIngest -benchtime 20000x ./postgres/
func BenchmarkIngest(b *testing.B) {
	ctx := context.Background()
	_, reg, svc := newStack(b)
	if _, err := reg.Register(ctx, "thermostat", string(examples.Thermostat()), ""); err != nil {
		b.Fatal(err)
	}
	const nDevices = 10
	for i := range nDevices {
		if _, err := svc.Register(ctx, &iotgate.Device{JID: fmt.Sprintf("d%d@example.com", i), Schema: "thermostat"}); err != nil {
			b.Fatal(err)
		}
	}
	payload := reading("21.5")
	sem := make(chan struct{}, 64)
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for i := range b.N {
		sem <- struct{}{}
		wg.Add(1)
		svc.Ingest(ctx, iotgate.IncomingReading{From: fmt.Sprintf("d%d@example.com/r", i%nDevices), Via: "iq",
			Payloads: []iotgate.Payload{{Namespace: examples.ThermostatNS, XML: payload}}}, func(err error) {
			if err != nil {
				b.Error(err)
			}
			<-sem
			wg.Done()
		})
	}
	wg.Wait()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "readings/s")
	st := svc.Stats()
	if st.Batches > 0 {
		b.ReportMetric(float64(st.Accepted)/float64(st.Batches), "readings/batch")
	}
}

// TestInsertReadingsDeletedDevice checks that a reading of a device deleted
// while it waited in the queue doesn't fail the batch it is in.
func TestInsertReadingsDeletedDevice(t *testing.T) {
	ctx := context.Background()
	db, reg, svc := newStack(t)
	devs := thermostats(t, reg, svc, "kept@example.com", "gone@example.com")
	if err := svc.Delete(ctx, "gone@example.com"); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	rs := []*iotgate.Reading{
		{DeviceID: devs[0].ID, ReceivedAt: now, XML: "<a/>", Data: []byte(`{}`)},
		{DeviceID: devs[1].ID, ReceivedAt: now, XML: "<b/>", Data: []byte(`{}`)},
	}
	if err := errors.Join(db.InsertReadings(ctx, rs)...); err != nil {
		t.Fatalf("batch with a deleted device's reading: %v", err)
	}
	page, err := db.Readings(ctx, "kept@example.com", iotgate.ReadingFilter{Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Items) != 1 {
		t.Errorf("kept device has %d readings, want 1", len(page.Items))
	}
}

// TestRejectionsKeepNewest checks that only the newest rejections of each
// device are kept.
func TestRejectionsKeepNewest(t *testing.T) {
	ctx := context.Background()
	db, reg, svc := newStack(t)
	devs := thermostats(t, reg, svc, "a@example.com", "b@example.com")
	base := time.Now().UTC().Truncate(time.Second)
	// Two batches, so that pruning sees rows of an earlier transaction.
	for batch := range 2 {
		var rs []*iotgate.Rejection
		for i := range 4 {
			n := batch*4 + i
			rs = append(rs,
				&iotgate.Rejection{DeviceID: devs[0].ID, ReceivedAt: base.Add(time.Duration(n) * time.Second), Via: "iq", Reason: fmt.Sprint(n), Payload: "<x/>"},
				&iotgate.Rejection{DeviceID: devs[1].ID, ReceivedAt: base, Via: "message", Reason: fmt.Sprint(n), Payload: "<x/>"})
		}
		if err := db.InsertRejections(ctx, rs, 3); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		jid  string
		want []string // reasons, oldest first
	}{
		{"a@example.com", []string{"5", "6", "7"}},
		{"b@example.com", []string{"5", "6", "7"}}, // same time: by insertion order
	}
	for _, tt := range tests {
		t.Run(tt.jid, func(t *testing.T) {
			page, err := db.Rejections(ctx, tt.jid, iotgate.ReadingFilter{Limit: 100})
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, r := range page.Items {
				got = append(got, r.Reason)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("kept %v, want %v", got, tt.want)
			}
		})
	}
}

// TestInsertReadingsMaybeStored: readings tried again after an attempt
// whose commit may have reached the database (MaybeStored) are stored
// once: those already there get their ids, the others are inserted.
func TestInsertReadingsMaybeStored(t *testing.T) {
	ctx := context.Background()
	db, reg, svc := newStack(t)
	devs := thermostats(t, reg, svc, "a@example.com", "b@example.com")
	now := time.Now().UTC()
	reading := func(dev int, i int) *iotgate.Reading {
		return &iotgate.Reading{DeviceID: devs[dev].ID, ReceivedAt: now.Add(time.Duration(i) * time.Microsecond),
			XML: fmt.Sprintf("<r n='%d'/>", i), Data: []byte(fmt.Sprintf(`{"n": %d}`, i))}
	}
	// The first attempt committed these three.
	first := []*iotgate.Reading{reading(0, 1), reading(0, 2), reading(1, 1)}
	if err := errors.Join(db.InsertReadings(ctx, first)...); err != nil {
		t.Fatal(err)
	}
	// Tried again, with two that were not stored; one of a device shares
	// a receipt time with a stored one but not its XML.
	again := []*iotgate.Reading{reading(0, 1), reading(0, 2), reading(1, 1), reading(0, 3), reading(1, 2)}
	again[4].ReceivedAt = again[2].ReceivedAt
	for _, r := range again {
		r.MaybeStored = true
	}
	if err := errors.Join(db.InsertReadings(ctx, again)...); err != nil {
		t.Fatal(err)
	}
	for i := range first {
		if again[i].ID != first[i].ID {
			t.Errorf("reading %d tried again: id %d, want the stored %d", i, again[i].ID, first[i].ID)
		}
	}
	for _, r := range again[3:] {
		if r.ID == 0 {
			t.Errorf("new reading %s: no id", r.XML)
		}
	}
	for _, tc := range []struct {
		jid  string
		want int
	}{{"a@example.com", 3}, {"b@example.com", 2}} {
		page, err := db.Readings(ctx, tc.jid, iotgate.ReadingFilter{Limit: 10})
		if err != nil {
			t.Fatal(err)
		}
		if len(page.Items) != tc.want {
			t.Errorf("%s: %d readings, want %d", tc.jid, len(page.Items), tc.want)
		}
	}
}
