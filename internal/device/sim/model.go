package sim

import (
	"fmt"

	"github.com/iotgate/iotgate/internal/device"
	"github.com/iotgate/iotgate/schemas/examples"
)

// Model is what a simulated device reports and how it answers commands.
// Implementations are safe for concurrent use.
type Model interface {
	// Namespace is the target namespace of the model's schema.
	Namespace() string
	// Reading advances the simulation and returns the next reading's
	// payload; with invalid set, the payload breaks the schema.
	Reading(invalid bool) string
	// Command answers a command IQ.
	Command(iq device.IQ) device.Reply
}

// Kinds lists the models NewModel knows, by the name of their example
// schema.
var Kinds = []string{"thermostat", "multisensor"}

// NewModel returns a new device of kind (one of Kinds) named node; seed
// makes its noise reproducible.
func NewModel(kind, node string, seed uint64) (Model, error) {
	switch kind {
	case "thermostat":
		return NewThermostat(seed), nil
	case "multisensor":
		return NewMultisensor(node, seed), nil
	}
	return nil, fmt.Errorf("device kind %q: want one of %v", kind, Kinds)
}

// Schema returns the XSD of kind (one of Kinds).
func Schema(kind string) ([]byte, error) {
	switch kind {
	case "thermostat":
		return examples.Thermostat(), nil
	case "multisensor":
		return examples.Multisensor(), nil
	}
	return nil, fmt.Errorf("device kind %q: want one of %v", kind, Kinds)
}
