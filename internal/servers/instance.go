package servers

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// defaultStartTimeout bounds a start when the caller's context has no
// deadline. Servers start in about a second; the margin is for a loaded CI
// machine with other test binaries starting servers at the same time.
const defaultStartTimeout = 90 * time.Second

// ErrRunning is returned by Start when the server is already running.
var ErrRunning = errors.New("server already running")

// ErrClosed is returned by the methods of a closed server.
var ErrClosed = errors.New("server closed")

// Ports are picked at random below Linux's ephemeral range (32768-60999),
// so that an outgoing connection's local port never takes the port of a
// server that is down between Kill and Start.
const (
	portMin = 20000
	portMax = 32000
)

var (
	portsMu  sync.Mutex
	portsOut = map[int]bool{} // handed out by this process
)

// freePort returns a loopback TCP port nobody listens on now. Another
// process may still take it before our server binds it: starts retry
// with new ports when the server reports the address in use.
func freePort() (int, error) {
	portsMu.Lock()
	defer portsMu.Unlock()
	for range 200 {
		n, err := rand.Int(rand.Reader, big.NewInt(portMax-portMin))
		if err != nil {
			return 0, err
		}
		port := portMin + int(n.Int64())
		if portsOut[port] || !PortFree(port) {
			continue
		}
		portsOut[port] = true
		return port, nil
	}
	// The range is crowded: let the kernel choose.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pick a free port: %w", err)
	}
	defer l.Close()
	port := l.Addr().(*net.TCPAddr).Port
	portsOut[port] = true
	return port, nil
}

// PortFree reports whether 127.0.0.1:port can be listened on now.
func PortFree(port int) bool {
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return false
	}
	l.Close()
	return true
}

// portOr returns port if it is set, a free port otherwise.
func portOr(port int) (int, error) {
	if port != 0 {
		return port, nil
	}
	return freePort()
}

// addr formats a loopback address.
func addr(port int) string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
}

// accepts reports whether a TCP connection to addr succeeds.
func accepts(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// addrInUse reports whether a server log says it could not bind a port
// (PostgreSQL and ejabberd: "Address already in use" or eaddrinuse;
// Prosody: "this port is in use by another application", and it keeps
// running without the port).
func addrInUse(log string) bool {
	l := strings.ToLower(log)
	return strings.Contains(l, "address already in use") || strings.Contains(l, "eaddrinuse") ||
		strings.Contains(l, "port is in use")
}

// listening returns nil if the process root or one of its descendants
// listens on each of the loopback TCP ports, and an error naming the first
// port it doesn't listen on. A dial alone can't tell: another program may
// hold the port (Prosody then logs an error and runs on without it).
func listening(root int, ports ...int) error {
	inodes := map[int]map[string]bool{} // port -> "socket:[INODE]" of its listeners
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		return err
	}
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		// local_address is HEXIP:HEXPORT; state 0A is LISTEN.
		if len(f) < 10 || f[3] != "0A" {
			continue
		}
		_, hexPort, _ := strings.Cut(f[1], ":")
		port, err := strconv.ParseInt(hexPort, 16, 32)
		if err != nil {
			continue
		}
		if inodes[int(port)] == nil {
			inodes[int(port)] = map[string]bool{}
		}
		inodes[int(port)]["socket:["+f[9]+"]"] = true
	}
	owned := map[string]bool{}
	for _, p := range tree(allProcs(), []int{root}, 0) {
		fds := "/proc/" + strconv.Itoa(p.pid) + "/fd/"
		ents, _ := os.ReadDir(fds)
		for _, e := range ents {
			if l, err := os.Readlink(fds + e.Name()); err == nil && strings.HasPrefix(l, "socket:[") {
				owned[l] = true
			}
		}
	}
	for _, port := range ports {
		found := false
		for ino := range inodes[port] {
			found = found || owned[ino]
		}
		if !found {
			return fmt.Errorf("not listening on %s", addr(port))
		}
	}
	return nil
}

// fatalError marks an error of a readiness check that waiting won't fix.
type fatalError struct{ error }

func (e fatalError) Unwrap() error { return e.error }

// waitReady polls ready until it returns nil or a fatalError, the process
// exits, or ctx ends.
func waitReady(ctx context.Context, p *process, ready func(context.Context) error) error {
	var last error
	for {
		if last = ready(ctx); last == nil {
			return nil
		}
		if errors.As(last, new(fatalError)) {
			return last
		}
		select {
		case <-p.done:
			return fmt.Errorf("exited while starting (%v)", p.err)
		case <-ctx.Done():
			return fmt.Errorf("not ready: %w (last check: %v)", ctx.Err(), last)
		case <-time.After(25 * time.Millisecond):
		}
	}
}

// withStartTimeout gives ctx a deadline if it has none.
func withStartTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, defaultStartTimeout)
}

// tailBytes returns the last n lines of b.
func tailBytes(b []byte, n int) string {
	b = bytes.TrimRight(b, "\n")
	i := len(b)
	for ; n > 0 && i > 0; n-- {
		j := bytes.LastIndexByte(b[:i], '\n')
		if j < 0 {
			i = 0
			break
		}
		i = j
	}
	return strings.TrimLeft(string(b[i:]), "\n")
}

