package servers

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// procStat is what /proc/PID/stat says about one process. A pid alone can
// be reused; pid and start together name one process.
type procStat struct {
	pid, ppid, pgrp int
	state           byte   // 'R', 'S', 'Z', ...
	start           uint64 // start time, clock ticks since boot
}

// readStat reads /proc/PID/stat; ok is false if the process is gone.
func readStat(pid int) (st procStat, ok bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return st, false
	}
	// The command name is in parentheses and may itself contain spaces
	// and parentheses: the fields that follow start after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return st, false
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); start time is field 22.
	if len(f) < 20 {
		return st, false
	}
	st.pid = pid
	st.state = f[0][0]
	st.ppid, _ = strconv.Atoi(f[1])
	st.pgrp, _ = strconv.Atoi(f[2])
	st.start, _ = strconv.ParseUint(f[19], 10, 64)
	return st, true
}

// allProcs lists every process of the machine.
func allProcs() []procStat {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	out := make([]procStat, 0, len(ents))
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if st, ok := readStat(pid); ok {
			out = append(out, st)
		}
	}
	return out
}

// running reports whether the process st still runs: same pid and start
// time, and not a dead zombie. A zombie whose parent is not ours may never
// be reaped here, and once all its threads have exited it holds no ports
// or files. But a multi-threaded process (beam.smp) shows its leader as a
// zombie as soon as the leader thread exits, while other threads still
// exit and still hold its sockets: that one still runs.
func running(st procStat) bool {
	now, ok := readStat(st.pid)
	if !ok || now.start != st.start || now.state == 'X' {
		return false
	}
	if now.state != 'Z' {
		return true
	}
	tasks, err := os.ReadDir("/proc/" + strconv.Itoa(st.pid) + "/task")
	return err == nil && len(tasks) > 1
}

// tree returns the processes from all that descend from one of roots
// (roots included) or belong to process group pgid (if pgid > 1).
// PostgreSQL's children call setsid and Erlang's port programs get their
// own groups, so a group alone is not enough.
func tree(all []procStat, roots []int, pgid int) []procStat {
	children := map[int][]procStat{}
	byPID := map[int]procStat{}
	for _, p := range all {
		children[p.ppid] = append(children[p.ppid], p)
		byPID[p.pid] = p
	}
	seen := map[int]bool{}
	var out []procStat
	var walk func(p procStat)
	walk = func(p procStat) {
		if seen[p.pid] || p.pid <= 1 || p.pid == os.Getpid() {
			return
		}
		seen[p.pid] = true
		out = append(out, p)
		for _, c := range children[p.pid] {
			walk(c)
		}
	}
	for _, r := range roots {
		if p, ok := byPID[r]; ok {
			walk(p)
		}
	}
	if pgid > 1 && pgid != syscall.Getpgrp() {
		for _, p := range all {
			if p.pgrp == pgid {
				walk(p)
			}
		}
	}
	return out
}

// killTree sends SIGKILL to the process root, its descendants and its
// process group, and waits up to timeout until they are gone. It first
// stops them all with SIGSTOP, so that none can fork a new child or be
// reparented away from the tree between the listing and the kill.
func killTree(root int, timeout time.Duration) error {
	stopped := map[int]procStat{}
	for range 50 {
		roots := []int{root}
		for pid := range stopped {
			roots = append(roots, pid)
		}
		added := 0
		for _, p := range tree(allProcs(), roots, root) {
			if old, ok := stopped[p.pid]; ok && old.start == p.start {
				continue
			}
			_ = syscall.Kill(p.pid, syscall.SIGSTOP)
			stopped[p.pid] = p
			added++
		}
		if added == 0 {
			break
		}
	}
	list := make([]procStat, 0, len(stopped))
	for _, p := range stopped {
		_ = syscall.Kill(p.pid, syscall.SIGKILL)
		list = append(list, p)
	}
	if !waitGone(list, timeout) {
		return fmt.Errorf("processes of %d still running after SIGKILL", root)
	}
	return nil
}

