package xsd

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// Counts (CostLimits) cannot foresee every way libxml2's compile explodes,
// and the compile is a cgo call that nothing can stop. So, once enabled, a
// schema is first compiled in a child process (the program itself, re-run
// with trialEnv set, served by ServeTrialCompile) under RLIMIT_CPU and
// RLIMIT_AS and killed when the caller's context ends; only a schema whose
// trial compile finished is compiled in the process. A schema that does not
// compile gets the child's issues, without a second compile.

// TrialOptions configures trial compiles.
type TrialOptions struct {
	// CPU is the CPU time a trial compile may take, rounded up to whole
	// seconds (RLIMIT_CPU's unit). Zero means DefaultTrialCPU.
	CPU time.Duration
	// Memory is the address space in bytes that the compile may add to
	// the child process's (RLIMIT_AS, set to the child's size when it
	// starts, which the Go runtime makes ~1.2 GB, plus Memory). Zero means
	// DefaultTrialMemory; negative, no limit (needed under the race
	// detector, which maps terabytes).
	Memory int64
}

// Defaults of TrialOptions. A schema within the default CostLimits compiles
// in well under a second and a few MiB.
const (
	DefaultTrialCPU    = 2 * time.Second
	DefaultTrialMemory = 512 << 20
)

// trialEnv marks a child process serving one trial compile; its value is
// "CPU-SECONDS:MEMORY-BYTES".
const trialEnv = "IOTGATE_XSD_TRIAL_COMPILE"

// exitNoCompile is the child's exit status for a schema that does not
// compile (its issues on stdout); 0 is a schema that compiled.
const exitNoCompile = 3

// exitBadInput is the child's exit status for input it cannot read (2 is
// the Go runtime's fatal errors, out of memory among them).
const exitBadInput = 4

var trialOpts atomic.Pointer[TrialOptions]

// EnableTrialCompiles makes every later compile run first in a child
// process under o's limits. The program's main must call ServeTrialCompile
// first thing.
func EnableTrialCompiles(o TrialOptions) {
	if o.CPU <= 0 {
		o.CPU = DefaultTrialCPU
	}
	if o.Memory == 0 {
		o.Memory = DefaultTrialMemory
	}
	trialOpts.Store(&o)
}

// DisableTrialCompiles undoes EnableTrialCompiles (for tests).
func DisableTrialCompiles() { trialOpts.Store(nil) }

// compileSlots bounds concurrent compiles to one per core: a compile is
// CPU-bound, and more at once only make each slower.
var compileSlots = make(chan struct{}, runtime.GOMAXPROCS(0))

