package gcfloor

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestPercent(t *testing.T) {
	const MiB = 1 << 20
	for _, c := range []struct {
		name             string
		live, paced, flr uint64
		base, want       int
	}{
		// A live heap next to nothing: the minimum goal, 4 MiB × p/100,
		// is what reaches live+floor (16.5 MiB: 413 %, rounded up).
		{"tiny heap", MiB / 2, MiB, 16 * MiB, 100, 413},
		// Nothing live at all: the same way.
		{"empty heap", 0, 0, 16 * MiB, 100, 400},
		// 10 MiB live, 11 paced: 16/11 = 146 % lifts the paced goal past
		// live+floor before 26/4 = 650 % lifts the minimum.
		{"middle heap", 10 * MiB, 11 * MiB, 16 * MiB, 100, 146},
		// More live than the floor: GOGC's own headroom is larger.
		{"large heap", 64 * MiB, 66 * MiB, 16 * MiB, 100, 100},
		// A base above what the floor asks stays.
		{"base wins", MiB, MiB, 8 * MiB, 1000, 1000},
		// A huge floor over a tiny heap is capped.
		{"capped", 1 << 10, 1 << 10, 1 << 40, 100, maxPercent},
	} {
		if got := Percent(c.live, c.paced, c.flr, c.base); got != c.want {
			t.Errorf("%s: Percent(%d, %d, %d, %d) = %d, want %d", c.name, c.live, c.paced, c.flr, c.base, got, c.want)
		}
	}
}

// read returns the named runtime metrics, uint64 each.
func read(t *testing.T, names ...string) []uint64 {
	t.Helper()
	s := make([]metrics.Sample, len(names))
	for i, n := range names {
		s[i].Name = n
	}
	metrics.Read(s)
	out := make([]uint64, len(s))
	for i := range s {
		if s[i].Value.Kind() != metrics.KindUint64 {
			t.Fatalf("metric %s: kind %v", s[i].Name, s[i].Value.Kind())
		}
		out[i] = s[i].Value.Uint64()
	}
	return out
}

// waitCycles collects until the tuner's cleanup has run n times since
// the call: it runs some time after a collection, and tells tu.ran.
func waitCycles(t *testing.T, tu *tuner, n int) {
	t.Helper()
	tu.mu.Lock()
	want := tu.cycles + n
	tu.mu.Unlock()
	deadline := time.After(30 * time.Second)
	for {
		tu.mu.Lock()
		got := tu.cycles
		tu.mu.Unlock()
		if got >= want {
			return
		}
		runtime.GC()
		select {
		case <-tu.ran:
		case <-time.After(100 * time.Millisecond): // collect again
		case <-deadline:
			t.Fatalf("the tuner ran %d times in 30 s of collections, want %d", got-want+n, n)
		}
	}
}

func TestStartKeepsTheFloor(t *testing.T) {
	t.Setenv("GOGC", "") // Start looks at the environment: not set here
	const floor = 24 << 20
	base := debug.SetGCPercent(100)
	defer debug.SetGCPercent(base)

	tu := start(floor)
	if tu == nil {
		t.Fatal("start: no tuner")
	}
	tu.mu.Lock()
	tu.ran = make(chan struct{}, 1)
	tu.mu.Unlock()
	defer tu.stop()
	waitCycles(t, tu, 2) // tuned from a live heap, and a collection since
	m := read(t, "/gc/heap/live:bytes", "/gc/heap/goal:bytes", "/gc/gogc:percent")
	live, goal := m[0], m[1]
	// The goal comes from the live heap of the collection before the last
	// one, which moves a little here: within a MiB.
	if goal+1<<20 < live+floor || m[2] <= 100 {
		t.Fatalf("the heap goal is %d over %d live (GOGC %d), want the live heap + %d", goal, live, m[2], floor)
	}
	t.Logf("live %d, goal %d, GOGC %d", live, goal, m[2])

	tu.stop()
	if got := read(t, "/gc/gogc:percent")[0]; got != 100 {
		t.Fatalf("GOGC %d after stop, want 100", got)
	}
	waitCycles(t, tu, 1) // the cleanup armed before stop ran, and did nothing
	if got := read(t, "/gc/gogc:percent")[0]; got != 100 {
		t.Fatalf("GOGC %d after stop and a collection, want 100", got)
	}
}

func TestStartLeavesGOGCAlone(t *testing.T) {
	t.Setenv("GOGC", "150")
	base := debug.SetGCPercent(150)
	defer debug.SetGCPercent(base)
	if tu := start(64 << 20); tu != nil {
		tu.stop()
		t.Fatal("start made a tuner with GOGC in the environment")
	}
	if got := read(t, "/gc/gogc:percent")[0]; got != 150 {
		t.Fatalf("GOGC %d with GOGC=150 in the environment, want 150", got)
	}
}

func TestStartOff(t *testing.T) {
	t.Setenv("GOGC", "")
	base := debug.SetGCPercent(-1) // the collector off
	defer debug.SetGCPercent(base)
	if tu := start(64 << 20); tu != nil {
		tu.stop()
		t.Fatal("start made a tuner with the collector off")
	}
	if got := debug.SetGCPercent(-1); got != -1 {
		t.Fatalf("GOGC %d after start with the collector off, want -1", got)
	}
	debug.SetGCPercent(100)
	if tu := start(0); tu != nil {
		tu.stop()
		t.Fatal("start(0) made a tuner")
	}
	Start(0)() // a stop function that does nothing
}
