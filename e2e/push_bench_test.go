//go:build linux

package e2e

import (
	"context"
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

	"github.com/sluicehq/sluice/internal/sseload"
	"github.com/sluicehq/sluice/store"
)

// BenchmarkPushFanout measures POST /api/agents/notify with many managed
// agents connected: the time from the edge sending config_changed until
// every push stream has read it, and the edge's memory per push
// connection. SLUICE_PUSH_N sets the number of agents (default 10,000).
// One iteration takes tens of seconds; run it once:
//
//	go test -run xxx -bench BenchmarkPushFanout -benchtime 1x ./e2e
//
// The push streams are held by "sseload push" (see internal/sseload for
// why load lives in processes of its own); this process creates the
// tokens, starts the edge and the load, and reads /proc. Allocations are
// not reported: those of this process are not what is measured.
func BenchmarkPushFanout(b *testing.B) {
	n := 10000
	if s := os.Getenv("SLUICE_PUSH_N"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 1 {
			b.Fatalf("SLUICE_PUSH_N=%q: want a positive number", s)
		}
		n = v
	}
	raiseFileLimit(b, n)
	bin := buildSSELoad(b)
	setup := time.Now()
	dataDir, tokensFile := createAgentTokens(b, n)
	b.Logf("%d agent tokens created in %v", n, time.Since(setup).Round(time.Millisecond))

	var sum pushResult
	for b.Loop() {
		r := pushFanout(b, bin, dataDir, tokensFile, n)
		sum.maxMs += r.maxMs
		sum.p50Ms += r.p50Ms
		sum.p99Ms += r.p99Ms
		sum.edgeKBPerConn += r.edgeKBPerConn
		sum.notifyMs += r.notifyMs
		sum.connectSeconds += r.connectSeconds
	}
	iters := float64(b.N)
	b.ReportMetric(sum.maxMs/iters, "all-received-ms")
	b.ReportMetric(sum.p50Ms/iters, "p50-ms")
	b.ReportMetric(sum.p99Ms/iters, "p99-ms")
	b.ReportMetric(sum.edgeKBPerConn/iters, "edge-KiB/conn")
	b.ReportMetric(sum.notifyMs/iters, "notify-ms")
	b.ReportMetric(sum.connectSeconds/iters, "connect-s")
}

// TestPushFanout runs the benchmark's path with 200 agents: every one of
// them receives the config_changed sent by POST /api/agents/notify.
func TestPushFanout(t *testing.T) {
	t.Parallel()
	const n = 200
	bin := buildSSELoad(t)
	dataDir, tokensFile := createAgentTokens(t, n)
	pushFanout(t, bin, dataDir, tokensFile, n)
}

// createAgentTokens creates n agent tokens in a new SQLite store and writes
// their secrets, one a line, to a file. It returns the store's directory
// and the file.
func createAgentTokens(tb testing.TB, n int) (dataDir, tokensFile string) {
	tb.Helper()
	dataDir = tb.TempDir()
	st, err := store.Open(context.Background(), dataDir)
	if err != nil {
		tb.Fatal(err)
	}
	var secrets strings.Builder
	for i := range n {
		_, secret, err := st.CreateToken(context.Background(), store.KindAgent, fmt.Sprintf("push-%d", i))
		if err != nil {
			st.Close()
			tb.Fatalf("token %d: %v", i, err)
		}
		secrets.WriteString(secret + "\n")
	}
	if err := st.Close(); err != nil {
		tb.Fatal(err)
	}
	tokensFile = filepath.Join(tb.TempDir(), "tokens")
	if err := os.WriteFile(tokensFile, []byte(secrets.String()), 0o600); err != nil {
		tb.Fatal(err)
	}
	return dataDir, tokensFile
}

// pushResult is one run of pushFanout.
type pushResult struct {
	maxMs, p50Ms, p99Ms float64 // from sent_at until a stream read the event
	edgeKBPerConn       float64 // edge RSS growth per push connection, KiB
	notifyMs            float64 // the notify request's took_ms
	connectSeconds      float64 // until every stream was connected
}

