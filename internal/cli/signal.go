package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"
)

// Stopper turns SIGINT and SIGTERM into a command's stop: the first signal
// ends the command's context and prints on stderr what happens now (the
// command drains, for how long, or just stops); a second signal exits at
// once with 128+the signal's number. Its methods are safe for concurrent
// use.
type Stopper struct {
	ctx    context.Context
	cancel context.CancelFunc
	sigs   chan os.Signal
	stderr io.Writer
	exit   func(code int)
	quit   chan struct{} // ends watch
	done   chan struct{} // watch has returned

	mu    sync.Mutex
	first os.Signal
	drain time.Duration // announced by Draining
	what  string
}

type stopperKey struct{}

// NotifyStop starts watching SIGINT and SIGTERM. Call Stop when the
// command has returned.
func NotifyStop(stderr io.Writer) *Stopper {
	s := newStopper(make(chan os.Signal, 2), stderr, os.Exit)
	signal.Notify(s.sigs, os.Interrupt, syscall.SIGTERM)
	return s
}

// newStopper is NotifyStop with its signals, and its exit, given (tests).
func newStopper(sigs chan os.Signal, stderr io.Writer, exit func(int)) *Stopper {
	s := &Stopper{sigs: sigs, stderr: stderr, exit: exit, quit: make(chan struct{}), done: make(chan struct{})}
	s.ctx, s.cancel = context.WithCancel(context.WithValue(context.Background(), stopperKey{}, s))
	go s.watch()
	return s
}

// Context ends at the first signal.
func (s *Stopper) Context() context.Context { return s.ctx }

// Signal returns the first signal received, or nil.
func (s *Stopper) Signal() os.Signal {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.first
}

// Stop stops watching signals and returns once the watcher has ended.
func (s *Stopper) Stop() {
	signal.Stop(s.sigs)
	select {
	case <-s.quit:
	default:
		close(s.quit)
	}
	<-s.done
	s.cancel()
}

func (s *Stopper) watch() {
	defer close(s.done)
	var sig os.Signal
	select {
	case <-s.quit:
		return
	case sig = <-s.sigs:
	}
	s.mu.Lock()
	s.first = sig
	msg := "stopping"
	if s.drain > 0 {
		msg = fmt.Sprintf("draining for up to %v (%s)", s.drain, s.what)
	}
	s.mu.Unlock()
	fmt.Fprintf(s.stderr, "sluice: %v: %s; send it again to exit at once\n", sig, msg)
	s.cancel()
	select {
	case <-s.quit:
	case sig = <-s.sigs:
		fmt.Fprintf(s.stderr, "sluice: %v again: exiting now\n", sig)
		s.exit(SignalCode(sig))
	}
}

// Draining announces that the command, when ctx (a Stopper's context)
// ends, lets work in flight finish for up to d; what says which work. The
// first signal's message then says so.
func Draining(ctx context.Context, d time.Duration, what string) {
	s, _ := ctx.Value(stopperKey{}).(*Stopper)
	if s == nil {
		return
	}
	s.mu.Lock()
	s.drain, s.what = d, what
	s.mu.Unlock()
}

// SignalCode is the exit status of a command cut short by sig: 128 plus
// its number, as shells report it (130 for SIGINT, 143 for SIGTERM).
func SignalCode(sig os.Signal) int {
	if n, ok := sig.(syscall.Signal); ok {
		return 128 + int(n)
	}
	return 128 + int(syscall.SIGINT)
}
