package reqctx_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/sluicehq/sluice/internal/reqctx"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type ctxKey struct{}

// ran returns a function that reports on ch when it runs.
func ran(ch chan string, name string) func() { return func() { ch <- name } }

func expect(t *testing.T, ch chan string, want string) {
	t.Helper()
	select {
	case got := <-ch:
		if got != want {
			t.Fatalf("%s ran, want %s", got, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("%s did not run", want)
	}
}

func none(t *testing.T, ch chan string) {
	t.Helper()
	select {
	case got := <-ch:
		t.Fatalf("%s ran", got)
	default:
	}
}

func TestAfterFuncRunsOnCancel(t *testing.T) {
	base := context.WithValue(context.Background(), ctxKey{}, "v")
	c := reqctx.New(base)
	ch := make(chan string, 4)
	a := reqctx.AfterFunc(c, ran(ch, "a"))
	// Through a value added below: the same end, kept by c.
	b := reqctx.AfterFunc(context.WithValue(c, ctxKey{}, "w"), ran(ch, "b"))
	stopped := reqctx.AfterFunc(c, ran(ch, "stopped"))
	if !stopped.Stop() {
		t.Fatal("Stop before the end: false, want true")
	}
	if stopped.Stop() {
		t.Fatal("a second Stop: true, want false")
	}
	if c.Err() != nil || c.Value(ctxKey{}) != "v" {
		t.Fatalf("before Cancel: Err %v, value %v", c.Err(), c.Value(ctxKey{}))
	}
	c.Cancel()
	c.Cancel() // a second time does nothing
	if !errors.Is(c.Err(), context.Canceled) {
		t.Fatalf("after Cancel: Err %v", c.Err())
	}
	got := map[string]bool{}
	for range 2 {
		select {
		case name := <-ch:
			got[name] = true
		case <-time.After(10 * time.Second):
			t.Fatalf("ran %v, want a and b", got)
		}
	}
	if !got["a"] || !got["b"] {
		t.Fatalf("ran %v, want a and b", got)
	}
	if a.Stop() || b.Stop() {
		t.Fatal("Stop after the functions started: true, want false")
	}
	none(t, ch)
	// Registered after the end: runs at once.
	late := reqctx.AfterFunc(c, ran(ch, "late"))
	expect(t, ch, "late")
	if late.Stop() {
		t.Fatal("Stop of a function that ran: true")
	}
}

// A context with an end of its own between c and the caller is watched by
// context.AfterFunc, so that its own end runs the function.
func TestAfterFuncOfDerivedContext(t *testing.T) {
	c := reqctx.New(context.Background())
	defer c.Cancel()
	ch := make(chan string, 2)
	child, cancel := context.WithCancel(c)
	reqctx.AfterFunc(child, ran(ch, "child"))
	cancel()
	expect(t, ch, "child")

	timed, cancelTimed := context.WithTimeout(c, time.Hour)
	s := reqctx.AfterFunc(timed, ran(ch, "timed"))
	if !s.Stop() {
		t.Fatal("Stop of a derived context's function: false")
	}
	cancelTimed()
	none(t, ch)

	// Derived contexts still end with c (context.WithCancel's rule).
	grand, cancelGrand := context.WithCancel(context.WithValue(c, ctxKey{}, 1))
	defer cancelGrand()
	reqctx.AfterFunc(grand, ran(ch, "grand"))
	c.Cancel()
	expect(t, ch, "grand")
}

// A context of no Context: context.AfterFunc's behaviour.
func TestAfterFuncWithoutContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan string, 1)
	s := reqctx.AfterFunc(ctx, ran(ch, "plain"))
	cancel()
	expect(t, ch, "plain")
	if s.Stop() {
		t.Fatal("Stop after it ran: true")
	}
	var zero reqctx.Stop
	if zero.Stop() {
		t.Fatal("the zero Stop: true")
	}
}

// A parent that can end cancels the Context, and runs its functions.
func TestParentEnds(t *testing.T) {
	parent, cancel := context.WithCancel(context.Background())
	c := reqctx.New(parent)
	ch := make(chan string, 1)
	reqctx.AfterFunc(c, ran(ch, "f"))
	cancel()
	expect(t, ch, "f")
	if !errors.Is(c.Err(), context.Canceled) {
		t.Fatalf("Err %v after the parent ended", c.Err())
	}
}

// The point of the package: registering a function and stopping it costs
// no allocation (two fit the Context's own array), where
// context.AfterFunc costs several.
func TestNoAllocation(t *testing.T) {
	f := func() {}
	request := func(watch bool) {
		c := reqctx.New(context.Background())
		c.Done() // made by whoever selects on it, in both
		if watch {
			reqctx.AfterFunc(c, f).Stop()
		}
		c.Cancel()
	}
	without := testing.AllocsPerRun(100, func() { request(false) })
	with := testing.AllocsPerRun(100, func() { request(true) })
	if with != without {
		t.Fatalf("a request with AfterFunc and Stop: %.1f allocations, without: %.1f; want the same", with, without)
	}
}
