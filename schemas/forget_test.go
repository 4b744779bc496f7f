package schemas_test

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/iotgate/iotgate"
	"github.com/iotgate/iotgate/schemas"
)

// steppingClock returns a time a millisecond later at each call, so that
// a version numbered again has another created_at, as in PostgreSQL.
func steppingClock() func() time.Time {
	var mu sync.Mutex
	now := time.Date(2026, 12, 6, 0, 0, 0, 0, time.UTC)
	return func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		now = now.Add(time.Millisecond)
		return now
	}
}

// eventually fails t unless cond holds within a second.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within a second", what)
		}
	}
}

// TestForget checks that a registry (instance B) follows the schema
// versions that another one (A) writes to the same store once told, by
// key or by "" (a reconnected listener): new namespaces are served, gone
// ones are not, and a version deleted and numbered again is compiled
// again, even when B's compilation read the old row before the change.
func TestForget(t *testing.T) {
	uXSD := strings.ReplaceAll(okXSD, "urn:t", "urn:u")
	namespace := func(b *schemas.Registry) string {
		p, _, err := b.Compiled(context.Background(), "t", 1)
		if err != nil {
			return iotgate.ErrorCode(err)
		}
		return p.TargetNamespace()
	}
	tests := []struct {
		name   string
		key    string
		change func(t *testing.T, a *schemas.Registry)
		// settled tells that B has checked the change (its namespaces).
		settled func(b *schemas.Registry) bool
		check   func(t *testing.T, b *schemas.Registry)
	}{
		{name: "Created", key: "u/1",
			change: func(t *testing.T, a *schemas.Registry) {
				if _, err := a.Register(t.Context(), "u", uXSD, ""); err != nil {
					t.Fatal(err)
				}
			},
			settled: func(b *schemas.Registry) bool { return b.ServesNamespace("urn:u") },
			check: func(t *testing.T, b *schemas.Registry) {
				if _, _, err := b.Compiled(t.Context(), "u", 1); err != nil {
					t.Error(err)
				}
			}},
		{name: "Deleted", key: "t/1",
			change: func(t *testing.T, a *schemas.Registry) {
				if err := a.Delete(t.Context(), "t", 1); err != nil {
					t.Fatal(err)
				}
			},
			settled: func(b *schemas.Registry) bool { return !b.ServesNamespace("urn:t") },
			check: func(t *testing.T, b *schemas.Registry) {
				if got := namespace(b); got != iotgate.ENotFound {
					t.Errorf("t/1 compiled: %s, want not_found", got)
				}
			}},
		{name: "Renumbered", key: "t/1",
			change: func(t *testing.T, a *schemas.Registry) {
				if err := a.Delete(t.Context(), "t", 1); err != nil {
					t.Fatal(err)
				}
				if s, err := a.Register(t.Context(), "t", uXSD, ""); err != nil || s.Version != 1 {
					t.Fatalf("registered %+v, %v; want version 1 again", s, err)
				}
			},
			settled: func(b *schemas.Registry) bool { return b.ServesNamespace("urn:u") && !b.ServesNamespace("urn:t") },
			check: func(t *testing.T, b *schemas.Registry) {
				if got := namespace(b); got != "urn:u" {
					t.Errorf("t/1 compiled in %s, want urn:u: the old version is kept", got)
				}
			}},
	}
	for _, tt := range tests {
		for _, all := range []bool{false, true} {
			for _, race := range []bool{false, true} {
				name := tt.name
				if all {
					name += "/All"
				}
				if race {
					name += "/DuringCompile"
				}
				t.Run(name, func(t *testing.T) {
					ctx := t.Context()
					store := newMemStore()
					clock := steppingClock()
					a := schemas.NewRegistry(store, schemas.Config{Clock: clock})
					b := schemas.NewRegistry(store, schemas.Config{Clock: clock})
					if _, err := a.Register(ctx, "t", okXSD, ""); err != nil {
						t.Fatal(err)
					}
					if err := b.LoadNamespaces(ctx); err != nil {
						t.Fatal(err)
					}
					go b.FollowChanges(ctx)
					key := tt.key
					if all {
						key = ""
					}
					changeElsewhere := func() { tt.change(t, a); b.Forget(key) }
					if race {
						var fired atomic.Bool
						store.mu.Lock()
						store.afterRead = func(name string, version int) {
							if name == "t" && version == 1 && fired.CompareAndSwap(false, true) {
								changeElsewhere()
								// Let B check the change before the
								// compilation in flight ends.
								eventually(t, "change checked", func() bool { return tt.settled(b) })
							}
						}
						store.mu.Unlock()
					}
					// B compiles t/1 (in the race, from the row read
					// before the change).
					namespace(b)
					if !race {
						changeElsewhere()
					}
					eventually(t, "change checked", func() bool { return tt.settled(b) })
					tt.check(t, b)
				})
			}
		}
	}
}
