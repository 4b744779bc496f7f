package xsd

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// libxml2 matches xs:pattern facets by backtracking, and a match is a cgo
// call that nothing can stop: the length limits (Limits.MaxPatternValue)
// bound it only to libxml2's push budget, seconds per value. So, once
// enabled, the readings of a schema with a pattern are validated in a
// child process (the program re-run with sandboxEnv set, served by
// ServeTrialCompile) that keeps its own compiled copy of the schema, and a
// validation that outlasts SandboxOptions.Timeout has its child killed: a
// per-validation time budget, whatever the pattern and the value. Schemas
// without patterns, nearly all, stay in the process.

// SandboxOptions configures the validation of pattern schemas' documents
// in child processes.
type SandboxOptions struct {
	// Timeout is the wall-clock time one validation may take, pipe round
	// trip included. Zero means DefaultSandboxTimeout.
	Timeout time.Duration
	// Children bounds the child processes. Zero means GOMAXPROCS. One
	// schema uses at most Children-1 of them at a time (one when there is
	// only one), so that a schema whose every document times out leaves
	// the others a child.
	Children int
	// Memory is the address space a child may add to its starting size
	// (RLIMIT_AS). Zero means DefaultTrialMemory; negative, no limit
	// (needed under the race detector).
	Memory int64
}

// DefaultSandboxTimeout is SandboxOptions.Timeout's default: a validation
// takes tens of microseconds; a child that starts, compiles a schema and
// validates takes ~20 ms on a loaded machine.
const DefaultSandboxTimeout = 250 * time.Millisecond

// sandboxEnv marks a child process serving validations; its value is
// "MEMORY-BYTES:SCHEMAS": the address space limit (0 for none) and how
// many compiled schemas to keep.
const sandboxEnv = "IOTGATE_XSD_VALIDATOR"

// childSchemas bounds the compiled schemas a child keeps (least recently
// used evicted): the parent sends a schema again when a child lost it.
var childSchemas = 64

var sandbox atomic.Pointer[sandboxPool]

// EnablePatternSandbox makes every later validation of a document of a
// schema with an xs:pattern facet run in a child process under o. The
// program's main must call ServeTrialCompile first thing.
func EnablePatternSandbox(o SandboxOptions) {
	if o.Timeout <= 0 {
		o.Timeout = DefaultSandboxTimeout
	}
	if o.Children <= 0 {
		o.Children = runtime.GOMAXPROCS(0)
	}
	if o.Memory == 0 {
		o.Memory = DefaultTrialMemory
	}
	old := sandbox.Swap(&sandboxPool{opts: o, idle: make(chan *child, o.Children), slots: make(chan struct{}, o.Children)})
	old.close()
}

// DisablePatternSandbox undoes EnablePatternSandbox, stopping the idle
// children (for tests).
func DisablePatternSandbox() { sandbox.Swap(nil).close() }

var boxIDs atomic.Uint64

// boxed is what a child needs to compile a Schema again: its sources and
// compile options.
type boxed struct {
	id   uint64
	srcs []modelSource // the main document first
	cost CostLimits
	max  int // MaxSchemaBytes
	// turns bounds the children validating this schema's documents at
	// once; made at first use, when the pool is known.
	once  sync.Once
	turns chan struct{}
}

// sandboxPool starts, lends and kills the children.
type sandboxPool struct {
	opts  SandboxOptions
	idle  chan *child
	slots chan struct{} // one per child alive or starting
}

func (p *sandboxPool) close() {
	if p == nil {
		return
	}
	for {
		select {
		case c := <-p.idle:
			c.kill()
			continue
		default:
		}
		return
	}
}

