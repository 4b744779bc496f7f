package sim

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"

	"github.com/iotgate/iotgate/internal/device"
	"github.com/iotgate/iotgate/schemas/examples"
)

// Multisensor simulates a node of schemas/examples/multisensor.xsd: a
// <report> of four sensors (temperature, humidity, pressure, CO2) that
// wander around plausible values. The schema defines no commands, so
// every command gets cancel/feature-not-implemented.
type Multisensor struct {
	mu       sync.Mutex
	rnd      *rand.Rand
	node     string
	uptime   uint64
	values   [4]float64
	invalids int
}

// multisensorSensors are the sensors of a Multisensor: id, kind, unit,
// starting value and how far a step may move it.
var multisensorSensors = [4]struct {
	id, kind, unit string
	start, step    float64
}{
	{"t1", "temperature", "C", 21, 0.2},
	{"h1", "humidity", "%", 45, 0.5},
	{"p1", "pressure", "hPa", 1013, 0.3},
	{"c1", "co2", "ppm", 600, 15},
}

// NewMultisensor returns a node named node (an xs:token: no spaces at
// either end); seed makes its noise reproducible.
func NewMultisensor(node string, seed uint64) *Multisensor {
	m := &Multisensor{rnd: rand.New(rand.NewPCG(seed, 0x5e45)), node: strings.TrimSpace(node)}
	if m.node == "" {
		m.node = "node"
	}
	for i, s := range multisensorSensors {
		m.values[i] = s.start
	}
	return m
}

// Namespace implements Model.
func (m *Multisensor) Namespace() string { return examples.MultisensorNS }

// Reading implements Model; an invalid report repeats a sensor id (the
// schema's unique constraint) or has a value that is not a number.
func (m *Multisensor) Reading(invalid bool) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.uptime += 5
	var b strings.Builder
	fmt.Fprintf(&b, `<report xmlns="%s" node="%s" uptime="%d">`, examples.MultisensorNS, escapeAttr(m.node), m.uptime)
	broken := -1
	if invalid {
		m.invalids++
		broken = m.invalids % 2
	}
	for i, s := range multisensorSensors {
		m.values[i] += (m.rnd.Float64()*2 - 1) * s.step
		id, value := s.id, fmt.Sprintf("%.1f", m.values[i])
		switch {
		case broken == 0 && i == 1:
			id = multisensorSensors[0].id
		case broken == 1 && i == 2:
			value = "n/a"
		}
		fmt.Fprintf(&b, `<sensor id="%s" kind="%s"><value>%s</value><unit>%s</unit><ok>true</ok></sensor>`, id, s.kind, value, s.unit)
	}
	b.WriteString(`</report>`)
	return b.String()
}

// Command implements Model: the schema defines no commands.
func (m *Multisensor) Command(iq device.IQ) device.Reply {
	name, err := rootName(iq.Payload)
	if err != nil {
		return badRequest("the command is not XML: " + err.Error())
	}
	return notImplemented(name)
}

// escapeAttr escapes text for a double-quoted attribute.
func escapeAttr(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", `"`, "&quot;").Replace(s)
}
