package schemas_test

import (
	"context"
	"errors"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/iotgate/iotgate"
	"github.com/iotgate/iotgate/schemas"
	"github.com/iotgate/iotgate/schemas/xsd"
)

// memStore is an in-memory schemas.Store: enough for the registry's own
// logic (error codes, versions); the PostgreSQL store has its own tests.
type memStore struct {
	mu       sync.Mutex
	versions map[string][]*schemas.Schema
	// afterRead, when set, runs after SchemaVersion has read a version
	// (outside the lock).
	afterRead func(name string, version int)
}

func newMemStore() *memStore { return &memStore{versions: map[string][]*schemas.Schema{}} }

func (m *memStore) CreateSchemaVersion(_ context.Context, s *schemas.Schema, q schemas.Quota) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := q.Err(m.count(s.CreatedBy)); err != nil {
		return err
	}
	s.Version = len(m.versions[s.Name]) + 1
	m.versions[s.Name] = append(m.versions[s.Name], s)
	return nil
}

func (m *memStore) CountSchemaVersions(_ context.Context, owner string) (int, int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	total, owned := m.count(owner)
	return total, owned, nil
}

// count counts the versions, and those owner created; m.mu is held.
func (m *memStore) count(owner string) (total, owned int) {
	for _, vs := range m.versions {
		for _, s := range vs {
			total++
			if owner != "" && s.CreatedBy == owner {
				owned++
			}
		}
	}
	return total, owned
}

func (m *memStore) SchemaVersion(ctx context.Context, name string, version int) (*schemas.Schema, error) {
	s, err := m.schemaVersion(ctx, name, version)
	m.mu.Lock()
	f := m.afterRead
	m.mu.Unlock()
	if f != nil {
		f(name, version)
	}
	return s, err
}

func (m *memStore) schemaVersion(_ context.Context, name string, version int) (*schemas.Schema, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	vs := m.versions[name]
	if version == 0 && len(vs) > 0 {
		return vs[len(vs)-1], nil
	}
	for _, s := range vs {
		if s.Version == version {
			return s, nil
		}
	}
	return nil, iotgate.Errorf(iotgate.ENotFound, "schema %s version %d not found", name, version)
}

func (m *memStore) SchemaVersions(_ context.Context, name string) ([]*schemas.Schema, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.versions[name]) == 0 {
		return nil, iotgate.Errorf(iotgate.ENotFound, "schema %s not found", name)
	}
	return slices.Clone(m.versions[name]), nil
}

func (m *memStore) Schemas(context.Context) ([]*schemas.Schema, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []*schemas.Schema
	for _, vs := range m.versions {
		out = append(out, vs[len(vs)-1])
	}
	return out, nil
}

func (m *memStore) SchemaByNamespace(_ context.Context, ns string) (*schemas.Schema, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, vs := range m.versions {
		if s := vs[len(vs)-1]; s.TargetNamespace == ns {
			return s, nil
		}
	}
	return nil, iotgate.Errorf(iotgate.ENotFound, "no schema for namespace %s", ns)
}

func (m *memStore) DeleteSchemaVersion(_ context.Context, name string, version int) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	vs := m.versions[name]
	i := slices.IndexFunc(vs, func(s *schemas.Schema) bool { return s.Version == version })
	if i < 0 {
		return iotgate.Errorf(iotgate.ENotFound, "schema %s version %d not found", name, version)
	}
	if m.versions[name] = slices.Delete(vs, i, i+1); len(m.versions[name]) == 0 {
		delete(m.versions, name)
	}
	return nil
}

const (
	okXSD = `<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema" targetNamespace="urn:t" xmlns="urn:t" elementFormDefault="qualified">
<xs:element name="r"><xs:complexType><xs:sequence><xs:element name="v" type="xs:int"/></xs:sequence></xs:complexType></xs:element>
</xs:schema>`
	brokenXSD = `<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema">
<xs:element name="a" type="xs:nope"/>
</xs:schema>`
)

