//go:build integration

package main

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/iotgate/iotgate/internal/servers"
)

// optionalSequenceXSD is a schema whose content model is a sequence of n
// optional elements: libxml2 takes 35 s to compile it at n=2,000.
func optionalSequenceXSD(ns string, n int) string {
	var b strings.Builder
	fmt.Fprintf(&b, `<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema" targetNamespace="%s" xmlns="%[1]s" elementFormDefault="qualified">`, ns)
	b.WriteString(`<xs:element name="r"><xs:complexType><xs:sequence>`)
	for i := range n {
		fmt.Fprintf(&b, `<xs:element name="e%d" type="xs:string" minOccurs="0"/>`, i)
	}
	b.WriteString(`</xs:sequence></xs:complexType></xs:element></xs:schema>`)
	return b.String()
}

// TestE2ESchemaCompileCost: schemas that would pin a core for half a minute
// each are refused with 422 schema_too_complex, by their counts at once, or
// by the trial compile's CPU limit (the counts raised here) in about a
// second, while another device's readings are acknowledged all along.
//
//	IOTGATE_INTEGRATION=1 go test -race -tags integration -count=1 -run TestE2ESchemaCompileCost -v ./cmd/iotgate/
func TestE2ESchemaCompileCost(t *testing.T) {
	name := servers.XMPPServerNames[0] // the XMPP server plays no part
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	e, _ := newReadLoopEnv(t, ctx, name, nil, "IOTGATE_SCHEMA_COMPILE_CPU", "1s")
	steady := e.dialDevice(e.register("steady"))

	watch := func(phase string) (stop func()) {
		return steadyReadings(ctx, t, steady, phase, func(i int) string {
			return `<reading xmlns="urn:example:thermostat"><temperature>` + fmt.Sprint(15+i%10) + `</temperature><mode>heat</mode></reading>`
		})
	}
	type problem struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	}
	// postTwo posts two such schemas at once, as the attack (both
	// cores pinned), and checks the refusals.
	postTwo := func(g *gate, prefix, msg string, within time.Duration) {
		var pw sync.WaitGroup
		for i := range 2 {
			pw.Add(1)
			go func() {
				defer pw.Done()
				var p problem
				t0 := time.Now()
				code := g.do("POST", "/v1/schemas", map[string]string{"name": fmt.Sprintf("%s%d", prefix, i),
					"xsd": optionalSequenceXSD(fmt.Sprintf("urn:%s%d", prefix, i), 2000)}, &p)
				d := time.Since(t0)
				t.Logf("%s: 2,000 optional elements: %d %s %q in %s", prefix, code, p.Code, p.Message, d)
				if code != 422 || p.Code != "schema_too_complex" || !strings.Contains(p.Message, msg) {
					t.Errorf("%s: POST: %d %+v, want 422 schema_too_complex with %q", prefix, code, p, msg)
				}
				if d > within {
					t.Errorf("%s: refused after %s, want under %s", prefix, d, within)
				}
			}()
		}
		pw.Wait()
	}

	// 1. By the counts: a linear scan of 113 KB (generous bound).
	stop := watch("counts")
	postTwo(e.g, "big", "has 2001 particles", 10*time.Second)
	time.Sleep(500 * time.Millisecond)
	stop()

	// 2. The counts raised (a restart): the trial compiles are killed at
	// 1 s of CPU, instead of 35 s each.
	e.g.stop()
	e.env["IOTGATE_SCHEMA_MAX_MODEL_PARTICLES"] = "100000"
	e.env["IOTGATE_SCHEMA_MAX_PARTICLES"] = "100000"
	e.g = startGate(t, e.env)
	e.g.waitReady(200, 30*time.Second, nil)
	// The steady device's first reading after the restart may come
	// before iotgate is back on the XMPP server: wait for one answered.
	deadline := time.Now().Add(30 * time.Second)
	for {
		rep, err := steady.SendIQ(ctx, "set", e2eDomain, `<reading xmlns="urn:example:thermostat"><temperature>20</temperature><mode>heat</mode></reading>`)
		if err == nil && rep.Type == "result" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no reading acknowledged after the restart: %v %+v", err, rep)
		}
		time.Sleep(200 * time.Millisecond)
	}
	stop = watch("trial")
	postTwo(e.g, "cpu", "more than 1s of CPU time", 20*time.Second)
	time.Sleep(500 * time.Millisecond)
	stop()

	if code := e.g.do("POST", "/v1/schemas", map[string]string{"name": "small", "xsd": optionalSequenceXSD("urn:small", 50)}, nil); code != 201 {
		t.Errorf("a small schema: %d, want 201", code)
	}
}
