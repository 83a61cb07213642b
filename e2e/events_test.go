package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	neturl "net/url"
	"os/exec"
	"reflect"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

type result struct {
	stdout, stderr string
	code           int
}

// run runs the sluice binary with args and a deadline.
func run(t *testing.T, timeout time.Duration, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, sluiceBin, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("sluice %v did not end in %v\nstdout: %s\nstderr: %s", args, timeout, out.String(), errb.String())
	}
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return result{out.String(), errb.String(), code}
}

// feed is an upstream that answers each request with the next body of a
// script and records the requests.
type feed struct {
	mu     sync.Mutex
	reqs   []*http.Request
	bodies []string
	srv    *httptest.Server
}

func newFeed(t *testing.T, bodies ...string) *feed {
	f := &feed{bodies: bodies}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		n := len(f.reqs)
		f.reqs = append(f.reqs, r)
		f.mu.Unlock()
		body := ""
		if n < len(f.bodies) {
			body = f.bodies[n]
		} else {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, body)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *feed) requests() []*http.Request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*http.Request(nil), f.reqs...)
}

func jsonLines(t *testing.T, out string) []map[string]any {
	t.Helper()
	var objs []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("line %q is not JSON: %v", line, err)
		}
		objs = append(objs, m)
	}
	return objs
}

func TestEventsJSON(t *testing.T) {
	t.Parallel()
	f := newFeed(t, ""+
		"data: before retry\n\n"+
		"retry: 1500\nid: 1\nevent: tick\ndata: a\ndata: b\n\n"+
		": comment\ndata: keeps id\n\n"+
		"id: 2\n\n"+ // no data: not dispatched, but sets the id
		"data: after empty block\n\n"+
		"id\ndata: id reset\n\n"+
		"data: \"quotes\" <tags> & ünïcode\n\n"+
		"data: unterminated")
	r := run(t, 20*time.Second, "events", f.srv.URL, "--json", "--no-reconnect")
	if r.code != 0 {
		t.Fatalf("exit %d, stderr: %s", r.code, r.stderr)
	}
	got := jsonLines(t, r.stdout)
	want := []map[string]any{
		{"type": "message", "data": "before retry", "id": "", "retry": nil},
		{"type": "tick", "data": "a\nb", "id": "1", "retry": 1500.0},
		{"type": "message", "data": "keeps id", "id": "1", "retry": 1500.0},
		{"type": "message", "data": "after empty block", "id": "2", "retry": 1500.0},
		{"type": "message", "data": "id reset", "id": "", "retry": 1500.0},
		{"type": "message", "data": "\"quotes\" <tags> & ünïcode", "id": "", "retry": 1500.0},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got\n%v\nwant\n%v", got, want)
	}
	// Exactly these keys, in this order, and no HTML escaping.
	first := strings.SplitN(r.stdout, "\n", 2)[0]
	if first != `{"type":"message","data":"before retry","id":"","retry":null}` {
		t.Fatalf("first line = %s", first)
	}
	if !strings.Contains(r.stdout, `<tags> &`) {
		t.Fatalf("HTML-escaped output: %s", r.stdout)
	}
	if n := len(f.requests()); n != 1 {
		t.Fatalf("%d requests with --no-reconnect", n)
	}
}

func TestEventsHumanOutput(t *testing.T) {
	t.Parallel()
	f := newFeed(t, "id: 42\nevent: tick\ndata: line one\ndata: line two\n\ndata: plain\n\n")
	r := run(t, 20*time.Second, "events", "--no-reconnect", f.srv.URL)
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	want := "event: tick (id 42)\nline one\nline two\n\nevent: message (id 42)\nplain\n\n"
	if r.stdout != want {
		t.Fatalf("stdout = %q, want %q", r.stdout, want)
	}
}

