package api

import (
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
