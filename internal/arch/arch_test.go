package arch

import (
	"bytes"
	"encoding/json"
	"errors"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/iotgate/iotgate"

// pkg is what `go list -json` says of one package.
type pkg struct {
	ImportPath   string
	Imports      []string // of its code, direct
	TestImports  []string // of its in-package tests, direct
	XTestImports []string // of its external tests, direct
}

// rel is a project package's path inside the module: "" for the root
// package, "api", "postgres" ...
func rel(path string) string {
	if path == module {
		return ""
	}
	return strings.TrimPrefix(path, module+"/")
}

func project(path string) bool { return path == module || strings.HasPrefix(path, module+"/") }

// under reports whether the package at r (a rel path) is dir or below it.
func under(r, dir string) bool { return r == dir || strings.HasPrefix(r, dir+"/") }

// graph is the project's import graph, code and tests apart.
type graph struct {
	pkgs map[string]*pkg // by import path
}

// load lists every package of the module, integration tests included.
func load(t *testing.T) *graph {
	t.Helper()
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	goCmd, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the import rule check needs the go command: %v", err)
	}
	cmd := exec.Command(goCmd, "list", "-e", "-tags", "integration", "-json=ImportPath,Imports,TestImports,XTestImports", "./...")
	cmd.Dir = root
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.Bytes())
	}
	g := &graph{pkgs: map[string]*pkg{}}
	dec := json.NewDecoder(bytes.NewReader(out))
	for dec.More() {
		var p pkg
		if err := dec.Decode(&p); err != nil {
			t.Fatalf("go list output: %v", err)
		}
		g.pkgs[p.ImportPath] = &p
	}
	if g.pkgs[module] == nil || g.pkgs[module+"/postgres"] == nil {
		t.Fatalf("go list in %s found no root or postgres package: is this the iotgate module?", root)
	}
	return g
}

// moduleRoot is the directory of go.mod above the test's directory.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the test's directory")
		}
		dir = parent
	}
}

// chain returns the shortest chain of code imports from `from` to a
// package that bad accepts, or nil. Only project packages are followed.
func (g *graph) chain(from string, bad func(rel string) bool) []string {
	prev := map[string]string{from: ""}
	queue := []string{from}
	for len(queue) > 0 {
		cur := queue[0]
		queue = queue[1:]
		p := g.pkgs[cur]
		if p == nil {
			continue
		}
		for _, imp := range p.Imports {
			if !project(imp) {
				continue
			}
			if _, seen := prev[imp]; seen {
				continue
			}
			prev[imp] = cur
			if bad(rel(imp)) {
				var path []string
				for at := imp; at != ""; at = prev[at] {
					path = append(path, at)
				}
				slices.Reverse(path)
				return path
			}
			queue = append(queue, imp)
		}
	}
	return nil
}

func show(path []string) string {
	out := make([]string, len(path))
	for i, p := range path {
		out[i] = rel(p)
		if out[i] == "" {
			out[i] = "iotgate (root)"
		}
	}
	return strings.Join(out, " -> ")
}

// rule is one arrow of the house that must not exist. For each package
// that from accepts, its code must not import, directly or through other
// project packages (only directly, with direct set), any package that to
// accepts; with tests set, its tests' direct imports are held to the same
// rule.
type rule struct {
	name   string
	from   func(rel string) bool
	to     func(rel string) bool
	tests  bool
	direct bool
}

func is(dirs ...string) func(string) bool {
	return func(r string) bool {
		for _, d := range dirs {
			if d == "" && r == "" || d != "" && under(r, d) {
				return true
			}
		}
		return false
	}
}

