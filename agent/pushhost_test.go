package agent

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicehq/sluice/api"
)

// Finding 11 of issue 11: a managed agent sent its bearer token to
// whatever host the push_url of its config named. An edge that answers
// with a push_url on another host (misconfigured, or a client-chosen Host
// reflected) must not get the agent to send its token there: the agent
// opens the push channel on the host of its --edge instead.
func TestManagedSendsTokenOnlyToItsEdge(t *testing.T) {
	t.Parallel()
	var leaked atomic.Int32
	leak := make(chan string, 1)
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if auth := r.Header.Get("Authorization"); auth != "" {
			leaked.Add(1)
			select {
			case leak <- auth:
			default:
			}
		}
		w.WriteHeader(http.StatusNotFound)
	}))
	defer other.Close()
	pushed := make(chan string, 8)
	edgeSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/api/agent/config":
			w.Header().Set("Content-Type", "application/json")
			json.NewEncoder(w).Encode(api.AgentConfig{AgentTokenID: "t1", Tunnels: []api.AgentTunnel{}, PushURL: other.URL + "/api/agent/push"})
		case "/api/agent/push":
			pushed <- r.Header.Get("Authorization")
			w.Header().Set("Content-Type", "text/event-stream")
			io.WriteString(w, ": connected\n\n")
			w.(http.Flusher).Flush()
			<-r.Context().Done()
		default:
			http.NotFound(w, r)
		}
	}))
	defer edgeSrv.Close()

	m, err := NewManaged(ManagedConfig{Edge: edgeSrv.URL, Token: "S3CRET-agent-token"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	select {
	case auth := <-pushed:
		if auth != "Bearer S3CRET-agent-token" {
			t.Errorf("push channel on the edge with Authorization %q", auth)
		}
	case auth := <-leak:
		cancel()
		<-done
		t.Fatalf("the agent sent %q to the other host", auth)
	case err := <-done:
		t.Fatalf("Run ended before the push channel opened on the edge: %v", err)
	case <-time.After(time.Minute):
		t.Fatal("no push channel on the edge's host within a minute")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if n := leaked.Load(); n != 0 {
		t.Fatalf("the token went to the other host %d times", n)
	}

	c, _ := api.NewClient("https://Edge.Example.com/", "T", nil)
	for u, want := range map[string]bool{
		"https://edge.example.com/api/agent/push": true,
		"https://edge.example.com:443/x":          true,
		"http://edge.example.com/api/agent/push":  false, // no downgrade
		"https://edge.example.com:8443/":          false,
		"https://evil.example.com/api/agent/push": false,
		"https://edge.example.com.evil.com/":      false,
		"https://edge.example.com@evil.com/":      false,
		"ftp://edge.example.com/":                 false,
	} {
		if got := c.OnEdge(u); got != want {
			t.Errorf("OnEdge(%q) = %v, want %v", u, got, want)
		}
	}
}
