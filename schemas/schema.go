// Package schemas is the registry of device payload schemas (XSDs): named,
// immutable, numbered versions that are compiled once and then used to
// validate and render every reading.
//
// Compilation and validation happen in schemas/xsd, a libxml2 binding that
// never reads files, never touches the network and never expands entities.
//
// It may import the root package iotgate (errors, the SchemaSource port it
// implements) and schemas/xsd; never devices, a transport (api, component),
// postgres or cmd. It declares the Store it needs; postgres implements it.
package schemas

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"sync"
	"sync/atomic"
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
	Clock           func() time.Time
	Logger          *slog.Logger
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
		compiled: make(map[Ref]*compiled), nsOf: make(map[Ref]string), nsCount: make(map[string]int)}
}

// LoadNamespaces reads the target namespaces of every registered version,
// for ServesNamespace and Namespaces. Call it once at start, before the
// XMPP stream is up; Register and Delete keep the set current afterwards.
// Registrations made by another iotgate on the same database are not seen
// until a restart. Errors: those of the store (unavailable).
func (r *Registry) LoadNamespaces(ctx context.Context) error {
	latest, err := r.store.Schemas(ctx)
	if err != nil {
		return fmt.Errorf("load schema namespaces: %w", err)
	}
	for _, l := range latest {
		vs, err := r.store.SchemaVersions(ctx, l.Name)
		if iotgate.ErrorCode(err) == iotgate.ENotFound {
			continue // deleted meanwhile
		}
		if err != nil {
			return fmt.Errorf("load schema namespaces: %w", err)
		}
		for _, v := range vs {
			r.addNamespace(Ref{v.Name, v.Version}, v.TargetNamespace)
		}
	}
	return nil
}

func (r *Registry) addNamespace(ref Ref, ns string) {
	r.nsMu.Lock()
	defer r.nsMu.Unlock()
	if _, ok := r.nsOf[ref]; ok {
		return
	}
	r.nsOf[ref] = ns
	r.nsCount[ns]++
}

func (r *Registry) removeNamespace(ref Ref) {
	r.nsMu.Lock()
	defer r.nsMu.Unlock()
	ns, ok := r.nsOf[ref]
	if !ok {
		return
	}
	delete(r.nsOf, ref)
	if r.nsCount[ns]--; r.nsCount[ns] <= 0 {
		delete(r.nsCount, ns)
	}
}

// ServesNamespace reports whether some registered schema version has the
// target namespace ns: whether a payload in ns can be a reading. It reads
// memory only (see LoadNamespaces).
func (r *Registry) ServesNamespace(ns string) bool {
	r.nsMu.RLock()
	defer r.nsMu.RUnlock()
	return r.nsCount[ns] > 0
}

