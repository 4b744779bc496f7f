package schemas_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/iotgate/iotgate"
	"github.com/iotgate/iotgate/schemas"
)

// countingStore counts the reads of schema versions, and fails them
// (unavailable) while down is set.
type countingStore struct {
	*memStore
	reads atomic.Int64
	down  atomic.Bool
}

func (c *countingStore) SchemaVersion(ctx context.Context, name string, version int) (*schemas.Schema, error) {
	c.reads.Add(1)
	if c.down.Load() {
		return nil, iotgate.Errorf(iotgate.EUnavailable, "database down")
	}
	return c.memStore.SchemaVersion(ctx, name, version)
}

// manualClock is a clock tests move.
type manualClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *manualClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *manualClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// xsdFor returns okXSD in namespace urn:<name>.
func xsdFor(name string) string { return strings.ReplaceAll(okXSD, "urn:t", "urn:"+name) }

// TestVersionQuota fills the registry to its quota: the next registration
// is refused (conflict, schema_quota_exceeded) before it compiles, and
// deleting a version makes room again.
func TestVersionQuota(t *testing.T) {
	ctx := t.Context()
	reg := schemas.NewRegistry(newMemStore(), schemas.Config{MaxVersions: 3})
	for _, name := range []string{"a", "b", "a"} {
		if _, err := reg.Register(ctx, name, xsdFor(name), ""); err != nil {
			t.Fatalf("register %s: %v", name, err)
		}
	}
	tests := []struct{ name, src string }{
		{"NewSchema", xsdFor("c")},
		{"NewVersion", xsdFor("a")},
		// Refused before compiling: a costly XSD costs nothing.
		{"DoesNotCompile", brokenXSD},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := reg.Register(ctx, "a", tt.src, "")
			var e *iotgate.Error
			if !errors.As(err, &e) || e.Code != iotgate.EConflict || e.Detail != iotgate.DetailSchemaQuotaExceeded {
				t.Fatalf("Register over the quota = %v, want conflict/%s", err, iotgate.DetailSchemaQuotaExceeded)
			}
		})
	}
	if err := reg.Delete(ctx, "b", 1); err != nil {
		t.Fatal(err)
	}
	if _, err := reg.Register(ctx, "c", xsdFor("c"), ""); err != nil {
		t.Fatalf("register after a delete: %v", err)
	}
}

// TestVersionQuotaPerToken: one token can't take more than its share of
// the versions; others (and iotgate itself) still register, and deleting
// one of its versions makes room for it again.
func TestVersionQuotaPerToken(t *testing.T) {
	ctx := t.Context()
	reg := schemas.NewRegistry(newMemStore(), schemas.Config{MaxVersions: 10, MaxVersionsPerToken: 2})
	tests := []struct {
		name, owner, schema string
		refused             bool
	}{
		{"First", "tok_a", "a", false},
		{"Second", "tok_a", "b", false},
		{"OverQuota", "tok_a", "c", true},
		{"OtherToken", "tok_b", "c", false},
		{"NoToken", "", "d", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := reg.RegisterAs(ctx, tt.owner, tt.schema, xsdFor(tt.schema), "")
			var e *iotgate.Error
			refused := errors.As(err, &e) && e.Code == iotgate.EConflict && e.Detail == iotgate.DetailSchemaQuotaExceeded &&
				strings.Contains(e.Message, "this token")
			if refused != tt.refused || (!tt.refused && err != nil) {
				t.Fatalf("RegisterAs(%q) = %v, want refused %v", tt.owner, err, tt.refused)
			}
		})
	}
	if err := reg.Delete(ctx, "a", 1); err != nil {
		t.Fatal(err)
	}
	if _, err := reg.RegisterAs(ctx, "tok_a", "c", xsdFor("c"), ""); err != nil {
		t.Fatalf("register after a delete: %v", err)
	}
}

// TestCacheEviction keeps at most CacheSize compiled schemas: the least
// recently used goes, and a reading for it still validates (compiled again,
// once).
func TestCacheEviction(t *testing.T) {
	ctx := t.Context()
	store := &countingStore{memStore: newMemStore()}
	reg := schemas.NewRegistry(store, schemas.Config{CacheSize: 2})
	for _, name := range []string{"a", "b", "c"} {
		if _, err := reg.Register(ctx, name, xsdFor(name), ""); err != nil {
			t.Fatal(err)
		}
	}
	if size, ev := reg.CacheStats(); size != 2 || ev != 1 {
		t.Fatalf("cache = %d entries, %d evictions; want 2, 1", size, ev)
	}
	if store.reads.Load() != 0 {
		t.Fatalf("registration read the store %d times", store.reads.Load())
	}
	for i := range 3 {
		p, _, err := reg.Compiled(ctx, "a", 1)
		if err != nil {
			t.Fatalf("evicted schema: %v", err)
		}
		if _, err := p.ValidateAndRender([]byte(`<r xmlns="urn:a"><v>21</v></r>`)); err != nil {
			t.Fatalf("reading against the recompiled schema: %v", err)
		}
		if got := store.reads.Load(); got != 1 {
			t.Fatalf("use %d: %d reads of the store, want 1 (one recompilation)", i+1, got)
		}
	}
	// "b" is the least recently used now.
	if size, ev := reg.CacheStats(); size != 2 || ev != 2 {
		t.Fatalf("cache = %d entries, %d evictions; want 2, 2", size, ev)
	}
	if _, _, err := reg.Compiled(ctx, "c", 1); err != nil || store.reads.Load() != 1 {
		t.Fatalf("recently used schema recompiled (reads %d, err %v)", store.reads.Load(), err)
	}
}

