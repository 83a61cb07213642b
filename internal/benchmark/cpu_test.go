package benchmark

import (
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// rusageSeconds is this process's user and system CPU time, from
// getrusage: the kernel's other account of what /proc/PID/stat shows.
func rusageSeconds(t *testing.T) float64 {
	t.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// cpuSeconds reads a process's CPU time from /proc: this test's own
// process burns 300 ms of CPU (by getrusage's account), and /proc says
// the same within its 10 ms ticks.
func TestCPUSecondsOfABusyProcess(t *testing.T) {
	self := []proc{{pid: os.Getpid(), name: "test", role: roleAgent}}
	r0 := rusageSeconds(t)
	m, err := startCPU(self)
	if err != nil {
		t.Fatal(err)
	}
	const burn = 0.3
	deadline := time.Now().Add(time.Minute) // a ceiling, for a machine that never lets it run
	x := uint64(1)
	for rusageSeconds(t)-r0 < burn {
		for range 100000 {
			x = x*6364136223846793005 + 1442695040888963407
		}
		if time.Now().After(deadline) {
			t.Fatalf("burned only %.3f s of CPU in a minute", rusageSeconds(t)-r0)
		}
	}
	used, err := m.used(self)
	r1 := rusageSeconds(t)
	if err != nil {
		t.Fatal(err)
	}
	// Reading /proc after getrusage's start and before its end, with
	// the ticks' rounding on both sides.
	if got := used[0]; got < burn-0.03 || got > r1-r0+0.03 {
		t.Errorf("/proc says %.3f s of CPU; getrusage says at least %.1f s and at most %.3f s (x=%d)", got, burn, r1-r0, x)
	}
	s := splitByRole(self, used, 1e-6) // µs
	if s.Agent == nil || s.Edge != nil || *s.Agent != s.Total || !(s.Total >= (burn-0.03)*1e6) {
		t.Errorf("split %+v", s)
	}
	if _, err := m.used([]proc{{pid: os.Getpid(), name: "other"}}); err == nil {
		t.Error("a phase whose processes changed was measured")
	}
	if _, err := cpuSeconds(1 << 30); err == nil {
		t.Error("the CPU time of a process that does not exist")
	}
}

func TestStatCPUSeconds(t *testing.T) {
	// comm may hold spaces and parentheses; utime 250 and stime 50 ticks.
	line := "4242 (a) b (c) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 1 1 1\n"
	if s, ok := statCPUSeconds([]byte(line)); !ok || s != 3 {
		t.Errorf("statCPUSeconds = %v, %v; want 3 s", s, ok)
	}
	for _, bad := range []string{"", "4242 (x", "4242 (x) S 1 2 3", strings.Replace(line, " 250 ", " x ", 1)} {
		if _, ok := statCPUSeconds([]byte(bad)); ok {
			t.Errorf("statCPUSeconds(%q) accepted", bad)
		}
	}
}

// Memory and CPU figures split by process: the edge's and the agent's
// shares and the total; a target whose processes have no role (nginx)
// has only the total.
func TestSplitByRole(t *testing.T) {
	procs := []proc{{1, "sluice edge", roleEdge}, {2, "sluice http", roleAgent}}
	s := splitByRole(procs, []float64{30, 70}, 10)
	if s.Edge == nil || s.Agent == nil || *s.Edge != 3 || *s.Agent != 7 || s.Total != 10 {
		t.Errorf("sluice: %+v", s)
	}
	nginx := []proc{{1, "nginx master", ""}, {2, "nginx worker", ""}, {3, "nginx worker", ""}}
	s = splitByRole(nginx, []float64{1, 2, 3}, 2)
	if s.Edge != nil || s.Agent != nil || s.Total != 3 {
		t.Errorf("nginx: %+v", s)
	}
	m := newMemoryResult(procs, []int64{1000, 2000}, []int64{1500, 4000}, 100)
	if m.BeforeKB != 3000 || m.AfterKB != 5500 || m.PerStreamKB != 25 || *m.ByRole.Edge != 5 || *m.ByRole.Agent != 20 ||
		m.ByProcess[1].Role != roleAgent || m.ByProcess[1].PerStreamKB != 20 {
		t.Errorf("memory: %+v", m)
	}
}