// Namespaces returns the target namespaces of the registered schema
// versions, sorted.
func (r *Registry) Namespaces() []string {
	r.nsMu.RLock()
	out := make([]string, 0, len(r.nsCount))
	for ns := range r.nsCount {
		out = append(out, ns)
	}
	r.nsMu.RUnlock()
	slices.Sort(out)
	return out
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
	cs, err := xsd.Compile([]byte(src), xsd.CompileOptions{
		MaxSchemaBytes: r.cfg.MaxSchemaBytes,
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
	c := &compiled{s: cs}
	c.once.Do(func() {})
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

// compiled is a cache entry; once guards compiling it once (and orders
// the reads of s and err after the write).
type compiled struct {
	once sync.Once
	s    *xsd.Schema
	err  error
}

// Compiled returns the compiled schema for name and version (0: latest) and
// the version it resolved to. It compiles a stored schema at first use.
// Errors: not_found.
func (r *Registry) Compiled(ctx context.Context, name string, version int) (iotgate.PayloadSchema, int, error) {
	if version == 0 {
		s, err := r.store.SchemaVersion(ctx, name, 0)
		if err != nil {
			return nil, 0, err
		}
		version = s.Version
	}
	ref := Ref{name, version}
	r.mu.Lock()
	c := r.compiled[ref]
	if c == nil {
		c = &compiled{}
		r.compiled[ref] = c
	}
	r.mu.Unlock()
	c.once.Do(func() { c.s, c.err = r.compileStored(ctx, ref) })
	if c.err != nil {
		// Don't cache failures: the store may have been down.
		r.mu.Lock()
		if r.compiled[ref] == c {
			delete(r.compiled, ref)
		}
		r.mu.Unlock()
		return nil, 0, c.err
	}
	return payloadSchema{c.s, r.lim}, version, nil
}

// CompileAll compiles every stored schema version not compiled yet, at
// most workers at once, so that the first readings after a start do not
// wait for their schema's compilation. A version that does not compile is
// logged and skipped (its readings are refused as before). It stops early
// when ctx ends and returns how many versions it compiled. Errors: the
// store's, listing the schemas.
func (r *Registry) CompileAll(ctx context.Context, workers int) (int, error) {
	latest, err := r.store.Schemas(ctx)
	if err != nil {
		return 0, fmt.Errorf("list schemas: %w", err)
	}
	var refs []Ref
	for _, l := range latest {
		vs, err := r.store.SchemaVersions(ctx, l.Name)
		if err != nil {
			return 0, fmt.Errorf("list versions of schema %s: %w", l.Name, err)
		}
		for _, v := range vs {
			refs = append(refs, Ref{v.Name, v.Version})
		}
	}
	next := make(chan Ref)
	var n atomic.Int64
	var wg sync.WaitGroup
	for range max(workers, 1) {
		wg.Go(func() {
			for ref := range next {
				if _, _, err := r.Compiled(ctx, ref.Name, ref.Version); err != nil {
					r.cfg.Logger.Warn("schema does not compile", "schema", ref.Name, "version", ref.Version, "err", err)
					continue
				}
				n.Add(1)
			}
		})
	}
	for _, ref := range refs {
		if ctx.Err() != nil {
			break
		}
		next <- ref
	}
	close(next)
	wg.Wait()
	return int(n.Load()), nil
}

func (r *Registry) compileStored(ctx context.Context, ref Ref) (*xsd.Schema, error) {
	s, err := r.store.SchemaVersion(ctx, ref.Name, ref.Version)
	if err != nil {
		return nil, err
	}
	var lookupErr error
	cs, err := xsd.Compile([]byte(s.XSD), xsd.CompileOptions{
		MaxSchemaBytes: r.cfg.MaxSchemaBytes,
		Imports: func(ns string) ([]byte, bool) {
			var imp *Schema
			var err error
			if ir, ok := s.Imports[ns]; ok {
				imp, err = r.store.SchemaVersion(ctx, ir.Name, ir.Version)
			} else {
				imp, err = r.store.SchemaByNamespace(ctx, ns)
			}
			if err != nil {
				lookupErr = err
				return nil, false
			}
			return []byte(imp.XSD), true
		},
	})
	if lookupErr != nil {
		return nil, fmt.Errorf("compile stored schema %s version %d: resolve import: %w", ref.Name, ref.Version, lookupErr)
	}
	if err != nil {
		// Not the content of a request: invalid rather than
		// unprocessable, as before the split of schemas/xsd.
		return nil, fmt.Errorf("compile stored schema %s version %d: %w", ref.Name, ref.Version, fromXSD(err, iotgate.EInvalid))
	}
	return cs, nil
}

// payloadSchema adapts a compiled XSD to what devices need.
type payloadSchema struct {
	s   *xsd.Schema
	lim xsd.Limits
}

func (p payloadSchema) TargetNamespace() string { return p.s.TargetNamespace() }

func (p payloadSchema) ValidateAndRender(payload []byte) (json.RawMessage, error) {
	data, err := p.s.ValidateAndRender(payload, p.lim)
	if err != nil {
		return nil, fromXSD(err, iotgate.EUnprocessable)
	}
	b, err := json.Marshal(data)
	if err != nil {
		return nil, fmt.Errorf("render reading: %w", err)
	}
	return b, nil
}

// Validate validates a payload element without rendering it: a command's
// payload is checked before it is sent, and nobody reads its rendering.
// Errors: those of ValidateAndRender.
func (p payloadSchema) Validate(payload []byte) error {
	if err := p.s.Validate(payload, p.lim); err != nil {
		return fromXSD(err, iotgate.EUnprocessable)
	}
	return nil
}
