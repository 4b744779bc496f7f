package sim

import (
	"strings"
	"testing"

	"mellium.im/xmpp/stanza"

	"github.com/iotgate/iotgate/internal/device"
	"github.com/iotgate/iotgate/schemas/examples"
	"github.com/iotgate/iotgate/schemas/xsd"
)

func compile(t *testing.T, src []byte) *xsd.Schema {
	t.Helper()
	s, err := xsd.Compile(src, xsd.CompileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Free)
	return s
}

// validate fails the test unless doc's validity is want.
func validate(t *testing.T, s *xsd.Schema, doc string, want bool) {
	t.Helper()
	err := s.Validate([]byte(doc), xsd.Limits{})
	if got := err == nil; got != want {
		t.Errorf("valid = %v (%v), want %v:\n%s", got, err, want, doc)
	}
}

func TestReadingsFollowSchema(t *testing.T) {
	for _, kind := range Kinds {
		t.Run(kind, func(t *testing.T) {
			src, err := Schema(kind)
			if err != nil {
				t.Fatal(err)
			}
			s := compile(t, src)
			m, err := NewModel(kind, "node-1", 7)
			if err != nil {
				t.Fatal(err)
			}
			for i := range 500 {
				validate(t, s, m.Reading(false), true)
				if i%10 == 0 {
					validate(t, s, m.Reading(true), false)
				}
			}
		})
	}
	if _, err := NewModel("toaster", "x", 1); err == nil {
		t.Error("NewModel(toaster) did not fail")
	}
}

func TestThermostatCommands(t *testing.T) {
	s := compile(t, examples.Thermostat())
	const ns = `xmlns="urn:example:thermostat"`
	tests := []struct {
		name, payload string
		wantType      string
		wantCond      stanza.Condition
		// what the <state> answer contains
		want []string
	}{
		{"Get", `<get ` + ns + `/>`, "result", "", []string{"<target>22.00</target>", "<mode>heat</mode>"}},
		{"SetTarget", `<set ` + ns + `><target>23.5</target></set>`, "result", "", []string{"<target>23.50</target>", "<mode>heat</mode>"}},
		{"SetBoth", `<set ` + ns + `><target>19</target><mode>cool</mode></set>`, "result", "", []string{"<target>19.00</target>", "<mode>cool</mode>", "<heating>false</heating>"}},
		{"SetMode", `<set ` + ns + `><mode>off</mode></set>`, "result", "", []string{"<target>22.00</target>", "<mode>off</mode>", "<heating>false</heating>"}},
		{"SetFahrenheit", `<set ` + ns + ` unit="F"><target>71.6</target></set>`, "result", "", []string{"<target>22.00</target>"}},
		{"SetNegative", `<set ` + ns + `><target>-0.5</target></set>`, "result", "", []string{"<target>-0.50</target>"}},
		{"SetTrailingZeros", `<set ` + ns + `><target> 21.500 </target></set>`, "result", "", []string{"<target>21.50</target>"}},
		{"ErrTargetTooHigh", `<set ` + ns + `><target>150.01</target></set>`, "error", stanza.BadRequest, nil},
		{"ErrTargetDigits", `<set ` + ns + `><target>21.555</target></set>`, "error", stanza.BadRequest, nil},
		{"ErrTargetNaN", `<set ` + ns + `><target>warm</target></set>`, "error", stanza.BadRequest, nil},
		{"ErrMode", `<set ` + ns + `><mode>turbo</mode></set>`, "error", stanza.BadRequest, nil},
		{"ErrEmptySet", `<set ` + ns + `/>`, "error", stanza.BadRequest, nil},
		{"ErrUnit", `<set ` + ns + ` unit="K"><target>20</target></set>`, "error", stanza.BadRequest, nil},
		{"ErrUnknownCommand", `<reboot ` + ns + `/>`, "error", stanza.FeatureNotImplemented, nil},
		{"ErrOtherNamespace", `<get xmlns="urn:example:other"/>`, "error", stanza.FeatureNotImplemented, nil},
		{"ErrNotXML", `<get`, "error", stanza.BadRequest, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			th := NewThermostat(1)
			th.target, th.temp, th.mode = 2200, 2000, "heat"
			before := th.State()
			rep := th.Command(device.IQ{Type: "set", Payload: tt.payload})
			if rep.Type != tt.wantType || rep.Condition != tt.wantCond {
				t.Fatalf("reply = %+v, want %s %s", rep, tt.wantType, tt.wantCond)
			}
			if rep.Type == "error" {
				if after := th.State(); after != before {
					t.Errorf("a refused command changed the state: %s -> %s", before, after)
				}
				if rep.Condition == stanza.FeatureNotImplemented && rep.ErrorType != stanza.Cancel {
					t.Errorf("error type = %s, want cancel", rep.ErrorType)
				}
				return
			}
			validate(t, s, rep.Payload, true)
			for _, w := range tt.want {
				if !strings.Contains(rep.Payload, w) {
					t.Errorf("state %s lacks %s", rep.Payload, w)
				}
			}
		})
	}
}

