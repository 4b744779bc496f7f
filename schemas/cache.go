package schemas

import (
	"time"
)

// The compiled schemas are an LRU cache of at most Config.CacheSize
// entries, failures included: a version is immutable, so a failed compile
// is remembered (for good when the XSD itself does not compile, for
// Config.CompileRetry when the cause may pass, such as the store being
// down) and readings are refused at once instead of querying and
// compiling again each. An evicted schema is not freed: a reading may be
// validating against it; the garbage collector frees it after. It is
// compiled again at its next use.
//
// An entry is added before its compilation (so that concurrent misses
// compile once) but evicts others only once compiled (settle): a version
// that turns out not to exist is dropped instead, and evicts nothing, so
// that asking for versions that don't exist can't flush the cache.

// cached returns ref's entry, moved to the front, or a new one to compile
// when there is none or its failure may be retried by now.
func (r *Registry) cached(ref Ref, now time.Time) *compiled {
	r.mu.Lock()
	defer r.mu.Unlock()
	if c := r.compiled[ref]; c != nil && !c.retryable(now) {
		r.lru.MoveToFront(c.elem)
		return c
	}
	c := &compiled{}
	r.putLocked(ref, c)
	return c
}

// put caches c, compiled, as ref's entry.
func (r *Registry) put(ref Ref, c *compiled) {
	r.mu.Lock()
	r.putLocked(ref, c)
	r.mu.Unlock()
	r.settle(ref, c, false)
}

// putLocked caches c as ref's entry, replacing any; r.mu is held.
func (r *Registry) putLocked(ref Ref, c *compiled) {
	r.removeLocked(ref)
	c.elem = r.lru.PushFront(ref)
	r.compiled[ref] = c
}

// settle keeps ref's entry c, compiled (or failed) now, and evicts the
// least recently used entries beyond the cache size; or, when its version
// does not exist, drops it.
func (r *Registry) settle(ref Ref, c *compiled, gone bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if gone {
		if r.compiled[ref] == c {
			r.removeLocked(ref)
		}
		return
	}
	for r.lru.Len() > r.cfg.CacheSize {
		r.removeLocked(r.lru.Back().Value.(Ref))
		r.evictions++
	}
}

// removeLocked drops ref's entry and returns it (nil if none); r.mu is
// held.
func (r *Registry) removeLocked(ref Ref) *compiled {
	c := r.compiled[ref]
	if c == nil {
		return nil
	}
	r.lru.Remove(c.elem)
	delete(r.compiled, ref)
	return c
}

// CacheStats reports how many compiled schemas (and remembered failures)
// are cached, and how many were evicted for room since the start.
func (r *Registry) CacheStats() (size int, evictions uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lru.Len(), r.evictions
}

// retryable reports whether c failed for a cause that may have passed
// by now.
func (c *compiled) retryable(now time.Time) bool {
	return c.done.Load() && c.err != nil && !c.retryAt.IsZero() && !now.Before(c.retryAt)
}
