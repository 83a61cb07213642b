//go:build linux

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sluicehq/sluice/sse"
)

// browserDeadline bounds the whole exchange with Chromium: its start alone
// takes seconds on a small CI machine.
const browserDeadline = 60 * time.Second

// browserPage is served at "/". Its script opens an EventSource on /events and
// reports everything it sees (open, error, each event) to /report, one POST
// at a time so that the reports arrive in the order they happened.
const browserPage = `<!doctype html>
<html>
<head><meta charset="utf-8"><title>sluice sse e2e</title></head>
<body>
<script>
let seq = 0;
let chain = Promise.resolve();
function report(r) {
  r.seq = seq++;
  const body = JSON.stringify(r);
  chain = chain
    .then(() => fetch('/report', {method: 'POST', body: body}))
    .catch(() => {});
}
window.addEventListener('error', (e) => report({kind: 'jserror', data: String(e.message)}));
try {
  const es = new EventSource('/events');
  es.addEventListener('open', () => report({kind: 'open', readyState: es.readyState}));
  es.addEventListener('error', () => report({kind: 'error', readyState: es.readyState}));
  const onEvent = (e) => report({
    kind: 'event', type: e.type, data: e.data,
    lastEventId: e.lastEventId, origin: e.origin,
  });
  es.addEventListener('message', onEvent);
  es.addEventListener('tick', onEvent);
} catch (e) {
  report({kind: 'jserror', data: String(e)});
}
</script>
</body>
</html>
`

// browserReport is what the page POSTs to /report.
type browserReport struct {
	Seq         int    `json:"seq"`
	Kind        string `json:"kind"` // open, error, event, jserror
	ReadyState  int    `json:"readyState"`
	Type        string `json:"type"`
	Data        string `json:"data"`
	LastEventID string `json:"lastEventId"`
	Origin      string `json:"origin"`
}

func (r browserReport) String() string {
	switch r.Kind {
	case "event":
		return fmt.Sprintf("#%d event type=%q data=%q lastEventId=%q origin=%q",
			r.Seq, r.Type, r.Data, r.LastEventID, r.Origin)
	case "open", "error":
		return fmt.Sprintf("#%d %s readyState=%d", r.Seq, r.Kind, r.ReadyState)
	default:
		return fmt.Sprintf("#%d %s %q", r.Seq, r.Kind, r.Data)
	}
}

// eventsRequest is what the /events handler saw of one connection.
type eventsRequest struct {
	n           int
	lastEventID string
	accept      string
}

// The events the server sends: 1..3 on the first connection, which it then
// drops, and 4..5 on the reconnection.
var (
	firstEvents = []sse.Event{
		{ID: "1", Data: "one"},
		{ID: "2", Type: "tick", Data: "line one\nline two\n\nline four"},
		{ID: "3", Data: "three"},
	}
	secondEvents = []sse.Event{
		{ID: "4", Data: "grüße ✓"},
		{ID: "5", Type: "tick", Data: "five"},
	}
)

