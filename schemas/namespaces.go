package schemas

import (
	"context"
	"fmt"
	"slices"
)

// LoadNamespaces reads the target namespaces of every registered version,
// for ServesNamespace and Namespaces. Call it once at start, before the
// XMPP stream is up; Register and Delete keep the set current afterwards,
// and Forget with FollowChanges for changes made by other instances.
// Errors: those of the store (unavailable).
func (r *Registry) LoadNamespaces(ctx context.Context) error {
	if err := r.recheck(ctx, true, nil); err != nil {
		return fmt.Errorf("load schema namespaces: %w", err)
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
