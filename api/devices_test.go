package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/iotgate/iotgate"
)

var deviceKeys = []string{"jid", "name", "labels", "schema", "schema_version", "created_at", "updated_at", "last_seen_at", "online"}

// newDeviceFixture returns a device service holding three devices, the
// first online with two readings and a rejection.
func newDeviceFixture() *fakeDevices {
	svc := newFakeDevices()
	svc.add("thermo1@example.com", map[string]string{"room": "kitchen", "site": "berlin"})
	svc.add("thermo2@example.com", map[string]string{"room": "kitchen", "site": "paris"})
	svc.add("thermo3@example.com", map[string]string{"room": "hall", "site": "berlin"})
	svc.add("a%25b@example.com", nil)
	svc.online["thermo1@example.com"] = true
	seen := testTime.Add(time.Hour)
	svc.devs["thermo1@example.com"].LastSeenAt = &seen
	svc.readings["thermo1@example.com"] = []*iotgate.Reading{
		{ID: 1, ReceivedAt: testTime.Add(30 * time.Minute), XML: `<reading xmlns="urn:example:thermostat"><temperature>21</temperature></reading>`, Data: json.RawMessage(`{"temperature":21}`)},
		{ID: 2, ReceivedAt: seen, DeviceTime: &testTime, XML: `<reading xmlns="urn:example:thermostat"><temperature>21.5</temperature></reading>`, Data: json.RawMessage(`{"temperature":21.5,"mode":"heat"}`)},
	}
	svc.rejections["thermo1@example.com"] = []*iotgate.Rejection{
		{ID: 7, ReceivedAt: seen, Via: "iq", Reason: "document does not match its schema", Payload: "<reading/>"},
	}
	return svc
}