// validate validates doc in a child; it returns what worker.validate
// would, or an error when no child could run it (errTimeout included).
func (p *sandboxPool) validate(b *boxed, doc []byte, lim Limits, flatten bool) (int, string, []rawIssue, error) {
	b.once.Do(func() { b.turns = make(chan struct{}, max(1, p.opts.Children-1)) })
	b.turns <- struct{}{}
	defer func() { <-b.turns }()
	// A child that died idle (or was killed) fails the first exchange: the
	// document gets one more try on a fresh child, unless it timed out.
	for try := 0; ; try++ {
		c, err := p.acquire()
		if err != nil {
			return 0, "", nil, err
		}
		status, flat, raw, err := c.validate(b, doc, lim, flatten, p.opts.Timeout)
		if err != nil {
			p.discard(c)
			if errors.Is(err, errTimeout) || try == 1 {
				return 0, "", nil, err
			}
			continue
		}
		p.idle <- c
		return status, flat, raw, nil
	}
}

func (p *sandboxPool) acquire() (*child, error) {
	select {
	case c := <-p.idle:
		return c, nil
	default:
	}
	select {
	case c := <-p.idle:
		return c, nil
	case p.slots <- struct{}{}:
		c, err := startChild(p.opts.Memory)
		if err != nil {
			<-p.slots
			return nil, err
		}
		return c, nil
	}
}

func (p *sandboxPool) discard(c *child) {
	c.kill()
	<-p.slots
}

// errTimeout is a validation that outlasted SandboxOptions.Timeout.
var errTimeout = errors.New("xsd: validation timed out")

// child is one validator process and the schemas it was sent.
type child struct {
	cmd   *exec.Cmd
	in    *os.File // its stdin
	out   *os.File // its stdout
	r     *bufio.Reader
	w     *bufio.Writer
	known map[uint64]bool // may have been evicted since: it then asks again
}

func startChild(memory int64) (*child, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("xsd: validator: %w", err)
	}
	inR, inW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("xsd: validator: %w", err)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		return nil, fmt.Errorf("xsd: validator: %w", err)
	}
	cmd := exec.Command(exe)
	cmd.Env = []string{sandboxEnv + "=" + strconv.FormatInt(max(memory, 0), 10) + ":" + strconv.Itoa(childSchemas),
		"GORACE=atexit_sleep_ms=0"}
	cmd.Stdin, cmd.Stdout = inR, outW
	err = cmd.Start()
	inR.Close()
	outW.Close()
	if err != nil {
		inW.Close()
		outR.Close()
		return nil, fmt.Errorf("xsd: validator: %w", err)
	}
	return &child{cmd: cmd, in: inW, out: outR, r: bufio.NewReaderSize(outR, 64<<10),
		w: bufio.NewWriterSize(inW, 64<<10), known: map[uint64]bool{}}, nil
}

func (c *child) kill() {
	c.cmd.Process.Kill()
	c.in.Close()
	c.out.Close()
	go c.cmd.Wait() // reap
}

// Child answers: a validation's status, or one of these.
const (
	answerUnknown  = "unknown" // the child does not have the schema
	answerNoSchema = "nocompile"
)

// schemaTime bounds sending a schema to a child and its compile there: the
// schema compiled in the parent within the compile limits, so this is
// generous, and it is not the document's time.
const schemaTime = 10 * time.Second

