package api

import (
	"encoding/json"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
)

func TestStates(t *testing.T) {
	tests := []apiCase{
		{name: "OK", method: http.MethodPost, target: "/v1/devices/states", body: `{"jids":["thermo1@example.com","THERMO3@example.com","gone@example.com","thermo1@example.com"]}`, status: http.StatusOK,
			check: func(t *testing.T, rec *httptest.ResponseRecorder) {
				got := decode[StatesResponse](t, rec)
				var jids []string
				for _, st := range got.Items {
					jids = append(jids, st.JID)
				}
				if !slices.Equal(jids, []string{"thermo1@example.com", "thermo3@example.com"}) || !slices.Equal(got.NotFound, []string{"gone@example.com"}) {
					t.Fatalf("states = %s", rec.Body.String())
				}
				if !got.Items[0].Online || got.Items[0].Reading == nil || got.Items[0].Reading.ID != 2 || got.Items[1].Reading != nil {
					t.Errorf("states = %s, want thermo1 online with reading 2, thermo3 without", rec.Body.String())
				}
			}},
		{name: "NoneFound", method: http.MethodPost, target: "/v1/devices/states", body: `{"jids":["gone@example.com"]}`, status: http.StatusOK,
			check: func(t *testing.T, rec *httptest.ResponseRecorder) {
				if got := rec.Body.String(); got != `{"items":[],"not_found":["gone@example.com"]}`+"\n" {
					t.Errorf("body = %s", got)
				}
			}},
		{name: "ErrEmpty", method: http.MethodPost, target: "/v1/devices/states", body: `{"jids":[]}`, status: http.StatusBadRequest, code: "invalid"},
		{name: "ErrTooMany", method: http.MethodPost, target: "/v1/devices/states", body: `{"jids":["a@b"` + strings.Repeat(`,"a@b"`, 500) + `]}`, status: http.StatusBadRequest, code: "invalid"},
		{name: "ErrBadJID", method: http.MethodPost, target: "/v1/devices/states", body: `{"jids":["example.com"]}`, status: http.StatusBadRequest, code: "invalid", message: "local part"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.run(t, newAPI(t, nil, newDeviceFixture()))
		})
	}
}

// TestDeviceListWithStates checks GET /v1/devices?include=state: each
// device of the page carries its state as POST /v1/devices/states gives
// it, and only then.
func TestDeviceListWithStates(t *testing.T) {
	// states decodes a list and returns each device's state by JID (nil
	// if it has none) and the JIDs in order.
	states := func(t *testing.T, rec *httptest.ResponseRecorder) (map[string]*DeviceState, []string) {
		t.Helper()
		got := decode[DeviceList](t, rec)
		by := map[string]*DeviceState{}
		var jids []string
		for _, d := range got.Items {
			by[d.JID] = d.State
			jids = append(jids, d.JID)
		}
		return by, jids
	}
	tests := []apiCase{
		{name: "OK", target: "/v1/devices?include=state", status: http.StatusOK,
			check: func(t *testing.T, rec *httptest.ResponseRecorder) {
				by, jids := states(t, rec)
				if len(jids) != 4 {
					t.Fatalf("devices %v, want the fixture's 4", jids)
				}
				for jid, st := range by {
					if st == nil || st.JID != jid || st.Resources == nil {
						t.Fatalf("%s: state %+v", jid, st)
					}
				}
				if st := by["thermo1@example.com"]; !st.Online || st.Reading == nil || st.Reading.ID != 2 || string(st.Reading.Data) != `{"temperature":21.5,"mode":"heat"}` {
					t.Errorf("thermo1's state = %+v, want online with reading 2", st)
				}
				if st := by["thermo3@example.com"]; st.Online || st.Reading != nil || st.LastSeenAt != nil {
					t.Errorf("thermo3's state = %+v, want offline without a reading", st)
				}
				// The device's own keys are all there beside state.
				var raw struct{ Items []map[string]json.RawMessage }
				if err := json.Unmarshal(rec.Body.Bytes(), &raw); err != nil {
					t.Fatal(err)
				}
				want := append(slices.Clone(deviceKeys), "state")
				slices.Sort(want)
				if keys := slices.Sorted(maps.Keys(raw.Items[0])); !slices.Equal(keys, want) {
					t.Errorf("keys = %v, want the device's and state", keys)
				}
			}},
		{name: "Paged", target: "/v1/devices?include=state&limit=1&label=room:kitchen", status: http.StatusOK,
			check: func(t *testing.T, rec *httptest.ResponseRecorder) {
				by, jids := states(t, rec)
				if !slices.Equal(jids, []string{"thermo1@example.com"}) || by[jids[0]] == nil || decode[DeviceList](t, rec).NextCursor == "" {
					t.Errorf("page = %s, want thermo1 with its state and a next_cursor", rec.Body.String())
				}
			}},
		{name: "WithoutInclude", target: "/v1/devices", status: http.StatusOK,
			check: func(t *testing.T, rec *httptest.ResponseRecorder) {
				if strings.Contains(rec.Body.String(), `"state"`) {
					t.Errorf("a list without include has states: %s", rec.Body.String())
				}
			}},
		{name: "ErrInclude", target: "/v1/devices?include=readings", status: http.StatusBadRequest, code: "invalid"},
		{name: "ErrLimit", target: "/v1/devices?include=state&limit=501", status: http.StatusBadRequest, code: "invalid", message: "at most 500 with include=state"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.run(t, newAPI(t, nil, newDeviceFixture()))
		})
	}
}

// TestDeviceListWithStatesSelector checks that a token limited by a
// selector gets the states of its devices only.
func TestDeviceListWithStatesSelector(t *testing.T) {
	ts := newTenants(t)
	for _, tt := range []struct {
		name, secret string
		want         []string
	}{
		{"Berlin", ts.berlin, []string{"thermo1@example.com", "thermo3@example.com"}},
		{"Paris", ts.paris, []string{"thermo2@example.com"}},
		{"Lab", ts.lab, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			rec := ts.do(t, tt.secret, http.MethodGet, "/v1/devices?include=state", "")
			if rec.Code != http.StatusOK {
				t.Fatalf("status %d: %s", rec.Code, rec.Body.String())
			}
			var jids []string
			for _, d := range decode[DeviceList](t, rec).Items {
				if d.State == nil || d.State.JID != d.JID {
					t.Errorf("%s: state %+v", d.JID, d.State)
				}
				jids = append(jids, d.JID)
			}
			if !slices.Equal(jids, tt.want) {
				t.Errorf("devices %v, want %v", jids, tt.want)
			}
		})
	}
}