func TestEventsHeadersAndLastEventID(t *testing.T) {
	t.Parallel()
	f := newFeed(t, "data: x\n\n")
	r := run(t, 20*time.Second, "events", f.srv.URL, "--no-reconnect", "--last-event-id", "41",
		"-H", "Authorization: Bearer secret", "-H", "X-Trace: a", "-H", "X-Trace: b", "-H", "Host: demo.localhost")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	req := f.requests()[0]
	checks := map[string]string{
		"Last-Event-ID": "41",
		"Authorization": "Bearer secret",
		"Accept":        "text/event-stream",
	}
	for k, v := range checks {
		if got := req.Header.Get(k); got != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
	if got := req.Header.Values("X-Trace"); !reflect.DeepEqual(got, []string{"a", "b"}) {
		t.Errorf("X-Trace = %q", got)
	}
	if req.Host != "demo.localhost" {
		t.Errorf("Host = %q", req.Host)
	}
}

func TestEventsReconnects(t *testing.T) {
	t.Parallel()
	f := newFeed(t,
		"retry: 100\nid: 1\ndata: one\n\n",
		"id: 2\ndata: two\n\n",
		"data: three\n\n")
	start := time.Now()
	r := run(t, 20*time.Second, "events", f.srv.URL, "--json", "--max-events", "3")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	got := jsonLines(t, r.stdout)
	if len(got) != 3 || got[2]["data"] != "three" || got[2]["id"] != "2" || got[2]["retry"] != 100.0 {
		t.Fatalf("events = %v", got)
	}
	reqs := f.requests()
	if reqs[1].Header.Get("Last-Event-ID") != "1" || reqs[2].Header.Get("Last-Event-ID") != "2" {
		t.Fatalf("Last-Event-ID on reconnects = %q, %q", reqs[1].Header.Get("Last-Event-ID"), reqs[2].Header.Get("Last-Event-ID"))
	}
	if d := time.Since(start); d < 200*time.Millisecond {
		t.Fatalf("two reconnects in %v: retry: 100 not honoured", d)
	}
	if !strings.Contains(r.stderr, "reconnecting in") {
		t.Fatalf("no reconnect status on stderr: %s", r.stderr)
	}
}

func TestEventsErrors(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		handler http.HandlerFunc
		args    []string
		wantMsg string
	}{
		{"500", func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "upstream exploded", 500)
		}, nil, "500 Internal Server Error"},
		{"json content type", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"error":"nope"}`)
		}, nil, "application/json"},
		{"204", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(204)
		}, nil, "204"},
		{"500 with --no-reconnect", func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "x", 500)
		}, []string{"--no-reconnect"}, "500"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			var mu sync.Mutex
			n := 0
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				n++
				mu.Unlock()
				c.handler(w, r)
			}))
			defer srv.Close()
			r := run(t, 20*time.Second, append([]string{"events", srv.URL}, c.args...)...)
			if r.code == 0 {
				t.Fatalf("exit 0, want non-zero; stderr: %s", r.stderr)
			}
			if !strings.Contains(r.stderr, c.wantMsg) {
				t.Fatalf("stderr %q does not say %q", r.stderr, c.wantMsg)
			}
			mu.Lock()
			defer mu.Unlock()
			if n != 1 {
				t.Fatalf("%d requests: must not reconnect", n)
			}
		})
	}
	t.Run("connection refused with --no-reconnect", func(t *testing.T) {
		t.Parallel()
		srv := httptest.NewServer(http.NotFoundHandler())
		url := srv.URL
		srv.Close()
		r := run(t, 20*time.Second, "events", url, "--no-reconnect")
		if r.code == 0 || !strings.Contains(r.stderr, "refused") {
			t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
		}
	})
	t.Run("usage", func(t *testing.T) {
		t.Parallel()
		for _, args := range [][]string{{"events"}, {"events", "ftp://x"}, {"events", "http://x", "--bogus"}, {"events", "-H", "nocolon", "http://x"}} {
			if r := run(t, 20*time.Second, args...); r.code != 2 {
				t.Errorf("%v: exit %d, want 2", args, r.code)
			}
		}
	})
}

func TestEventsInterrupt(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "data: hello\n\n")
		http.NewResponseController(w).Flush()
		<-r.Context().Done()
	}))
	defer srv.Close()
	cmd := exec.Command(sluiceBin, "events", srv.URL, "--json")
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line := make([]byte, 256)
	n, _ := stdout.Read(line)
	if !strings.Contains(string(line[:n]), `"hello"`) {
		t.Fatalf("first output %q", line[:n])
	}
	cmd.Process.Signal(syscall.SIGINT)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 130 {
			t.Fatalf("exit after SIGINT: %v, want 130", err)
		}
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatal("sluice events did not stop on SIGINT")
	}
}

// The README's first command: the demo runs an edge, an agent and an app
// in one process, and its clock feed streams through the tunnel.
func TestDemo(t *testing.T) {
	t.Parallel()
	r := run(t, 30*time.Second, "demo", "--interval", "50ms", "--max-events", "3")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	if strings.Count(r.stdout, "event: tick (id ") != 3 {
		t.Fatalf("stdout = %q", r.stdout)
	}
	if !strings.Contains(r.stderr, "sluice events http://demo.localhost:") {
		t.Fatalf("stderr does not say how to try it: %q", r.stderr)
	}
}

// The demo app's WebSocket echo works through the demo's tunnel.
func TestDemoWebSocket(t *testing.T) {
	t.Parallel()
	p := startProc(t, "demo", "demo", "--listen", "127.0.0.1:0")
	if !p.waitOutput(p.stderr, "a WebSocket echo at ws://", 30*time.Second) {
		t.Fatalf("demo did not start\nstderr: %s", p.stderr)
	}
	_, rest, _ := strings.Cut(p.stderr.String(), "a WebSocket echo at ")
	url, _, _ := strings.Cut(rest, "\n")
	u, err := neturl.Parse(url)
	if err != nil {
		t.Fatal(err)
	}
	d := websocket.Dialer{
		HandshakeTimeout: 10 * time.Second,
		NetDialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, "127.0.0.1:"+u.Port())
		},
	}
	ws, _, err := d.Dial(url, http.Header{"Origin": {"http://" + u.Host}})
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	defer ws.Close()
	ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	if err := ws.WriteMessage(websocket.TextMessage, []byte("hi")); err != nil {
		t.Fatal(err)
	}
	if _, msg, err := ws.ReadMessage(); err != nil || string(msg) != "echo: hi" {
		t.Fatalf("echo: %q %v", msg, err)
	}
}

func TestVersionAndHelp(t *testing.T) {
	t.Parallel()
	if r := run(t, 10*time.Second, "version"); r.code != 0 || !strings.HasPrefix(r.stdout, "sluice ") {
		t.Fatalf("version: %+v", r)
	}
	if r := run(t, 10*time.Second, "help"); r.code != 0 || !strings.Contains(r.stdout, "events URL") {
		t.Fatalf("help: %+v", r)
	}
	if r := run(t, 10*time.Second, "events", "--help"); r.code != 0 || !strings.Contains(r.stderr, "--json") {
		t.Fatalf("events --help: %+v", r)
	}
	if r := run(t, 10*time.Second, "nonsense"); r.code != 2 {
		t.Fatalf("unknown command: exit %d", r.code)
	}
}
