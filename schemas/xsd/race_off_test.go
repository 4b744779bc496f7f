//go:build !race

package xsd

// raceEnabled scales slow tests down under the race detector.
const raceEnabled = false
