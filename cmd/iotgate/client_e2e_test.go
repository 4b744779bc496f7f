//go:build integration

package main

import (
	"context"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/iotgate/iotgate/api/client"
	"github.com/iotgate/iotgate/internal/servers"
)

// val is *p, or the zero value when p is nil (the generated types make
// every optional field a pointer).
func val[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

// TestE2EGeneratedClient drives iotgate only through the Go client that
// oapi-codegen generated from its OpenAPI description (api/client, make
// client): if the description says something the server doesn't do (a
// path, how a parameter is encoded, a field's type, a status and its body),
// a typed call or the decoding of its answer fails here.
func TestE2EGeneratedClient(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	e := newCommandsEnv(t, ctx, servers.XMPPServerNames[0]) // registers schema thermostat
	c, err := client.NewClientWithResponses(e.g.base, client.WithHTTPClient(e.g.client))
	if err != nil {
		t.Fatal(err)
	}
	jid := "thermo1@" + e.xs.Domain()

	t.Run("Health", func(t *testing.T) {
		r, err := c.GetHealthzWithResponse(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if r.StatusCode() != 200 || r.JSON200 == nil || val(r.JSON200.Status) != "ok" {
			t.Errorf("GET /healthz: %d %s", r.StatusCode(), r.Body)
		}
	})
	t.Run("Schema", func(t *testing.T) {
		r, err := c.GetV1SchemasNameVersionsVersionWithResponse(ctx, "thermostat", 1)
		if err != nil {
			t.Fatal(err)
		}
		if r.StatusCode() != 200 || r.JSON200 == nil || val(r.JSON200.Name) != "thermostat" || val(r.JSON200.TargetNamespace) != "urn:example:thermostat" {
			t.Fatalf("GET the schema: %d %s", r.StatusCode(), r.Body)
		}
		if !slices.Contains(val(r.JSON200.GlobalElements), "reading") {
			t.Errorf("global elements %v lack reading", val(r.JSON200.GlobalElements))
		}
	})
	// A 422's details are a list (the compiler's issues), typed so by the
	// operation's annotation; api.ErrorResponse itself leaves details
	// open, since it is a list or an object depending on the error.
	t.Run("SchemaDoesNotCompile", func(t *testing.T) {
		r, err := c.PostV1SchemasWithResponse(ctx, client.ApiCreateSchemaRequest{Name: "broken",
			Xsd: "<xs:schema xmlns:xs='http://www.w3.org/2001/XMLSchema'>\n<xs:element name='a' type='xs:nope'/></xs:schema>"})
		if err != nil {
			t.Fatal(err)
		}
		if r.StatusCode() != 422 || r.JSON422 == nil || r.JSON422.Code == "" {
			t.Fatalf("POST a broken schema: %d %s", r.StatusCode(), r.Body)
		}
		issues := val(r.JSON422.Details)
		if len(issues) == 0 || val(issues[0].Line) != 2 || val(issues[0].Message) == "" {
			t.Errorf("issues = %s, want the compiler's, on line 2", r.Body)
		}
	})
	t.Run("RegisterDevice", func(t *testing.T) {
		r, err := c.PostV1DevicesWithResponse(ctx, client.ApiCreateDeviceRequest{Jid: jid, Schema: "thermostat",
			Name: new("Kitchen"), Labels: &map[string]string{"room": "kitchen"}})
		if err != nil {
			t.Fatal(err)
		}
		if r.StatusCode() != 201 || r.JSON201 == nil || val(r.JSON201.Jid) != jid || val(r.JSON201.SchemaVersion) != 1 {
			t.Fatalf("POST /v1/devices: %d %s", r.StatusCode(), r.Body)
		}
	})
	// A JID in the path (its @ escaped by the client).
	t.Run("GetDevice", func(t *testing.T) {
		r, err := c.GetV1DevicesJidWithResponse(ctx, jid)
		if err != nil {
			t.Fatal(err)
		}
		if r.StatusCode() != 200 || r.JSON200 == nil || val(r.JSON200.Name) != "Kitchen" || val(r.JSON200.Labels)["room"] != "kitchen" {
			t.Errorf("GET the device: %d %s", r.StatusCode(), r.Body)
		}
	})
	// Query parameters, a repeated one (label, collectionFormat multi)
	// among them.
	t.Run("ListDevices", func(t *testing.T) {
		for _, tt := range []struct {
			name   string
			params client.GetV1DevicesParams
			want   []string
		}{
			{"ByLabel", client.GetV1DevicesParams{Label: &[]string{"room:kitchen"}, Limit: new(10)}, []string{jid}},
			{"ByTwoLabels", client.GetV1DevicesParams{Label: &[]string{"room:kitchen", "site:berlin"}}, nil},
			{"BySchema", client.GetV1DevicesParams{Schema: new("thermostat")}, []string{jid}},
			{"OtherSchema", client.GetV1DevicesParams{Schema: new("meter")}, nil},
			{"Offline", client.GetV1DevicesParams{Online: new(false)}, []string{jid}},
		} {
			t.Run(tt.name, func(t *testing.T) {
				r, err := c.GetV1DevicesWithResponse(ctx, &tt.params)
				if err != nil {
					t.Fatal(err)
				}
				if r.StatusCode() != 200 || r.JSON200 == nil {
					t.Fatalf("GET /v1/devices: %d %s", r.StatusCode(), r.Body)
				}
				var got []string
				for _, d := range val(r.JSON200.Items) {
					got = append(got, val(d.Jid))
				}
				if !slices.Equal(got, tt.want) {
					t.Errorf("got %v, want %v", got, tt.want)
				}
			})
		}
	})

	servers.RegisterUserForTest(t, e.xs, "thermo1", "pw-thermo1")
	dev := e.online("thermo1", thermostat)

	// A time with an offset: its + must reach the server escaped.
	since := time.Now().Add(-time.Minute).Truncate(time.Second).In(time.FixedZone("", 90*60))
	t.Run("Readings", func(t *testing.T) {
		for _, temp := range []string{"20.5", "21.25"} {
			rep, err := dev.SendIQ(ctx, "set", e2eDomain, `<reading xmlns="urn:example:thermostat"><temperature>`+temp+`</temperature><mode>heat</mode></reading>`)
			if err != nil {
				t.Fatal(err)
			}
			if rep.Type != "result" {
				t.Fatalf("reading %s: %+v", temp, rep)
			}
		}
		r, err := c.GetV1DevicesJidReadingsWithResponse(ctx, jid, &client.GetV1DevicesJidReadingsParams{
			Since: &since, Order: new(client.GetV1DevicesJidReadingsParamsOrder("asc")), Limit: new(10)})
		if err != nil {
			t.Fatal(err)
		}
		if r.StatusCode() != 200 || r.JSON200 == nil {
			t.Fatalf("GET readings: %d %s", r.StatusCode(), r.Body)
		}
		var got []any
		for _, rd := range val(r.JSON200.Items) {
			got = append(got, val(rd.Data)["temperature"])
		}
		if want := []any{20.5, 21.25}; !slices.Equal(got, want) {
			t.Errorf("temperatures %v, want %v", got, want)
		}
	})
	t.Run("Command", func(t *testing.T) {
		r, err := c.PostV1DevicesJidCommandsWithResponse(ctx, jid, &client.PostV1DevicesJidCommandsParams{IdempotencyKey: new("client-e2e-1")},
			client.ApiCreateCommandRequest{Payload: new(setTarget("21.5"))})
		if err != nil {
			t.Fatal(err)
		}
		if r.StatusCode() != 200 || r.JSON200 == nil || val(r.JSON200.Status) != "succeeded" || val(val(r.JSON200.Response).Data)["target"] != 21.5 {
			t.Fatalf("POST a command: %d %s", r.StatusCode(), r.Body)
		}
		got, err := c.GetV1CommandsIdWithResponse(ctx, val(r.JSON200.Id))
		if err != nil {
			t.Fatal(err)
		}
		if got.StatusCode() != 200 || got.JSON200 == nil || val(got.JSON200.IdempotencyKey) != "client-e2e-1" || len(val(got.JSON200.History)) != 3 {
			t.Errorf("GET the command: %d %s", got.StatusCode(), got.Body)
		}
	})
	// A 502's details are the stored command, typed so in the description.
	t.Run("CommandDeviceError", func(t *testing.T) {
		r, err := c.PostV1DevicesJidCommandsWithResponse(ctx, jid, nil, client.ApiCreateCommandRequest{Payload: new(setTarget("99"))})
		if err != nil {
			t.Fatal(err)
		}
		if r.StatusCode() != 502 || r.JSON502 == nil || r.JSON502.Code != "xmpp_error" {
			t.Fatalf("POST a refused command: %d %s", r.StatusCode(), r.Body)
		}
		if x := val(val(r.JSON502.Details).XmppError); val(x.Condition) != "not-acceptable" || val(x.Type) != "modify" {
			t.Errorf("xmpp_error = %s", r.Body)
		}
	})
	t.Run("Problems", func(t *testing.T) {
		anon, err := client.NewClientWithResponses(e.g.base)
		if err != nil {
			t.Fatal(err)
		}
		for _, tt := range []struct {
			name     string
			call     func() (status int, problem *client.ApiErrorResponse, err error)
			status   int
			wantCode string
		}{
			{"ErrUnknownDevice", func() (int, *client.ApiErrorResponse, error) {
				r, err := c.GetV1DevicesJidWithResponse(ctx, "nobody@"+e.xs.Domain())
				if err != nil {
					return 0, nil, err
				}
				return r.StatusCode(), r.JSON404, nil
			}, http.StatusNotFound, "not_found"},
			{"ErrNoToken", func() (int, *client.ApiErrorResponse, error) {
				r, err := anon.GetV1DevicesWithResponse(ctx, nil)
				if err != nil {
					return 0, nil, err
				}
				return r.StatusCode(), r.JSON401, nil
			}, http.StatusUnauthorized, "unauthorized"},
			{"ErrDuplicateDevice", func() (int, *client.ApiErrorResponse, error) {
				r, err := c.PostV1DevicesWithResponse(ctx, client.ApiCreateDeviceRequest{Jid: jid, Schema: "thermostat"})
				if err != nil {
					return 0, nil, err
				}
				return r.StatusCode(), r.JSON409, nil
			}, http.StatusConflict, "conflict"},
		} {
			t.Run(tt.name, func(t *testing.T) {
				status, problem, err := tt.call()
				if err != nil {
					t.Fatal(err)
				}
				if status != tt.status || problem == nil || problem.Code != tt.wantCode || problem.Message == "" {
					t.Errorf("got %d %+v, want %d with code %s", status, problem, tt.status, tt.wantCode)
				}
			})
		}
	})
}
