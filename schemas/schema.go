package schemas

import (
	"context"
	"fmt"
	"log/slog"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/iotgate/iotgate"
	"github.com/iotgate/iotgate/schemas/xsd"
)

// Schema is one version of a named payload schema.
type Schema struct {
	Name            string    `json:"name" example:"thermostat"`
	Version         int       `json:"version" example:"1"`
	Description     string    `json:"description" example:"Kitchen thermostats"`
	TargetNamespace string    `json:"target_namespace" example:"urn:example:thermostat"`
	GlobalElements  []string  `json:"global_elements" example:"reading,set,get,state"`
	CreatedAt       time.Time `json:"created_at"`
	// Imports records which registered schema version each imported
	// namespace resolved to at registration, so recompiling after a
	// restart gives the same schema.
	Imports map[string]Ref `json:"imports,omitempty"`
	XSD     string         `json:"-"`
}

// Ref names one schema version.
type Ref struct {
	Name    string `json:"name"`
	Version int    `json:"version"`
}

// String returns "name/version": the key of a schema change
// notification (names never hold a slash).
func (r Ref) String() string { return r.Name + "/" + strconv.Itoa(r.Version) }

// parseRef reads what Ref.String wrote.
func parseRef(s string) (Ref, bool) {
	i := strings.LastIndexByte(s, '/')
	if i < 0 {
		return Ref{}, false
	}
	v, err := strconv.Atoi(s[i+1:])
	if err != nil || v <= 0 {
		return Ref{}, false
	}
	return Ref{s[:i], v}, true
}

// Store is the persistence the registry needs. Implementations return
// *iotgate.Error values: not_found, and conflict when deleting a version
// that devices use.
type Store interface {
	// CreateSchemaVersion stores s as the next version of s.Name and sets
	// s.Version.
	CreateSchemaVersion(ctx context.Context, s *Schema) error
	// SchemaVersion returns one version; 0 means the latest.
	SchemaVersion(ctx context.Context, name string, version int) (*Schema, error)
	// SchemaVersions lists the versions of name, oldest first.
	SchemaVersions(ctx context.Context, name string) ([]*Schema, error)
	// Schemas lists the latest version of every schema, by name.
	Schemas(ctx context.Context) ([]*Schema, error)
	// SchemaByNamespace returns the latest version whose target namespace
	// is ns.
	SchemaByNamespace(ctx context.Context, ns string) (*Schema, error)
	DeleteSchemaVersion(ctx context.Context, name string, version int) error
}

// Config sets the registry's limits.
type Config struct {
	MaxSchemaBytes  int // default 1 MiB
	MaxReadingBytes int // default 64 KiB
	MaxDepth        int // default 32
	// MaxPatternValue and MaxPatternTotal bound the values xs:pattern
	// facets check (xsd.Limits); defaults 256 and 1024 characters.
	MaxPatternValue int
	MaxPatternTotal int
	// Cost bounds what compiling one schema may cost (zero: xsd's defaults).
	Cost   xsd.CostLimits
	Clock  func() time.Time
	Logger *slog.Logger
}

// Registry registers schemas and hands out compiled ones. It implements
// iotgate.SchemaSource.
type Registry struct {
	store Store
	cfg   Config
	lim   xsd.Limits

	mu       sync.Mutex
	compiled map[Ref]*compiled

	// The target namespaces of the registered versions, kept in memory
	// because the XMPP read loop asks about every stanza.
	nsMu    sync.RWMutex
	nsOf    map[Ref]string
	nsCount map[string]int

	// What Forget was told changed, for FollowChanges to check.
	staleMu  sync.Mutex
	stale    map[Ref]bool
	staleAll bool
	wake     chan struct{}
}

var _ iotgate.SchemaSource = (*Registry)(nil)