func TestDevices(t *testing.T) {
	create := func(fields string) string { return `{"schema":"thermostat","name":"Kitchen",` + fields + `}` }
	tests := []struct {
		apiCase
		// after, if set, checks the fake after the request.
		after func(t *testing.T, svc *fakeDevices)
	}{
		{apiCase: apiCase{name: "CreateOK", method: http.MethodPost, target: "/v1/devices", body: create(`"jid":"new@example.com","labels":{"room":"kitchen"}`), status: http.StatusCreated,
			check: func(t *testing.T, rec *httptest.ResponseRecorder) {
				if loc := rec.Header().Get(echo.HeaderLocation); loc != "/v1/devices/new@example.com" {
					t.Errorf("Location = %q", loc)
				}
				wantKeys(t, rec.Body.Bytes(), deviceKeys...)
				got := decode[Device](t, rec)
				if got.JID != "new@example.com" || got.Name != "Kitchen" || got.Schema != "thermostat" || got.SchemaVersion != latestThermostat ||
					!maps.Equal(got.Labels, map[string]string{"room": "kitchen"}) || !got.CreatedAt.Equal(testTime) || got.LastSeenAt != nil {
					t.Errorf("device = %+v", got)
				}
				if !strings.Contains(rec.Body.String(), `"last_seen_at":null`) {
					t.Errorf("last_seen_at is not null: %s", rec.Body.String())
				}
			}}},
		{apiCase: apiCase{name: "CreateNormalizesJID", method: http.MethodPost, target: "/v1/devices", body: create(`"jid":"New@EXAMPLE.com"`), status: http.StatusCreated,
			check: func(t *testing.T, rec *httptest.ResponseRecorder) {
				if got := decode[Device](t, rec); got.JID != "new@example.com" || got.Labels == nil {
					t.Errorf("device = %+v, want the normalized JID and {} labels", got)
				}
			}}},
		{apiCase: apiCase{name: "CreatePinnedVersion", method: http.MethodPost, target: "/v1/devices", body: create(`"jid":"new@example.com","schema_version":1`), status: http.StatusCreated,
			check: func(t *testing.T, rec *httptest.ResponseRecorder) {
				if got := decode[Device](t, rec); got.SchemaVersion != 1 {
					t.Errorf("schema_version = %d, want 1", got.SchemaVersion)
				}
			}}},
		{apiCase: apiCase{name: "CreateEscapedLocation", method: http.MethodPost, target: "/v1/devices", body: create(`"jid":"a?b@example.com"`), status: http.StatusCreated,
			check: func(t *testing.T, rec *httptest.ResponseRecorder) {
				if loc := rec.Header().Get(echo.HeaderLocation); loc != "/v1/devices/a%3Fb@example.com" {
					t.Errorf("Location = %q", loc)
				}
			}}},
		{apiCase: apiCase{name: "CreateFullJID", method: http.MethodPost, target: "/v1/devices", body: create(`"jid":"new@example.com/phone"`), status: http.StatusBadRequest, code: "invalid", message: "is a full JID"}},
		{apiCase: apiCase{name: "CreateInvalidJID", method: http.MethodPost, target: "/v1/devices", body: create(`"jid":"@@example.com"`), status: http.StatusBadRequest, code: "invalid", message: "not a valid JID"}},
		{apiCase: apiCase{name: "CreateDomainJID", method: http.MethodPost, target: "/v1/devices", body: create(`"jid":"example.com"`), status: http.StatusBadRequest, code: "invalid", message: "no local part"}},
		{apiCase: apiCase{name: "CreateDuplicate", method: http.MethodPost, target: "/v1/devices", body: create(`"jid":"thermo1@example.com"`), status: http.StatusConflict, code: "conflict", message: "already registered"}},
		{apiCase: apiCase{name: "CreateMissingJID", method: http.MethodPost, target: "/v1/devices", body: create(`"labels":{}`), status: http.StatusBadRequest, code: "invalid", message: "jid is required"}},
		{apiCase: apiCase{name: "CreateMissingSchema", method: http.MethodPost, target: "/v1/devices", body: `{"jid":"new@example.com"}`, status: http.StatusBadRequest, code: "invalid", message: "schema is required"}},
		{apiCase: apiCase{name: "CreateUnknownSchema", method: http.MethodPost, target: "/v1/devices", body: `{"jid":"new@example.com","schema":"nope"}`, status: http.StatusBadRequest, code: "invalid", message: "not found"}},
		{apiCase: apiCase{name: "CreateNegativeVersion", method: http.MethodPost, target: "/v1/devices", body: create(`"jid":"new@example.com","schema_version":-1`), status: http.StatusBadRequest, code: "invalid", message: "schema_version"}},
		{apiCase: apiCase{name: "CreateBadLabelKey", method: http.MethodPost, target: "/v1/devices", body: create(`"jid":"new@example.com","labels":{"no spaces":"x"}`), status: http.StatusBadRequest, code: "invalid", message: "label key"}},
		{apiCase: apiCase{name: "CreateBadJSON", method: http.MethodPost, target: "/v1/devices", body: `{"jid":`, status: http.StatusBadRequest, code: "invalid"}},
		{apiCase: apiCase{name: "CreateLabelsNotStrings", method: http.MethodPost, target: "/v1/devices", body: create(`"jid":"new@example.com","labels":{"room":1}`), status: http.StatusBadRequest, code: "invalid"}},

		{apiCase: apiCase{name: "ListAll", target: "/v1/devices", status: http.StatusOK,
			check: func(t *testing.T, rec *httptest.ResponseRecorder) {
				wantKeys(t, rec.Body.Bytes(), "items")
				if got := decode[DeviceList](t, rec); len(got.Items) != 4 || got.NextCursor != "" {
					t.Errorf("list = %+v, want 4 devices and no cursor", got)
				}
			}},
			after: func(t *testing.T, svc *fakeDevices) {
				if f := svc.lastDeviceFilter; f.Limit != DefaultPageLimit || f.Labels != nil || f.Online != nil || f.Schema != "" || f.Cursor != "" {
					t.Errorf("filter = %+v, want only the default limit", f)
				}
			}},
		{apiCase: apiCase{name: "ListFiltered", target: "/v1/devices?schema=thermostat&label=room:kitchen&label=site:berlin&online=true&limit=5&cursor=a", status: http.StatusOK,
			check: func(t *testing.T, rec *httptest.ResponseRecorder) {
				if got := decode[DeviceList](t, rec); len(got.Items) != 1 || got.Items[0].JID != "thermo1@example.com" {
					t.Errorf("items = %+v, want thermo1", got.Items)
				}
			}},
			after: func(t *testing.T, svc *fakeDevices) {
				f := svc.lastDeviceFilter
				if f.Schema != "thermostat" || !maps.Equal(f.Labels, map[string]string{"room": "kitchen", "site": "berlin"}) ||
					f.Online == nil || !*f.Online || f.Limit != 5 || f.Cursor != "a" {
					t.Errorf("filter = %+v", f)
				}
			}},
		{apiCase: apiCase{name: "ListOffline", target: "/v1/devices?online=false", status: http.StatusOK,
			check: func(t *testing.T, rec *httptest.ResponseRecorder) {
				if got := decode[DeviceList](t, rec); len(got.Items) != 3 {
					t.Errorf("items = %+v, want the 3 offline devices", got.Items)
				}
			}}},
		{apiCase: apiCase{name: "ListPaged", target: "/v1/devices?limit=2&cursor=a%2525b@example.com", status: http.StatusOK,
			check: func(t *testing.T, rec *httptest.ResponseRecorder) {
				got := decode[DeviceList](t, rec)
				if len(got.Items) != 2 || got.Items[0].JID != "thermo1@example.com" || got.NextCursor != "thermo2@example.com" {
					t.Errorf("page = %+v", got)
				}
			}}},
		{apiCase: apiCase{name: "ListLabelValueWithColon", target: "/v1/devices?label=url:http://x", status: http.StatusOK},
			after: func(t *testing.T, svc *fakeDevices) {
				if v := svc.lastDeviceFilter.Labels["url"]; v != "http://x" {
					t.Errorf("label url = %q, want the value after the first colon", v)
				}
			}},
		{apiCase: apiCase{name: "ListLabelNoColon", target: "/v1/devices?label=room", status: http.StatusBadRequest, code: "invalid", message: "must be key:value"}},
		{apiCase: apiCase{name: "ListLabelNoKey", target: "/v1/devices?label=:kitchen", status: http.StatusBadRequest, code: "invalid", message: "must be key:value"}},
		{apiCase: apiCase{name: "ListLabelTwice", target: "/v1/devices?label=room:a&label=room:b", status: http.StatusBadRequest, code: "invalid", message: "given twice"}},
		{apiCase: apiCase{name: "ListLabelBadKey", target: "/v1/devices?label=r%20m:a", status: http.StatusBadRequest, code: "invalid", message: "label key"}},
		{apiCase: apiCase{name: "ListBadOnline", target: "/v1/devices?online=yes", status: http.StatusBadRequest, code: "invalid", message: "online must be true or false"}},
		{apiCase: apiCase{name: "ListLimitTooBig", target: "/v1/devices?limit=1001", status: http.StatusBadRequest, code: "invalid", message: "limit must be at most 1000"}},
		{apiCase: apiCase{name: "ListLimitZero", target: "/v1/devices?limit=0", status: http.StatusBadRequest, code: "invalid", message: "limit must be at least 1"}},
		{apiCase: apiCase{name: "ListLimitNotANumber", target: "/v1/devices?limit=ten", status: http.StatusBadRequest, code: "invalid", message: "limit must be an integer"}},
		{apiCase: apiCase{name: "ListLimitMax", target: "/v1/devices?limit=1000", status: http.StatusOK}},

		{apiCase: apiCase{name: "GetEscaped", target: "/v1/devices/thermo1%40example.com", status: http.StatusOK,
			check: func(t *testing.T, rec *httptest.ResponseRecorder) {
				wantKeys(t, rec.Body.Bytes(), deviceKeys...)
				got := decode[Device](t, rec)
				if got.JID != "thermo1@example.com" || got.LastSeenAt == nil || !got.LastSeenAt.Equal(testTime.Add(time.Hour)) {
					t.Errorf("device = %+v", got)
				}
			}},
			after: func(t *testing.T, svc *fakeDevices) {
				if svc.lastJID != "thermo1@example.com" {
					t.Errorf("service asked for %q", svc.lastJID)
				}
			}},
		{apiCase: apiCase{name: "GetUnescaped", target: "/v1/devices/thermo1@example.com", status: http.StatusOK}},
		// "%2525" is an escaped "%25": the JID is a%25b@example.com, not
		// a%b@example.com.
		{apiCase: apiCase{name: "GetEscapedPercent", target: "/v1/devices/a%2525b@example.com", status: http.StatusOK},
			after: func(t *testing.T, svc *fakeDevices) {
				if svc.lastJID != "a%25b@example.com" {
					t.Errorf("service asked for %q, want a%%25b@example.com", svc.lastJID)
				}
			}},
		{apiCase: apiCase{name: "GetEscapedPercentAndAt", target: "/v1/devices/a%2525b%40example.com", status: http.StatusOK},
			after: func(t *testing.T, svc *fakeDevices) {
				if svc.lastJID != "a%25b@example.com" {
					t.Errorf("service asked for %q, want a%%25b@example.com", svc.lastJID)
				}
			}},
		{apiCase: apiCase{name: "GetFullJID", target: "/v1/devices/thermo1%40example.com%2Fphone", status: http.StatusBadRequest, code: "invalid", message: "is a full JID"}},
		{apiCase: apiCase{name: "GetInvalidJID", target: "/v1/devices/%40%40", status: http.StatusBadRequest, code: "invalid", message: "not a valid JID"}},
		{apiCase: apiCase{name: "GetNotFound", target: "/v1/devices/nobody%40example.com", status: http.StatusNotFound, code: "not_found", message: "not registered"}},

		{apiCase: apiCase{name: "UpdateName", method: http.MethodPatch, target: "/v1/devices/thermo1%40example.com", body: `{"name":"Hall"}`, status: http.StatusOK,
			check: func(t *testing.T, rec *httptest.ResponseRecorder) {
				got := decode[Device](t, rec)
				if got.Name != "Hall" || got.Labels["room"] != "kitchen" || got.SchemaVersion != 2 {
					t.Errorf("device = %+v, want only the name changed", got)
				}
			}},
			after: func(t *testing.T, svc *fakeDevices) {
				if u := svc.lastUpdate; u.Name == nil || *u.Name != "Hall" || u.Labels != nil || u.SchemaVersion != nil {
					t.Errorf("update = %+v, want the name only", u)
				}
			}},
		{apiCase: apiCase{name: "UpdateEmptyName", method: http.MethodPatch, target: "/v1/devices/thermo1%40example.com", body: `{"name":""}`, status: http.StatusOK},
			after: func(t *testing.T, svc *fakeDevices) {
				if u := svc.lastUpdate; u.Name == nil || *u.Name != "" {
					t.Errorf("update = %+v, want the name set to empty", u)
				}
			}},
		{apiCase: apiCase{name: "UpdateClearLabels", method: http.MethodPatch, target: "/v1/devices/thermo1%40example.com", body: `{"labels":{}}`, status: http.StatusOK,
			check: func(t *testing.T, rec *httptest.ResponseRecorder) {
				if got := decode[Device](t, rec); len(got.Labels) != 0 || got.Name != "thermo1@example.com" {
					t.Errorf("device = %+v, want no labels", got)
				}
			}},
			after: func(t *testing.T, svc *fakeDevices) {
				if u := svc.lastUpdate; u.Labels == nil || len(*u.Labels) != 0 || u.Name != nil {
					t.Errorf("update = %+v, want labels set to {}", u)
				}
			}},
		{apiCase: apiCase{name: "UpdateSchemaVersion", method: http.MethodPatch, target: "/v1/devices/thermo1%40example.com", body: `{"schema_version":1}`, status: http.StatusOK,
			check: func(t *testing.T, rec *httptest.ResponseRecorder) {
				if got := decode[Device](t, rec); got.SchemaVersion != 1 {
					t.Errorf("schema_version = %d, want 1", got.SchemaVersion)
				}
			}}},
		{apiCase: apiCase{name: "UpdateNothing", method: http.MethodPatch, target: "/v1/devices/thermo1%40example.com", body: `{}`, status: http.StatusOK},
			after: func(t *testing.T, svc *fakeDevices) {
				if u := svc.lastUpdate; u.Name != nil || u.Labels != nil || u.SchemaVersion != nil {
					t.Errorf("update = %+v, want nothing", u)
				}
			}},
		{apiCase: apiCase{name: "UpdateVersionZero", method: http.MethodPatch, target: "/v1/devices/thermo1%40example.com", body: `{"schema_version":0}`, status: http.StatusBadRequest, code: "invalid", message: "schema_version must be at least 1"}},
		{apiCase: apiCase{name: "UpdateUnknownVersion", method: http.MethodPatch, target: "/v1/devices/thermo1%40example.com", body: `{"schema_version":9}`, status: http.StatusBadRequest, code: "invalid", message: "does not exist"}},
		{apiCase: apiCase{name: "UpdateNameTooLong", method: http.MethodPatch, target: "/v1/devices/thermo1%40example.com", body: `{"name":"` + strings.Repeat("x", 201) + `"}`, status: http.StatusBadRequest, code: "invalid", message: "name must be at most 200"}},
		{apiCase: apiCase{name: "UpdateBadJSON", method: http.MethodPatch, target: "/v1/devices/thermo1%40example.com", body: `{"name":`, status: http.StatusBadRequest, code: "invalid"}},
		{apiCase: apiCase{name: "UpdateNotFound", method: http.MethodPatch, target: "/v1/devices/nobody%40example.com", body: `{"name":"x"}`, status: http.StatusNotFound, code: "not_found"}},
		{apiCase: apiCase{name: "UpdateFullJID", method: http.MethodPatch, target: "/v1/devices/thermo1%40example.com%2Fr", body: `{"name":"x"}`, status: http.StatusBadRequest, code: "invalid", message: "full JID"}},

		{apiCase: apiCase{name: "Delete", method: http.MethodDelete, target: "/v1/devices/thermo1%40example.com", status: http.StatusNoContent},
			after: func(t *testing.T, svc *fakeDevices) {
				if _, ok := svc.devs["thermo1@example.com"]; ok || svc.readings["thermo1@example.com"] != nil {
					t.Errorf("device or its readings still there")
				}
			}},
		{apiCase: apiCase{name: "CreateWithAccount", method: http.MethodPost, target: "/v1/devices", body: create(`"jid":"new@example.com","account":{"create":true}`), status: http.StatusCreated,
			check: func(t *testing.T, rec *httptest.ResponseRecorder) {
				wantKeys(t, rec.Body.Bytes(), append(deviceKeys, "account")...)
				got := decode[CreatedDevice](t, rec)
				if got.JID != "new@example.com" || got.Account == nil || got.Account.JID != "new@example.com" || got.Account.Password != fakePassword {
					t.Errorf("answer = %+v, account %+v", got, got.Account)
				}
				if cc := rec.Header().Get(echo.HeaderCacheControl); cc != "no-store" {
					t.Errorf("Cache-Control = %q, want no-store: the answer holds a password", cc)
				}
			}},
			after: func(t *testing.T, svc *fakeDevices) {
				if got := svc.accounts["new@example.com"]; got != fakePassword {
					t.Errorf("account password = %q, want %q", got, fakePassword)
				}
			}},
		{apiCase: apiCase{name: "CreateWithAccountPassword", method: http.MethodPost, target: "/v1/devices", body: create(`"jid":"new@example.com","account":{"create":true,"password":"correct horse battery"}`), status: http.StatusCreated,
			check: func(t *testing.T, rec *httptest.ResponseRecorder) {
				if got := decode[CreatedDevice](t, rec); got.Account == nil || got.Account.Password != "correct horse battery" {
					t.Errorf("account = %+v", got.Account)
				}
			}}},
		{apiCase: apiCase{name: "CreateWithAccountShortPassword", method: http.MethodPost, target: "/v1/devices", body: create(`"jid":"new@example.com","account":{"create":true,"password":"short"}`), status: http.StatusBadRequest, code: "invalid"},
			after: func(t *testing.T, svc *fakeDevices) {
				if _, ok := svc.devs["new@example.com"]; ok || len(svc.accounts) != 0 {
					t.Errorf("device or account created for a refused request")
				}
			}},
		{apiCase: apiCase{name: "CreateWithAccountLongPassword", method: http.MethodPost, target: "/v1/devices", body: create(`"jid":"new@example.com","account":{"create":true,"password":"` + strings.Repeat("p", 129) + `"}`), status: http.StatusBadRequest, code: "invalid"}},
		{apiCase: apiCase{name: "CreatePasswordWithoutCreate", method: http.MethodPost, target: "/v1/devices", body: create(`"jid":"new@example.com","account":{"password":"correct horse battery"}`), status: http.StatusBadRequest, code: "invalid", message: "account.create"}},
		{apiCase: apiCase{name: "CreateAccountFalse", method: http.MethodPost, target: "/v1/devices", body: create(`"jid":"new@example.com","account":{"create":false}`), status: http.StatusCreated,
			check: func(t *testing.T, rec *httptest.ResponseRecorder) { wantKeys(t, rec.Body.Bytes(), deviceKeys...) }},
			after: func(t *testing.T, svc *fakeDevices) {
				if len(svc.accounts) != 0 {
					t.Errorf("accounts = %v, want none", svc.accounts)
				}
			}},
		{apiCase: apiCase{name: "DeleteWithAccount", method: http.MethodDelete, target: "/v1/devices/thermo1%40example.com?account=delete", status: http.StatusNoContent},
			after: func(t *testing.T, svc *fakeDevices) {
				if _, ok := svc.devs["thermo1@example.com"]; ok {
					t.Errorf("device still there")
				}
			}},
		{apiCase: apiCase{name: "DeleteBadAccountValue", method: http.MethodDelete, target: "/v1/devices/thermo1%40example.com?account=drop", status: http.StatusBadRequest, code: "invalid"},
			after: func(t *testing.T, svc *fakeDevices) {
				if _, ok := svc.devs["thermo1@example.com"]; !ok {
					t.Errorf("device deleted by a refused request")
				}
			}},
		{apiCase: apiCase{name: "DeleteNotFound", method: http.MethodDelete, target: "/v1/devices/nobody%40example.com", status: http.StatusNotFound, code: "not_found"}},
		{apiCase: apiCase{name: "DeleteInvalidJID", method: http.MethodDelete, target: "/v1/devices/example.com", status: http.StatusBadRequest, code: "invalid", message: "no local part"}},

		{apiCase: apiCase{name: "State", target: "/v1/devices/thermo1%40example.com/state", status: http.StatusOK,
			check: func(t *testing.T, rec *httptest.ResponseRecorder) {
				wantKeys(t, rec.Body.Bytes(), "jid", "online", "presence_stale", "resources", "last_seen_at", "reading")
				var got struct {
					JID        string          `json:"jid"`
					Online     bool            `json:"online"`
					LastSeenAt *time.Time      `json:"last_seen_at"`
					Reading    json.RawMessage `json:"reading"`
				}
				if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
					t.Fatal(err)
				}
				if got.JID != "thermo1@example.com" || !got.Online || got.LastSeenAt == nil {
					t.Errorf("state = %+v", got)
				}
				wantKeys(t, got.Reading, "id", "received_at", "device_time", "xml", "data")
				var r struct {
					ID   int64          `json:"id"`
					Data map[string]any `json:"data"`
				}
				if err := json.Unmarshal(got.Reading, &r); err != nil || r.ID != 2 || r.Data["temperature"] != 21.5 || r.Data["mode"] != "heat" {
					t.Errorf("reading = %s (%v), want reading 2 with its data as an object", got.Reading, err)
				}
			}}},
		{apiCase: apiCase{name: "StateBeforeFirstReading", target: "/v1/devices/thermo2%40example.com/state", status: http.StatusOK,
			check: func(t *testing.T, rec *httptest.ResponseRecorder) {
				want := `{"jid":"thermo2@example.com","online":false,"presence_stale":false,"resources":[],"last_seen_at":null,"reading":null}`
				if got := strings.TrimSpace(rec.Body.String()); got != want {
					t.Errorf("body = %s, want %s", got, want)
				}
			}}},
		{apiCase: apiCase{name: "StateNotFound", target: "/v1/devices/nobody%40example.com/state", status: http.StatusNotFound, code: "not_found"}},

		{apiCase: apiCase{name: "ReadingsDefaults", target: "/v1/devices/thermo1%40example.com/readings", status: http.StatusOK,
			check: func(t *testing.T, rec *httptest.ResponseRecorder) {
				wantKeys(t, rec.Body.Bytes(), "items")
				var got struct {
					Items []json.RawMessage `json:"items"`
				}
				if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil || len(got.Items) != 2 {
					t.Fatalf("items = %s (%v)", rec.Body.String(), err)
				}
				wantKeys(t, got.Items[0], "id", "received_at", "device_time", "xml", "data")
				if !strings.Contains(string(got.Items[0]), `"device_time":null`) || !strings.Contains(string(got.Items[0]), `"data":{"temperature":21}`) {
					t.Errorf("reading = %s", got.Items[0])
				}
			}},
			after: func(t *testing.T, svc *fakeDevices) {
				if f := svc.lastReadingFilter; f.Limit != DefaultPageLimit || !f.Desc || f.Since != nil || f.Until != nil || f.Cursor != "" {
					t.Errorf("filter = %+v, want limit 100, newest first", f)
				}
			}},
		{apiCase: apiCase{name: "ReadingsParams", target: "/v1/devices/thermo1%40example.com/readings?since=2026-01-02T00:00:00Z&until=2026-01-03T01:00:00%2B01:00&limit=1&cursor=&order=asc", status: http.StatusOK,
			check: func(t *testing.T, rec *httptest.ResponseRecorder) {
				got := decode[ReadingList](t, rec)
				if len(got.Items) != 1 || got.Items[0].ID != 1 || got.NextCursor != "+" {
					t.Errorf("page = %+v", got)
				}
			}},
			after: func(t *testing.T, svc *fakeDevices) {
				f := svc.lastReadingFilter
				since, until := time.Date(2026, 1, 2, 0, 0, 0, 0, time.UTC), time.Date(2026, 1, 3, 0, 0, 0, 0, time.UTC)
				if f.Limit != 1 || f.Desc || f.Since == nil || !f.Since.Equal(since) || f.Until == nil || !f.Until.Equal(until) {
					t.Errorf("filter = %+v", f)
				}
			}},
		{apiCase: apiCase{name: "ReadingsNextPage", target: "/v1/devices/thermo1%40example.com/readings?limit=1&cursor=%2B", status: http.StatusOK,
			check: func(t *testing.T, rec *httptest.ResponseRecorder) {
				got := decode[ReadingList](t, rec)
				if len(got.Items) != 1 || got.Items[0].ID != 2 || got.NextCursor != "" {
					t.Errorf("page = %+v", got)
				}
				if strings.Contains(rec.Body.String(), "next_cursor") {
					t.Errorf("last page has a next_cursor: %s", rec.Body.String())
				}
			}},
			after: func(t *testing.T, svc *fakeDevices) {
				if svc.lastReadingFilter.Cursor != "+" {
					t.Errorf("cursor = %q", svc.lastReadingFilter.Cursor)
				}
			}},
		{apiCase: apiCase{name: "ReadingsLimitTooBig", target: "/v1/devices/thermo1%40example.com/readings?limit=1001", status: http.StatusBadRequest, code: "invalid", message: "limit must be at most 1000"}},
		{apiCase: apiCase{name: "ReadingsLimitNegative", target: "/v1/devices/thermo1%40example.com/readings?limit=-5", status: http.StatusBadRequest, code: "invalid", message: "limit"}},
		{apiCase: apiCase{name: "ReadingsBadSince", target: "/v1/devices/thermo1%40example.com/readings?since=yesterday", status: http.StatusBadRequest, code: "invalid", message: "since must be an RFC 3339 time"}},
		{apiCase: apiCase{name: "ReadingsBadUntil", target: "/v1/devices/thermo1%40example.com/readings?until=2026-01-02", status: http.StatusBadRequest, code: "invalid", message: "until must be an RFC 3339 time"}},
		{apiCase: apiCase{name: "ReadingsUntilBeforeSince", target: "/v1/devices/thermo1%40example.com/readings?since=2026-01-03T00:00:00Z&until=2026-01-02T00:00:00Z", status: http.StatusBadRequest, code: "invalid", message: "until is before since"}},
		{apiCase: apiCase{name: "ReadingsBadOrder", target: "/v1/devices/thermo1%40example.com/readings?order=newest", status: http.StatusBadRequest, code: "invalid", message: "order must be one of: asc, desc"}},
		{apiCase: apiCase{name: "ReadingsNotFound", target: "/v1/devices/nobody%40example.com/readings", status: http.StatusNotFound, code: "not_found"}},
		{apiCase: apiCase{name: "ReadingsNone", target: "/v1/devices/thermo2%40example.com/readings", status: http.StatusOK,
			check: func(t *testing.T, rec *httptest.ResponseRecorder) {
				if got := strings.TrimSpace(rec.Body.String()); got != `{"items":[]}` {
					t.Errorf("body = %s", got)
				}
			}}},

		{apiCase: apiCase{name: "Rejections", target: "/v1/devices/thermo1%40example.com/rejections?order=asc&limit=10", status: http.StatusOK,
			check: func(t *testing.T, rec *httptest.ResponseRecorder) {
				var got struct {
					Items []json.RawMessage `json:"items"`
				}
				if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil || len(got.Items) != 1 {
					t.Fatalf("items = %s (%v)", rec.Body.String(), err)
				}
				wantKeys(t, got.Items[0], "id", "received_at", "via", "reason", "payload")
				r := decode[RejectionList](t, rec).Items[0]
				if r.ID != 7 || r.Via != "iq" || r.Reason == "" || r.Payload != "<reading/>" {
					t.Errorf("rejection = %+v", r)
				}
			}},
			after: func(t *testing.T, svc *fakeDevices) {
				if f := svc.lastReadingFilter; f.Limit != 10 || f.Desc {
					t.Errorf("filter = %+v", f)
				}
			}},
		{apiCase: apiCase{name: "RejectionsLimitTooBig", target: "/v1/devices/thermo1%40example.com/rejections?limit=5000", status: http.StatusBadRequest, code: "invalid", message: "limit must be at most 1000"}},
		{apiCase: apiCase{name: "RejectionsNotFound", target: "/v1/devices/nobody%40example.com/rejections", status: http.StatusNotFound, code: "not_found"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			svc := newDeviceFixture()
			tt.run(t, newAPI(t, nil, svc))
			if tt.after != nil {
				tt.after(t, svc)
			}
		})
	}

	t.Run("ErrInternal", func(t *testing.T) {
		svc := newDeviceFixture()
		svc.err = fmt.Errorf("list devices: %w", errors.New("pq: password authentication failed"))
		for _, target := range []string{"/v1/devices", "/v1/devices/thermo1%40example.com", "/v1/devices/thermo1%40example.com/readings"} {
			rec := apiCase{target: target, status: http.StatusInternalServerError, code: "internal", message: "internal error"}.run(t, newAPI(t, nil, svc))
			if strings.Contains(rec.Body.String(), "password") {
				t.Errorf("body leaks the cause: %s", rec.Body.String())
			}
		}
	})

	t.Run("ErrUnavailable", func(t *testing.T) {
		svc := newDeviceFixture()
		svc.err = &iotgate.Error{Code: iotgate.EUnavailable, Message: "database unavailable, try again later"}
		apiCase{target: "/v1/devices/thermo1%40example.com/state", status: http.StatusServiceUnavailable, code: "unavailable"}.run(t, newAPI(t, nil, svc))
	})

	t.Run("NotRegisteredWithoutService", func(t *testing.T) {
		apiCase{target: "/v1/devices", status: http.StatusNotFound, code: "not_found"}.run(t, newAPI(t, newFakeSchemas(), nil))
	})
}