func TestThermostatFollowsTarget(t *testing.T) {
	th := NewThermostat(3)
	th.temp, th.target, th.mode = 1800, 2400, "heat"
	for range 100 {
		th.Reading(false)
	}
	if th.temp < 2390 || th.temp > 2410 {
		t.Errorf("heating toward 24.00: temperature %s after 100 readings", centi(th.temp))
	}
	if !strings.Contains(th.Reading(false), "<target>24.00</target>") {
		t.Error("reading does not report the target")
	}
	// Cooling to below the ambient 18 °C.
	th.Command(device.IQ{Payload: `<set xmlns="urn:example:thermostat"><target>16</target><mode>cool</mode></set>`})
	for range 100 {
		th.Reading(false)
	}
	if th.temp < 1590 || th.temp > 1610 {
		t.Errorf("cooling toward 16.00: temperature %s after 100 readings", centi(th.temp))
	}
	th.Command(device.IQ{Payload: `<set xmlns="urn:example:thermostat"><mode>off</mode></set>`})
	for range 300 {
		th.Reading(false)
	}
	if th.temp < 1790 || th.temp > 1810 {
		t.Errorf("off: temperature %s after 300 readings, want near the ambient 18.00", centi(th.temp))
	}
}

func TestMultisensorCommands(t *testing.T) {
	rep := NewMultisensor("n", 1).Command(device.IQ{Payload: `<get xmlns="urn:example:multisensor"/>`})
	if rep.Type != "error" || rep.Condition != stanza.FeatureNotImplemented || rep.ErrorType != stanza.Cancel {
		t.Errorf("reply = %+v, want cancel/feature-not-implemented", rep)
	}
}

func TestParseCenti(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want int
		ok   bool
	}{
		{"21", 2100, true}, {"21.5", 2150, true}, {"+21.05", 2105, true}, {".5", 50, true}, {"21.", 2100, true},
		{"-50", -5000, true}, {"150.00", 15000, true}, {"007.10", 710, true}, {"-0", 0, true},
		{"", 0, false}, {".", 0, false}, {"-", 0, false}, {"1e2", 0, false}, {"150.01", 0, false},
		{"-50.01", 0, false}, {"1000", 0, false}, {"21.123", 0, false}, {"NaN", 0, false},
	} {
		got, err := parseCenti(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("parseCenti(%q) = %d, %v; want %d, ok %v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

// FuzzThermostatCommand feeds commands as iotgate (or anyone) might send
// them: the thermostat never panics, and what it answers with a result is
// a valid <state>.
func FuzzThermostatCommand(f *testing.F) {
	const ns = `xmlns="urn:example:thermostat"`
	for _, seed := range []string{
		`<get ` + ns + `/>`, `<set ` + ns + `><target>23.5</target></set>`, `<set ` + ns + ` unit="F"><target>-40</target><mode>cool</mode></set>`,
		`<set ` + ns + `><mode>auto</mode></set>`, `<set ` + ns + `><target>1e3</target></set>`, `<reboot ` + ns + `/>`, `<get`, ``,
	} {
		f.Add(seed)
	}
	s, err := xsd.Compile(examples.Thermostat(), xsd.CompileOptions{})
	if err != nil {
		f.Fatal(err)
	}
	defer s.Free()
	f.Fuzz(func(t *testing.T, payload string) {
		th := NewThermostat(1)
		rep := th.Command(device.IQ{Type: "set", Payload: payload})
		if rep.Type == "result" {
			if err := s.Validate([]byte(rep.Payload), xsd.Limits{}); err != nil {
				t.Fatalf("state %s for %q: %v", rep.Payload, payload, err)
			}
		}
		if err := s.Validate([]byte(th.Reading(false)), xsd.Limits{}); err != nil {
			t.Fatalf("reading after %q: %v", payload, err)
		}
	})
}
