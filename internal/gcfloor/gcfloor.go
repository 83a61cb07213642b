// Package gcfloor keeps the garbage collector's heap goal at least a
// floor above the live heap, so that a process whose live heap is small
// does not collect every few megabytes it allocates.
//
// Go's default (GOGC=100) lets the heap grow by the live heap before the
// next collection, with a minimum goal of 4 MiB. An edge or an agent
// serving small requests holds little (under a megabyte between
// requests) and allocates a few kilobytes per request: it collected
// about nine times a second per process under 25 clients, each
// collection a few hundred microseconds of CPU, and the collector's
// assists landed on the requests. With a floor, the goal is
//
//	max(live × (1 + GOGC/100), live + floor)
//
// which changes nothing once the live heap is larger than the floor (an
// edge holding many streams), and spends at most the floor in memory
// while it is smaller. It is the dynamic form of the "ballast" many Go
// servers keep, retuned after every collection from the live heap the
// runtime reports.
//
// A GOGC set in the environment wins: Start does nothing then, so
// GOGC=100 restores Go's own pacing. GOMEMLIMIT still bounds the heap as
// the runtime documents, floor or not.
package gcfloor

import (
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
)

// Default is the floor the sluice servers keep: measured under small
// requests (README, "A seventh round").
const Default = 16 << 20

// maxPercent bounds the GOGC the floor asks for, for a live heap next to
// nothing (the runtime's own minimum goal is 4 MiB anyway).
const maxPercent = 10000

// Start keeps the heap goal at least floor bytes above the live heap from
// the next collection on, until stop is called (stop restores the GOGC
// there was and waits for nothing). It does nothing for floor <= 0 or
// when GOGC is set in the environment.
func Start(floor int64) (stop func()) {
	if t := start(floor); t != nil {
		return t.stop
	}
	return func() {}
}

func start(floor int64) *tuner {
	if floor <= 0 || os.Getenv("GOGC") != "" {
		return nil
	}
	base := debug.SetGCPercent(100)
	debug.SetGCPercent(base)
	if base <= 0 {
		return nil // the collector is off: nothing to pace
	}
	t := &tuner{floor: uint64(floor), base: base}
	t.sample = []metrics.Sample{
		{Name: "/gc/heap/live:bytes"},
		{Name: "/gc/scan/stack:bytes"},
		{Name: "/gc/scan/globals:bytes"},
	}
	t.arm()
	return t
}

type tuner struct {
	floor uint64
	base  int

	mu      sync.Mutex
	stopped bool
	sample  []metrics.Sample
	cycles  int           // cleanups run, for tests
	ran     chan struct{} // told after each cleanup, for tests (nil: none)
}

// sentinel is what a collection frees to tell the tuner it ran: larger
// than the tiny allocator's 16 bytes, so it is an object of its own.
type sentinel struct{ _ [32]byte }

// arm allocates a sentinel whose cleanup runs after the next collection
// that finds it unreachable (the one after this call), retunes and arms
// again.
func (t *tuner) arm() {
	runtime.AddCleanup(new(sentinel), (*tuner).cycle, t)
}

func (t *tuner) cycle() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.cycles++
	if t.ran != nil {
		defer func() {
			select {
			case t.ran <- struct{}{}:
			default:
			}
		}()
	}
	if t.stopped {
		return
	}
	metrics.Read(t.sample)
	var live, paced uint64 // paced: what GOGC is a percentage of
	for i, s := range t.sample {
		if s.Value.Kind() != metrics.KindUint64 {
			continue // not in this runtime: counted as none
		}
		if i == 0 {
			live = s.Value.Uint64()
		}
		paced += s.Value.Uint64()
	}
	debug.SetGCPercent(Percent(live, paced, t.floor, t.base))
	t.arm()
}

func (t *tuner) stop() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.stopped {
		t.stopped = true
		debug.SetGCPercent(t.base)
	}
}

// minHeap is the runtime's smallest heap goal at GOGC=100, which it
// scales with GOGC (the GC guide: "4 MiB × GOGC/100").
const minHeap = 4 << 20

// Percent is the GOGC that puts the heap goal at least floor above a live
// heap of live bytes, and never below base. The runtime's goal is the
// larger of two: the live heap plus GOGC percent of paced bytes (the live
// heap, the stacks scanned and the globals), and minHeap × GOGC/100. The
// smaller GOGC that lifts either to live+floor is enough; rounded up, at
// most maxPercent.
func Percent(live, paced, floor uint64, base int) int {
	want := live + floor
	p := (want*100 + minHeap - 1) / minHeap // through the minimum goal
	if paced > 0 {
		p = min(p, (floor*100+paced-1)/paced) // through the paced bytes
	}
	return max(base, int(min(p, maxPercent)))
}