// tailFile returns the last n lines of the file at path (reading at most
// its last 64 KiB), or a note saying why it can't.
func tailFile(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	defer f.Close()
	const max = 64 << 10
	if fi, err := f.Stat(); err == nil && fi.Size() > max {
		_, _ = f.Seek(fi.Size()-max, io.SeekStart)
	}
	b, err := io.ReadAll(bufio.NewReader(f))
	if err != nil {
		return fmt.Sprintf("(read log: %v)", err)
	}
	return tailBytes(b, n)
}

// tailFiles returns the tails of the files, each headed by its path.
func tailFiles(n int, paths ...string) string {
	var sb strings.Builder
	for _, p := range paths {
		fmt.Fprintf(&sb, "--- %s (last %d lines)\n%s\n", p, n, tailFile(p, n))
	}
	return sb.String()
}

// logMark remembers the sizes of log files, to read what is written after.
type logMark map[string]int64

// markLogs returns the current sizes of the files.
func markLogs(paths []string) logMark {
	m := logMark{}
	for _, p := range paths {
		if fi, err := os.Stat(p); err == nil {
			m[p] = fi.Size()
		} else {
			m[p] = 0
		}
	}
	return m
}

// since returns what was appended to the files since the mark (at most
// 64 KiB of each), so that an old error in a log is not taken for a new
// one.
func (m logMark) since() string {
	var sb strings.Builder
	for p, off := range m {
		f, err := os.Open(p)
		if err != nil {
			continue
		}
		if fi, err := f.Stat(); err == nil && fi.Size()-off > 64<<10 {
			off = fi.Size() - 64<<10
		}
		if _, err := f.Seek(off, io.SeekStart); err == nil {
			b, _ := io.ReadAll(f)
			sb.Write(b)
		}
		f.Close()
	}
	return sb.String()
}

// saveLogs copies the *.log files of dir into a new directory to.
func saveLogs(dir, to string) error {
	logs, _ := filepath.Glob(filepath.Join(dir, "*.log"))
	if len(logs) == 0 {
		return nil
	}
	if err := os.MkdirAll(to, 0o755); err != nil {
		return fmt.Errorf("save logs: %w", err)
	}
	for _, l := range logs {
		b, err := os.ReadFile(l)
		if err != nil {
			return fmt.Errorf("save logs: %w", err)
		}
		if err := os.WriteFile(filepath.Join(to, filepath.Base(l)), b, 0o644); err != nil {
			return fmt.Errorf("save logs: %w", err)
		}
	}
	return nil
}

// randomHex returns n random bytes in hex.
func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return hex.EncodeToString(b)
}

// ownerFile, in an instance directory, names the process that owns the
// instance: "PID STARTTIME". reapStale removes directories whose owner is
// gone.
const ownerFile = ".iotgate-owner"

// tempPrefix starts the names of the temporary instance directories.
const tempPrefix = "iotgate-"

// makeInstanceDir creates the directory of a new instance, which Close
// removes: dir if given (it must not exist or be empty), else a new
// temporary directory.
func makeInstanceDir(kind, dir string) (string, error) {
	reapStaleOnce.Do(reapStale)
	if dir == "" {
		d, err := os.MkdirTemp("", tempPrefix+kind+"-")
		if err != nil {
			return "", fmt.Errorf("create instance dir: %w", err)
		}
		dir = d
	} else {
		abs, err := filepath.Abs(dir)
		if err != nil {
			return "", err
		}
		dir = abs
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return "", fmt.Errorf("create instance dir: %w", err)
		}
		ents, err := os.ReadDir(dir)
		if err != nil {
			return "", err
		}
		if len(ents) > 0 {
			return "", fmt.Errorf("instance dir %s is not empty (remove it, or CleanDir it)", dir)
		}
	}
	// The service user must reach its files through this directory.
	if err := os.Chmod(dir, 0o755); err != nil {
		return "", err
	}
	if err := writeOwner(dir); err != nil {
		os.RemoveAll(dir)
		return "", err
	}
	return dir, nil
}

// writeOwner records this process as the owner of dir.
func writeOwner(dir string) error {
	st, ok := readStat(os.Getpid())
	if !ok {
		return errors.New("read own /proc/self/stat")
	}
	return os.WriteFile(filepath.Join(dir, ownerFile), fmt.Appendf(nil, "%d %d\n", st.pid, st.start), 0o644)
}

// ownerGone reports whether dir has an owner record whose process is gone.
func ownerGone(dir string) bool {
	b, err := os.ReadFile(filepath.Join(dir, ownerFile))
	if err != nil {
		return false // not ours, or being created
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return false
	}
	pid, err1 := strconv.Atoi(f[0])
	start, err2 := strconv.ParseUint(f[1], 10, 64)
	if err1 != nil || err2 != nil {
		return false
	}
	return !running(procStat{pid: pid, start: start})
}

var reapStaleOnce sync.Once

// reapStale kills and removes the temporary instances of processes that
// died without closing them.
func reapStale() {
	matches, _ := filepath.Glob(filepath.Join(os.TempDir(), tempPrefix+"*"))
	for _, dir := range matches {
		if ownerGone(dir) {
			_ = CleanDir(dir)
		}
	}
}

// CleanDir kills every process left running by an instance whose
// directory is dir, and removes dir. The dev runner calls it on its state
// directory before starting, in case a previous run was killed.
func CleanDir(dir string) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	if abs == "/" {
		return errors.New("refusing to clean /")
	}
	sweepDir(abs)
	if err := os.RemoveAll(abs); err != nil {
		return fmt.Errorf("remove %s: %w", abs, err)
	}
	return nil
}
