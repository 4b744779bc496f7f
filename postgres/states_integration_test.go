//go:build integration

package postgres_test

import (
	"context"
	"slices"
	"testing"

	"github.com/iotgate/iotgate"
)

// TestStates asks the device service for many states at once against
// PostgreSQL: readings ingested show (from the cache, then from the store
// after the cache forgets), unknown JIDs and devices the caller may not
// see are missing alike, duplicates count once.
func TestStates(t *testing.T) {
	ctx := context.Background()
	_, reg, svc := newStack(t)
	devs := thermostats(t, reg, svc, "s1@example.com", "s2@example.com", "hidden@example.com")
	if err := ingest(t, svc, iotgate.IncomingReading{From: "s1@example.com/x", Via: "iq",
		Payloads: []iotgate.Payload{{Namespace: "urn:example:thermostat", Local: "reading", XML: reading("21.5")}}}); err != nil {
		t.Fatal(err)
	}
	notHidden := func(d *iotgate.Device) bool { return d.JID != devs[2].JID }
	for _, tt := range []struct {
		name        string
		forget      bool
		jids        []string
		wantStates  []string
		wantMissing []string
	}{
		{"Cached", false, []string{"s1@example.com", "S2@example.com", "nobody@example.com", "hidden@example.com", "s1@example.com"},
			[]string{"s1@example.com", "s2@example.com"}, []string{"nobody@example.com", "hidden@example.com"}},
		{"FromStore", true, []string{"s2@example.com", "s1@example.com"}, []string{"s2@example.com", "s1@example.com"}, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if tt.forget {
				for _, d := range devs {
					svc.Forget(d.JID)
				}
			}
			sts, missing, err := svc.States(ctx, tt.jids, notHidden)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, st := range sts {
				got = append(got, st.JID)
				want, err := svc.State(ctx, st.JID)
				if err != nil {
					t.Fatal(err)
				}
				if (st.Reading == nil) != (want.Reading == nil) || st.Reading != nil && (st.Reading.ID != want.Reading.ID || string(st.Reading.Data) != string(want.Reading.Data)) {
					t.Errorf("%s: reading %+v, want State's %+v", st.JID, st.Reading, want.Reading)
				}
			}
			if !slices.Equal(got, tt.wantStates) || !slices.Equal(missing, tt.wantMissing) {
				t.Errorf("states of %v, missing %v; want %v, %v", got, missing, tt.wantStates, tt.wantMissing)
			}
			if sts[len(sts)-1].JID == "s1@example.com" && sts[len(sts)-1].Reading == nil {
				t.Error("s1's reading is missing")
			}
		})
	}
	t.Run("ErrTooMany", func(t *testing.T) {
		jids := make([]string, 501)
		for i := range jids {
			jids[i] = "s1@example.com"
		}
		if _, _, err := svc.States(ctx, jids, nil); iotgate.ErrorCode(err) != iotgate.EInvalid {
			t.Fatalf("err = %v, want invalid", err)
		}
	})
}