// validate sends the schema if the child may not have it, then doc; the
// document's exchange must end within timeout.
func (c *child) validate(b *boxed, doc []byte, lim Limits, flatten bool, timeout time.Duration) (int, string, []rawIssue, error) {
	for try := 0; try < 2; try++ {
		if !c.known[b.id] {
			if err := c.sendSchema(b); err != nil {
				return 0, "", nil, err
			}
			c.known[b.id] = true
		}
		lims, _ := json.Marshal(lim)
		fl := "0"
		if flatten {
			fl = "1"
		}
		c.deadline(time.Now().Add(timeout))
		writeFrameTo(c.w, []byte("V"))
		writeFrameTo(c.w, []byte(strconv.FormatUint(b.id, 10)))
		writeFrameTo(c.w, lims)
		writeFrameTo(c.w, []byte(fl))
		writeFrameTo(c.w, doc)
		code, flat, issues, err := c.exchange()
		if err != nil {
			return 0, "", nil, err
		}
		switch string(code) {
		case answerUnknown:
			delete(c.known, b.id)
			continue
		case answerNoSchema:
			return 0, "", nil, fmt.Errorf("xsd: validator: the schema does not compile in the child: %s", issues)
		}
		status, err := strconv.Atoi(string(code))
		if err != nil {
			return 0, "", nil, fmt.Errorf("xsd: validator: bad answer %q", code)
		}
		var raw []rawIssue
		if len(issues) > 0 {
			if err := json.Unmarshal(issues, &raw); err != nil {
				return 0, "", nil, fmt.Errorf("xsd: validator: bad issues: %w", err)
			}
		}
		return status, string(flat), raw, nil
	}
	return 0, "", nil, errors.New("xsd: validator: the child keeps losing the schema")
}

func (c *child) deadline(t time.Time) {
	c.in.SetWriteDeadline(t)
	c.out.SetReadDeadline(t)
}

// exchange flushes the request written and reads the answer's three
// frames.
func (c *child) exchange() (code, flat, issues []byte, err error) {
	if err := c.w.Flush(); err != nil {
		return nil, nil, nil, ioErr(err)
	}
	code, err1 := readFrame(c.r)
	flat, err2 := readFrame(c.r)
	issues, err3 := readFrame(c.r)
	if err := errors.Join(err1, err2, err3); err != nil {
		return nil, nil, nil, ioErr(err)
	}
	return code, flat, issues, nil
}

func ioErr(err error) error {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return errTimeout
	}
	return fmt.Errorf("xsd: validator: %w", err)
}

func (c *child) sendSchema(b *boxed) error {
	c.deadline(time.Now().Add(schemaTime))
	opts, _ := json.Marshal(childCompile{Cost: b.cost, Max: b.max})
	writeFrameTo(c.w, []byte("S"))
	writeFrameTo(c.w, []byte(strconv.FormatUint(b.id, 10)))
	writeFrameTo(c.w, opts)
	writeFrameTo(c.w, []byte(strconv.Itoa(len(b.srcs))))
	for _, s := range b.srcs {
		writeFrameTo(c.w, []byte(s.ns))
		writeFrameTo(c.w, s.src)
	}
	code, _, issues, err := c.exchange()
	switch {
	case errors.Is(err, errTimeout):
		return fmt.Errorf("xsd: validator: compiling the schema took over %v", schemaTime)
	case err != nil:
		return err
	case string(code) != "ok":
		return fmt.Errorf("xsd: validator: the schema does not compile in the child: %s", issues)
	}
	return nil
}

// childCompile is the compile options a child needs.
type childCompile struct {
	Cost CostLimits
	Max  int
}

func writeFrameTo(w *bufio.Writer, b []byte) {
	var n [4]byte
	n[0], n[1], n[2], n[3] = byte(len(b)>>24), byte(len(b)>>16), byte(len(b)>>8), byte(len(b))
	w.Write(n[:])
	w.Write(b)
}

