package cli

import (
	"bytes"
	"errors"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// The first signal ends the context and says that the command drains, and
// for how long; the second exits at once with 128+signal.
func TestStopperTwoSignals(t *testing.T) {
	sigs := make(chan os.Signal, 2)
	var out lockedBuffer
	exited := make(chan int, 1)
	s := newStopper(sigs, &out, func(code int) { exited <- code })
	Draining(s.Context(), 10*time.Second, "requests in flight may finish")
	sigs <- syscall.SIGTERM
	<-s.Context().Done()
	if s.Signal() != syscall.SIGTERM {
		t.Errorf("Signal() = %v", s.Signal())
	}
	sigs <- os.Interrupt
	select {
	case code := <-exited:
		if code != 130 {
			t.Errorf("second signal: exit %d, want 130", code)
		}
	case <-time.After(time.Minute):
		t.Fatal("the second signal did not exit")
	}
	s.Stop()
	got := out.String()
	for _, want := range []string{"draining for up to 10s (requests in flight may finish)", "again to exit at once", "exiting now"} {
		if !strings.Contains(got, want) {
			t.Errorf("stderr %q lacks %q", got, want)
		}
	}
}

// Without a drain, the first signal says "stopping"; Stop without a signal
// ends the watcher.
func TestStopperPlain(t *testing.T) {
	sigs := make(chan os.Signal, 2)
	var out lockedBuffer
	s := newStopper(sigs, &out, func(int) { t.Error("exit called") })
	sigs <- os.Interrupt
	<-s.Context().Done()
	s.Stop()
	if got := out.String(); !strings.Contains(got, "interrupt: stopping") {
		t.Errorf("stderr %q", got)
	}
	s2 := newStopper(make(chan os.Signal, 1), &out, func(int) { t.Error("exit called") })
	s2.Stop()
	if s2.Signal() != nil {
		t.Errorf("Signal() = %v without a signal", s2.Signal())
	}
}

func TestExitStatus(t *testing.T) {
	cases := []struct {
		err    error
		sig    os.Signal
		server bool
		want   int
	}{
		{nil, nil, false, 0},
		{nil, nil, true, 0},
		{nil, os.Interrupt, true, 0},       // a server drained after Ctrl-C
		{nil, syscall.SIGTERM, true, 0},    // ... or after SIGTERM
		{nil, os.Interrupt, false, 130},    // a client cut short
		{nil, syscall.SIGTERM, false, 143}, // likewise
		{errors.New("x"), os.Interrupt, false, 130},
		{errors.New("x"), os.Interrupt, true, 1},
		{errors.New("x"), nil, false, 1},
		{Usagef("bad"), os.Interrupt, false, 2},
		{ErrHelp, nil, false, 0},
	}
	for _, c := range cases {
		if got := ExitStatus(c.err, c.sig, c.server); got != c.want {
			t.Errorf("ExitStatus(%v, %v, %v) = %d, want %d", c.err, c.sig, c.server, got, c.want)
		}
	}
}
