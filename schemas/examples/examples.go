// Package examples holds example device payload schemas (XSD) for tests,
// documentation and the development runner:
//
//   - thermostat.xsd (urn:example:thermostat): a <reading> with typed fields,
//     <set> and <get> commands and a <state> answer;
//   - multisensor.xsd (urn:example:multisensor): a <report> of repeated
//     <sensor> elements and a series of samples.
//
// It imports no package of the project.
package examples

import (
	"embed"
	"fmt"
)

// Target namespaces of the example schemas.
const (
	ThermostatNS  = "urn:example:thermostat"
	MultisensorNS = "urn:example:multisensor"
)

// FS holds the example schemas, by file name.
//
//go:embed *.xsd
var FS embed.FS

// Thermostat returns the source of thermostat.xsd.
func Thermostat() []byte { return mustRead("thermostat.xsd") }

// Multisensor returns the source of multisensor.xsd.
func Multisensor() []byte { return mustRead("multisensor.xsd") }

// ByNamespace returns the source of the example schema whose target
// namespace is ns. Its signature fits xsd.CompileOptions.Imports.
func ByNamespace(ns string) ([]byte, bool) {
	switch ns {
	case ThermostatNS:
		return Thermostat(), true
	case MultisensorNS:
		return Multisensor(), true
	}
	return nil, false
}

func mustRead(name string) []byte {
	b, err := FS.ReadFile(name)
	if err != nil {
		panic(fmt.Sprintf("examples: %v", err)) // embedded at build time: cannot happen
	}
	return b
}
