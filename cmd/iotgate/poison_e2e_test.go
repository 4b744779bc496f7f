//go:build integration

package main

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"mellium.im/xmpp/stanza"

	"github.com/iotgate/iotgate/internal/device"
	"github.com/iotgate/iotgate/internal/servers"
	"github.com/iotgate/iotgate/schemas/examples"
)

// sensorReport is a multisensor report with one sensor's value.
func sensorReport(value string) string {
	return `<report xmlns="urn:example:multisensor" node="n1"><sensor id="s1"><value>` + value + `</value></sensor></report>`
}

// errorText is the text of a stanza error, in whichever language.
func errorText(e *stanza.Error) string {
	for _, t := range e.Text {
		return t
	}
	return ""
}

// sensorValue is the value of the first sensor of a rendered report.
func sensorValue(data map[string]any) any {
	ss, _ := data["sensor"].([]any)
	if len(ss) == 0 {
		return nil
	}
	s, _ := ss[0].(map[string]any)
	return s["value"]
}

// TestE2EPoisonValues checks that values PostgreSQL can't store cost only
// the reading or answer that holds them, never the batch it is committed
// with: several devices send readings and answer commands at once; one
// stamps its readings with year 0 (a delay in a message: servers refuse an
// IQ with two children), refused with a reason while nobody else's
// reading is lost; one sends the valid xs:double 1e-20000 (stored,
// as a string: jsonb can't hold it as a number) in readings and in its
// command answers.
func TestE2EPoisonValues(t *testing.T) {
	forEachXMPPServer(t, testPoisonValues)
}

func testPoisonValues(t *testing.T, name string) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	e := newCommandsEnv(t, ctx, name)
	g := e.g
	if code := g.do("POST", "/v1/schemas", map[string]string{"name": "multisensor", "xsd": string(examples.Multisensor())}, nil); code != 201 {
		t.Fatalf("register schema: %d", code)
	}
	const (
		good      = "21.5"
		tiny      = "1e-20000"
		yearZero  = `<delay xmlns="urn:xmpp:delay" stamp="0000-01-01T00:00:00Z"/>`
		rounds    = 10
		nDevices  = 4
		stampDev  = 1 // stamps its readings with year 0
		tinyValue = 2 // sends 1e-20000
	)
	// Every device answers commands with a report; the tiny one's holds
	// 1e-20000.
	answer := func(value string) func(device.IQ) device.Reply {
		return func(device.IQ) device.Reply { return device.Reply{Type: "result", Payload: sensorReport(value)} }
	}
	jids := make([]string, nDevices)
	clients := make([]*device.Client, nDevices)
	for i := range nDevices {
		user := fmt.Sprintf("sensor%d", i)
		jids[i] = user + "@" + e.xs.Domain()
		if code := g.do("POST", "/v1/devices", map[string]any{"jid": jids[i], "schema": "multisensor"}, nil); code != 201 {
			t.Fatalf("register device %s: %d", jids[i], code)
		}
		servers.RegisterUserForTest(t, e.xs, user, "pw-"+user)
		value := good
		if i == tinyValue {
			value = tiny
		}
		clients[i] = e.online(user, answer(value))
	}

	t.Run("Readings", func(t *testing.T) {
		// All devices at once, so that their readings share batches.
		var wg sync.WaitGroup
		replies := make([][]device.Reply, nDevices)
		for i, c := range clients {
			wg.Go(func() {
				for k := range rounds {
					if i == stampDev {
						if err := c.SendMessage(ctx, e2eDomain, fmt.Sprintf("m%d", k), sensorReport(good)+yearZero); err != nil {
							t.Errorf("%s: %v", jids[i], err)
							return
						}
						continue
					}
					payload := sensorReport(good)
					if i == tinyValue {
						payload = sensorReport(tiny)
					}
					rep, err := c.SendIQ(ctx, "set", e2eDomain, payload)
					if err != nil {
						t.Errorf("%s: %v", jids[i], err)
						return
					}
					replies[i] = append(replies[i], rep)
				}
			})
		}
		wg.Wait()
		for i, reps := range replies {
			if i != stampDev && len(reps) != rounds {
				t.Errorf("%s: %d answers, want %d", jids[i], len(reps), rounds)
			}
			for _, rep := range reps {
				if rep.Type != "result" {
					t.Errorf("%s: %+v, want result", jids[i], rep)
				}
			}
		}
		// Error messages back are rate-limited (a burst of 5): the first
		// few say why.
		for range 3 {
			select {
			case m := <-clients[stampDev].Messages():
				if m.Type != "error" || m.Error == nil || m.Error.Type != "modify" || m.Error.Condition != "bad-request" || !strings.Contains(errorText(m.Error), "out of range") {
					t.Errorf("%s (year 0 stamp): message back %+v, want modify/bad-request saying the stamp is out of range", jids[stampDev], m)
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("%s (year 0 stamp): no error message back", jids[stampDev])
			}
		}
		for i, jid := range jids {
			var page struct {
				Items []struct {
					Data map[string]any `json:"data"`
				} `json:"items"`
			}
			if code := g.do("GET", "/v1/devices/"+url.PathEscape(jid)+"/readings?limit=100", nil, &page); code != 200 {
				t.Fatalf("readings of %s: %d", jid, code)
			}
			want, wantValue := rounds, any(21.5)
			switch i {
			case stampDev:
				want = 0
			case tinyValue:
				wantValue = tiny // kept as a string
			}
			if len(page.Items) != want {
				t.Errorf("%s has %d readings, want %d", jid, len(page.Items), want)
			}
			for _, it := range page.Items {
				if v := sensorValue(it.Data); v != wantValue {
					t.Errorf("%s: stored value %#v, want %#v", jid, v, wantValue)
				}
			}
			// The newest reading, as the state shows it from memory,
			// agrees with the stored one.
			var state struct {
				Reading *struct {
					Data map[string]any `json:"data"`
				} `json:"reading"`
			}
			if code := g.do("GET", "/v1/devices/"+url.PathEscape(jid)+"/state", nil, &state); code != 200 {
				t.Fatalf("state of %s: %d", jid, code)
			}
			if want > 0 && (state.Reading == nil || sensorValue(state.Reading.Data) != wantValue) {
				t.Errorf("%s: state reading %+v, want value %#v", jid, state.Reading, wantValue)
			}
		}
		var rejections struct {
			Items []struct {
				Reason string `json:"reason"`
			} `json:"items"`
		}
		if code := g.do("GET", "/v1/devices/"+url.PathEscape(jids[stampDev])+"/rejections?limit=100", nil, &rejections); code != 200 {
			t.Fatalf("rejections: %d", code)
		}
		if len(rejections.Items) == 0 || !strings.Contains(rejections.Items[0].Reason, "out of range") {
			t.Errorf("rejections of %s: %+v, want the out-of-range stamps", jids[stampDev], rejections.Items)
		}
	})

	t.Run("CommandAnswers", func(t *testing.T) {
		var wg sync.WaitGroup
		answers := make([][]commandAnswer, nDevices)
		for i, jid := range jids {
			wg.Go(func() {
				for range rounds / 2 {
					answers[i] = append(answers[i], g.command(jid, map[string]any{"payload": sensorReport("0")}))
				}
			})
		}
		wg.Wait()
		for i, as := range answers {
			wantValue := any(21.5)
			if i == tinyValue {
				wantValue = tiny
			}
			for _, a := range as {
				if a.status != 200 || a.cmd.Status != "succeeded" || a.cmd.Response == nil || sensorValue(a.cmd.Response.Data) != wantValue {
					t.Errorf("%s: answer %d %+v, want succeeded with value %#v", jids[i], a.status, a.cmd, wantValue)
					continue
				}
				got := g.waitCommand(a.cmd.ID, 5*time.Second, "stored as succeeded", func(c commandBody) bool { return c.Status == "succeeded" })
				if got.Response == nil || sensorValue(got.Response.Data) != wantValue {
					t.Errorf("%s: stored response %+v, want value %#v", jids[i], got.Response, wantValue)
				}
			}
		}
	})
}

