package sim

import (
	"encoding/xml"
	"fmt"
	"math/rand/v2"
	"regexp"
	"strconv"
	"strings"
	"sync"

	"mellium.im/xmpp/stanza"

	"github.com/iotgate/iotgate/internal/device"
	"github.com/iotgate/iotgate/schemas/examples"
)

// Limits of the thermostat schema's Temperature type, in hundredths.
const (
	minCenti = -5000
	maxCenti = 15000
	// ambientCenti is where an idle thermostat's room drifts.
	ambientCenti = 1800
)

// thermostatModes are the schema's Mode enumeration.
var thermostatModes = map[string]bool{"off": true, "heat": true, "cool": true, "auto": true}

// Thermostat simulates a device of schemas/examples/thermostat.xsd. Its
// room temperature moves toward the target while it heats or cools and
// toward the ambient 18 °C while it is off; a <set> changes the target
// and/or the mode and is answered, like <get>, with a <state>. Any other
// command gets cancel/feature-not-implemented. It is safe for concurrent
// use: commands arrive while readings are being made.
type Thermostat struct {
	mu       sync.Mutex
	rnd      *rand.Rand
	temp     int // hundredths of a degree Celsius
	target   int // hundredths of a degree Celsius
	humidity int // tenths of a percent
	mode     string
	battery  bool
	seq      uint32
	invalids int // invalid readings made, to vary how they break
}

// NewThermostat returns a thermostat in heat mode a few degrees below its
// target; seed makes its noise reproducible.
func NewThermostat(seed uint64) *Thermostat {
	rnd := rand.New(rand.NewPCG(seed, 0x7e4d))
	return &Thermostat{
		rnd:      rnd,
		temp:     1750 + rnd.IntN(200),
		target:   2100 + 50*rnd.IntN(4),
		humidity: 400 + rnd.IntN(150),
		mode:     "heat",
		battery:  rnd.IntN(4) == 0,
	}
}

// Namespace implements Model.
func (t *Thermostat) Namespace() string { return examples.ThermostatNS }

// Reading implements Model: it advances the simulation by one step and
// returns a <reading>; with invalid set, the reading breaks the schema in
// one of several ways.
func (t *Thermostat) Reading(invalid bool) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.step()
	t.seq++
	temp, mode := centi(t.temp), t.mode
	var humidity string
	if invalid {
		t.invalids++
		switch t.invalids % 4 {
		case 0:
			temp = "999.50" // above maxInclusive
		case 1:
			temp = centi(t.temp) + "5" // three fraction digits
		case 2:
			mode = "turbo" // not in the enumeration
		case 3:
			humidity = "<humidity>101</humidity>" // above 100 %
		}
	}
	if humidity == "" {
		humidity = "<humidity>" + tenths(t.humidity) + "</humidity>"
	}
	return fmt.Sprintf(`<reading xmlns="%s" unit="C" seq="%d"><temperature>%s</temperature>%s<mode>%s</mode><target>%s</target><battery>%t</battery></reading>`,
		examples.ThermostatNS, t.seq, temp, humidity, mode, centi(t.target), t.battery)
}

// step moves the room one reading further.
func (t *Thermostat) step() {
	switch {
	case t.heating():
		t.temp += min(t.target-t.temp, 10+t.rnd.IntN(30))
	case t.cooling():
		t.temp -= min(t.temp-t.target, 10+t.rnd.IntN(30))
	case t.temp < ambientCenti:
		t.temp += min(ambientCenti-t.temp, t.rnd.IntN(6))
	case t.temp > ambientCenti:
		t.temp -= min(t.temp-ambientCenti, t.rnd.IntN(6))
	}
	t.temp = max(minCenti, min(maxCenti, t.temp+t.rnd.IntN(7)-3))
	t.humidity = max(200, min(800, t.humidity+t.rnd.IntN(11)-5))
}

func (t *Thermostat) heating() bool {
	return (t.mode == "heat" || t.mode == "auto") && t.temp < t.target
}

func (t *Thermostat) cooling() bool {
	return (t.mode == "cool" || t.mode == "auto") && t.temp > t.target
}

// State returns the thermostat's <state>, the answer to set and get.
func (t *Thermostat) State() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.state()
}

func (t *Thermostat) state() string {
	return fmt.Sprintf(`<state xmlns="%s" unit="C"><temperature>%s</temperature><target>%s</target><mode>%s</mode><heating>%t</heating></state>`,
		examples.ThermostatNS, centi(t.temp), centi(t.target), t.mode, t.heating())
}