// pushFanout starts an edge on dataDir, connects one push stream per token
// in tokensFile (n of them) with "sseload push", notifies every agent and
// checks that all received the event. It stops the edge and the load
// before it returns.
func pushFanout(tb testing.TB, bin, dataDir, tokensFile string, n int) pushResult {
	tb.Helper()
	began := time.Now()
	e := startLoad(tb, sluiceBin, "edge", "edge", "--listen", "127.0.0.1:0", "--domain", "localhost",
		"--data", dataDir, "--admin-token", "A")
	if !e.waitOutput(e.stderr, "; tunnels at", time.Minute) {
		tb.Fatalf("the edge did not start (exited: %v, %v)\nstderr: %s", e.exited(), e.err, e.stderr)
	}
	_, rest, _ := strings.Cut(e.stderr.String(), "sluice edge listening on ")
	addr, _, _ := strings.Cut(rest, ";")
	ePid := e.cmd.Process.Pid
	// No keep-alive: nothing is left behind for goleak.
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 60 * time.Second}
	edgeBefore, goBefore := rssKB(ePid), goMetrics(c, addr)

	cl := startLoad(tb, bin, "sseload push", "push", "-addr", addr, "-tokens", tokensFile,
		"-concurrency", "200", "-timeout", "120s")
	if !cl.waitOutput(cl.stdout, "\n", 150*time.Second) {
		tb.Fatalf("sseload push never got ready (exited: %v, %v)\nstderr: %s", cl.exited(), cl.err, cl.stderr)
	}
	ready := strings.TrimSpace(cl.stdout.String())
	if ready != fmt.Sprintf("ready %d", n) {
		tb.Errorf("sseload push printed %q, want \"ready %d\"", ready, n)
	}
	edgeHeld, edgeFiles, goHeld := rssKB(ePid), openFiles(ePid), goMetrics(c, addr)
	req, _ := http.NewRequest("POST", "http://"+addr+"/api/agents/notify", nil)
	req.Header.Set("Authorization", "Bearer A")
	resp, err := c.Do(req)
	if err != nil {
		tb.Fatalf("notify: %v", err)
	}
	var notified struct {
		Notified int     `json:"notified"`
		TookMs   float64 `json:"took_ms"`
	}
	err = json.NewDecoder(resp.Body).Decode(&notified)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 {
		tb.Fatalf("notify: status %d, %v", resp.StatusCode, err)
	}

	if !cl.waitOutput(cl.stdout, "}\n", 150*time.Second) {
		tb.Fatalf("sseload push printed no summary (exited: %v, %v)\nstderr: %s", cl.exited(), cl.err, cl.stderr)
	}
	_, line, _ := strings.Cut(cl.stdout.String(), "\n")
	var s sseload.PushSummary
	if err := json.Unmarshal([]byte(line), &s); err != nil {
		tb.Fatalf("sseload push summary: %v: %q", err, line)
	}
	edgeAfter := rssKB(ePid)
	r := pushResult{maxMs: s.Maxms, p50Ms: s.P50ms, p99Ms: s.P99ms, notifyMs: notified.TookMs, connectSeconds: s.ConnectSeconds}
	if s.Connected > 0 {
		r.edgeKBPerConn = float64(edgeHeld-edgeBefore) / float64(s.Connected)
	}

	tb.Logf("%d push streams connected in %.2fs (%d failed, %d retried attempts); notify reached %d in %.1f ms (took_ms); "+
		"%d streams received config_changed: p50 %.1f ms, p99 %.1f ms, all within %.1f ms of sent_at",
		s.Connected, s.ConnectSeconds, s.Failed, s.Retries, notified.Notified, notified.TookMs,
		s.Received, s.P50ms, s.P99ms, s.Maxms)
	tb.Logf("edge RSS %d KiB idle, %d KiB holding %d push streams (%.1f KiB per stream, %d fds), %d KiB after the event",
		edgeBefore, edgeHeld, s.Connected, r.edgeKBPerConn, edgeFiles, edgeAfter)
	if s.Connected > 0 {
		per := func(name string, unit float64) float64 {
			return (goHeld[name] - goBefore[name]) / unit / float64(s.Connected)
		}
		tb.Logf("per push stream, the edge's Go runtime holds %.2f goroutines, %.1f KiB of goroutine stacks, %.1f KiB of heap in use (%.1f KiB of heap objects)",
			per("go_goroutines", 1), per("go_memstats_stack_inuse_bytes", 1024),
			per("go_memstats_heap_inuse_bytes", 1024), per("go_memstats_heap_alloc_bytes", 1024))
	}

	if s.Connected != n || s.Failed != 0 {
		tb.Errorf("%d of %d push streams connected, %d failed; first error: %s", s.Connected, n, s.Failed, s.FirstError)
	}
	if notified.Notified != n {
		tb.Errorf("notify reached %d agents, want %d", notified.Notified, n)
	}
	if s.Received != n || s.Dropped != 0 {
		tb.Errorf("%d of %d push streams received config_changed (%d dropped); first error: %s", s.Received, n, s.Dropped, s.FirstError)
	}

	cl.stdin.Close()
	select {
	case <-cl.done:
		if cl.err != nil {
			tb.Errorf("sseload push: %v\nstderr: %s", cl.err, cl.stderr)
		}
	case <-time.After(time.Minute):
		tb.Errorf("sseload push did not exit a minute after its stdin closed")
	}
	e.kill()
	tb.Logf("whole run %v", time.Since(began).Round(time.Millisecond))
	return r
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

// openFiles counts a process's open file descriptors.
func openFiles(pid int) int {
	ents, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/fd")
	if err != nil {
		return -1
	}
	return len(ents)
}

// goMetrics reads the edge's Go runtime gauges from /metrics; nil if it
// cannot.
func goMetrics(c *http.Client, addr string) map[string]float64 {
	resp, err := c.Get("http://" + addr + "/metrics")
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil
	}
	m := make(map[string]float64)
	for line := range strings.Lines(string(b)) {
		name, value, ok := strings.Cut(strings.TrimSpace(line), " ")
		if !ok || !strings.HasPrefix(name, "go_") {
			continue
		}
		if v, err := strconv.ParseFloat(value, 64); err == nil {
			m[name] = v
		}
	}
	return m
}