func acquireCompile(ctx context.Context) (release func(), err error) {
	select {
	case compileSlots <- struct{}{}:
		return func() { <-compileSlots }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// trialCompile compiles the main document (docs[0], its source) with its
// imports (as the parent prepared them for libxml2) in a child process,
// and probes their patterns there. It returns nil when they passed, a
// *CompileError when they did not or were over a limit, and ctx's error or
// another when the trial could not run.
func trialCompile(ctx context.Context, o *TrialOptions, docs []trialDoc) error {
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("xsd: trial compile: %w", err)
	}
	secs := int64((o.CPU + time.Second - 1) / time.Second)
	// Wall clock: generous, for a loaded machine; the CPU limit is the bound.
	wall, cancel := context.WithTimeout(ctx, 4*time.Duration(secs)*time.Second+5*time.Second)
	defer cancel()
	cmd := exec.CommandContext(wall, exe)
	cmd.Env = []string{trialEnv + "=" + strconv.FormatInt(secs, 10) + ":" + strconv.FormatInt(o.Memory, 10),
		// A race-enabled build would sleep 1 s at exit.
		"GORACE=atexit_sleep_ms=0"}
	var in bytes.Buffer
	for _, d := range docs {
		writeFrame(&in, []byte(d.ns))
		writeFrame(&in, []byte(d.uri))
		writeFrame(&in, d.data)
		writeFrame(&in, d.src)
	}
	cmd.Stdin = &in
	var out, stderr bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &limitedBuffer{b: &stderr, n: 4096}
	err = cmd.Run()
	switch {
	case ctx.Err() != nil:
		return ctx.Err() // the caller gave up: killed
	case wall.Err() != nil:
		return overLimit(o) // CPU-starved beyond reason; killed
	}
	if err == nil {
		return nil
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return fmt.Errorf("xsd: trial compile: %w", err)
	}
	if ee.ExitCode() == exitNoCompile {
		var issues []CompileIssue
		if json.Unmarshal(out.Bytes(), &issues) != nil || len(issues) == 0 {
			return fmt.Errorf("xsd: trial compile: unreadable answer %q", out.String())
		}
		if outOfMemory(issues) {
			return overLimit(o)
		}
		return &CompileError{Issues: issues}
	}
	if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() || ee.ExitCode() == 2 {
		// Killed by RLIMIT_CPU (SIGKILL at the hard limit), or the Go
		// runtime failing for want of memory under RLIMIT_AS (exit 2).
		return overLimit(o)
	}
	return fmt.Errorf("xsd: trial compile: %w: %s", err, stderr.String())
}

func overLimit(o *TrialOptions) *CompileError {
	mem := "no memory limit"
	if o.Memory > 0 {
		mem = strconv.FormatInt(o.Memory>>20, 10) + " MiB of memory"
	}
	return tooComplex(0, "compiling it (and probing its xs:pattern facets) takes more than %v of CPU time or %s", o.CPU, mem)
}

// trialDoc is a document of a trial compile: the main one (no ns, no
// uri) or an import.
type trialDoc struct {
	ns, uri string
	data    []byte // as libxml2 compiles it
	src     []byte // as the user wrote it, for the model and the probe
}

func writeFrame(w *bytes.Buffer, b []byte) {
	var n [4]byte
	binary.BigEndian.PutUint32(n[:], uint32(len(b)))
	w.Write(n[:])
	w.Write(b)
}

func readFrame(r io.Reader) ([]byte, error) {
	var n [4]byte
	if _, err := io.ReadFull(r, n[:]); err != nil {
		return nil, err
	}
	size := binary.BigEndian.Uint32(n[:])
	if size > maxDocBytes {
		return nil, errors.New("frame too large")
	}
	b := make([]byte, size)
	_, err := io.ReadFull(r, b)
	return b, err
}

// limitedBuffer keeps the first n bytes written (a crashing child's
// stderr, for the error).
type limitedBuffer struct {
	b *bytes.Buffer
	n int
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if room := l.n - l.b.Len(); room > 0 {
		l.b.Write(p[:min(room, len(p))])
	}
	return len(p), nil
}

// ServeTrialCompile serves a trial compile, or validations (see
// EnablePatternSandbox), and exits when the process was started as such a
// child; otherwise it returns at once. A program calling
// EnableTrialCompiles or EnablePatternSandbox must call it first thing in
// main (and a test binary in TestMain).
func ServeTrialCompile() {
	if v, ok := os.LookupEnv(sandboxEnv); ok {
		os.Exit(serveValidator(v, os.Stdin, os.Stdout))
	}
	v, ok := os.LookupEnv(trialEnv)
	if !ok {
		return
	}
	os.Exit(serveTrial(v, os.Stdin, os.Stdout))
}

func serveTrial(limits string, in io.Reader, out io.Writer) int {
	cpu, mem, ok := strings.Cut(limits, ":")
	secs, err1 := strconv.ParseUint(cpu, 10, 64)
	bytesAS, err2 := strconv.ParseInt(mem, 10, 64)
	if !ok || err1 != nil || err2 != nil || secs == 0 {
		fmt.Fprintln(os.Stderr, "xsd trial compile: bad limits", limits)
		return exitBadInput
	}
	// Soft equal to hard: the kernel sends SIGKILL at the hard limit
	// (the Go runtime ignores SIGXCPU).
	if err := syscall.Setrlimit(syscall.RLIMIT_CPU, &syscall.Rlimit{Cur: secs, Max: secs}); err != nil {
		fmt.Fprintln(os.Stderr, "xsd trial compile:", err)
		return exitBadInput
	}
	if err := limitAddressSpace(bytesAS); err != nil {
		fmt.Fprintln(os.Stderr, "xsd trial compile:", err)
		return exitBadInput
	}
	var docs []trialDoc
	for {
		ns, err := readFrame(in)
		if errors.Is(err, io.EOF) {
			break
		}
		uri, err2 := readFrame(in)
		data, err3 := readFrame(in)
		src, err4 := readFrame(in)
		if err != nil || err2 != nil || err3 != nil || err4 != nil || len(data) == 0 {
			fmt.Fprintln(os.Stderr, "xsd trial compile: bad input")
			return exitBadInput
		}
		docs = append(docs, trialDoc{ns: string(ns), uri: string(uri), data: data, src: src})
	}
	if len(docs) == 0 {
		return exitBadInput
	}
	issues := trialCompileHere(docs)
	if issues == nil {
		return 0
	}
	b, _ := json.Marshal(issues)
	out.Write(b)
	return exitNoCompile
}

// limitAddressSpace caps the process's address space (RLIMIT_AS) at its
// current size plus extra bytes; extra <= 0 leaves it unlimited.
func limitAddressSpace(extra int64) error {
	if extra <= 0 {
		return nil
	}
	size, err := addressSpace()
	if err != nil {
		return err
	}
	as := uint64(size + extra)
	return syscall.Setrlimit(syscall.RLIMIT_AS, &syscall.Rlimit{Cur: as, Max: as})
}

// addressSpace returns the size of the process's address space (VmSize).
func addressSpace() (int64, error) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "VmSize:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, errors.New("no VmSize in /proc/self/status")
}