// TestBrowserEventSource runs a real headless Chromium against sse.Stream: the
// page's EventSource must receive events 1..3, reconnect after the server
// drops it with Last-Event-ID: 3, and receive 4..5.
func TestBrowserEventSource(t *testing.T) {
	chromium := findChromium(t)

	stop := make(chan struct{}) // closed in cleanup: handlers return
	reports := make(chan browserReport, 64)
	requests := make(chan eventsRequest, 16)
	var conns atomic.Int32

	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		_, _ = w.Write([]byte(browserPage))
	})
	mux.HandleFunc("POST /report", func(w http.ResponseWriter, r *http.Request) {
		var rep browserReport
		if err := json.NewDecoder(r.Body).Decode(&rep); err != nil {
			t.Errorf("bad report from the page: %v", err)
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		select {
		case reports <- rep:
		case <-stop:
		}
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("GET /events", func(w http.ResponseWriter, r *http.Request) {
		n := int(conns.Add(1))
		select {
		case requests <- eventsRequest{n, r.Header.Get("Last-Event-ID"), r.Header.Get("Accept")}:
		default:
		}
		if n > 2 {
			// Not expected. 204 tells EventSource to stop reconnecting.
			w.WriteHeader(http.StatusNoContent)
			return
		}
		s, err := sse.NewStream(w, r, sse.StreamConfig{Retry: 200 * time.Millisecond})
		if err != nil {
			t.Errorf("connection %d: NewStream: %v", n, err)
			return
		}
		events := firstEvents
		if n == 2 {
			events = secondEvents
		}
		for _, e := range events {
			if err := s.Send(r.Context(), e); err != nil {
				t.Errorf("connection %d: Send id %s: %v", n, e.ID, err)
				break
			}
		}
		if n == 2 {
			// Keep the reconnection open until the test ends.
			select {
			case <-stop:
			case <-s.Done():
			}
			_ = s.Close()
			return
		}
		// Drop the first connection once its events are written.
		if err := s.Close(); err != nil {
			t.Errorf("connection 1: Close: %v", err)
		}
	})

	srv := httptest.NewServer(mux)
	t.Cleanup(func() {
		close(stop)
		srv.Close()
	})

	start := time.Now()
	browser := startChromium(t, chromium, srv.URL+"/")

	deadline := time.NewTimer(browserDeadline)
	defer deadline.Stop()
	var got []browserReport
	for events := 0; events < len(firstEvents)+len(secondEvents); {
		select {
		case rep := <-reports:
			if len(got) == 0 {
				t.Logf("first report from the page after %v", time.Since(start).Round(time.Millisecond))
			}
			got = append(got, rep)
			switch rep.Kind {
			case "event":
				events++
			case "jserror":
				t.Fatalf("JavaScript error in the page: %s\nreports so far:\n%s", rep.Data, reportList(got))
			}
		case <-browser.exited:
			t.Fatalf("chromium exited early (%v)\nreports so far:\n%s",
				browser.waitErr, reportList(got))
		case <-deadline.C:
			t.Fatalf("no complete exchange after %v\nreports so far:\n%s",
				browserDeadline, reportList(got))
		}
	}
	t.Logf("all events received after %v", time.Since(start).Round(time.Millisecond))

	// What the page saw, in order: the first connection opens and delivers
	// 1..3, its end fires error with readyState CONNECTING, the reconnection
	// opens and delivers 4..5.
	origin := srv.URL
	var want []browserReport
	add := func(r browserReport) {
		r.Seq = len(want)
		want = append(want, r)
	}
	addEvents := func(events []sse.Event) {
		for _, e := range events {
			typ := e.Type
			if typ == "" {
				typ = "message"
			}
			add(browserReport{Kind: "event", Type: typ, Data: e.Data, LastEventID: e.ID, Origin: origin})
		}
	}
	add(browserReport{Kind: "open", ReadyState: 1})
	addEvents(firstEvents)
	add(browserReport{Kind: "error", ReadyState: 0})
	add(browserReport{Kind: "open", ReadyState: 1})
	addEvents(secondEvents)
	if !equalReports(got, want) {
		t.Errorf("the page saw:\n%s\nwant:\n%s", reportList(got), reportList(want))
	}

	// What the server saw: exactly two connections, the second one resuming
	// after event 3.
	if n := conns.Load(); n != 2 {
		t.Errorf("%d connections to /events, want 2", n)
	}
	var reqs []eventsRequest
	for len(reqs) < 2 {
		select {
		case r := <-requests:
			reqs = append(reqs, r)
		default:
			t.Fatalf("only %d requests to /events recorded", len(reqs))
		}
	}
	for i, wantID := range []string{"", "3"} {
		r := reqs[i]
		if r.lastEventID != wantID {
			t.Errorf("connection %d: Last-Event-ID %q, want %q", r.n, r.lastEventID, wantID)
		}
		if r.accept != "text/event-stream" {
			t.Errorf("connection %d: Accept %q, want text/event-stream", r.n, r.accept)
		}
	}
}

func equalReports(a, b []browserReport) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func reportList(rs []browserReport) string {
	if len(rs) == 0 {
		return "\t(none)"
	}
	var b strings.Builder
	for i, r := range rs {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString("\t" + r.String())
	}
	return b.String()
}

// findChromium returns the path of a Chromium (or Chrome) binary. Without one
// it skips the test, or fails it under CI, where .ci/run installs Chromium.
func findChromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("chromium not found; .ci/run must install it")
	}
	t.Skip("chromium not found (Debian: apt-get install chromium); skipping the browser test")
	return ""
}

