package servers

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// IotgatePackage is the import path of the iotgate command, which
// BuildIotgate builds.
const IotgatePackage = "github.com/iotgate/iotgate/cmd/iotgate"

// BuildIotgate builds the iotgate command into dir (created if missing)
// and returns the binary's path. With race set, it is built with the race
// detector (tests); benchmarks build without. It must run inside the
// module's tree (go build resolves the package from the working
// directory's module).
func BuildIotgate(ctx context.Context, dir string, race bool) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("build iotgate: %w", err)
	}
	bin := filepath.Join(dir, "iotgate")
	args := []string{"build", "-o", bin}
	if race {
		args = append(args, "-race")
	}
	args = append(args, IotgatePackage)
	out, err := exec.CommandContext(ctx, "go", args...).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build %s: %w\n%s", IotgatePackage, err, out)
	}
	return bin, nil
}

// IotgateOptions configures StartIotgate.
type IotgateOptions struct {
	// Bin is the iotgate binary (see BuildIotgate).
	Bin string
	// Env holds the IOTGATE_* settings (IOTGATE_XMPP_ADDR, _DOMAIN,
	// _SECRET, _DATABASE_URL...). IOTGATE_HTTP_ADDR defaults to a free
	// loopback port and IOTGATE_ADMIN_TOKEN to AdminToken. Nothing else
	// of the caller's environment is passed on but PATH.
	Env map[string]string
	// AdminToken is the API's bearer token (IOTGATE_ADMIN_TOKEN). Empty:
	// a random 43-character one.
	AdminToken string
	// Logs gets the process's stdout and stderr; nil: a new LogBuffer.
	Logs *LogBuffer
}

// Iotgate is a running iotgate process. Its methods are safe for
// concurrent use.
type Iotgate struct {
	cmd     *exec.Cmd
	base    string
	token   string
	logs    *LogBuffer
	started time.Time
	done    chan struct{}

	mu      sync.Mutex
	waitErr error
}

// NewAdminToken returns a random bearer token of 43 characters (32 bytes,
// base64url).
func NewAdminToken() string {
	var b [32]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// StartIotgate starts iotgate with opts and returns at once; WaitReady
// waits until it serves. The process is in a process group of its own and
// dies with the caller (parent-death signal).
func StartIotgate(opts IotgateOptions) (*Iotgate, error) {
	if opts.Bin == "" {
		return nil, errors.New("start iotgate: no binary (see BuildIotgate)")
	}
	env := maps.Clone(opts.Env)
	if env == nil {
		env = map[string]string{}
	}
	if env["IOTGATE_HTTP_ADDR"] == "" {
		port, err := freePort()
		if err != nil {
			return nil, fmt.Errorf("start iotgate: %w", err)
		}
		env["IOTGATE_HTTP_ADDR"] = addr(port)
	}
	if opts.AdminToken == "" {
		opts.AdminToken = NewAdminToken()
	}
	if env["IOTGATE_ADMIN_TOKEN"] == "" {
		env["IOTGATE_ADMIN_TOKEN"] = opts.AdminToken
	}
	if opts.Logs == nil {
		opts.Logs = &LogBuffer{}
	}
	cmd := exec.Command(opts.Bin)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	for _, k := range slices.Sorted(maps.Keys(env)) {
		cmd.Env = append(cmd.Env, k+"="+env[k])
	}
	cmd.Stdout, cmd.Stderr = opts.Logs, opts.Logs
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	g := &Iotgate{
		cmd:   cmd,
		base:  "http://" + env["IOTGATE_HTTP_ADDR"],
		token: env["IOTGATE_ADMIN_TOKEN"],
		logs:  opts.Logs,
		done:  make(chan struct{}),
	}
	g.started = time.Now()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start iotgate: %w", err)
	}
	go func() {
		err := cmd.Wait()
		g.mu.Lock()
		g.waitErr = err
		g.mu.Unlock()
		close(g.done)
	}()
	return g, nil
}

// URL returns the base URL of the REST API, http://127.0.0.1:PORT.
func (g *Iotgate) URL() string { return g.base }

// Token returns the API's bearer token.
func (g *Iotgate) Token() string { return g.token }

// Authorize sets the request's Authorization header to the bearer token.
func (g *Iotgate) Authorize(req *http.Request) {
	req.Header.Set("Authorization", "Bearer "+g.token)
}

// Logs returns what the process wrote so far.
func (g *Iotgate) Logs() *LogBuffer { return g.logs }

// PID returns the process id.
func (g *Iotgate) PID() int { return g.cmd.Process.Pid }

