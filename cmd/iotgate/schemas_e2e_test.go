//go:build integration

package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/iotgate/iotgate/internal/device"
	"github.com/iotgate/iotgate/internal/servers"
)

// e2eUnitsXSD defines a type; e2eMeterXSD imports it by namespace.
const (
	e2eUnitsXSD = `<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema" targetNamespace="urn:test:units" elementFormDefault="qualified">
<xs:simpleType name="celsius"><xs:restriction base="xs:decimal"/></xs:simpleType>
</xs:schema>`
	e2eMeterXSD = `<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema" xmlns:u="urn:test:units" targetNamespace="urn:test:meter" xmlns="urn:test:meter" elementFormDefault="qualified">
<xs:import namespace="urn:test:units"/>
<xs:element name="reading"><xs:complexType><xs:sequence><xs:element name="t" type="u:celsius"/></xs:sequence></xs:complexType></xs:element>
</xs:schema>`
)

// schemaAnswer is the status, problem code, message and Retry-After of an
// answer to a schema write.
type schemaAnswer struct {
	status     int
	code, msg  string
	retryAfter string
}

func (g *gate) schemaWrite(method, path string, body any) schemaAnswer {
	g.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = strings.NewReader(string(b))
	}
	req, err := http.NewRequest(method, g.base+path, rd)
	if err != nil {
		g.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+g.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		g.t.Fatal(err)
	}
	defer resp.Body.Close()
	var p struct{ Code, Message string }
	b, _ := io.ReadAll(resp.Body)
	json.Unmarshal(b, &p)
	return schemaAnswer{resp.StatusCode, p.Code, p.Message, resp.Header.Get("Retry-After")}
}

// TestE2ESchemaLimits runs the schema attacks against the binary: deleting
// a version another one imports (refused), readings while the compiled
// schema cache holds a single schema (each recompiled, all valid), the
// version quota, and the per-token schema write rate.
func TestE2ESchemaLimits(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const writeRate = 8
	e := newCommandsEnv(t, ctx, "prosody", // registers thermostat: write 1
		"IOTGATE_MAX_SCHEMA_VERSIONS", "4", "IOTGATE_SCHEMA_CACHE_SIZE", "1",
		"IOTGATE_SCHEMA_WRITE_RATE", strconv.Itoa(writeRate))
	g := e.g
	writes := 1
	write := func(method, path string, body any) schemaAnswer {
		writes++
		return g.schemaWrite(method, path, body)
	}
	for _, s := range []struct{ name, xsd string }{{"units", e2eUnitsXSD}, {"meter", e2eMeterXSD}} {
		if a := write("POST", "/v1/schemas", map[string]string{"name": s.name, "xsd": s.xsd}); a.status != 201 {
			t.Fatalf("register %s: %+v", s.name, a)
		}
	}

	t.Run("DeleteImportedRefused", func(t *testing.T) {
		a := write("DELETE", "/v1/schemas/units/versions/1", nil)
		if a.status != 409 || a.code != "schema_in_use" || !strings.Contains(a.msg, "meter version 1") {
			t.Fatalf("delete of an imported version: %+v, want 409 schema_in_use naming meter version 1", a)
		}
	})

	t.Run("ReadingsAfterEviction", func(t *testing.T) {
		thermo := e.register("thermo1")
		meter := "meter1@" + e.xs.Domain()
		if code := g.do("POST", "/v1/devices", map[string]any{"jid": meter, "schema": "meter"}, nil); code != 201 {
			t.Fatalf("register %s: %d", meter, code)
		}
		servers.RegisterUserForTest(t, e.xs, "meter1", "pw-meter1")
		ok := func(device.IQ) device.Reply { return device.Reply{Type: "result"} }
		devs := map[string]*device.Client{thermo: e.online("thermo1", ok), meter: e.online("meter1", ok)}
		payloads := map[string]string{
			thermo: `<reading xmlns="urn:example:thermostat"><temperature>21.5</temperature><mode>heat</mode></reading>`,
			meter:  `<reading xmlns="urn:test:meter"><t>21.5</t></reading>`,
		}
		// Alternating: with a cache of one, each evicts the other's schema.
		for i := range 6 {
			jid := thermo
			if i%2 == 1 {
				jid = meter
			}
			rep, err := devs[jid].SendIQ(ctx, "set", e2eDomain, payloads[jid])
			if err != nil {
				t.Fatal(err)
			}
			if rep.Type != "result" {
				t.Fatalf("reading %d from %s: %+v, want result", i+1, jid, rep)
			}
		}
	})

	t.Run("VersionQuota", func(t *testing.T) {
		if a := write("POST", "/v1/schemas", map[string]string{"name": "units", "xsd": e2eUnitsXSD}); a.status != 201 {
			t.Fatalf("4th version: %+v, want 201", a)
		}
		a := write("POST", "/v1/schemas", map[string]string{"name": "units", "xsd": e2eUnitsXSD})
		if a.status != 409 || a.code != "schema_quota_exceeded" {
			t.Fatalf("5th version: %+v, want 409 schema_quota_exceeded", a)
		}
	})

	t.Run("WriteRate", func(t *testing.T) {
		// The bucket holds writeRate and refills one every 60/writeRate
		// s: however slow the machine, a 429 comes well within
		// 3*writeRate writes.
		var a schemaAnswer
		for range 3 * writeRate {
			if a = write("POST", "/v1/schemas", map[string]string{"name": "units", "xsd": e2eUnitsXSD}); a.status != 409 {
				break
			}
		}
		secs, err := strconv.Atoi(a.retryAfter)
		if a.status != 429 || a.code != "schema_write_rate" || err != nil || secs < 1 || secs > 60 {
			t.Fatalf("write %d at %d a minute: %+v, want 429 schema_write_rate with Retry-After 1-60", writes, writeRate, a)
		}
		t.Logf("refused at write %d (rate %d a minute)", writes, writeRate)
		// Reads are not writes.
		if code := g.do("GET", "/v1/schemas", nil, nil); code != 200 {
			t.Errorf("GET after the write rate: %d", code)
		}
	})
}
