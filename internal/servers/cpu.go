package servers

import (
	"os"
	"strconv"
	"strings"
	"time"
)

// clockTick is the unit of utime and stime in /proc/PID/stat: USER_HZ,
// 100 on every Linux architecture Go supports.
const clockTick = 10 * time.Millisecond

// TreeCPU returns the CPU time (user and system) that process pid and
// each of its live descendants have used so far, by process id, from
// /proc. Benchmarks take it before and after a load and add up the
// differences (see CPUDelta) to see which process the load kept busy.
func TreeCPU(pid int) map[int]time.Duration {
	out := map[int]time.Duration{}
	if pid <= 0 {
		return out
	}
	for _, p := range tree(allProcs(), []int{pid}, 0) {
		out[p.pid] = procCPU(p.pid)
	}
	return out
}

// CPUDelta returns the CPU time used between two TreeCPU snapshots: for
// each process alive at the end, its time minus its time at the start
// (all of it if it started in between). Processes that exited in between
// are not counted, so the figure is a lower bound when the tree churns
// (PostgreSQL backends of closed connections).
func CPUDelta(before, after map[int]time.Duration) time.Duration {
	var d time.Duration
	for pid, t := range after {
		d += max(0, t-before[pid])
	}
	return d
}

// SelfCPU returns the CPU time this process has used so far.
func SelfCPU() time.Duration { return procCPU(os.Getpid()) }

// procCPU returns utime+stime of one process, 0 if it is gone.
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(u+st) * clockTick
}

// PID returns the postmaster's process id, or 0 while it is not running.
func (p *Postgres) PID() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.proc == nil {
		return 0
	}
	return p.proc.pid
}

// PID returns the server's process id (the root of its process tree), or
// 0 while it is not running.
func (s *xmppServer) PID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		return 0
	}
	return s.proc.pid
}
