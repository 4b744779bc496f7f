package xsd

import (
	"io"
	"os"
	"sync"
	"syscall"
	"testing"

	"github.com/iotgate/iotgate/schemas/examples"
)

// TestNoStderr checks libxml2 prints nothing, even on errors: every error
// goes to a per-call handler.
func TestNoStderr(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	saved, err := syscall.Dup(2)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Dup3(int(w.Fd()), 2, 0); err != nil {
		t.Fatal(err)
	}
	func() {
		defer syscall.Dup3(saved, 2, 0)
		var wg sync.WaitGroup
		for g := 0; g < 4; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				Compile([]byte(xsOpen+`<xs:element name="r" type="nope"/></xs:schema>`), CompileOptions{})
				Compile([]byte(`<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema"><bad`), CompileOptions{})
				Compile([]byte(xsOpen+`<xs:import namespace="urn:example:thermostat"/><xs:element name="r" type="nope"/></xs:schema>`),
					CompileOptions{Imports: examples.ByNamespace})
				s, err := Compile(examples.Thermostat(), CompileOptions{})
				if err != nil {
					t.Error(err)
					return
				}
				defer s.Free()
				for _, doc := range []string{`<reading/>`, `<reading`, `<!DOCTYPE r><r/>`, `<a>&x;</a>`, `<x:a/>`} {
					s.Validate([]byte(doc), Limits{})
					s.ValidateAndRender([]byte(doc), Limits{})
				}
			}()
		}
		wg.Wait()
	}()
	w.Close()
	syscall.Close(saved)
	out, _ := io.ReadAll(r)
	if len(out) > 0 {
		t.Errorf("libxml2 wrote to stderr:\n%s", out)
	}
}
