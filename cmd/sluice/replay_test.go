package main

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/sluicehq/sluice/internal/inspect"
)

// inspectorFor serves an inspector whose replays go to upstream, and
// returns it with its address (HOST:PORT).
func inspectorFor(t *testing.T, cfg inspect.Config, upstream http.Handler) (*inspect.Inspector, string) {
	t.Helper()
	in := inspect.New(cfg)
	srv := httptest.NewServer(in.Handler(inspect.HandlerConfig{Upstream: upstream}))
	t.Cleanup(srv.Close)
	t.Cleanup(in.Close)
	return in, strings.TrimPrefix(srv.URL, "http://")
}

func TestReplayCommandErrors(t *testing.T) {
	t.Parallel()
	in, addr := inspectorFor(t, inspect.Config{BodyLimit: 4}, http.NotFoundHandler())
	r := httptest.NewRequest("POST", "/upload", nil)
	e := in.Begin(r, "")
	e.RequestBody([]byte("more than four bytes"))
	e.Response(200, nil)
	e.End(nil)

	// A port nothing listens on.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	// A server that is not an inspector.
	other := httptest.NewServer(http.NotFoundHandler())
	t.Cleanup(other.Close)

	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"no id", []string{"replay", "--inspect", addr}, 2, "want one request ID"},
		{"two ids", []string{"replay", "1", "2", "--inspect", addr}, 2, "want one request ID"},
		{"bad address", []string{"replay", "1", "--inspect", "nowhere"}, 2, "HOST:PORT"},
		{"no inspector", []string{"replay", "1", "--inspect", closed}, 1, "no inspector at " + closed + ": is sluice http running?"},
		{"not an inspector", []string{"replay", "1", "--inspect", other.URL}, 1, "404 Not Found: is it a sluice inspector?"},
		{"unknown id", []string{"replay", "42", "--inspect", addr}, 1, `no request "42"`},
		{"cut body", []string{"replay", e.ID(), "--inspect", "http://" + addr}, 1, "its body was cut at the capture limit (4 of 20 bytes kept)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			code, stdout, stderr := runCmd(t, tc.args...)
			if code != tc.code || stdout != "" || !strings.Contains(stderr, tc.want) {
				t.Fatalf("exit %d, stdout %q, stderr:\n%s\nwant exit %d and %q", code, stdout, stderr, tc.code, tc.want)
			}
		})
	}
	code, stdout, stderr := runCmd(t, "replay", "--help")
	if code != 0 || !strings.Contains(stderr, "Usage: sluice replay ID [--inspect ADDR]") || !strings.Contains(stderr, "127.0.0.1:4040") {
		t.Fatalf("--help: exit %d, %q %q", code, stdout, stderr)
	}
}

func TestReplayCommand(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var bodies []string
	local := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		bodies = append(bodies, r.Method+" "+r.RequestURI+" "+string(b))
		mu.Unlock()
		w.WriteHeader(http.StatusAccepted)
	}))
	t.Cleanup(local.Close)
	u, _ := url.Parse(local.URL)
	proxy := httputil.NewSingleHostReverseProxy(u)
	in, addr := inspectorFor(t, inspect.Config{}, proxy)
	agent := httptest.NewServer(in.Wrap(proxy))
	t.Cleanup(agent.Close)
	resp, err := http.Post(agent.URL+"/hook?x=1", "application/json", strings.NewReader(`{"event":"paid"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()

	code, stdout, stderr := runCmd(t, "replay", "1", "--inspect", addr)
	if code != 0 || stderr != "" || !regexp.MustCompile(`^Replayed request 1 as request 2: POST /hook\?x=1 -> 202 Accepted in [0-9.]+ m?s\n$`).MatchString(stdout) {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	code, stdout, stderr = runCmd(t, "replay", "--json", "2", "--inspect", "http://"+addr+"/")
	var r inspect.Request
	if err := json.Unmarshal([]byte(stdout), &r); code != 0 || err != nil || r.ID != "3" || r.ReplayOf != "2" || r.Status != 202 {
		t.Fatalf("exit %d, %v, stdout %q, stderr %q", code, err, stdout, stderr)
	}
	mu.Lock()
	defer mu.Unlock()
	want := `POST /hook?x=1 {"event":"paid"}`
	if len(bodies) != 3 || bodies[0] != want || bodies[1] != want || bodies[2] != want {
		t.Fatalf("the local server saw %q", bodies)
	}
}