// waitGone waits until none of ps runs, or timeout; it reports whether
// they are all gone.
func waitGone(ps []procStat, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for {
		left := 0
		for _, p := range ps {
			if running(p) {
				left++
			}
		}
		if left == 0 {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// sweepDir kills every process that still belongs to the instance in dir:
// its command line names dir (postgres -D, beam's -mnesia dir, prosody
// --config), or it works in dir and runs as another user than us (a
// service user's process, when we are root). It is the safety net for
// processes that were reparented away from the tree we started.
func sweepDir(dir string) {
	dir = filepath.Clean(dir)
	if dir == "/" || dir == "." || dir == "" {
		return
	}
	me := os.Getpid()
	euid := uint32(os.Geteuid())
	var victims []procStat
	for _, p := range allProcs() {
		if p.pid <= 1 || p.pid == me || p.state == 'Z' {
			continue
		}
		pd := "/proc/" + strconv.Itoa(p.pid)
		hit := false
		if cl, err := os.ReadFile(pd + "/cmdline"); err == nil {
			// Arguments are NUL-separated; match dir as a path prefix
			// inside any argument ("-D", "/tmp/x/data" or "--config=/tmp/x/c").
			hit = bytes.Contains(cl, []byte(dir+"/")) || bytes.Contains(append(cl, 0), []byte(dir+"\x00"))
		}
		if !hit {
			if cwd, err := os.Readlink(pd + "/cwd"); err == nil && within(cwd, dir) {
				if fi, err := os.Stat(pd); err == nil {
					if sys, ok := fi.Sys().(*syscall.Stat_t); ok && sys.Uid != euid {
						hit = true
					}
				}
			}
		}
		if hit {
			victims = append(victims, p)
		}
	}
	for _, p := range victims {
		_ = syscall.Kill(p.pid, syscall.SIGKILL)
	}
	waitGone(victims, 5*time.Second)
}

// within reports whether path is dir or inside it.
func within(path, dir string) bool {
	return path == dir || strings.HasPrefix(path, dir+"/")
}

// runAs is the user a server runs as.
type runAs struct {
	name string
	uid  int
	gid  int
	cred *syscall.Credential // nil: run as ourselves
}

// serviceUser returns the user to run a server as: the Debian service user
// name when we are root, ourselves otherwise.
func serviceUser(name string) (runAs, error) {
	if os.Geteuid() != 0 {
		u, err := user.Current()
		n := strconv.Itoa(os.Geteuid())
		if err == nil {
			n = u.Username
		}
		return runAs{name: n, uid: os.Geteuid(), gid: os.Getegid()}, nil
	}
	u, err := user.Lookup(name)
	if err != nil {
		return runAs{}, fmt.Errorf("look up service user %q (is its package installed? run scripts/deps.sh): %w", name, err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return runAs{
		name: name, uid: uid, gid: gid,
		cred: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}},
	}, nil
}

// chownTree gives dir and everything in it to the user, when we are root.
// It first checks that the user can reach dir at all.
func (u runAs) chownTree(dir string) error {
	if u.cred == nil {
		return nil
	}
	if err := u.canReach(dir); err != nil {
		return err
	}
	return filepath.WalkDir(dir, func(path string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(path, u.uid, u.gid)
	})
}

// canReach checks that the user may search every directory above dir
// (the servers' own files are given to it). Otherwise the server fails
// with a bare "permission denied".
func (u runAs) canReach(dir string) error {
	for p := filepath.Dir(dir); ; p = filepath.Dir(p) {
		fi, err := os.Stat(p)
		if err != nil {
			return err
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			return nil
		}
		var bit os.FileMode = 0o001
		switch {
		case int(st.Uid) == u.uid:
			bit = 0o100
		case int(st.Gid) == u.gid:
			bit = 0o010
		}
		if fi.Mode().Perm()&bit == 0 {
			return fmt.Errorf("user %s cannot reach %s: %s is not searchable by it (chmod o+x it, or use another directory)", u.name, dir, p)
		}
		if p == "/" {
			return nil
		}
	}
}

// process is one server process we started, in its own process group.
type process struct {
	cmd  *exec.Cmd
	pid  int
	done chan struct{} // closed once the process has exited and been reaped
	err  error         // exit status; read only after done is closed
}

// procSpec says how to start a process.
type procSpec struct {
	path string
	args []string
	dir  string   // working directory
	env  []string // added to (and overriding) our environment
	user runAs
	log  string    // file that gets stdout and stderr, appended to
	out  io.Writer // gets stdout and stderr instead of log, if set
}

// startProcess starts spec in a new process group, with SIGKILL as its
// parent-death signal so that it dies with us if we are killed.
func startProcess(spec procSpec) (*process, error) {
	out := spec.out
	if out == nil {
		logf, err := os.OpenFile(spec.log, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
		if err != nil {
			return nil, fmt.Errorf("open log: %w", err)
		}
		defer logf.Close()
		out = logf
	}
	cmd := exec.Command(spec.path, spec.args...)
	cmd.Dir = spec.dir
	cmd.Env = mergeEnv(os.Environ(), spec.env)
	cmd.Stdin = nil
	cmd.Stdout = out
	cmd.Stderr = out
	// With a writer that is not a file, Wait copies from a pipe until
	// every child that inherited it has exited: don't let a straggler
	// hold Wait (and so Close) forever.
	cmd.WaitDelay = 5 * time.Second
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setpgid:    true,
		Pdeathsig:  syscall.SIGKILL,
		Credential: spec.user.cred,
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", filepath.Base(spec.path), err)
	}
	p := &process{cmd: cmd, pid: cmd.Process.Pid, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// exited reports whether the process has exited.
func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// signalGroup sends sig to the process group of p.
func (p *process) signalGroup(sig syscall.Signal) {
	_ = syscall.Kill(-p.pid, sig)
}

// stop sends sig to the process group and waits until p and everything it
// started are gone; after timeout (or ctx's end) it kills them.
func (p *process) stop(ctx context.Context, sig syscall.Signal, timeout time.Duration) error {
	// Snapshot the tree first: after the signal, children may be
	// reparented and no longer found from p.
	procs := tree(allProcs(), []int{p.pid}, p.pid)
	p.signalGroup(sig)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	select {
	case <-p.done:
	case <-ctx.Done():
		return p.kill()
	}
	if !waitGone(procs, time.Until(deadlineOr(ctx, time.Second))) {
		return p.kill()
	}
	return nil
}

// kill SIGKILLs the process tree and waits for it.
func (p *process) kill() error {
	err := killTree(p.pid, 10*time.Second)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		return errors.Join(err, fmt.Errorf("process %d not reaped after SIGKILL", p.pid))
	}
	return err
}

// deadlineOr returns ctx's deadline, or now+d if it has none.
func deadlineOr(ctx context.Context, d time.Duration) time.Time {
	if t, ok := ctx.Deadline(); ok {
		return t
	}
	return time.Now().Add(d)
}

// mergeEnv returns base with the KEY=VALUE pairs of over replacing or
// adding to it.
func mergeEnv(base, over []string) []string {
	keys := map[string]bool{}
	for _, kv := range over {
		k, _, _ := strings.Cut(kv, "=")
		keys[k] = true
	}
	out := make([]string, 0, len(base)+len(over))
	for _, kv := range base {
		k, _, _ := strings.Cut(kv, "=")
		if !keys[k] {
			out = append(out, kv)
		}
	}
	return append(out, over...)
}

// runCommand runs a short helper command (initdb, prosodyctl) as u and
// returns its combined output.
func runCommand(ctx context.Context, u runAs, dir string, env []string, path string, args ...string) ([]byte, error) {
	return runCommandInput(ctx, u, dir, env, "", path, args...)
}

// runCommandInput is runCommand with stdin as the command's input.
func runCommandInput(ctx context.Context, u runAs, dir string, env []string, stdin string, path string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Stdin = strings.NewReader(stdin)
	cmd.Dir = dir
	cmd.Env = mergeEnv(os.Environ(), env)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL, Credential: u.cred}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		// Only the command's name: its arguments may hold a password.
		return out, fmt.Errorf("%s: %w\n%s", filepath.Base(path), err, tailBytes(out, 30))
	}
	return out, nil
}