// TestRegisterErrorCodes checks the split the transports rely on: a request
// of the wrong shape is invalid (HTTP 400), an XSD that does not compile is
// unprocessable (HTTP 422) and carries the compiler's issues.
func TestRegisterErrorCodes(t *testing.T) {
	tests := []struct {
		name, schema, src string
		code              string
	}{
		{"OK", "t", okXSD, ""},
		{"ErrBadName", "Not A Name", okXSD, iotgate.EInvalid},
		{"ErrDoesNotCompile", "broken", brokenXSD, iotgate.EUnprocessable},
		{"ErrNotXML", "garbage", "<xs:schema", iotgate.EUnprocessable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg := schemas.NewRegistry(newMemStore(), schemas.Config{})
			s, err := reg.Register(t.Context(), tt.schema, tt.src, "")
			if got := iotgate.ErrorCode(err); got != tt.code {
				t.Fatalf("Register error = %v (code %q), want code %q", err, got, tt.code)
			}
			if tt.code == "" {
				if s.Version != 1 || s.TargetNamespace != "urn:t" {
					t.Errorf("schema = %+v", s)
				}
				return
			}
			if tt.code != iotgate.EUnprocessable {
				return
			}
			var de *iotgate.Error
			errors.As(err, &de)
			issues, ok := de.Fields.([]xsd.CompileIssue)
			if !ok || len(issues) == 0 || issues[0].Message == "" {
				t.Errorf("Fields = %#v, want the compiler's issues", de.Fields)
			}
			var ce *xsd.CompileError
			if !errors.As(err, &ce) {
				t.Errorf("error %v does not wrap an *xsd.CompileError", err)
			}
		})
	}
}

func TestValidateAndRenderErrorCode(t *testing.T) {
	reg := schemas.NewRegistry(newMemStore(), schemas.Config{})
	if _, err := reg.Register(t.Context(), "t", okXSD, ""); err != nil {
		t.Fatal(err)
	}
	ps, _, err := reg.Compiled(t.Context(), "t", 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ps.ValidateAndRender([]byte(`<r xmlns="urn:t"><v>1</v></r>`)); err != nil {
		t.Fatalf("valid reading: %v", err)
	}
	_, err = ps.ValidateAndRender([]byte(`<r xmlns="urn:t"><v>warm</v></r>`))
	if got := iotgate.ErrorCode(err); got != iotgate.EUnprocessable {
		t.Errorf("invalid reading: %v (code %q), want unprocessable", err, got)
	}
}

// TestValidateMatchesValidateAndRender checks that validating a command
// payload alone judges it as validating and rendering does.
func TestValidateMatchesValidateAndRender(t *testing.T) {
	reg := schemas.NewRegistry(newMemStore(), schemas.Config{})
	if _, err := reg.Register(t.Context(), "t", okXSD, ""); err != nil {
		t.Fatal(err)
	}
	ps, _, err := reg.Compiled(t.Context(), "t", 0)
	if err != nil {
		t.Fatal(err)
	}
	v, ok := ps.(interface{ Validate([]byte) error })
	if !ok {
		t.Fatalf("%T has no Validate", ps)
	}
	for _, tc := range []struct {
		name, payload, wantCode string
	}{
		{"OK", `<r xmlns="urn:t"><v>1</v></r>`, ""},
		{"ErrInvalid", `<r xmlns="urn:t"><v>warm</v></r>`, iotgate.EUnprocessable},
		{"ErrNotWellFormed", `<r xmlns="urn:t"><v>1</v>`, iotgate.EUnprocessable},
		{"ErrTwoElements", `<r xmlns="urn:t"><v>1</v></r><r xmlns="urn:t"><v>1</v></r>`, iotgate.EUnprocessable},
		{"ErrDoctype", `<!DOCTYPE r [<!ENTITY e "x">]><r xmlns="urn:t"><v>1</v></r>`, iotgate.EUnprocessable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := v.Validate([]byte(tc.payload))
			_, rerr := ps.ValidateAndRender([]byte(tc.payload))
			if got := iotgate.ErrorCode(err); err != nil && got != tc.wantCode || err == nil && tc.wantCode != "" {
				t.Errorf("Validate: %v (code %q), want code %q", err, got, tc.wantCode)
			}
			if iotgate.ErrorCode(err) != iotgate.ErrorCode(rerr) || (err == nil) != (rerr == nil) {
				t.Errorf("Validate: %v; ValidateAndRender: %v", err, rerr)
			}
		})
	}
}