// TestUnknownVersionsEvictNothing: asking for versions that don't exist
// (a device registration naming one, say) neither evicts compiled schemas
// nor stays cached.
func TestUnknownVersionsEvictNothing(t *testing.T) {
	ctx := t.Context()
	store := &countingStore{memStore: newMemStore()}
	reg := schemas.NewRegistry(store, schemas.Config{CacheSize: 2})
	for _, name := range []string{"a", "b"} {
		if _, err := reg.Register(ctx, name, xsdFor(name), ""); err != nil {
			t.Fatal(err)
		}
	}
	for v := range 50 {
		if _, _, err := reg.Compiled(ctx, "nope", v+1); iotgate.ErrorCode(err) != iotgate.ENotFound {
			t.Fatalf("unknown version: %v, want not_found", err)
		}
	}
	if size, ev := reg.CacheStats(); size != 2 || ev != 0 {
		t.Fatalf("cache = %d entries, %d evictions; want 2, 0", size, ev)
	}
	before := store.reads.Load()
	for _, name := range []string{"a", "b"} {
		if _, _, err := reg.Compiled(ctx, name, 1); err != nil {
			t.Fatal(err)
		}
	}
	if n := store.reads.Load() - before; n != 0 {
		t.Errorf("registered schemas compiled again (%d reads)", n)
	}
}

// TestConcurrentMissesCompileOnce: readings arriving together for a schema
// not compiled yet (after a start or an eviction) compile it once.
func TestConcurrentMissesCompileOnce(t *testing.T) {
	mem := newMemStore()
	mem.CreateSchemaVersion(t.Context(), &schemas.Schema{Name: "t", XSD: okXSD}, schemas.Quota{})
	store := &countingStore{memStore: mem}
	reg := schemas.NewRegistry(store, schemas.Config{})
	var wg sync.WaitGroup
	for range 32 {
		wg.Go(func() {
			if _, _, err := reg.Compiled(t.Context(), "t", 1); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if got := store.reads.Load(); got != 1 {
		t.Errorf("32 concurrent misses read the store %d times, want 1", got)
	}
}

// TestCompileFailureRemembered: a stored version that does not compile
// costs one compilation, not one per reading, for good (a version never
// changes); one that failed because the store was down is tried again
// only after CompileRetry.
func TestCompileFailureRemembered(t *testing.T) {
	tests := []struct {
		name     string
		src      string
		down     bool
		wantCode string
		// recovers: the failure is tried again after CompileRetry and
		// then compiles.
		recovers bool
	}{
		{name: "DoesNotCompile", src: brokenXSD, wantCode: iotgate.EInvalid},
		{name: "StoreDown", src: okXSD, down: true, wantCode: iotgate.EUnavailable, recovers: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := t.Context()
			mem := newMemStore()
			mem.CreateSchemaVersion(ctx, &schemas.Schema{Name: "t", XSD: tt.src}, schemas.Quota{})
			store := &countingStore{memStore: mem}
			store.down.Store(tt.down)
			clock := &manualClock{now: time.Date(2026, 12, 6, 0, 0, 0, 0, time.UTC)}
			reg := schemas.NewRegistry(store, schemas.Config{Clock: clock.Now, CompileRetry: time.Minute})
			for range 100 {
				if _, _, err := reg.Compiled(ctx, "t", 1); iotgate.ErrorCode(err) != tt.wantCode {
					t.Fatalf("Compiled = %v, want code %s", err, tt.wantCode)
				}
			}
			if got := store.reads.Load(); got != 1 {
				t.Fatalf("100 readings read the store %d times, want 1", got)
			}
			store.down.Store(false)
			clock.Add(59 * time.Second)
			if _, _, err := reg.Compiled(ctx, "t", 1); iotgate.ErrorCode(err) != tt.wantCode || store.reads.Load() != 1 {
				t.Fatalf("before CompileRetry: err %v, %d reads; want code %s, 1 read", err, store.reads.Load(), tt.wantCode)
			}
			clock.Add(2 * time.Second)
			_, _, err := reg.Compiled(ctx, "t", 1)
			if tt.recovers {
				if err != nil || store.reads.Load() != 2 {
					t.Fatalf("after CompileRetry: err %v, %d reads; want nil, 2", err, store.reads.Load())
				}
				return
			}
			if iotgate.ErrorCode(err) != tt.wantCode || store.reads.Load() != 1 {
				t.Fatalf("after CompileRetry: err %v, %d reads; want code %s, still 1 read", err, store.reads.Load(), tt.wantCode)
			}
		})
	}
}
