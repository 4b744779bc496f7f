package schemas

import (
	"container/list"
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
	// CreatedBy is the ID of the API token that registered the version,
	// for its per-token quota; "" when not known (stored before it was
	// recorded, or registered by iotgate itself).
	CreatedBy string `json:"-"`
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
// that devices or other versions use.
type Store interface {
	// CreateSchemaVersion stores s as the next version of s.Name and sets
	// s.Version, and records s.Imports as what s depends on (a version
	// imported cannot be deleted). When q.Total versions are stored, or
	// q.PerOwner created by s.CreatedBy (not ""), it stores nothing and
	// returns q.Err's error.
	CreateSchemaVersion(ctx context.Context, s *Schema, q Quota) error
	// CountSchemaVersions returns how many versions are stored, of every
	// schema, and how many of them owner ("" counts none) created.
	CountSchemaVersions(ctx context.Context, owner string) (total, owned int, err error)
	// SchemaVersion returns one version; 0 means the latest.
	SchemaVersion(ctx context.Context, name string, version int) (*Schema, error)
	// SchemaVersions lists the versions of name, oldest first.
	SchemaVersions(ctx context.Context, name string) ([]*Schema, error)
	// Schemas lists the latest version of every schema, by name.
	Schemas(ctx context.Context) ([]*Schema, error)
	// SchemaByNamespace returns the latest version whose target namespace
	// is ns.
	SchemaByNamespace(ctx context.Context, ns string) (*Schema, error)
	// DeleteSchemaVersion deletes one version. Errors: not_found,
	// conflict with DetailSchemaInUse (devices use it, or another
	// version imports it).
	DeleteSchemaVersion(ctx context.Context, name string, version int) error
}

// Quota bounds the schema versions stored: Total of all, PerOwner created
// by one API token; 0 means no limit.
type Quota struct {
	Total, PerOwner int
}

// Err returns the refusal of a registration when total versions are
// stored and owned of them created by its token, or nil within q.
func (q Quota) Err(total, owned int) error {
	switch {
	case q.Total > 0 && total >= q.Total:
		return ErrVersionQuota(q.Total)
	case q.PerOwner > 0 && owned >= q.PerOwner:
		return &iotgate.Error{Code: iotgate.EConflict, Detail: iotgate.DetailSchemaQuotaExceeded,
			Message: fmt.Sprintf("this token has registered %d schema versions, its limit: delete unused versions first", q.PerOwner)}
	}
	return nil
}

// ErrVersionQuota is the refusal of a registration when max schema
// versions are stored already: conflict (HTTP 409), not too_many_requests,
// since waiting does not help; deleting versions does.
func ErrVersionQuota(max int) error {
	return &iotgate.Error{Code: iotgate.EConflict, Detail: iotgate.DetailSchemaQuotaExceeded,
		Message: fmt.Sprintf("the registry holds %d schema versions, its limit: delete unused versions first", max)}
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
	// MaxVersions bounds the schema versions stored, of all schemas
	// (each costs a compilation and memory); 0 means no limit.
	MaxVersions int
	// MaxVersionsPerToken bounds the versions one API token has
	// registered (and not deleted), so that one tenant can't take all
	// of MaxVersions; 0 means no limit.
	MaxVersionsPerToken int
	// CacheSize bounds the compiled schemas kept (least recently used
	// ones go first, and are compiled again at their next use); default
	// 1000.
	CacheSize int
	// Cost bounds what compiling one schema may cost (zero: xsd's defaults).
	Cost xsd.CostLimits
	// CompileRetry is how long a compile that failed for a cause that may
	// pass (the store down) is remembered before it is tried again;
	// default 10 s.
	CompileRetry time.Duration
	Clock        func() time.Time
	Logger       *slog.Logger
}

// Registry registers schemas and hands out compiled ones. It implements
// iotgate.SchemaSource.
type Registry struct {
	store Store
	cfg   Config
	lim   xsd.Limits

	// The compiled schemas, an LRU cache (cache.go).
	mu        sync.Mutex
	compiled  map[Ref]*compiled
	lru       *list.List // of Ref, most recently used first
	evictions uint64

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
	if cfg.CacheSize <= 0 {
		cfg.CacheSize = 1000
	}
	if cfg.CompileRetry <= 0 {
		cfg.CompileRetry = 10 * time.Second
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Registry{store: store, cfg: cfg, lim: xsd.Limits{MaxBytes: cfg.MaxReadingBytes, MaxDepth: cfg.MaxDepth,
		MaxPatternValue: cfg.MaxPatternValue, MaxPatternTotal: cfg.MaxPatternTotal},
		compiled: make(map[Ref]*compiled), lru: list.New(), nsOf: make(map[Ref]string), nsCount: make(map[string]int),
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

// Register is RegisterAs by no token: iotgate itself, counted in
// MaxVersions only.
func (r *Registry) Register(ctx context.Context, name, src, description string) (*Schema, error) {
	return r.RegisterAs(ctx, "", name, src, description)
}

// RegisterAs compiles src and stores it as the next version of name,
// registered by the API token whose ID is owner. Imports
// resolve by namespace to the latest registered version with that target
// namespace. Errors: invalid (bad name or description), unprocessable (the
// XSD does not compile: the error's Fields are the []xsd.CompileIssue, each
// with its line and message, and it wraps the *xsd.CompileError), conflict
// with DetailSchemaQuotaExceeded (Config.MaxVersions are stored, or
// MaxVersionsPerToken registered by owner).
func (r *Registry) RegisterAs(ctx context.Context, owner, name, src, description string) (*Schema, error) {
	if err := ValidateName(name); err != nil {
		return nil, err
	}
	if len(description) > 2000 {
		return nil, iotgate.Errorf(iotgate.EInvalid, "description is longer than 2000 bytes")
	}
	// Checked before compiling too, to spare the compilation; the store
	// checks again, under a lock, as it stores.
	quota := Quota{Total: r.cfg.MaxVersions, PerOwner: r.cfg.MaxVersionsPerToken}
	if quota != (Quota{}) {
		total, owned, err := r.store.CountSchemaVersions(ctx, owner)
		if err != nil {
			return nil, fmt.Errorf("count schema versions: %w", err)
		}
		if err := quota.Err(total, owned); err != nil {
			return nil, err
		}
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
		CreatedAt: r.cfg.Clock().UTC(), Imports: imports, CreatedBy: owner,
	}
	if err := r.store.CreateSchemaVersion(ctx, s, quota); err != nil {
		cs.Free()
		return nil, err
	}
	r.addNamespace(Ref{s.Name, s.Version}, s.TargetNamespace)
	c := &compiled{}
	c.once.Do(func() { c.finish(cs, s.CreatedAt, nil) })
	r.put(Ref{s.Name, s.Version}, c)
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

// Delete removes one version. Errors: not_found, conflict with
// DetailSchemaInUse (devices use it, or another version imports it).
func (r *Registry) Delete(ctx context.Context, name string, version int) error {
	if err := r.store.DeleteSchemaVersion(ctx, name, version); err != nil {
		return err
	}
	r.removeNamespace(Ref{name, version})
	r.mu.Lock()
	c := r.removeLocked(Ref{name, version})
	r.mu.Unlock()
	if c != nil && c.s != nil {
		c.s.Free() // waits for validations in flight
	}
	return nil
}