// Started returns when the process was started.
func (g *Iotgate) Started() time.Time { return g.started }

// Done is closed when the process has exited.
func (g *Iotgate) Done() <-chan struct{} { return g.done }

// WaitReady polls /readyz until it answers 200 and returns how long after
// the process start that was (the poll interval, 10 ms, bounds its
// precision). It fails if the process exits or ctx ends first.
func (g *Iotgate) WaitReady(ctx context.Context) (time.Duration, error) {
	client := &http.Client{Timeout: 2 * time.Second}
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, g.base+"/readyz", nil)
		if err != nil {
			return 0, err
		}
		if resp, err := client.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return time.Since(g.started), nil
			}
		}
		select {
		case <-g.done:
			return 0, fmt.Errorf("iotgate exited before it was ready (%v):\n%s", g.exitErr(), tailBytes([]byte(g.logs.String()), 40))
		case <-ctx.Done():
			return 0, fmt.Errorf("iotgate not ready: %w:\n%s", ctx.Err(), tailBytes([]byte(g.logs.String()), 40))
		case <-tick.C:
		}
	}
}

func (g *Iotgate) exitErr() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.waitErr
}

// RSS returns the process's resident set size (VmRSS of
// /proc/PID/status), in bytes.
func (g *Iotgate) RSS() (int64, error) {
	return ProcessRSS(g.PID())
}

// ProcessRSS returns the resident set size (VmRSS of /proc/PID/status) of
// process pid, in bytes.
func ProcessRSS(pid int) (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, fmt.Errorf("read RSS: %w", err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		v, ok := strings.CutPrefix(line, "VmRSS:")
		if !ok {
			continue
		}
		f := strings.Fields(v) // "123456 kB"
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("read RSS: unexpected %q", line)
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("read RSS: %w", err)
		}
		return kb * 1024, nil
	}
	return 0, fmt.Errorf("read RSS: no VmRSS in /proc/%d/status", pid)
}

// Signal sends sig to the process (for example SIGTERM, to test a
// graceful shutdown); Done tells when it has exited.
func (g *Iotgate) Signal(sig syscall.Signal) error {
	if err := g.cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("signal iotgate: %w", err)
	}
	return nil
}

// Kill kills the process group with SIGKILL, as a crash would, and waits
// until the process has exited.
func (g *Iotgate) Kill() error {
	select {
	case <-g.done:
		return nil
	default:
	}
	if err := syscall.Kill(-g.cmd.Process.Pid, syscall.SIGKILL); err != nil {
		return fmt.Errorf("kill iotgate: %w", err)
	}
	<-g.done
	return nil
}

// ExitCode returns the process's exit code once it has exited (-1 if a
// signal ended it), and -1 while it runs.
func (g *Iotgate) ExitCode() int {
	select {
	case <-g.done:
		return g.cmd.ProcessState.ExitCode()
	default:
		return -1
	}
}

// Stop sends SIGTERM and waits for the process to exit; if it has not
// exited when ctx ends (or after 20 s), it kills the process group. It
// returns nil for a clean exit, and does nothing if the process has
// already exited.
func (g *Iotgate) Stop(ctx context.Context) error {
	select {
	case <-g.done:
		return nil
	default:
	}
	_ = g.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(20 * time.Second)
	defer t.Stop()
	select {
	case <-g.done:
		return g.exitErr()
	case <-ctx.Done():
	case <-t.C:
	}
	_ = syscall.Kill(-g.cmd.Process.Pid, syscall.SIGKILL)
	<-g.done
	return errors.New("iotgate did not stop after SIGTERM: killed")
}

// IotgateForTest starts iotgate with opts, waits until it is ready (at
// most a minute), and stops it when the test ends, logging its output if
// the test failed.
func IotgateForTest(t TB, opts IotgateOptions) *Iotgate {
	t.Helper()
	g, err := StartIotgate(opts)
	if err != nil {
		t.Fatalf("servers: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := g.Stop(ctx); err != nil {
			t.Logf("servers: stop iotgate: %v", err)
		}
		if t.Failed() {
			t.Logf("servers: iotgate log:\n%s", g.logs.String())
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := g.WaitReady(ctx); err != nil {
		t.Fatalf("servers: %v", err)
	}
	return g
}

// FreeAddr returns a loopback address, 127.0.0.1:PORT, whose port was free
// a moment ago (for IOTGATE_METRICS_ADDR and the like).
func FreeAddr() (string, error) {
	port, err := freePort()
	if err != nil {
		return "", err
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), nil
}
