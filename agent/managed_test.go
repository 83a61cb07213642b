package agent

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice/api"
	"github.com/sluicehq/sluice/edge"
	"github.com/sluicehq/sluice/store"
)

// patience bounds waits for events that must happen: a busy machine can
// take many times what a quiet one does; only a hang should fail a test.
const patience = time.Minute

// storeEdge runs an in-process edge on a store, with admin token A; it
// returns its address and an admin client.
func storeEdge(t *testing.T) (addr string, st *store.Store, admin *api.Client) {
	t.Helper()
	st, err := store.Open(context.Background(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() }) // after the edge's cleanup
	cfg := edge.DefaultConfig()
	cfg.Store, cfg.AdminTokens = st, []string{"A"}
	addr = serveEdge(t, cfg)
	admin, err = api.NewClient("http://"+addr, "A", nil)
	if err != nil {
		t.Fatal(err)
	}
	return addr, st, admin
}

// namedServer is an upstream that answers its name.
func namedServer(t *testing.T, name string) *url.URL {
	t.Helper()
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, name) }))
	t.Cleanup(up.Close)
	u, _ := url.Parse(up.URL)
	return u
}

// waitServes polls tunnel name at the edge until it answers want.
func waitServes(t *testing.T, addr, name, want string) {
	t.Helper()
	deadline := time.Now().Add(patience)
	c := &http.Client{Timeout: 10 * time.Second}
	var last string
	for {
		req, _ := http.NewRequest("GET", "http://"+addr+"/", nil)
		req.Host = name + ".localhost"
		resp, err := c.Do(req)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 && string(b) == want {
				return
			}
			last = resp.Status + " " + string(b)
		} else {
			last = err.Error()
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not serve %q within %v; last answer: %s", name, want, patience, last)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// statusLog collects a managed agent's status lines.
type statusLog struct {
	mu      sync.Mutex
	lines   []string
	changed chan struct{} // closed at the next line
}

func (s *statusLog) add(line string) {
	s.mu.Lock()
	s.lines = append(s.lines, line)
	if s.changed != nil {
		close(s.changed)
		s.changed = nil
	}
	s.mu.Unlock()
}

// next returns a channel closed when the next line comes.
func (s *statusLog) next() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.changed == nil {
		s.changed = make(chan struct{})
	}
	return s.changed
}

func (s *statusLog) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Join(s.lines, "\n")
}

// A managed agent whose tunnel the edge retires or refuses (here another
// agent with the same token takes the name, then leaves) does not keep a
// dead entry: at the next config event it starts the tunnel again, after
// its backoff, and serves it.
func TestManagedRetriesRefusedTunnel(t *testing.T) {
	t.Parallel()
	addr, st, admin := storeEdge(t)
	ctx := context.Background()
	_, secret, err := st.CreateToken(ctx, store.KindAgent, "owner")
	if err != nil {
		t.Fatal(err)
	}
	mine, other := namedServer(t, "managed"), namedServer(t, "other")
	if _, err := admin.CreateTunnel(ctx, api.TunnelRequest{Name: ptr("web"), Upstream: ptr(mine.String()), AgentToken: ptr(secret)}); err != nil {
		t.Fatal(err)
	}
	status := &statusLog{}
	defer runManaged(t, ctx, ManagedConfig{Edge: "http://" + addr, Token: secret, Status: status.add})()
	waitServes(t, addr, "web", "managed")

	// Another agent with the same token takes the name: the managed
	// agent's tunnel is retired (tunnel_replaced).
	actx, acancel := context.WithCancel(ctx)
	a, _ := New(Config{Edge: "http://" + addr, Token: secret, Name: "web", Upstream: other})
	adone := make(chan error, 1)
	go func() { adone <- a.Run(actx) }()
	waitServes(t, addr, "web", "other")
	deadline := time.Now().Add(patience)
	for !strings.Contains(status.String(), "web stopped") {
		if time.Now().After(deadline) {
			t.Fatalf("the managed agent did not report its retired tunnel; status:\n%s", status)
		}
		time.Sleep(10 * time.Millisecond)
	}
	acancel()
	if err := <-adone; err != nil {
		t.Fatalf("other agent: %v", err)
	}

	// The next config event brings the tunnel back to the managed agent.
	if _, err := admin.Notify(ctx); err != nil {
		t.Fatal(err)
	}
	waitServes(t, addr, "web", "managed")
	if !strings.Contains(status.String(), "retrying web in") {
		t.Errorf("no retry in the status lines:\n%s", status)
	}
}

func ptr[T any](v T) *T { return &v }

// runManaged runs a managed agent with cfg until the returned stop is
// called, which checks that its Run ended without an error.
func runManaged(t *testing.T, ctx context.Context, cfg ManagedConfig) (stop func()) {
	t.Helper()
	m, err := NewManaged(cfg)
	if err != nil {
		t.Fatal(err)
	}
	mctx, mcancel := context.WithCancel(ctx)
	mdone := make(chan error, 1)
	go func() { mdone <- m.Run(mctx) }()
	return func() {
		mcancel()
		if err := <-mdone; err != nil {
			t.Errorf("managed Run: %v", err)
		}
	}
}