// TestNamespaces checks the in-memory set of served namespaces: loaded from
// the store, kept current by Register and Delete, a namespace served while
// any version has it.
func TestNamespaces(t *testing.T) {
	ctx := t.Context()
	store := newMemStore()
	first := schemas.NewRegistry(store, schemas.Config{})
	uXSD := strings.ReplaceAll(okXSD, "urn:t", "urn:u")
	for _, r := range []struct{ name, src string }{{"t", okXSD}, {"t", okXSD}, {"u", uXSD}} {
		if _, err := first.Register(ctx, r.name, r.src, ""); err != nil {
			t.Fatal(err)
		}
	}
	reg := schemas.NewRegistry(store, schemas.Config{})
	if reg.ServesNamespace("urn:t") {
		t.Fatal("serves urn:t before LoadNamespaces")
	}
	if err := reg.LoadNamespaces(ctx); err != nil {
		t.Fatal(err)
	}
	check := func(step string, want ...string) {
		t.Helper()
		if got := reg.Namespaces(); !slices.Equal(got, want) {
			t.Errorf("%s: Namespaces = %q, want %q", step, got, want)
		}
		for _, ns := range []string{"urn:t", "urn:u", "urn:nope"} {
			if got := reg.ServesNamespace(ns); got != slices.Contains(want, ns) {
				t.Errorf("%s: ServesNamespace(%s) = %v", step, ns, got)
			}
		}
	}
	check("loaded", "urn:t", "urn:u")
	if err := reg.Delete(ctx, "t", 1); err != nil {
		t.Fatal(err)
	}
	check("one version of t left", "urn:t", "urn:u")
	if err := reg.Delete(ctx, "t", 2); err != nil {
		t.Fatal(err)
	}
	check("t deleted", "urn:u")
	if err := reg.Delete(ctx, "t", 2); iotgate.ErrorCode(err) != iotgate.ENotFound {
		t.Errorf("second delete: %v", err)
	}
	check("t deleted twice", "urn:u")
	if _, err := reg.Register(ctx, "v", strings.ReplaceAll(okXSD, "urn:t", "urn:v"), ""); err != nil {
		t.Fatal(err)
	}
	check("v registered", "urn:u", "urn:v")
}

// BenchmarkServesNamespace measures the namespace check the XMPP read loop
// makes for every device stanza, with 50 namespaces registered.
func BenchmarkServesNamespace(b *testing.B) {
	reg := schemas.NewRegistry(newMemStore(), schemas.Config{})
	for i := range 50 {
		ns := "urn:example:" + strconv.Itoa(i)
		if _, err := reg.Register(b.Context(), "s"+strconv.Itoa(i), strings.ReplaceAll(okXSD, "urn:t", ns), ""); err != nil {
			b.Fatal(err)
		}
	}
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if !reg.ServesNamespace("urn:example:25") || reg.ServesNamespace("urn:example:nope") {
				b.Fatal("wrong answer")
			}
		}
	})
}

// TestCompileAll compiles many stored versions at start, and says how long
// that takes: it bounds how long after a start the first readings may wait
// for their schema.
func TestCompileAll(t *testing.T) {
	ctx := context.Background()
	const names, versions = 50, 4
	store := manySchemas(names, versions)
	reg := schemas.NewRegistry(store, schemas.Config{})
	began := time.Now()
	n, err := reg.CompileAll(ctx, runtime.GOMAXPROCS(0))
	took := time.Since(began)
	if err != nil {
		t.Fatal(err)
	}
	if n != names*versions {
		t.Errorf("compiled %d versions, want %d", n, names*versions)
	}
	t.Logf("compiled %d schema versions in %s", n, took)

	// Compiled now answers from memory: the store is not asked again.
	store.mu.Lock()
	store.versions = map[string][]*schemas.Schema{}
	store.mu.Unlock()
	if _, _, err := reg.Compiled(ctx, "s7", 3); err != nil {
		t.Errorf("compiled schema not kept: %v", err)
	}

	t.Run("StopsWhenCanceled", func(t *testing.T) {
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		reg := schemas.NewRegistry(manySchemas(names, versions), schemas.Config{})
		if n, err := reg.CompileAll(cctx, 2); n != 0 || err != nil {
			t.Errorf("CompileAll after cancel = %d, %v; want 0, nil", n, err)
		}
	})
}

// manySchemas returns a store with names schemas of versions versions
// each, and one more that does not compile.
func manySchemas(names, versions int) *memStore {
	ctx := context.Background()
	store := newMemStore()
	for i := range names {
		for range versions {
			xsd := `<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema" targetNamespace="urn:s` + strconv.Itoa(i) + `" xmlns="urn:s` + strconv.Itoa(i) + `" elementFormDefault="qualified">` +
				`<xs:element name="r"><xs:complexType><xs:sequence><xs:element name="v" type="xs:decimal"/></xs:sequence></xs:complexType></xs:element></xs:schema>`
			store.CreateSchemaVersion(ctx, &schemas.Schema{Name: "s" + strconv.Itoa(i), XSD: xsd}, schemas.Quota{})
		}
	}
	// A version that does not compile is skipped, not fatal.
	store.CreateSchemaVersion(ctx, &schemas.Schema{Name: "broken", XSD: "<not-a-schema/>"}, schemas.Quota{})
	return store
}
