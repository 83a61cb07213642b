package edge_test

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/edge"
	"github.com/sluicehq/sluice/store"
)

// Issue 11, finding 12: a managed agent's push channel (a stream that never
// ends by itself) does not hold a shutdown for its grace period: it ends
// as the shutdown starts, and Serve returns at once.
func TestPushChannelDoesNotHoldShutdown(t *testing.T) {
	t.Parallel()
	st, err := store.Open(context.Background(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	_, secret, err := st.CreateToken(context.Background(), store.KindAgent, "agent")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := edge.New(edge.Config{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const grace = 10 * time.Minute // far longer than the test waits
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, ln, grace) }()

	req, _ := http.NewRequest("GET", "http://"+ln.Addr().String()+"/api/agent/push", nil)
	req.Header.Set("Authorization", "Bearer "+secret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, ": connected") {
		t.Fatalf("push channel: %q %v", line, err)
	}
	cancel()
	select {
	case err := <-served:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(patience):
		t.Fatalf("Serve still waits %v after the shutdown began: the push channel holds it", patience)
	}
}
