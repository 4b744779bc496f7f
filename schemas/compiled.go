package schemas

import (
	"container/list"
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/iotgate/iotgate"
	"github.com/iotgate/iotgate/schemas/xsd"
)

// compiled is a cache entry; once guards compiling it once (and orders
// the reads of s and err after the write).
type compiled struct {
	once sync.Once
	s    *xsd.Schema
	err  error
	// at is the created_at of the row compiled: a version deleted and
	// numbered again elsewhere has another (see Forget). Read it only
	// once done is set.
	at time.Time
	// retryAt is when a failure may be retried; zero: never (the XSD
	// does not compile, and a version never changes).
	retryAt time.Time
	done    atomic.Bool
	// elem is c's place in the registry's LRU list; guarded by its mu.
	elem *list.Element
}

// finish sets c compiled from s (or failed with err), created at at.
func (c *compiled) finish(s *xsd.Schema, at time.Time, err error) {
	c.s, c.at, c.err = s, at.Round(time.Microsecond), err
	c.done.Store(true)
}

// compileTimeout bounds the store reads of one compilation, which runs
// apart from the request that started it: other readings wait for it.
const compileTimeout = time.Minute

// Compiled returns the compiled schema for name and version (0: latest) and
// the version it resolved to. It compiles a stored schema at first use
// (concurrent first uses compile it once) and after its eviction from the
// cache. A failed compile is remembered (see cache.go): its error comes
// back at once, without a query. Errors: not_found, invalid (the stored
// XSD does not compile), unavailable.
func (r *Registry) Compiled(ctx context.Context, name string, version int) (iotgate.PayloadSchema, int, error) {
	if version == 0 {
		s, err := r.store.SchemaVersion(ctx, name, 0)
		if err != nil {
			return nil, 0, err
		}
		version = s.Version
	}
	ref := Ref{name, version}
	c := r.cached(ref, r.cfg.Clock())
	c.once.Do(func() {
		// Not the caller's cancellation: others may wait for this.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), compileTimeout)
		defer cancel()
		s, at, gone, err := r.compileStored(cctx, ref)
		if err != nil && iotgate.ErrorCode(err) != iotgate.EInvalid {
			c.retryAt = r.cfg.Clock().Add(r.cfg.CompileRetry)
		}
		c.finish(s, at, err)
		r.settle(ref, c, gone)
	})
	if c.err != nil {
		return nil, 0, c.err
	}
	return payloadSchema{c.s, r.lim}, version, nil
}

// CompileAll compiles every stored schema version not compiled yet, at
// most workers at once, so that the first readings after a start do not
// wait for their schema's compilation. A version that does not compile is
// logged and skipped (its readings are refused as before). It compiles at
// most as many as the cache holds, the latest version of every schema
// first, then the one before, and so on. It stops early when ctx ends and
// returns how many versions it compiled. Errors: the store's, listing the
// schemas.
func (r *Registry) CompileAll(ctx context.Context, workers int) (int, error) {
	latest, err := r.store.Schemas(ctx)
	if err != nil {
		return 0, fmt.Errorf("list schemas: %w", err)
	}
	var byName [][]*Schema
	for _, l := range latest {
		vs, err := r.store.SchemaVersions(ctx, l.Name)
		if err != nil {
			return 0, fmt.Errorf("list versions of schema %s: %w", l.Name, err)
		}
		byName = append(byName, vs)
	}
	var refs []Ref
	for back := 1; len(refs) < r.cfg.CacheSize; back++ {
		more := false
		for _, vs := range byName {
			if i := len(vs) - back; i >= 0 && len(refs) < r.cfg.CacheSize {
				refs = append(refs, Ref{vs[i].Name, vs[i].Version})
				more = true
			}
		}
		if !more {
			break
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

// compileStored compiles a stored version; gone tells that the version
// itself does not exist (not_found).
func (r *Registry) compileStored(ctx context.Context, ref Ref) (_ *xsd.Schema, _ time.Time, gone bool, _ error) {
	s, err := r.store.SchemaVersion(ctx, ref.Name, ref.Version)
	if err != nil {
		return nil, time.Time{}, iotgate.ErrorCode(err) == iotgate.ENotFound, err
	}
	var lookupErr error
	cs, err := xsd.CompileContext(ctx, []byte(s.XSD), xsd.CompileOptions{
		MaxSchemaBytes: r.cfg.MaxSchemaBytes, Cost: r.cfg.Cost, Stored: true,
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
		return nil, time.Time{}, false, fmt.Errorf("compile stored schema %s version %d: resolve import: %w", ref.Name, ref.Version, lookupErr)
	}
	if err != nil {
		// Not the content of a request: invalid rather than
		// unprocessable, as before the split of schemas/xsd.
		return nil, time.Time{}, false, fmt.Errorf("compile stored schema %s version %d: %w", ref.Name, ref.Version, fromXSD(err, iotgate.EInvalid))
	}
	return cs, s.CreatedAt, false, nil
}

// JSONSchema returns the JSON Schema (draft 2020-12) of one version of a
// schema, generated from its XSD (see xsd.Schema.JSONSchema); version 0
// means the latest. Errors: not_found, unavailable.
func (r *Registry) JSONSchema(ctx context.Context, name string, version int) (json.RawMessage, error) {
	ps, v, err := r.Compiled(ctx, name, version)
	if err != nil {
		return nil, err
	}
	p, ok := ps.(payloadSchema)
	if !ok {
		return nil, iotgate.Errorf(iotgate.EInternal, "schema %s version %d: no XSD behind it", name, v)
	}
	out, err := p.s.JSONSchema()
	if err != nil {
		return nil, fromXSD(err, iotgate.EUnprocessable)
	}
	return out, nil
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
	return data, nil
}

// FieldKind returns the JSON kind ("number", "string", "boolean",
// "object", "array" or "unknown") of the field at path in the rendering
// of this schema's documents; see xsd.Schema.FieldKind.
func (p payloadSchema) FieldKind(path []string) string { return string(p.s.FieldKind(path)) }

// ScalarFields returns the paths of the scalar fields of this schema's
// renderings, sorted; see xsd.Schema.ScalarFields.
func (p payloadSchema) ScalarFields(depth, max int) [][]string { return p.s.ScalarFields(depth, max) }

// BuildCommand builds a command's XML from its JSON data (see
// iotgate.CommandBuilder), bounded by the payload limits: the JSON read and
// the XML written are at most the payload size limit, nested at most its
// depth. Errors: those of iotgate.CommandBuilder; unavailable once freed.
func (p payloadSchema) BuildCommand(element string, data []byte) ([]byte, error) {
	doc, err := p.s.Build(element, data, xsd.BuildLimits{MaxBytes: p.lim.MaxBytes, MaxDepth: p.lim.MaxDepth})
	if err != nil {
		return nil, fromXSD(err, iotgate.EUnprocessable)
	}
	return doc, nil
}

var _ iotgate.CommandBuilder = payloadSchema{}

// Validate validates a payload element without rendering it: a command's
// payload is checked before it is sent, and nobody reads its rendering.
// Errors: those of ValidateAndRender.
func (p payloadSchema) Validate(payload []byte) error {
	if err := p.s.Validate(payload, p.lim); err != nil {
		return fromXSD(err, iotgate.EUnprocessable)
	}
	return nil
}
