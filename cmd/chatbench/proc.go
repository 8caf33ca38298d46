package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// Process accounting from /proc. A system under test is a process tree:
// bin/chat -target=all has PostgreSQL's postmaster as a child and the
// backends as grandchildren. CPU is utime+stime of every live process of the
// tree plus cutime+cstime (the CPU of children that already exited and were
// reaped by a member of the tree, such as a PostgreSQL backend that ended).

// clockTick is the unit of the CPU fields of /proc/<pid>/stat (USER_HZ,
// 100 on every Linux build in practice).
const clockTick = 10 * time.Millisecond

type procStatus struct {
	pid, ppid int
	cpu       time.Duration // utime+stime+cutime+cstime
	own       time.Duration // utime+stime
	rss       int64         // bytes
	start     uint64        // start time in ticks since boot: tells a reused pid apart
}

// readProc parses /proc/<pid>/stat.
func readProc(pid int) (procStatus, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procStatus{}, false
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 > len(b) {
		return procStatus{}, false
	}
	// Fields after the command, numbered from 3 (state) as in proc(5).
	f := strings.Fields(string(b[i+2:]))
	if len(f) < 22 {
		return procStatus{}, false
	}
	n := func(k int) int64 { v, _ := strconv.ParseInt(f[k-3], 10, 64); return v }
	st, _ := strconv.ParseUint(f[22-3], 10, 64)
	return procStatus{
		pid:   pid,
		ppid:  int(n(4)),
		cpu:   time.Duration(n(14)+n(15)+n(16)+n(17)) * clockTick,
		own:   time.Duration(n(14)+n(15)) * clockTick,
		rss:   n(24) * int64(os.Getpagesize()),
		start: st,
	}, true
}

// procStat returns one process's CPU time (its own and its reaped
// children's) and resident set size.
func procStat(pid int) (cpu time.Duration, rss int64) {
	p, _ := readProc(pid)
	return p.cpu, p.rss
}

// treeOf returns the live processes of the trees rooted at roots.
func treeOf(roots ...int) []procStatus {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	all := map[int]procStatus{}
	kids := map[int][]int{}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if p, ok := readProc(pid); ok {
			all[pid] = p
			kids[p.ppid] = append(kids[p.ppid], pid)
		}
	}
	var out []procStatus
	seen := map[int]bool{}
	queue := append([]int(nil), roots...)
	for len(queue) > 0 {
		pid := queue[0]
		queue = queue[1:]
		p, ok := all[pid]
		if !ok || seen[pid] {
			continue
		}
		seen[pid] = true
		out = append(out, p)
		queue = append(queue, kids[pid]...)
	}
	return out
}

// usage is what a process tree holds at one moment.
type usage struct {
	cpu   time.Duration // cumulative CPU time
	rss   int64         // sum of RSS (shared pages counted in every process)
	pss   int64         // sum of PSS (shared pages divided among their users); 0 if not read
	procs int
}

// treeUsage sums the tree rooted at roots; withPSS also reads
// /proc/<pid>/smaps_rollup (slower: only at the end of a step).
func treeUsage(withPSS bool, roots ...int) usage {
	var u usage
	for _, p := range treeOf(roots...) {
		u.cpu += p.cpu
		u.rss += p.rss
		u.procs++
		if withPSS {
			u.pss += pssOf(p.pid)
		}
	}
	return u
}

// pssOf returns a process's proportional set size in bytes.
func pssOf(pid int) int64 {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/smaps_rollup")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if l := sc.Text(); strings.HasPrefix(l, "Pss:") {
			kb, _ := strconv.ParseInt(strings.Fields(l)[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}

// selfCPU is the load generator's own CPU time, to show when it, not the
// system under test, is the bottleneck.
func selfCPU() time.Duration {
	p, _ := readProc(os.Getpid())
	return p.own
}

func mib(b int64) string { return fmt.Sprintf("%.1f", float64(b)/(1<<20)) }

// threadCPU is a process's CPU time in nanoseconds from the scheduler's
// per-thread accounting (/proc/<pid>/task/*/schedstat), finer than the
// 10 ms ticks of /proc/<pid>/stat; threads that already exited are not
// counted (Go rarely ends one). Falls back to procStat.
func threadCPU(pid int) time.Duration {
	dir := "/proc/" + strconv.Itoa(pid) + "/task"
	ents, err := os.ReadDir(dir)
	if err != nil {
		c, _ := procStat(pid)
		return c
	}
	var sum time.Duration
	for _, e := range ents {
		b, err := os.ReadFile(dir + "/" + e.Name() + "/schedstat")
		if err != nil {
			continue
		}
		if f := strings.Fields(string(b)); len(f) > 0 {
			ns, _ := strconv.ParseInt(f[0], 10, 64)
			sum += time.Duration(ns)
		}
	}
	return sum
}
