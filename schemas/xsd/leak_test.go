package xsd

import (
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/iotgate/iotgate/schemas/examples"
)

// rss returns the resident set size of this process in bytes.
func rss(t *testing.T) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		t.Skip("no /proc/self/statm")
	}
	f := strings.Fields(string(b))
	pages, _ := strconv.ParseInt(f[1], 10, 64)
	return pages * int64(os.Getpagesize())
}

// TestNoLeak compiles and frees schemas, and validates, many times: the
// resident memory must stay flat (libxml2 memory not freed would add tens
// of KiB per compile: 10,000 compiles would grow by hundreds of MiB).
func TestNoLeak(t *testing.T) {
	if testing.Short() {
		t.Skip("slow: compiles thousands of schemas")
	}
	// Under the race detector Go code is ~10x slower: fewer rounds, which
	// still tell a leak of tens of KiB per compile from noise.
	compiles, calls := 10000, 100000
	if raceEnabled {
		compiles, calls = 2000, 20000
	}
	src := examples.Thermostat()
	good := readFile(t, "thermostat/ok-reading.xml")
	bad := readFile(t, "thermostat/bad-too-hot.xml")
	cycle := func(n int, free bool) {
		for i := 0; i < n; i++ {
			s, err := Compile(src, CompileOptions{})
			if err != nil {
				t.Fatal(err)
			}
			s.Validate(good, Limits{})
			s.ValidateAndRender(bad, Limits{})
			if free {
				s.Free()
			} else if i%200 == 0 {
				runtime.GC() // dropped schemas are released by their cleanup
			}
		}
		// Cleanups run after a GC, on their own goroutine: give them time.
		for i := 0; i < 3; i++ {
			runtime.GC()
			time.Sleep(20 * time.Millisecond)
		}
	}
	for _, tc := range []struct {
		name string
		free bool
	}{{"Free", true}, {"DroppedWithoutFree", false}} {
		t.Run(tc.name, func(t *testing.T) {
			cycle(compiles/2, tc.free) // warm up allocators and the GC pacing
			before := rss(t)
			cycle(compiles, tc.free)
			after := rss(t)
			t.Logf("RSS %d KiB -> %d KiB (%+d KiB) over %d compiles", before>>10, after>>10, (after-before)>>10, compiles)
			if after-before > 24<<20 {
				t.Errorf("RSS grew by %d MiB", (after-before)>>20)
			}
		})
	}

	t.Run("Validations", func(t *testing.T) {
		s := mustCompile(t, src, CompileOptions{})
		run := func(n int) {
			for i := 0; i < n; i++ {
				s.Validate(good, Limits{})
				s.Validate(bad, Limits{})
				s.ValidateAndRender(good, Limits{})
				s.Validate([]byte(`<!DOCTYPE x><x/>`), Limits{})
			}
			runtime.GC()
		}
		run(calls / 10)
		before := rss(t)
		run(calls)
		after := rss(t)
		t.Logf("RSS %d KiB -> %d KiB (%+d KiB) over %d calls", before>>10, after>>10, (after-before)>>10, 4*calls)
		if after-before > 16<<20 {
			t.Errorf("RSS grew by %d MiB", (after-before)>>20)
		}
	})

	t.Run("NewNamesDoNotGrowTheDictionary", func(t *testing.T) {
		// Readings with ever-new element names: the reused parser context
		// is replaced once its dictionary is big (see IOT_MAX_DICT).
		s := mustCompile(t, src, CompileOptions{})
		run := func(from, n int) {
			for i := from; i < from+n; i++ {
				name := "e" + strconv.Itoa(i)
				s.Validate([]byte(`<`+name+` a`+name+`="1"/>`), Limits{})
			}
			runtime.GC()
		}
		run(0, calls/5)
		before := rss(t)
		run(calls/5, 2*calls)
		after := rss(t)
		t.Logf("RSS %d KiB -> %d KiB (%+d KiB) over %d new names", before>>10, after>>10, (after-before)>>10, 2*calls)
		if after-before > 16<<20 {
			t.Errorf("RSS grew by %d MiB", (after-before)>>20)
		}
	})
}