// TestPathParam checks unescaping against what clients send: whatever
// url.PathEscape makes of a JID comes back as that JID.
func TestPathParam(t *testing.T) {
	for _, jid := range []string{"thermo1@example.com", "a%b@example.com", "a%25b@example.com", "ü@example.com", "a b@example.com", "a/b@example.com", "a+b@example.com", "a?b@example.com", "a#b@example.com"} {
		t.Run(jid, func(t *testing.T) {
			e := echo.New()
			var got string
			var gotErr error
			e.GET("/d/:jid", func(c echo.Context) error {
				got, gotErr = pathParam(c, "jid")
				return nil
			})
			e.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/d/"+url.PathEscape(jid), nil))
			if gotErr != nil || got != jid {
				t.Errorf("pathParam = %q, %v; want %q", got, gotErr, jid)
			}
		})
	}
}

// FuzzDeviceJIDPath sends arbitrary JIDs in the path, escaped and raw, to
// every device route: the answer is never a 5xx (or a panic).
func FuzzDeviceJIDPath(f *testing.F) {
	for _, s := range []string{"thermo1@example.com", "thermo1%40example.com", "a%2525b@example.com", "%zz", "%", "@@", "a@b/c", "x@y%2Fz",
		"", "..", "%2e%2e", "\x00", "ü@例え.jp", strings.Repeat("a", 1100) + "@example.com", "a@b/state", "thermo1@example.com%00"} {
		f.Add(s)
	}
	svc := newDeviceFixture()
	s := newServer(Config{}, Deps{Devices: svc})
	f.Fuzz(func(t *testing.T, jid string) {
		paths := []string{"/v1/devices/" + url.PathEscape(jid)}
		if u, err := url.Parse("/v1/devices/" + jid); err == nil && u.Path != "" {
			paths = append(paths, u.RequestURI())
		}
		for _, p := range paths {
			for _, suffix := range []string{"", "/state", "/readings", "/rejections"} {
				req := httptest.NewRequest(http.MethodGet, "/", nil)
				u, err := url.ParseRequestURI(p + suffix)
				if err != nil {
					continue
				}
				req.URL, req.RequestURI = u, p+suffix
				req.Header.Set(echo.HeaderAuthorization, "Bearer "+testToken)
				rec := httptest.NewRecorder()
				s.ServeHTTP(rec, req)
				if rec.Code >= 500 {
					t.Fatalf("GET %q = %d: %s", p+suffix, rec.Code, rec.Body.String())
				}
				if rec.Code >= 400 {
					var er ErrorResponse
					if err := json.Unmarshal(rec.Body.Bytes(), &er); err != nil || er.Code == "" {
						t.Fatalf("GET %q = %d with body %q, want an ErrorResponse", p+suffix, rec.Code, rec.Body.String())
					}
				}
			}
		}
	})
}

