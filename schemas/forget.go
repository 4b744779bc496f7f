package schemas

import (
	"context"
	"time"

	"github.com/iotgate/iotgate"
)

// retryStale is how long FollowChanges waits before it checks again what
// it could not read.
const retryStale = time.Second

// Forget tells the registry that schema version key (as Ref.String
// writes it) may have changed in the store, by this instance or another
// one; "" means any version may have. It does no I/O: FollowChanges reads
// the versions again, updates the namespaces served and drops the
// compiled schemas whose row is gone or not the one compiled (a version
// deleted and numbered again). Until then, at most a round trip, the
// registry answers as before.
func (r *Registry) Forget(key string) {
	r.staleMu.Lock()
	if key == "" {
		r.staleAll = true
	} else if ref, ok := parseRef(key); ok {
		r.stale[ref] = true
	}
	r.staleMu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// FollowChanges checks what Forget was told, until ctx is done. Versions
// it could not read (the store is down) are checked again every
// retryStale.
func (r *Registry) FollowChanges(ctx context.Context) {
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	defer retry.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.wake:
		case <-retry.C:
		}
		r.staleMu.Lock()
		all, refs := r.staleAll, r.stale
		r.staleAll, r.stale = false, map[Ref]bool{}
		r.staleMu.Unlock()
		if err := r.recheck(ctx, all, refs); err != nil {
			if ctx.Err() != nil {
				return
			}
			r.cfg.Logger.Warn("schema changes not checked yet; retrying", "err", err)
			r.staleMu.Lock()
			r.staleAll = r.staleAll || all
			for ref := range refs {
				r.stale[ref] = true
			}
			r.staleMu.Unlock()
			retry.Reset(retryStale)
		}
	}
}

// recheck reads again every version (all) or those of refs, and brings
// the namespaces and the compiled schemas in line with what it read.
// Whatever it reads was committed before the notification that named it,
// or after: a compiled schema it finds older than its row (or still
// compiling, from a row read before) is dropped, and compiled again at its
// next use.
func (r *Registry) recheck(ctx context.Context, all bool, refs map[Ref]bool) error {
	if all {
		rows, err := r.allVersions(ctx)
		if err != nil {
			return err
		}
		r.dropCompiled(func(ref Ref, c *compiled) bool {
			s := rows[ref]
			return s == nil || !c.fresh(s.CreatedAt)
		})
		nsOf, nsCount := map[Ref]string{}, map[string]int{}
		for _, s := range rows {
			nsOf[Ref{s.Name, s.Version}] = s.TargetNamespace
			nsCount[s.TargetNamespace]++
		}
		r.nsMu.Lock()
		r.nsOf, r.nsCount = nsOf, nsCount
		r.nsMu.Unlock()
		return nil
	}
	for ref := range refs {
		s, err := r.store.SchemaVersion(ctx, ref.Name, ref.Version)
		if err != nil && iotgate.ErrorCode(err) != iotgate.ENotFound {
			return err
		}
		r.dropCompiled(func(cref Ref, c *compiled) bool {
			return cref == ref && (s == nil || !c.fresh(s.CreatedAt))
		})
		r.removeNamespace(ref)
		if s != nil {
			r.addNamespace(ref, s.TargetNamespace)
		}
		delete(refs, ref)
	}
	return nil
}

// allVersions reads every stored version, by ref.
func (r *Registry) allVersions(ctx context.Context) (map[Ref]*Schema, error) {
	latest, err := r.store.Schemas(ctx)
	if err != nil {
		return nil, err
	}
	out := map[Ref]*Schema{}
	for _, l := range latest {
		vs, err := r.store.SchemaVersions(ctx, l.Name)
		if iotgate.ErrorCode(err) == iotgate.ENotFound {
			continue // deleted meanwhile
		}
		if err != nil {
			return nil, err
		}
		for _, v := range vs {
			out[Ref{v.Name, v.Version}] = v
		}
	}
	return out, nil
}

// fresh tells whether c is compiled from the row created at at; one still
// compiling may hold a row read before a change, and is not.
func (c *compiled) fresh(at time.Time) bool {
	return c.done.Load() && c.err == nil && c.at.Equal(at.Round(time.Microsecond))
}

// dropCompiled drops the compiled schemas stale says are. They are not
// freed: a reading may be validating against one; the garbage collector
// frees them after.
func (r *Registry) dropCompiled(stale func(Ref, *compiled) bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for ref, c := range r.compiled {
		if stale(ref, c) {
			r.removeLocked(ref)
		}
	}
}
