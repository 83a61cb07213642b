package benchmark

import (
	"bytes"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
)

// The roles of a target's processes in the figures split by process: the
// edge is the process the clients connect to (sluice edge, the first
// relay, frps, the chisel server), the agent the one that connects to the
// upstream (sluice http, the second relay, frpc, the chisel client). A
// target without the two (nginx: a master and its workers) has processes
// of no role, and only a total.
const (
	roleEdge  = "edge"
	roleAgent = "agent"
)

// Split is one figure of a target's processes: the edge's share, the
// agent's (both absent for a target whose processes have no role), and
// the total of all of them.
type Split struct {
	Edge  *float64 `json:"edge,omitempty"`
	Agent *float64 `json:"agent,omitempty"`
	Total float64  `json:"total"`
}

// splitByRole sums v (one value per process of procs) by role, each sum
// divided by per.
func splitByRole(procs []proc, v []float64, per float64) Split {
	var s Split
	add := func(p **float64, x float64) {
		if *p == nil {
			*p = new(float64)
		}
		**p += x
	}
	for i, p := range procs {
		x := v[i] / per
		s.Total += x
		switch p.role {
		case roleEdge:
			add(&s.Edge, x)
		case roleAgent:
			add(&s.Agent, x)
		}
	}
	return s
}

// CPUResult is the CPU time (user and system) a target's processes used
// per unit of work, over the whole of each phase: per GiB of the download
// and of the upload, and per small request (every request of the phase,
// its warm-up's included, since the CPU time is the phase's).
type CPUResult struct {
	DownloadSPerGiB *Split `json:"download_s_per_gib,omitempty"`
	UploadSPerGiB   *Split `json:"upload_s_per_gib,omitempty"`
	SmallUsPerReq   *Split `json:"small_us_per_request,omitempty"`
}

// cpuSeconds is the user and system CPU time pid has used, from
// /proc/PID/stat (in clock ticks of 1/100 s, Linux's USER_HZ), its
// threads' that have ended included.
func cpuSeconds(pid int) (float64, error) {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, fmt.Errorf("benchmark: CPU time of pid %d: %w", pid, err)
	}
	s, ok := statCPUSeconds(stat)
	if !ok {
		return 0, fmt.Errorf("benchmark: CPU time of pid %d: unexpected /proc stat %q", pid, stat)
	}
	return s, nil
}

// statCPUSeconds is utime + stime of a /proc/PID/stat line, in seconds.
func statCPUSeconds(stat []byte) (float64, bool) {
	// pid (comm) state ppid ...: utime and stime are fields 14 and 15;
	// comm may hold spaces and parentheses.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 13 {
		return 0, false
	}
	utime, err1 := strconv.ParseUint(f[11], 10, 64)
	stime, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, false
	}
	return float64(utime+stime) / 100, true
}

// cpuMeter measures the CPU time of a set of processes over a phase.
type cpuMeter struct {
	procs []proc
	start []float64
}

// startCPU reads the CPU time of procs at the start of a phase.
func startCPU(procs []proc) (*cpuMeter, error) {
	m := &cpuMeter{procs: procs}
	for _, p := range procs {
		s, err := cpuSeconds(p.pid)
		if err != nil {
			return nil, err
		}
		m.start = append(m.start, s)
	}
	return m, nil
}

// used returns the CPU seconds each process used since startCPU; now are
// the processes at the end of the phase, which must be the same.
func (m *cpuMeter) used(now []proc) ([]float64, error) {
	if !slices.Equal(m.procs, now) {
		return nil, fmt.Errorf("benchmark: the processes changed during the phase: %v before, %v after", m.procs, now)
	}
	d := make([]float64, len(m.procs))
	for i, p := range m.procs {
		s, err := cpuSeconds(p.pid)
		if err != nil {
			return nil, err
		}
		d[i] = s - m.start[i]
	}
	return d, nil
}
