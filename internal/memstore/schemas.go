package memstore

import (
	"context"
	"slices"
	"sync"

	"github.com/iotgate/iotgate"
	"github.com/iotgate/iotgate/schemas"
)

// SchemaStore is an in-memory schemas.Store: enough for the registry's own
// logic (error codes, versions); the PostgreSQL store has its own tests.
// It imports schemas because schemas declares the port it consumes.
type SchemaStore struct {
	mu       sync.Mutex
	versions map[string][]*schemas.Schema
}

var _ schemas.Store = (*SchemaStore)(nil)

// NewSchemaStore returns an empty store.
func NewSchemaStore() *SchemaStore { return &SchemaStore{versions: map[string][]*schemas.Schema{}} }

// Clear forgets every schema, so that a test can tell what is served from
// the registry's memory.
func (m *SchemaStore) Clear() {
	m.mu.Lock()
	m.versions = map[string][]*schemas.Schema{}
	m.mu.Unlock()
}

func (m *SchemaStore) CreateSchemaVersion(_ context.Context, s *schemas.Schema) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	s.Version = len(m.versions[s.Name]) + 1
	m.versions[s.Name] = append(m.versions[s.Name], s)
	return nil
}

func (m *SchemaStore) SchemaVersion(_ context.Context, name string, version int) (*schemas.Schema, error) {
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

func (m *SchemaStore) SchemaVersions(_ context.Context, name string) ([]*schemas.Schema, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.versions[name]) == 0 {
		return nil, iotgate.Errorf(iotgate.ENotFound, "schema %s not found", name)
	}
	return slices.Clone(m.versions[name]), nil
}

func (m *SchemaStore) Schemas(context.Context) ([]*schemas.Schema, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []*schemas.Schema
	for _, vs := range m.versions {
		out = append(out, vs[len(vs)-1])
	}
	return out, nil
}

func (m *SchemaStore) SchemaByNamespace(_ context.Context, ns string) (*schemas.Schema, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, vs := range m.versions {
		if s := vs[len(vs)-1]; s.TargetNamespace == ns {
			return s, nil
		}
	}
	return nil, iotgate.Errorf(iotgate.ENotFound, "no schema for namespace %s", ns)
}

func (m *SchemaStore) DeleteSchemaVersion(_ context.Context, name string, version int) error {
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