// Command implements Model. <get/> and <set/> are accepted in an IQ of
// either type, to be forgiving to people trying it out.
func (t *Thermostat) Command(iq device.IQ) device.Reply {
	name, err := rootName(iq.Payload)
	if err != nil {
		return badRequest("the command is not XML: " + err.Error())
	}
	if name.Space != examples.ThermostatNS || (name.Local != "get" && name.Local != "set") {
		return notImplemented(name)
	}
	if name.Local == "set" {
		if err := t.set(iq.Payload); err != nil {
			return badRequest(err.Error())
		}
	}
	return device.Reply{Type: "result", Payload: t.State()}
}

// set applies a <set> command.
func (t *Thermostat) set(payload string) error {
	var v struct {
		Unit   string   `xml:"unit,attr"`
		Target []string `xml:"target"`
		Mode   []string `xml:"mode"`
	}
	if err := xml.Unmarshal([]byte(payload), &v); err != nil {
		return fmt.Errorf("set: %w", err)
	}
	if len(v.Target) > 1 || len(v.Mode) > 1 || len(v.Target)+len(v.Mode) == 0 {
		return fmt.Errorf("set: want a target, a mode, or both")
	}
	target, setTarget := 0, len(v.Target) == 1
	if setTarget {
		c, err := parseCenti(v.Target[0])
		if err != nil {
			return fmt.Errorf("set: target: %w", err)
		}
		switch strings.TrimSpace(v.Unit) {
		case "", "C":
		case "F":
			c = fahrenheitToCelsius(c)
			if c < minCenti || c > maxCenti {
				return fmt.Errorf("set: target %s °F is out of range", v.Target[0])
			}
		default:
			return fmt.Errorf("set: unit %q: want C or F", v.Unit)
		}
		target = c
	}
	mode := ""
	if len(v.Mode) == 1 {
		mode = strings.TrimSpace(v.Mode[0])
		if !thermostatModes[mode] {
			return fmt.Errorf("set: mode %q: want off, heat, cool or auto", mode)
		}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if setTarget {
		t.target = target
	}
	if mode != "" {
		t.mode = mode
	}
	return nil
}

// decimalRE is an xs:decimal with at most two significant fraction digits
// (trailing zeros don't count, as in the schema's value space).
var decimalRE = regexp.MustCompile(`^([+-]?)([0-9]*)(?:\.([0-9]*))?$`)

// parseCenti parses a Temperature (xs:decimal, -50 to 150, two fraction
// digits) into hundredths.
func parseCenti(s string) (int, error) {
	s = strings.TrimSpace(s)
	m := decimalRE.FindStringSubmatch(s)
	if m == nil || m[2] == "" && m[3] == "" {
		return 0, fmt.Errorf("%q is not a decimal number", s)
	}
	frac := strings.TrimRight(m[3], "0")
	if len(frac) > 2 {
		return 0, fmt.Errorf("%q has more than two fraction digits", s)
	}
	intPart := strings.TrimLeft(m[2], "0")
	if len(intPart) > 3 {
		return 0, fmt.Errorf("%q is out of range (-50 to 150)", s)
	}
	n := 0
	if intPart != "" {
		n, _ = strconv.Atoi(intPart)
	}
	f, _ := strconv.Atoi((frac + "00")[:2])
	c := n*100 + f
	if m[1] == "-" {
		c = -c
	}
	if c < minCenti || c > maxCenti {
		return 0, fmt.Errorf("%q is out of range (-50 to 150)", s)
	}
	return c, nil
}

// fahrenheitToCelsius converts hundredths of °F to hundredths of °C,
// rounded to the nearest.
func fahrenheitToCelsius(f int) int {
	n := (f - 3200) * 5
	if n >= 0 {
		return (n + 4) / 9
	}
	return (n - 4) / 9
}

// centi formats hundredths with two fraction digits: 2150 is "21.50".
func centi(c int) string {
	sign := ""
	if c < 0 {
		sign, c = "-", -c
	}
	return fmt.Sprintf("%s%d.%02d", sign, c/100, c%100)
}

// tenths formats tenths with one fraction digit: 455 is "45.5".
func tenths(c int) string {
	return fmt.Sprintf("%d.%d", c/10, c%10)
}

// rootName returns the name of payload's root element.
func rootName(payload string) (xml.Name, error) {
	d := xml.NewDecoder(strings.NewReader(payload))
	for {
		tok, err := d.Token()
		if err != nil {
			return xml.Name{}, err
		}
		if start, ok := tok.(xml.StartElement); ok {
			return start.Name, nil
		}
	}
}

func badRequest(text string) device.Reply {
	return device.Reply{Type: "error", ErrorType: stanza.Modify, Condition: stanza.BadRequest, Text: text}
}

func notImplemented(name xml.Name) device.Reply {
	return device.Reply{Type: "error", ErrorType: stanza.Cancel, Condition: stanza.FeatureNotImplemented,
		Text: fmt.Sprintf("this device does not support {%s}%s", name.Space, name.Local)}
}
