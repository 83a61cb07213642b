//go:build linux

package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestTenThousandStreams holds 10,000 concurrent SSE streams through one
// tunnel, for each protocol in turn, checks that every stream connects and
// receives events, and reports the edge's and agent's memory per stream.
//
// The clients and the SSE upstream are sseload processes (built from
// internal/sseload without -race): this process runs under the race
// detector, which allows 8128 goroutines, and each process stays within
// the file limit (10,000 sockets in each of clients, edge, agent and
// upstream). It does not run in parallel with other tests, which it would
// starve of CPU and file descriptors.
func TestTenThousandStreams(t *testing.T) {
	n := 10000
	if testing.Short() {
		n = 1000
	}
	raiseFileLimit(t, n)
	bin := buildSSELoad(t)
	for _, proto := range protocols {
		t.Run(proto, func(t *testing.T) { testManyStreams(t, bin, proto, n) })
	}
}

// raiseFileLimit raises the soft RLIMIT_NOFILE to the hard limit, for the
// child processes to inherit, or skips the test if even that is too low
// for n sockets in one process.
func raiseFileLimit(t testing.TB, n int) {
	t.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatalf("getrlimit: %v", err)
	}
	if need := uint64(n) + 1000; lim.Max < need {
		t.Skipf("the hard file limit is %d; %d streams need %d per process", lim.Max, n, need)
	}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			t.Fatalf("setrlimit: %v", err)
		}
	}
}

// buildSSELoad builds internal/sseload into a temporary directory.
func buildSSELoad(t testing.TB) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "sseload")
	build := exec.Command("go", "build", "-o", bin, "./internal/sseload")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building sseload: %v\n%s", err, out)
	}
	return bin
}

// loadProc is a running sseload process. Closing stdin makes it exit.
type loadProc struct {
	*proc
	stdin io.WriteCloser
}

// startLoad starts bin like startProc starts sluice; the process is killed
// in cleanup if it did not exit by then.
func startLoad(t testing.TB, bin, label string, args ...string) *loadProc {
	t.Helper()
	p := &proc{label: label, stdout: newOutBuf(), stderr: newOutBuf(), done: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	stdin, err := p.cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s %v: %v", bin, args, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		stdin.Close()
		p.kill()
		if t.Failed() {
			t.Logf("%s (%s) exited: %v\n--- stdout:\n%s--- stderr:\n%s", p.label, strings.Join(args, " "), p.err, p.stdout, p.stderr)
		}
	})
	return &loadProc{proc: p, stdin: stdin}
}

// loadSummary is the JSON line "sseload clients" prints.
type loadSummary struct {
	Streams        int     `json:"streams"`
	Connected      int     `json:"connected"`
	Failed         int     `json:"failed"`
	Dropped        int     `json:"dropped"`
	Retries        int     `json:"retries"`
	Fresh          int     `json:"fresh"`
	MinEvents      int64   `json:"min_events"`
	TotalEvents    int64   `json:"total_events"`
	ConnectSeconds float64 `json:"connect_seconds"`
	FreshSeconds   float64 `json:"fresh_seconds"`
	DeliveryP50ms  float64 `json:"delivery_p50_ms"`
	DeliveryP99ms  float64 `json:"delivery_p99_ms"`
	DeliveryMaxms  float64 `json:"delivery_max_ms"`
	FirstError     string  `json:"first_error"`
}

// openFiles counts a process's open file descriptors.
func openFiles(pid int) int {
	ents, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/fd")
	if err != nil {
		return -1
	}
	return len(ents)
}

