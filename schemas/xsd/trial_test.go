package xsd

import (
	"os"
	"testing"
)

// TestMain lets the test binary serve the trial compiles that the tests
// enable, as cmd/iotgate's main does.
func TestMain(m *testing.M) {
	ServeTrialCompile()
	os.Exit(m.Run())
}
