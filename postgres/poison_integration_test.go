//go:build integration

package postgres_test

import (
	"context"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/iotgate/iotgate"
	"github.com/iotgate/iotgate/schemas/xsd"
)

// poisonData is a JSON number PostgreSQL's jsonb refuses (numeric holds
// 16383 digits after the point): what iotgate rendered for the valid
// xs:double 1e-20000 before it kept such numbers as strings.
const poisonData = `{"v": 1e-20000}`

// TestInsertReadingsPoison checks that readings PostgreSQL refuses fail
// alone: the readings of the same batch are stored, with their IDs.
func TestInsertReadingsPoison(t *testing.T) {
	ctx := context.Background()
	db, reg, svc := newStack(t)
	devs := thermostats(t, reg, svc, "a@example.com", "b@example.com", "c@example.com")
	now := time.Now().UTC().Round(time.Microsecond)
	yearZero := time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC) // Go has it, PostgreSQL doesn't
	good := func(d *iotgate.Device, n int) *iotgate.Reading {
		return &iotgate.Reading{DeviceID: d.ID, DeviceJID: d.JID, ReceivedAt: now.Add(time.Duration(n) * time.Millisecond), XML: "<r/>", Data: []byte(`{"n": 1}`)}
	}
	rs := []*iotgate.Reading{good(devs[0], 0), good(devs[1], 1), good(devs[2], 2), good(devs[0], 3), good(devs[1], 4), good(devs[2], 5), good(devs[0], 6)}
	rs[1].Data = []byte(poisonData)
	rs[5].DeviceTime = &yearZero
	errs := db.InsertReadings(ctx, rs)
	if len(errs) != len(rs) {
		t.Fatalf("%d errors for %d readings", len(errs), len(rs))
	}
	for i, err := range errs {
		poison := i == 1 || i == 5
		switch {
		case poison && iotgate.ErrorCode(err) != iotgate.EInvalid:
			t.Errorf("reading %d: err = %v, want invalid", i, err)
		case poison && rs[i].ID != 0:
			t.Errorf("reading %d: refused, but has ID %d", i, rs[i].ID)
		case !poison && (err != nil || rs[i].ID == 0):
			t.Errorf("reading %d: err = %v, ID %d; want stored", i, err, rs[i].ID)
		}
	}
	for _, tc := range []struct {
		jid  string
		want int
	}{{"a@example.com", 3}, {"b@example.com", 1}, {"c@example.com", 1}} {
		page, err := db.Readings(ctx, tc.jid, iotgate.ReadingFilter{Limit: 10})
		if err != nil {
			t.Fatal(err)
		}
		if len(page.Items) != tc.want {
			t.Errorf("%s has %d readings, want %d", tc.jid, len(page.Items), tc.want)
		}
	}
}

// TestUpdateCommandsPoison checks that a command update PostgreSQL
// refuses (a device's answer rendered with a number jsonb can't hold)
// fails alone: the other devices' updates of the batch are stored.
func TestUpdateCommandsPoison(t *testing.T) {
	ctx := context.Background()
	db, reg, svc := newStack(t)
	devs := thermostats(t, reg, svc, "a@example.com", "b@example.com", "c@example.com")
	var us []iotgate.CommandUpdate
	done := cmdTime.Add(time.Second)
	for i, d := range devs {
		us = append(us, sentAndAnswered(t, db, d, "p"+string(rune('0'+i)), done))
	}
	us[1].Command.Response.Data = json.RawMessage(poisonData)
	errs := db.UpdateCommands(ctx, us)
	for i, u := range us {
		got, err := db.Command(ctx, u.Command.ID)
		if err != nil {
			t.Fatal(err)
		}
		if i == 1 {
			if iotgate.ErrorCode(errs[i]) != iotgate.EInvalid || got.Status != iotgate.CommandSent {
				t.Errorf("poison update: err = %v, stored status %s; want invalid, still sent", errs[i], got.Status)
			}
			continue
		}
		if errs[i] != nil || !reflect.DeepEqual(got, u.Command) {
			t.Errorf("%s: err = %v, stored\n%+v\nwant\n%+v", u.Command.ID, errs[i], got, u.Command)
		}
	}
}

// TestNumbersPostgresTakes holds the xsd renderer's model of PostgreSQL's
// numeric to PostgreSQL itself: every number it renders as a JSON number
// is stored by jsonb, and every one it keeps as a string, jsonb refuses
// as a number (the rule is not stricter than it must be).
func TestNumbersPostgresTakes(t *testing.T) {
	ctx := context.Background()
	db, _, _ := newStack(t)
	s, err := xsd.Compile([]byte(`<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema" targetNamespace="urn:n" elementFormDefault="qualified">
		<xs:element name="r"><xs:complexType><xs:sequence>
			<xs:element name="d" type="xs:double"/><xs:element name="x" type="xs:decimal"/>
		</xs:sequence></xs:complexType></xs:element></xs:schema>`), xsd.CompileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Free()
	for _, v := range []string{
		"1e-16383", "1.5e-16382", "0.0001e-16379", "1e131071", "-1e131071", "0.001e131074", "0e200000", "1E+0003",
		"1e-20000", "1e-16384", "1.0e-16383", "10e-16384", "1.55e-16382", "0e-20000", "1e131072", "0.001e131075",
		"1e200000", "1e99999999999", "0e99999999999", "0." + strings.Repeat("0", 16384), "0." + strings.Repeat("0", 16382) + "1",
	} {
		name := v
		if len(name) > 20 {
			name = name[:10] + "..."
		}
		t.Run(name, func(t *testing.T) {
			doc := `<r xmlns="urn:n"><d>` + v + `</d><x>` + v + `</x></r>`
			if strings.ContainsAny(v, "eE") {
				doc = `<r xmlns="urn:n"><d>` + v + `</d><x>0</x></r>`
			}
			m, err := s.Render([]byte(doc))
			if err != nil {
				t.Fatal(err)
			}
			data, err := json.Marshal(m)
			if err != nil {
				t.Fatal(err)
			}
			var stored string
			if err := db.SQL().QueryRowContext(ctx, `SELECT $1::jsonb::text`, string(data)).Scan(&stored); err != nil {
				t.Fatalf("jsonb refused the rendering %.60s: %v", data, err)
			}
			if _, isString := m["d"].(string); isString {
				var out string
				err := db.SQL().QueryRowContext(ctx, `SELECT $1::jsonb::text`, `[`+v+`]`).Scan(&out)
				if err == nil {
					t.Errorf("kept as a string, but jsonb takes %.40s as a number", v)
				}
			}
		})
	}
}
