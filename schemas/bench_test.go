package schemas_test

import (
	"os"
	"testing"

	"github.com/iotgate/iotgate/schemas"
	"github.com/iotgate/iotgate/schemas/examples"
)

// BenchmarkPayloadValidateAndRender is the path devices.Ingest takes for a
// reading: validate the payload and get the JSON to store.
// Run: go test ./schemas -run '^$' -bench PayloadValidateAndRender -benchmem
func BenchmarkPayloadValidateAndRender(b *testing.B) {
	reg := schemas.NewRegistry(newMemStore(), schemas.Config{})
	if _, err := reg.Register(b.Context(), "thermostat", string(examples.Thermostat()), ""); err != nil {
		b.Fatal(err)
	}
	ps, _, err := reg.Compiled(b.Context(), "thermostat", 0)
	if err != nil {
		b.Fatal(err)
	}
	doc, err := os.ReadFile("xsd/testdata/thermostat/ok-reading.xml")
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(doc)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ps.ValidateAndRender(doc); err != nil {
			b.Fatal(err)
		}
	}
}
