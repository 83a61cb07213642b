package agent

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice/edge"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestNewValidates(t *testing.T) {
	t.Parallel()
	up := &url.URL{Scheme: "http", Host: "127.0.0.1:1"}
	cases := []Config{
		{Edge: "ftp://x", Name: "a", Upstream: up},
		{Edge: "http://", Name: "a", Upstream: up},
		{Edge: "http://x", Name: "", Upstream: up},
		{Edge: "http://x", Name: "a"},
		{Edge: "http://x", Name: "a", Type: "udp", LocalAddr: "127.0.0.1:53", UDPIdleTimeout: -time.Second},
	}
	for _, c := range cases {
		if _, err := New(c); err == nil {
			t.Errorf("New(%+v) accepted", c)
		}
	}
	a, err := New(Config{Edge: "https://edge.example.com/base/", Name: "a", Upstream: up})
	if err != nil || a.wsURL != "wss://edge.example.com/base/agent" {
		t.Fatalf("wsURL %q, %v", a.wsURL, err)
	}
}

func TestBackoffFullJitter(t *testing.T) {
	t.Parallel()
	a, err := New(Config{Edge: "http://edge.example", Name: "a", Upstream: &url.URL{Scheme: "http", Host: "127.0.0.1:1"}})
	if err != nil {
		t.Fatal(err)
	}
	for range 200 {
		if d := a.backoff.Delay(1); d < 50*time.Millisecond || d > 300*time.Millisecond {
			t.Fatalf("first retry after %v", d)
		}
		if d := a.backoff.Delay(50); d > 30*time.Second+50*time.Millisecond {
			t.Fatalf("capped retry after %v", d)
		}
	}
}

// runEdge starts an in-process edge accepting token T.
func runEdge(t *testing.T) (addr string) {
	t.Helper()
	cfg := edge.DefaultConfig()
	cfg.Tokens = []string{"T"}
	return serveEdge(t, cfg)
}

// serveEdge runs an in-process edge with cfg on a loopback listener until
// the test ends, and returns its address.
func serveEdge(t *testing.T, cfg edge.Config) (addr string) {
	t.Helper()
	srv, err := edge.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(ctx, ln, time.Second)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return ln.Addr().String()
}

func TestAgentThroughEdge(t *testing.T) {
	t.Parallel()
	addr := runEdge(t)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello from "+r.Host)
	}))
	defer up.Close()
	upURL, _ := url.Parse(up.URL)

	connected := make(chan string, 4)
	var console syncBuffer
	a, err := New(Config{Edge: "http://" + addr, Token: "T", Name: "unit", Upstream: upURL, Console: &console,
		OnConnect: func(u, _ string) { connected <- u }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	runErr := make(chan error, 1)
	go func() { runErr <- a.Run(ctx) }()
	public := <-connected

	req, _ := http.NewRequest("GET", "http://"+addr+"/x", nil)
	req.Host = "unit.localhost"
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "hello from unit.localhost" {
		t.Fatalf("got %q (public URL %s)", b, public)
	}
	cancel()
	if err := <-runErr; err != nil {
		t.Fatalf("Run after cancel = %v, want nil", err)
	}
	if got := console.String(); !containsAll(got, "GET", "/x", "200") {
		t.Fatalf("console line %q", got)
	}
}

func TestAgentStops(t *testing.T) {
	t.Parallel()
	addr := runEdge(t)
	up := &url.URL{Scheme: "http", Host: "127.0.0.1:1"}
	t.Run("wrong token", func(t *testing.T) {
		a, _ := New(Config{Edge: "http://" + addr, Token: "wrong", Name: "w", Upstream: up})
		var re *RegisterError
		if err := a.Run(context.Background()); !errors.As(err, &re) || re.Code != "unauthorized" {
			t.Fatalf("Run = %v, want RegisterError unauthorized", err)
		}
	})
	t.Run("replaced by the same token", func(t *testing.T) {
		first := make(chan string, 1)
		a1, _ := New(Config{Edge: "http://" + addr, Token: "T", Name: "r", Upstream: up, OnConnect: func(u, _ string) { first <- u }})
		err1 := make(chan error, 1)
		go func() { err1 <- a1.Run(context.Background()) }()
		<-first
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		second := make(chan string, 1)
		a2, _ := New(Config{Edge: "http://" + addr, Token: "T", Name: "r", Upstream: up, OnConnect: func(u, _ string) { second <- u }})
		done2 := make(chan error, 1)
		go func() { done2 <- a2.Run(ctx) }()
		<-second
		select {
		case err := <-err1:
			var re *RegisterError
			if !errors.As(err, &re) || re.Code != "tunnel_replaced" {
				t.Fatalf("replaced agent: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the replaced agent did not stop")
		}
		cancel()
		<-done2
	})
}

// syncBuffer is a console that tests read while the agent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  []byte
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.b = append(s.b, p...)
	return len(p), nil
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return string(s.b)
}

func containsAll(s string, subs ...string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}
