package e2e

import (
	"errors"
	"fmt"
	"net/http"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Issue 11, finding 12: Ctrl-C on an edge says that it drains and for how
// long; a second Ctrl-C exits at once (130), even with a stream in flight
// and a long grace period; "sluice help" documents the exit statuses.
func TestEdgeSecondSignal(t *testing.T) {
	t.Parallel()
	up := newTestUpstream(t)
	up.mux.HandleFunc("/stream", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "data: 0\n\n")
		http.NewResponseController(w).Flush()
		select {
		case <-r.Context().Done():
		case <-up.stop:
		}
	})
	e := startEdge(t, "T", "--shutdown-grace", "10m")
	startAgent(t, e, "auto", "held", "T", up.port)
	c := tunnelClient(t, e.addr)
	resp, err := c.Get(e.publicURL("held") + "/stream")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if _, err := resp.Body.Read(make([]byte, 16)); err != nil {
		t.Fatal(err)
	}

	e.cmd.Process.Signal(syscall.SIGINT)
	if !e.waitOutput(e.stderr, "draining for up to 10m0s", time.Minute) {
		t.Fatalf("no draining message after SIGINT\nstderr: %s", e.stderr)
	}
	if e.exited() {
		t.Fatalf("the edge exited at the first signal, with a stream in flight: %v", e.err)
	}
	e.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-e.done:
	case <-time.After(time.Minute): // far below the 10 min grace
		t.Fatalf("the edge did not exit at the second signal\nstderr: %s", e.stderr)
	}
	var ee *exec.ExitError
	if !errors.As(e.err, &ee) || ee.ExitCode() != 130 {
		t.Errorf("exit after the second SIGINT: %v, want 130", e.err)
	}
	if !strings.Contains(e.stderr.String(), "exiting now") {
		t.Errorf("stderr: %s", e.stderr)
	}

	r := run(t, 20*time.Second, "help")
	for _, want := range []string{"Exit status", "130/143"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("sluice help lacks %q:\n%s", want, r.stdout)
		}
	}
}
