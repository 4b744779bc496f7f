package sim

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// fakeToken is the only token fakeAPI accepts.
const fakeToken = "iotg_test"

// fakeAPI is the part of iotgate's REST API Register uses.
type fakeAPI struct {
	mu      sync.Mutex
	schemas map[string]string
	devices map[string]string
	calls   []string
}

func (f *fakeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, r.Method+" "+r.URL.EscapedPath())
	var body map[string]any
	_ = json.NewDecoder(r.Body).Decode(&body)
	problem := func(code int, c string) {
		w.WriteHeader(code)
		json.NewEncoder(w).Encode(map[string]string{"code": c, "message": c + " here"})
	}
	switch {
	case r.Header.Get("Authorization") != "Bearer "+fakeToken:
		problem(401, "unauthorized")
	case r.Method == "GET" && strings.HasPrefix(r.URL.Path, "/v1/schemas/"):
		if _, ok := f.schemas[strings.TrimPrefix(r.URL.Path, "/v1/schemas/")]; !ok {
			problem(404, "not_found")
			return
		}
		w.Write([]byte(`{}`))
	case r.Method == "POST" && r.URL.Path == "/v1/schemas":
		f.schemas[body["name"].(string)] = body["xsd"].(string)
		w.WriteHeader(201)
	case r.Method == "POST" && r.URL.Path == "/v1/devices":
		jid := body["jid"].(string)
		if strings.HasPrefix(jid, "bad") {
			problem(400, "invalid")
			return
		}
		if _, ok := f.devices[jid]; ok {
			problem(409, "conflict")
			return
		}
		f.devices[jid] = body["schema"].(string)
		w.WriteHeader(201)
	default:
		problem(404, "not_found")
	}
}

func TestRegister(t *testing.T) {
	api := &fakeAPI{schemas: map[string]string{}, devices: map[string]string{"t2@localhost": "thermostat"}}
	srv := httptest.NewServer(api)
	defer srv.Close()
	ctx := context.Background()
	reg := Registration{BaseURL: srv.URL + "/", Schema: "thermostat", Kind: "thermostat", JIDs: []string{"t1@localhost", "t2@localhost"}, Token: fakeToken}

	n, err := Register(ctx, srv.Client(), reg)
	if err != nil || n != 1 {
		t.Fatalf("Register = %d, %v; want 1 new device", n, err)
	}
	if !strings.Contains(api.schemas["thermostat"], "urn:example:thermostat") || api.devices["t1@localhost"] != "thermostat" {
		t.Errorf("registered %v %v", api.schemas, api.devices)
	}
	// Again: the schema exists, the devices too.
	api.calls = nil
	if n, err := Register(ctx, srv.Client(), reg); err != nil || n != 0 {
		t.Errorf("second Register = %d, %v; want 0 new", n, err)
	}
	if strings.Join(api.calls, ",") != "GET /v1/schemas/thermostat,POST /v1/devices,POST /v1/devices" {
		t.Errorf("calls = %v", api.calls)
	}
	reg.JIDs = []string{"bad@localhost"}
	if _, err := Register(ctx, srv.Client(), reg); err == nil || !strings.Contains(err.Error(), "400 invalid: invalid here") {
		t.Errorf("refused device: err = %v, want the API's code and message", err)
	}
	noToken := reg
	noToken.Token, noToken.JIDs = "", []string{"t3@localhost"}
	if _, err := Register(ctx, srv.Client(), noToken); err == nil || !strings.Contains(err.Error(), "401 unauthorized") {
		t.Errorf("without a token: err = %v, want 401 unauthorized", err)
	}
	reg.Kind = "toaster"
	if _, err := Register(ctx, srv.Client(), reg); err == nil {
		t.Error("unknown kind: no error")
	}
}