// NewRegistry returns a registry over store.
func NewRegistry(store Store, cfg Config) *Registry {
	if cfg.MaxSchemaBytes <= 0 {
		cfg.MaxSchemaBytes = 1 << 20
	}
	if cfg.MaxReadingBytes <= 0 {
		cfg.MaxReadingBytes = 64 << 10
	}
	if cfg.MaxDepth <= 0 {
		cfg.MaxDepth = 32
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Registry{store: store, cfg: cfg, lim: xsd.Limits{MaxBytes: cfg.MaxReadingBytes, MaxDepth: cfg.MaxDepth,
		MaxPatternValue: cfg.MaxPatternValue, MaxPatternTotal: cfg.MaxPatternTotal},
		compiled: make(map[Ref]*compiled), nsOf: make(map[Ref]string), nsCount: make(map[string]int),
		stale: map[Ref]bool{}, wake: make(chan struct{}, 1)}
}

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}[a-z0-9]$|^[a-z0-9]$`)

// ValidateName checks a schema name. Errors: invalid.
func ValidateName(name string) error {
	if !nameRE.MatchString(name) {
		return iotgate.Errorf(iotgate.EInvalid, "schema name %q must be 1-64 lowercase letters, digits, '.', '_' or '-', starting and ending with a letter or digit", name)
	}
	return nil
}

// Register compiles src and stores it as the next version of name. Imports
// resolve by namespace to the latest registered version with that target
// namespace. Errors: invalid (bad name or description), unprocessable (the
// XSD does not compile: the error's Fields are the []xsd.CompileIssue, each
// with its line and message, and it wraps the *xsd.CompileError).
func (r *Registry) Register(ctx context.Context, name, src, description string) (*Schema, error) {
	if err := ValidateName(name); err != nil {
		return nil, err
	}
	if len(description) > 2000 {
		return nil, iotgate.Errorf(iotgate.EInvalid, "description is longer than 2000 bytes")
	}
	imports := map[string]Ref{}
	var lookupErr error
	cs, err := xsd.CompileContext(ctx, []byte(src), xsd.CompileOptions{
		MaxSchemaBytes: r.cfg.MaxSchemaBytes, Cost: r.cfg.Cost,
		Imports: func(ns string) ([]byte, bool) {
			s, err := r.store.SchemaByNamespace(ctx, ns)
			if err != nil {
				if iotgate.ErrorCode(err) != iotgate.ENotFound {
					lookupErr = err
				}
				return nil, false
			}
			imports[ns] = Ref{s.Name, s.Version}
			return []byte(s.XSD), true
		},
	})
	if lookupErr != nil {
		return nil, fmt.Errorf("resolve schema imports: %w", lookupErr)
	}
	if err != nil {
		return nil, fromXSD(err, iotgate.EUnprocessable)
	}
	s := &Schema{
		Name: name, Description: description, XSD: src,
		TargetNamespace: cs.TargetNamespace(), GlobalElements: cs.GlobalElements(),
		CreatedAt: r.cfg.Clock().UTC(), Imports: imports,
	}
	if err := r.store.CreateSchemaVersion(ctx, s); err != nil {
		cs.Free()
		return nil, err
	}
	r.addNamespace(Ref{s.Name, s.Version}, s.TargetNamespace)
	c := &compiled{}
	c.once.Do(func() { c.finish(cs, s.CreatedAt, nil) })
	r.mu.Lock()
	r.compiled[Ref{s.Name, s.Version}] = c
	r.mu.Unlock()
	return s, nil
}

// Get returns one version of a schema; 0 means the latest.
// Errors: not_found.
func (r *Registry) Get(ctx context.Context, name string, version int) (*Schema, error) {
	if version < 0 {
		return nil, iotgate.Errorf(iotgate.EInvalid, "version must be positive")
	}
	return r.store.SchemaVersion(ctx, name, version)
}

// Versions lists all versions of a schema. Errors: not_found.
func (r *Registry) Versions(ctx context.Context, name string) ([]*Schema, error) {
	return r.store.SchemaVersions(ctx, name)
}

// List returns the latest version of every schema.
func (r *Registry) List(ctx context.Context) ([]*Schema, error) {
	return r.store.Schemas(ctx)
}

// Delete removes one version. Errors: not_found, conflict (devices use it).
func (r *Registry) Delete(ctx context.Context, name string, version int) error {
	if err := r.store.DeleteSchemaVersion(ctx, name, version); err != nil {
		return err
	}
	r.removeNamespace(Ref{name, version})
	r.mu.Lock()
	c := r.compiled[Ref{name, version}]
	delete(r.compiled, Ref{name, version})
	r.mu.Unlock()
	if c != nil && c.s != nil {
		c.s.Free() // waits for validations in flight
	}
	return nil
}