// runningBrowser is a Chromium started by startChromium.
type runningBrowser struct {
	logPath string
	exited  chan struct{} // closed when the main process has exited
	waitErr error         // cmd.Wait's result; read after exited is closed
}

// output returns what Chromium wrote to stdout and stderr so far.
func (b *runningBrowser) output() string {
	out, err := os.ReadFile(b.logPath)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", b.logPath, err)
	}
	const max = 8 << 10
	if len(out) > max {
		out = append([]byte("...\n"), out[len(out)-max:]...)
	}
	return string(bytes.TrimSpace(out))
}

// startChromium starts a headless Chromium on url in its own process group,
// with a fresh profile and home directory. A cleanup kills the whole group,
// and the crash handler that leaves it, and waits until none of them is left.
func startChromium(t *testing.T, chromium, url string) *runningBrowser {
	t.Helper()
	// Created before the kill cleanup is registered, so removed after it ran.
	dir := t.TempDir()
	home := filepath.Join(dir, "home")
	profile := filepath.Join(dir, "profile")
	for _, d := range []string{home, profile} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	logPath := filepath.Join(dir, "chromium.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()

	cmd := exec.Command(chromium,
		"--headless",
		"--no-sandbox", // the tests run as root in CI
		"--disable-gpu",
		"--disable-dev-shm-usage",
		"--disable-quic",
		"--no-first-run",
		"--no-default-browser-check",
		"--disable-background-networking",
		"--disable-component-update",
		"--disable-sync",
		"--disable-extensions",
		"--mute-audio",
		"--user-data-dir="+profile,
		url,
	)
	// The marker finds the processes that leave the process group.
	marker := "SLUICE_E2E_CHROMIUM=" + dir
	cmd.Env = append(os.Environ(),
		marker,
		"HOME="+home,
		"XDG_CONFIG_HOME="+filepath.Join(home, ".config"),
		"XDG_CACHE_HOME="+filepath.Join(home, ".cache"),
	)
	// A file, not a pipe: no copying goroutine, and Wait does not wait for
	// Chromium's children to close it.
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", chromium, err)
	}
	pgid := cmd.Process.Pid

	b := &runningBrowser{logPath: logPath, exited: make(chan struct{})}
	go func() {
		b.waitErr = cmd.Wait()
		close(b.exited)
	}()
	t.Cleanup(func() {
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-b.exited
		if err := waitBrowserGone(pgid, marker, 10*time.Second); err != nil {
			t.Error(err)
		}
		if t.Failed() {
			t.Logf("chromium output:\n%s", b.output())
		}
	})
	return b
}

// waitBrowserGone kills and waits for every live process of a Chromium: those
// in its process group pgid and those carrying its environment marker, which
// finds chrome_crashpad_handler, a daemon that leaves the group with setsid.
// Zombies do not count: nothing may reap Chromium's orphans.
func waitBrowserGone(pgid int, marker string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		live, err := browserProcesses(pgid, marker)
		if err != nil || len(live) == 0 {
			return err
		}
		for _, pid := range live {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("chromium processes %v still alive %v after SIGKILL", live, timeout)
		case <-tick.C:
		}
	}
}

// browserProcesses lists the processes, zombies excepted, that are in group
// pgid or have marker ("KEY=VALUE") in their environment. It reads
// /proc/PID/stat ("PID (COMM) STATE PPID PGRP ...") and /proc/PID/environ.
func browserProcesses(pgid int, marker string) ([]int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	var live []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue // gone meanwhile
		}
		i := bytes.LastIndexByte(stat, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(stat[i+1:]))
		if len(f) < 3 || f[0] == "Z" || f[0] == "X" {
			continue
		}
		if g, err := strconv.Atoi(f[2]); err == nil && g == pgid {
			live = append(live, pid)
			continue
		}
		env, err := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
		if err != nil {
			continue
		}
		for _, kv := range bytes.Split(env, []byte{0}) {
			if string(kv) == marker {
				live = append(live, pid)
				break
			}
		}
	}
	return live, nil
}
