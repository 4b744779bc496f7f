//go:build integration

package main

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/iotgate/iotgate/internal/device"
	"github.com/iotgate/iotgate/internal/servers"
)

// slowPatternXSD is registered with a harmless pattern, which the test
// then replaces in the database with slowPattern: libxml2 backtracks on it
// for ~3.6 s on a value of 256 characters that fails at its end, and the
// registration probe refuses it, but a version stored before the probe
// caught it (or a pattern the probe misses) is compiled without a probe.
const slowPatternXSD = `<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema" targetNamespace="urn:example:slow" xmlns="urn:example:slow" elementFormDefault="qualified">
  <xs:simpleType name="P"><xs:restriction base="xs:string"><xs:pattern value="Q1*!"/></xs:restriction></xs:simpleType>
  <xs:element name="reading"><xs:complexType><xs:sequence><xs:element name="v" type="P" maxOccurs="unbounded"/></xs:sequence></xs:complexType></xs:element>
</xs:schema>`

const slowPattern = `Q\d*\d*\d*\d*!`

// TestE2EPatternTimeout is the attack: a device whose readings
// make its schema's xs:pattern backtrack for seconds. With
// IOTGATE_PATTERN_TIMEOUT each is refused at the time budget
// (pattern_too_costly, the validation's child process killed), and
// another device, whose schema has a pattern too, is answered all along.
//
//	IOTGATE_INTEGRATION=1 go test -race -tags integration -count=1 -run TestE2EPatternTimeout -v ./cmd/iotgate/
func TestE2EPatternTimeout(t *testing.T) {
	name := servers.XMPPServerNames[0] // the XMPP server plays no part
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	e := newCommandsEnv(t, ctx, name, "IOTGATE_PATTERN_TIMEOUT", "300ms")
	g := e.g
	for _, s := range []struct{ name, xsd string }{{"slow", slowPatternXSD}, {"tagged", taggedXSD}} {
		if code := g.do("POST", "/v1/schemas", map[string]string{"name": s.name, "xsd": s.xsd}, nil); code != 201 {
			t.Fatalf("register schema %s: %d", s.name, code)
		}
	}
	for _, d := range []struct{ user, schema string }{{"slow1", "slow"}, {"tag1", "tagged"}} {
		if code := g.do("POST", "/v1/devices", map[string]any{"jid": d.user + "@" + e.xs.Domain(), "schema": d.schema}, nil); code != 201 {
			t.Fatalf("register device %s: %d", d.user, code)
		}
		servers.RegisterUserForTest(t, e.xs, d.user, "pw-"+d.user)
	}
	// As if stored by an earlier release: the next start compiles it
	// without the probe.
	g.stop()
	db, err := sql.Open("postgres", e.pg.DSN())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	// Versions are immutable (a trigger): lifted for this one change.
	for _, q := range []string{
		`ALTER TABLE schema_versions DISABLE TRIGGER USER`,
		`UPDATE schema_versions SET xsd = replace(xsd, 'Q1*!', '` + slowPattern + `') WHERE name = 'slow'`,
		`ALTER TABLE schema_versions ENABLE TRIGGER USER`,
	} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	g = startGate(t, e.env)
	e.g = g
	g.waitReady(200, 30*time.Second, nil)
	ok := func(device.IQ) device.Reply { return device.Reply{Type: "result"} }
	slow, tag := e.online("slow1", ok), e.online("tag1", ok)

	stop := steadyReadings(ctx, t, tag, "pattern", func(i int) string {
		return fmt.Sprintf(`<reading xmlns="urn:example:tag"><serial>SN-%d</serial></reading>`, i)
	})

	value := "Q" + strings.Repeat("1", 254) + "x"
	reading := `<reading xmlns="urn:example:slow">` + strings.Repeat("<v>"+value+"</v>", 4) + `</reading>`
	for i := range 4 {
		t0 := time.Now()
		rep, err := slow.SendIQ(ctx, "set", e2eDomain, reading)
		took := time.Since(t0)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("slow reading %d: %s %s %q after %v", i, rep.Type, rep.Condition, rep.Text, took)
		if rep.Type != "error" || !strings.Contains(rep.Text, "took more than 300ms") {
			t.Errorf("slow reading %d: %+v, want refused at the time budget", i, rep)
		}
		// Generous: the budget, a child's start and the round trip on a
		// loaded machine, well below the seconds libxml2 takes.
		if took > 3*time.Second {
			t.Errorf("slow reading %d answered after %v", i, took)
		}
	}
	// A reading of the same schema within its pattern is stored.
	if rep, err := slow.SendIQ(ctx, "set", e2eDomain, `<reading xmlns="urn:example:slow"><v>Q111!</v></reading>`); err != nil || rep.Type != "result" {
		t.Errorf("valid slow-schema reading: %+v %v, want result", rep, err)
	}
	stop()
}