// taggedXSD is a schema whose serial is checked against an xs:pattern.
const taggedXSD = `<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema" targetNamespace="urn:example:tag" xmlns="urn:example:tag" elementFormDefault="qualified">
  <xs:simpleType name="Serial"><xs:restriction base="xs:string"><xs:pattern value="[A-Z0-9-]*"/></xs:restriction></xs:simpleType>
  <xs:element name="reading"><xs:complexType><xs:sequence><xs:element name="serial" type="Serial"/></xs:sequence></xs:complexType></xs:element>
  <xs:element name="set"><xs:complexType><xs:sequence><xs:element name="serial" type="Serial"/></xs:sequence></xs:complexType></xs:element>
</xs:schema>`

// TestE2EPatternValueLength checks IOTGATE_MAX_PATTERN_VALUE: a value that
// an xs:pattern checks and that is longer is refused before libxml2
// matches it, with a reason naming the element and the limit, in readings
// and in command payloads alike.
func TestE2EPatternValueLength(t *testing.T) {
	forEachXMPPServer(t, func(t *testing.T, name string) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		e := newCommandsEnv(t, ctx, name, "IOTGATE_MAX_PATTERN_VALUE", "32")
		g := e.g
		if code := g.do("POST", "/v1/schemas", map[string]string{"name": "tagged", "xsd": taggedXSD}, nil); code != 201 {
			t.Fatalf("register schema: %d", code)
		}
		jid := "tag1@" + e.xs.Domain()
		if code := g.do("POST", "/v1/devices", map[string]any{"jid": jid, "schema": "tagged"}, nil); code != 201 {
			t.Fatalf("register device: %d", code)
		}
		servers.RegisterUserForTest(t, e.xs, "tag1", "pw-tag1")
		c := e.online("tag1", func(device.IQ) device.Reply { return device.Reply{Type: "result"} })
		reading := func(serial string) string {
			return `<reading xmlns="urn:example:tag"><serial>` + serial + `</serial></reading>`
		}
		for _, tc := range []struct {
			name, serial string
			ok           bool
		}{
			{"AtTheLimit", strings.Repeat("A", 32), true},
			{"ErrOverTheLimit", strings.Repeat("A", 33), false},
		} {
			t.Run(tc.name, func(t *testing.T) {
				rep, err := c.SendIQ(ctx, "set", e2eDomain, reading(tc.serial))
				if err != nil {
					t.Fatal(err)
				}
				if tc.ok {
					if rep.Type != "result" {
						t.Errorf("reading: %+v, want result", rep)
					}
					return
				}
				if rep.Type != "error" || rep.ErrorType != "modify" || rep.Condition != "bad-request" ||
					!strings.Contains(rep.Text, "element serial is 33 characters, over the limit of 32") {
					t.Errorf("reading: %+v, want modify/bad-request naming the element and the limit", rep)
				}
				a := g.command(jid, map[string]any{"payload": `<set xmlns="urn:example:tag"><serial>` + tc.serial + `</serial></set>`})
				if a.status != 422 {
					t.Errorf("command: %d %s %+v, want 422", a.status, a.code, a.cmd)
				}
			})
		}
	})
}