// serveValidator is the child's side: it answers requests until stdin
// closes. A schema is compiled at its first request ("S") and kept, least
// recently used evicted; each "V" is validated as Schema.run would.
func serveValidator(limits string, in io.Reader, out io.Writer) int {
	memory, kept, _ := strings.Cut(limits, ":")
	bytesAS, err1 := strconv.ParseInt(memory, 10, 64)
	keep, err2 := strconv.Atoi(kept)
	if err1 != nil || err2 != nil || keep < 1 {
		fmt.Fprintln(os.Stderr, "xsd validator: bad limits", limits)
		return exitBadInput
	}
	if err := limitAddressSpace(bytesAS); err != nil {
		fmt.Fprintln(os.Stderr, "xsd validator:", err)
		return exitBadInput
	}
	r := bufio.NewReaderSize(in, 64<<10)
	w := bufio.NewWriterSize(out, 64<<10)
	schemas := map[uint64]*Schema{}
	used := map[uint64]uint64{} // id -> last use, for eviction
	failed := map[uint64]bool{} // schemas that did not compile here
	var clock uint64
	answer := func(code string, flat string, issues []byte) bool {
		writeFrameTo(w, []byte(code))
		writeFrameTo(w, []byte(flat))
		writeFrameTo(w, issues)
		return w.Flush() == nil
	}
	for {
		op, err := readFrame(r)
		if err != nil {
			return 0 // the parent closed our stdin, or died
		}
		idb, err := readFrame(r)
		if err != nil {
			return exitBadInput
		}
		id, _ := strconv.ParseUint(string(idb), 10, 64)
		switch string(op) {
		case "S":
			s, err := readChildSchema(r)
			if err != nil {
				return exitBadInput
			}
			if s == nil {
				failed[id] = true
				if !answer(answerNoSchema, "", nil) {
					return 0
				}
				continue
			}
			if len(schemas) >= keep {
				evictOldest(schemas, used)
			}
			schemas[id] = s
			clock++
			used[id] = clock
			if !answer("ok", "", nil) {
				return 0
			}
		case "V":
			limb, err1 := readFrame(r)
			fl, err2 := readFrame(r)
			doc, err3 := readFrame(r)
			if errors.Join(err1, err2, err3) != nil {
				return exitBadInput
			}
			s, ok := schemas[id]
			if !ok {
				code := answerUnknown
				if failed[id] {
					code = answerNoSchema
				}
				if !answer(code, "", nil) {
					return 0
				}
				continue
			}
			clock++
			used[id] = clock
			var lim Limits
			if json.Unmarshal(limb, &lim) != nil {
				return exitBadInput
			}
			status, flat, raw, err := s.local(doc, lim, string(fl) == "1")
			if err != nil {
				status = stInternal
			}
			var issues []byte
			if len(raw) > 0 {
				issues, _ = json.Marshal(raw)
			}
			if !answer(strconv.Itoa(status), flat, issues) {
				return 0
			}
		default:
			return exitBadInput
		}
	}
}

// readChildSchema reads and compiles a schema sent with "S"; nil when it
// does not compile (never expected: the parent compiled it).
func readChildSchema(r io.Reader) (*Schema, error) {
	optb, err := readFrame(r)
	if err != nil {
		return nil, err
	}
	nb, err := readFrame(r)
	if err != nil {
		return nil, err
	}
	n, err := strconv.Atoi(string(nb))
	if err != nil || n < 1 || n > 1+MaxImports {
		return nil, errors.New("bad schema count")
	}
	var o childCompile
	if err := json.Unmarshal(optb, &o); err != nil {
		return nil, err
	}
	srcs := make([]modelSource, n)
	for i := range srcs {
		ns, err1 := readFrame(r)
		src, err2 := readFrame(r)
		if err := errors.Join(err1, err2); err != nil {
			return nil, err
		}
		srcs[i] = modelSource{ns: string(ns), src: src}
	}
	imports := func(ns string) ([]byte, bool) {
		for _, s := range srcs[1:] {
			if s.ns == ns {
				return s.src, true
			}
		}
		return nil, false
	}
	s, err := compile(context.Background(), srcs[0].src, CompileOptions{MaxSchemaBytes: o.Max, Cost: o.Cost, Imports: imports, Stored: true}, false)
	if err != nil {
		return nil, nil
	}
	return s, nil
}

func evictOldest(schemas map[uint64]*Schema, used map[uint64]uint64) {
	var oldest uint64
	first := true
	for id, t := range used {
		if first || t < used[oldest] {
			oldest, first = id, false
		}
	}
	if s := schemas[oldest]; s != nil {
		s.Free()
	}
	delete(schemas, oldest)
	delete(used, oldest)
}
