package schemas

import (
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
	at   time.Time
	done atomic.Bool
}

// finish sets c compiled from s (or failed with err), created at at.
func (c *compiled) finish(s *xsd.Schema, at time.Time, err error) {
	c.s, c.at, c.err = s, at.Round(time.Microsecond), err
	c.done.Store(true)
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
	c.once.Do(func() { c.finish(r.compileStored(ctx, ref)) })
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

func (r *Registry) compileStored(ctx context.Context, ref Ref) (*xsd.Schema, time.Time, error) {
	s, err := r.store.SchemaVersion(ctx, ref.Name, ref.Version)
	if err != nil {
		return nil, time.Time{}, err
	}
	var lookupErr error
	cs, err := xsd.CompileContext(ctx, []byte(s.XSD), xsd.CompileOptions{
		MaxSchemaBytes: r.cfg.MaxSchemaBytes, Cost: r.cfg.Cost,
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
		return nil, time.Time{}, fmt.Errorf("compile stored schema %s version %d: resolve import: %w", ref.Name, ref.Version, lookupErr)
	}
	if err != nil {
		// Not the content of a request: invalid rather than
		// unprocessable, as before the split of schemas/xsd.
		return nil, time.Time{}, fmt.Errorf("compile stored schema %s version %d: %w", ref.Name, ref.Version, fromXSD(err, iotgate.EInvalid))
	}
	return cs, s.CreatedAt, nil
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

// Validate validates a payload element without rendering it: a command's
// payload is checked before it is sent, and nobody reads its rendering.
// Errors: those of ValidateAndRender.
func (p payloadSchema) Validate(payload []byte) error {
	if err := p.s.Validate(payload, p.lim); err != nil {
		return fromXSD(err, iotgate.EUnprocessable)
	}
	return nil
}