func testManyStreams(t *testing.T, bin, proto string, n int) {
	const token = "scale-token"
	began := time.Now()

	up := startLoad(t, bin, "sseload upstream", "upstream", "-interval", "1s")
	if !up.waitOutput(up.stdout, "\n", 15*time.Second) {
		t.Fatalf("sseload upstream did not start (exited: %v, %v)\nstderr: %s", up.exited(), up.err, up.stderr)
	}
	upAddr, ok := strings.CutPrefix(strings.TrimSpace(up.stdout.String()), "listening ")
	if !ok {
		t.Fatalf("sseload upstream printed %q", up.stdout)
	}
	_, portStr, _ := strings.Cut(upAddr, ":")
	upPort, err := strconv.Atoi(portStr)
	if err != nil {
		t.Fatalf("sseload upstream address %q: %v", upAddr, err)
	}
	upstreamStreams := func() (int, error) {
		// No keep-alive: nothing is left behind for goleak.
		c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
		resp, err := c.Get("http://" + upAddr + "/stats")
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		var v struct{ Streams int }
		err = json.NewDecoder(resp.Body).Decode(&v)
		return v.Streams, err
	}

	e := startEdge(t, token, "--max-streams", strconv.Itoa(n+2000))
	a := startAgent(t, e, proto, "scale", token, upPort, "--quiet")
	ePid, aPid := e.cmd.Process.Pid, a.cmd.Process.Pid
	edgeBefore, agentBefore := rssKB(ePid), rssKB(aPid)

	start := time.Now()
	cl := startLoad(t, bin, "sseload clients", "clients",
		"-addr", e.addr, "-host", fmt.Sprintf("scale.localhost:%d", e.port),
		"-n", strconv.Itoa(n), "-concurrency", "200", "-timeout", "90s")
	if !cl.waitOutput(cl.stdout, "\n", 150*time.Second) {
		t.Fatalf("sseload clients printed no summary (exited: %v, %v)\nstderr: %s", cl.exited(), cl.err, cl.stderr)
	}
	var s loadSummary
	if err := json.Unmarshal([]byte(cl.stdout.String()), &s); err != nil {
		t.Fatalf("sseload clients summary: %v: %q", err, cl.stdout)
	}
	ready := time.Since(start)

	// Held: every stream open, events flowing.
	edgeHeld, agentHeld := rssKB(ePid), rssKB(aPid)
	edgeFiles, agentFiles := openFiles(ePid), openFiles(aPid)
	upOpen, upErr := upstreamStreams()

	t.Logf("%s: %d streams connected in %.2fs (%d failed, %d dropped, %d retried attempts); "+
		"every stream had an event sent after the last connected %.2fs later; "+
		"delivery of those events p50 %.1f ms, p99 %.1f ms, max %.1f ms; fewest events on a stream %d",
		proto, s.Connected, s.ConnectSeconds, s.Failed, s.Dropped, s.Retries,
		s.FreshSeconds, s.DeliveryP50ms, s.DeliveryP99ms, s.DeliveryMaxms, s.MinEvents)
	t.Logf("%s: edge RSS %d -> %d MiB (%.1f KiB per held stream, %d fds); agent RSS %d -> %d MiB (%.1f KiB per held stream, %d fds); upstream holds %d streams",
		proto, edgeBefore>>10, edgeHeld>>10, float64(edgeHeld-edgeBefore)/float64(n), edgeFiles,
		agentBefore>>10, agentHeld>>10, float64(agentHeld-agentBefore)/float64(n), agentFiles, upOpen)

	if s.Connected != n || s.Failed != 0 {
		t.Errorf("%d of %d streams connected, %d failed; first error: %s", s.Connected, n, s.Failed, s.FirstError)
	}
	if s.Dropped != 0 {
		t.Errorf("%d streams ended while held; first error: %s", s.Dropped, s.FirstError)
	}
	if s.Fresh != n || s.MinEvents < 1 {
		t.Errorf("%d of %d streams received an event sent after all were connected (fewest events on a stream: %d); first error: %s",
			s.Fresh, n, s.MinEvents, s.FirstError)
	}
	if upErr != nil || upOpen != n {
		t.Errorf("the upstream holds %d streams (%v), want %d", upOpen, upErr, n)
	}
	if e.exited() || a.exited() {
		t.Fatalf("edge exited: %v, agent exited: %v", e.exited(), a.exited())
	}

	// The clients leave: the upstream's streams must all end.
	cl.stdin.Close()
	left := time.Now()
	select {
	case <-cl.done:
		if cl.err != nil {
			t.Errorf("sseload clients: %v\nstderr: %s", cl.err, cl.stderr)
		}
	case <-time.After(30 * time.Second):
		t.Errorf("sseload clients did not exit 30s after its stdin closed")
	}
	for {
		open, err := upstreamStreams()
		if err == nil && open == 0 {
			t.Logf("%s: the upstream's streams all ended %v after the clients left; whole run %v (streams held after %v)",
				proto, time.Since(left).Round(time.Millisecond), time.Since(began).Round(time.Millisecond), ready.Round(time.Millisecond))
			break
		}
		if time.Since(left) > 30*time.Second {
			t.Fatalf("30s after the clients left, the upstream still holds %d streams (%v)", open, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
