package api

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/iotgate/iotgate"
	"github.com/iotgate/iotgate/internal/memstore"
	"github.com/iotgate/iotgate/webhooks"
)

// adminBerlin is an admin token limited to site=berlin.
const adminBerlin = "secret-admin-berlin"

// webhookFixture serves /v1/webhooks over the real service and an
// in-memory store, refusing private URLs as a default iotgate does.
func webhookFixture(t *testing.T) (*Server, *memstore.EventLog) {
	t.Helper()
	log := &memstore.EventLog{}
	svc := webhooks.NewService(memstore.NewWebhookStore(), log, webhooks.Config{})
	auth := newFakeAuth(map[string]*iotgate.Token{
		adminBerlin:                            {ID: "tok_ab", Name: "admin-berlin", Scopes: []iotgate.Scope{iotgate.ScopeAdmin}, Devices: iotgate.Selector{"site": "berlin"}},
		scopeSecret(iotgate.ScopeDevicesWrite): {ID: "tok_dw", Name: "dw", Scopes: []iotgate.Scope{iotgate.ScopeDevicesWrite}},
	})
	return newServer(Config{}, Deps{Auth: auth, Webhooks: svc}), log
}

func TestWebhooks(t *testing.T) {
	s, log := webhookFixture(t)
	log.Append(iotgate.Event{Type: iotgate.EventReading, Device: "a@example.com", Data: []byte(`{}`)})
	const public = "https://93.184.216.34/hook"

	rec := apiCase{method: "POST", target: "/v1/webhooks", body: `{"url":"` + public + `","types":["reading"],"devices":{"site":"berlin"}}`, status: 201}.run(t, s)
	created := decode[CreatedWebhook](t, rec)
	if !strings.HasPrefix(created.Secret, webhooks.SecretPrefix) || !strings.HasPrefix(created.ID, "wh_") || created.State != "active" ||
		created.Cursor != 1 || created.TokenID != "tok_test" || rec.Header().Get("Location") != "/v1/webhooks/"+created.ID {
		t.Errorf("created %s (Location %q)", rec.Body.String(), rec.Header().Get("Location"))
	}
	own := apiCase{method: "POST", target: "/v1/webhooks", body: `{"url":"` + public + `","secret":"my-own-secret-0123456789"}`, status: 201}.run(t, s)
	if got := decode[CreatedWebhook](t, own); got.Secret != "my-own-secret-0123456789" {
		t.Errorf("secret %q", got.Secret)
	}
	id := created.ID

	tests := []apiCase{
		{name: "Get", target: "/v1/webhooks/" + id, status: 200, check: func(t *testing.T, rec *httptest.ResponseRecorder) {
			if strings.Contains(rec.Body.String(), created.Secret) || strings.Contains(rec.Body.String(), `"secret"`) {
				t.Errorf("the secret is shown: %s", rec.Body.String())
			}
			if got := decode[Webhook](t, rec); got.Lag == nil || got.Lag.Events != 0 || got.Types[0] != "reading" || got.Devices["site"] != "berlin" {
				t.Errorf("get %s", rec.Body.String())
			}
		}},
		{name: "List", target: "/v1/webhooks", status: 200, check: func(t *testing.T, rec *httptest.ResponseRecorder) {
			if got := decode[WebhookList](t, rec); len(got.Items) != 2 || got.Items[0].ID != id || got.Items[0].Lag != nil {
				t.Errorf("list %s", rec.Body.String())
			}
		}},
		{name: "Pause", method: "PATCH", target: "/v1/webhooks/" + id, body: `{"paused":true}`, status: 200, check: func(t *testing.T, rec *httptest.ResponseRecorder) {
			if got := decode[Webhook](t, rec); !got.Paused || got.State != "paused" {
				t.Errorf("paused %s", rec.Body.String())
			}
		}},
		{name: "Resume", method: "PATCH", target: "/v1/webhooks/" + id, body: `{"paused":false}`, status: 200, check: func(t *testing.T, rec *httptest.ResponseRecorder) {
			if got := decode[Webhook](t, rec); got.Paused || got.State != "active" {
				t.Errorf("resumed %s", rec.Body.String())
			}
		}},
		{name: "PatchNoPaused", method: "PATCH", target: "/v1/webhooks/" + id, body: `{}`, status: 400, code: iotgate.EInvalid},
		{name: "Loopback", method: "POST", target: "/v1/webhooks", body: `{"url":"http://127.0.0.1:8080/x"}`, status: 400, code: iotgate.DetailWebhookURLRefused, message: "loopback"},
		{name: "Metadata", method: "POST", target: "/v1/webhooks", body: `{"url":"http://169.254.169.254/latest/meta-data/"}`, status: 400, code: iotgate.DetailWebhookURLRefused, message: "link-local"},
		{name: "Localhost", method: "POST", target: "/v1/webhooks", body: `{"url":"http://localhost/x"}`, status: 400, code: iotgate.DetailWebhookURLRefused},
		{name: "Scheme", method: "POST", target: "/v1/webhooks", body: `{"url":"gopher://93.184.216.34/"}`, status: 400, code: iotgate.EInvalid},
		{name: "NoURL", method: "POST", target: "/v1/webhooks", body: `{}`, status: 400, code: iotgate.EInvalid},
		{name: "BadType", method: "POST", target: "/v1/webhooks", body: `{"url":"` + public + `","types":["gap"]}`, status: 400, code: iotgate.EInvalid},
		{name: "ShortSecret", method: "POST", target: "/v1/webhooks", body: `{"url":"` + public + `","secret":"short"}`, status: 400, code: iotgate.EInvalid},
		{name: "Unknown", target: "/v1/webhooks/wh_nope", status: 404, code: iotgate.ENotFound},
		{name: "DeleteUnknown", method: "DELETE", target: "/v1/webhooks/wh_nope", status: 404, code: iotgate.ENotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.run(t, s) })
	}

	t.Run("LimitedToken", func(t *testing.T) {
		as := func(method, target, body string) *httptest.ResponseRecorder {
			return do(t, s, method, target, strings.NewReader(body), "Authorization", "Bearer "+adminBerlin, "Content-Type", "application/json")
		}
		if rec := as("POST", "/v1/webhooks", `{"url":"`+public+`"}`); rec.Code != http.StatusForbidden {
			t.Errorf("all devices from a berlin token: %d %s", rec.Code, rec.Body.String())
		}
		rec := as("POST", "/v1/webhooks", `{"url":"`+public+`","devices":{"site":"berlin","floor":"2"}}`)
		if rec.Code != http.StatusCreated {
			t.Fatalf("berlin webhook: %d %s", rec.Code, rec.Body.String())
		}
		mine := decode[CreatedWebhook](t, rec).ID
		// The unlimited webhook (own) is invisible to it; the berlin one
		// of the unlimited admin is visible.
		list := decode[WebhookList](t, as("GET", "/v1/webhooks", ""))
		if len(list.Items) != 2 || list.Items[0].ID != id || list.Items[1].ID != mine {
			t.Errorf("berlin sees %+v", list.Items)
		}
		if rec := as("GET", "/v1/webhooks/"+decode[CreatedWebhook](t, own).ID, ""); rec.Code != http.StatusNotFound {
			t.Errorf("berlin gets the unlimited webhook: %d", rec.Code)
		}
		if rec := as("DELETE", "/v1/webhooks/"+decode[CreatedWebhook](t, own).ID, ""); rec.Code != http.StatusNotFound {
			t.Errorf("berlin deletes the unlimited webhook: %d", rec.Code)
		}
	})
	t.Run("NeedsAdmin", func(t *testing.T) {
		rec := do(t, s, "GET", "/v1/webhooks", nil, "Authorization", "Bearer "+scopeSecret(iotgate.ScopeDevicesWrite))
		if rec.Code != http.StatusForbidden {
			t.Errorf("devices:write lists webhooks: %d", rec.Code)
		}
	})
	t.Run("Delete", func(t *testing.T) {
		apiCase{method: "DELETE", target: "/v1/webhooks/" + id, status: 204}.run(t, s)
		apiCase{target: "/v1/webhooks/" + id, status: 404}.run(t, s)
	})
}

type fakeWebhookStats struct{}

func (fakeWebhookStats) Deliveries() map[string]uint64 {
	return map[string]uint64{webhooks.OutcomeOK: 7, webhooks.OutcomeTimeout: 2}
}
func (fakeWebhookStats) Lag() (int64, float64) { return 12, 3.5 }

func TestWebhookMetrics(t *testing.T) {
	m := NewMetrics(MetricsSources{Webhooks: fakeWebhookStats{}})
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	for _, want := range []string{
		`iotgate_webhook_deliveries_total{outcome="ok"} 7`,
		`iotgate_webhook_deliveries_total{outcome="timeout"} 2`,
		`iotgate_webhook_deliveries_total{outcome="network"} 0`,
		"iotgate_webhook_lag_events 12",
		"iotgate_webhook_lag_seconds 3.5",
	} {
		if !strings.Contains(rec.Body.String(), want) {
			t.Errorf("no %q in the metrics", want)
		}
	}
}