// The import rule. The root package is the domain's vocabulary; devices,
// schemas and auth are the domain's services; api (HTTP) and component
// (XMPP) are transports; postgres is the store; cmd wires them.
var rules = []rule{
	{name: "nothing imports cmd", from: func(string) bool { return true }, to: is("cmd"), tests: true},
	{name: "the root package imports no package of the project", from: is(""), to: func(string) bool { return true }},
	{name: "api never imports component nor postgres", from: is("api"), to: is("component", "postgres"), tests: true},
	{name: "component never imports api nor postgres", from: is("component"), to: is("api", "postgres"), tests: true},
	{name: "the domain (devices, schemas, auth, migrations) imports no transport and no store",
		from: is("devices", "schemas", "auth", "migrations"), to: is("api", "component", "postgres"), tests: true},
	// The domain depends on schemas, never the reverse.
	{name: "schemas never imports devices", from: is("schemas"), to: is("devices"), tests: true},
	// Direct imports only: schemas brings schemas/xsd along, which is fine.
	{name: "postgres imports only the root package, schemas and migrations", from: is("postgres"),
		to: func(r string) bool { return !is("", "postgres", "schemas", "migrations")(r) }, direct: true},
	// Its tests run the domain's services (devices, auth, schemas) over the
	// real store, with the test helpers of internal/; never a transport.
	{name: "postgres's tests import no transport", from: is("postgres"), to: is("api", "component"), tests: true},
	// The validator is a library over libxml2: it returns its own errors
	// and schemas maps them, so it needs nothing of ours.
	{name: "schemas/xsd imports no package of the project", from: is("schemas/xsd"),
		to: func(r string) bool { return !is("schemas/xsd")(r) }},
	// events is a capability package: the root package's EventLog port
	// and types only, never an adapter nor webhooks.
	{name: "events imports only the root package", from: is("events"),
		to: func(r string) bool { return !is("", "events")(r) }, direct: true},
	{name: "events's tests import no adapter", from: is("events"), to: is("api", "component", "postgres", "webhooks", "devices"), tests: true},
	{name: "internal/memstore imports only the root package", from: is("internal/memstore"),
		to: func(r string) bool { return !is("", "internal/memstore")(r) }, direct: true},
	// A capability package: the root package only (tests may add memstore).
	{name: "webhooks imports only the root package", from: is("webhooks"),
		to: func(r string) bool { return !is("", "webhooks")(r) }},
	{name: "instances imports only the root package", from: is("instances"),
		to: func(r string) bool { return !is("", "instances")(r) }},
	// The console is files for the browser: it talks to iotgate through
	// the public API only, so it needs no package of ours.
	{name: "console imports no package of the project", from: is("console"),
		to: func(r string) bool { return !is("console")(r) }},
}

// TestImportRule keeps the house's shape: it fails, naming the offending
// import and the chain that leads to it, when a package imports what the
// rules forbid.
func TestImportRule(t *testing.T) {
	g := load(t)
	for _, r := range rules {
		t.Run(r.name, func(t *testing.T) {
			for _, path := range slices.Sorted(maps.Keys(g.pkgs)) {
				from := rel(path)
				if !project(path) || !r.from(from) {
					continue
				}
				if r.direct {
					for _, imp := range g.pkgs[path].Imports {
						if project(imp) && r.to(rel(imp)) {
							t.Errorf("import rule %q broken: %s imports %s", r.name, path, imp)
						}
					}
				} else if c := g.chain(path, func(to string) bool { return to != from && r.to(to) }); c != nil {
					t.Errorf("import rule %q broken: %s imports %s (%s)", r.name, path, c[len(c)-1], show(c))
				}
				if !r.tests {
					continue
				}
				p := g.pkgs[path]
				for _, imp := range append(slices.Clone(p.TestImports), p.XTestImports...) {
					if project(imp) && imp != path && r.to(rel(imp)) {
						t.Errorf("import rule %q broken: the tests of %s import %s", r.name, path, imp)
					}
				}
			}
		})
	}
}

// TestChain checks the chain search the messages rely on.
func TestChain(t *testing.T) {
	g := &graph{pkgs: map[string]*pkg{
		module + "/api":      {ImportPath: module + "/api", Imports: []string{"fmt", module + "/devices"}},
		module + "/devices":  {ImportPath: module + "/devices", Imports: []string{module, module + "/postgres"}},
		module:               {ImportPath: module},
		module + "/postgres": {ImportPath: module + "/postgres", Imports: []string{module}},
	}}
	got := g.chain(module+"/api", is("postgres"))
	if want := []string{module + "/api", module + "/devices", module + "/postgres"}; !slices.Equal(got, want) {
		t.Errorf("chain = %v, want %v", got, want)
	}
	if got := g.chain(module+"/api", is("component")); got != nil {
		t.Errorf("chain to component = %v, want none", got)
	}
	if got, want := show([]string{module + "/api", module}), "api -> iotgate (root)"; got != want {
		t.Errorf("show = %q, want %q", got, want)
	}
}