// FuzzCreateDeviceBody posts arbitrary bodies to POST /v1/devices: the
// answer is 201, 400, 409 or 413 with a JSON body, never a 5xx (or a
// panic), and a created device has a bare JID.
func FuzzCreateDeviceBody(f *testing.F) {
	for _, s := range []string{
		`{"jid":"new@example.com","schema":"thermostat"}`,
		`{"jid":"New@Example.COM","schema":"thermostat","schema_version":1,"name":"n","labels":{"room":"kitchen"}}`,
		`{"jid":"new@example.com/r","schema":"thermostat"}`,
		`{"jid":"@","schema":"thermostat"}`,
		`{"jid":"a@b","schema":"thermostat","schema_version":99999999999999999999}`,
		`{"jid":"a@b","schema":"thermostat","labels":{"":"x"}}`,
		`{"jid":"a@b","schema":"thermostat","labels":null,"name":null}`,
		`{"jid":["a"]}`, `[]`, `null`, `{`, `"`, ``, `{"jid":"\ud800@b","schema":"thermostat"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		s := newServer(Config{BodyLimit: 4096}, Deps{Devices: newFakeDevices()})
		req := httptest.NewRequest(http.MethodPost, "/v1/devices", strings.NewReader(string(body)))
		req.Header.Set(echo.HeaderContentType, echo.MIMEApplicationJSON)
		req.Header.Set(echo.HeaderAuthorization, "Bearer "+testToken)
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, req)
		switch rec.Code {
		case http.StatusCreated:
			d := decode[Device](t, rec)
			if bare, err := iotgate.NormalizeJID(d.JID); err != nil || bare != d.JID {
				t.Fatalf("created device with JID %q (normalized %q, %v)", d.JID, bare, err)
			}
		case http.StatusBadRequest, http.StatusConflict, http.StatusRequestEntityTooLarge:
			if er := decode[ErrorResponse](t, rec); er.Code == "" || er.Message == "" {
				t.Fatalf("error body %q", rec.Body.String())
			}
		default:
			t.Fatalf("POST %q = %d: %s", body, rec.Code, rec.Body.String())
		}
	})
}
