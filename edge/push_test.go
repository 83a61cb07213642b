package edge_test

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/api"
	"github.com/sluicehq/sluice/edge"
	"github.com/sluicehq/sluice/store"
)

// storeEdge starts an edge with a SQLite store in a temporary directory,
// the admin token "A" and the push keepalive given; it returns the edge,
// the store and an agent token's id and secret.
func storeEdge(t *testing.T, keepalive time.Duration) (*testEdge, *store.Store, string, string) {
	t.Helper()
	st, err := store.Open(context.Background(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	e := startEdge(t, func(c *edge.Config) {
		c.Store, c.AdminTokens, c.PushKeepalive = st, []string{"A"}, keepalive
	})
	tok, secret, err := st.CreateToken(context.Background(), store.KindAgent, "agent")
	if err != nil {
		t.Fatal(err)
	}
	return e, st, tok.ID, secret
}

// pushLine is one line of a push stream, with when it arrived.
type pushLine struct {
	text string
	at   time.Time
}

// openPush opens the push channel with token and returns its response and
// a channel of its lines (closed at the end of the stream).
func openPush(t *testing.T, e *testEdge, token string) (*http.Response, <-chan pushLine) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+e.addr+"/api/agent/push", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := (&http.Client{}).Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	lines := make(chan pushLine, 64)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(lines)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			lines <- pushLine{sc.Text(), time.Now()}
		}
	}()
	t.Cleanup(func() {
		cancel()
		resp.Body.Close()
		<-done
	})
	return resp, lines
}

// next returns the next line of a push stream, failing after timeout.
func next(t *testing.T, lines <-chan pushLine, timeout time.Duration) (pushLine, bool) {
	t.Helper()
	select {
	case l, ok := <-lines:
		return l, ok
	case <-time.After(timeout):
		t.Fatalf("no line on the push stream within %v", timeout)
		return pushLine{}, false
	}
}

// nextEvent skips comments and returns the next event's type and data.
func nextEvent(t *testing.T, lines <-chan pushLine, timeout time.Duration) (typ, data string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		l, ok := next(t, lines, time.Until(deadline))
		if !ok {
			t.Fatal("the push stream ended")
		}
		switch {
		case strings.HasPrefix(l.text, "event: "):
			typ = strings.TrimPrefix(l.text, "event: ")
		case strings.HasPrefix(l.text, "data: "):
			data = strings.TrimPrefix(l.text, "data: ")
		case l.text == "" && typ != "":
			return typ, data
		}
	}
}

func TestPushChannel(t *testing.T) {
	t.Parallel()
	e, _, tokID, secret := storeEdge(t, 100*time.Millisecond)
	admin := func(method, path, body string) int {
		req, _ := http.NewRequest(method, "http://"+e.addr+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer A")
		resp, err := e.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}

	resp, lines := openPush(t, e, secret)
	if resp.StatusCode != 200 {
		t.Fatalf("push: %s", resp.Status)
	}
	for k, want := range map[string]string{"Content-Type": "text/event-stream", "Cache-Control": "no-cache, no-transform", "X-Accel-Buffering": "no"} {
		if got := resp.Header.Get(k); got != want {
			t.Errorf("%s: %q, want %q", k, got, want)
		}
	}
	// Headers came before any event (Do returned on them); the first line
	// is the connected comment.
	if l, _ := next(t, lines, 10*time.Second); l.text != ": connected" {
		t.Fatalf("first line %q, want \": connected\"", l.text)
	}

	// Keepalives at the set interval while idle.
	var stamps []time.Time
	for len(stamps) < 4 {
		l, _ := next(t, lines, 10*time.Second)
		if l.text == ": keepalive" {
			stamps = append(stamps, l.at)
		}
	}
	// Far more often than the 15 s default (the ceiling is generous: the
	// machine may be busy). That they come no more often than set is the
	// sse package's Stream, tested under synctest (sse/stream_test.go): a
	// lower bound here would read the test's own delays, since a reader
	// held up by a busy machine stamps two lines at once.
	for i := 1; i < len(stamps); i++ {
		if gap := stamps[i].Sub(stamps[i-1]); gap > 5*time.Second {
			t.Errorf("keepalive gap %v with a 100 ms interval", gap)
		}
	}

	// A tunnel created for the token: config_changed at once.
	created := time.Now()
	if code := admin("POST", "/api/tunnels", `{"name":"pushed","upstream":"http://127.0.0.1:1","agent_token":"`+secret+`"}`); code != 201 {
		t.Fatalf("create tunnel: %d", code)
	}
	typ, data := nextEvent(t, lines, 10*time.Second)
	if typ != api.EventConfigChanged || !strings.Contains(data, `"tunnel":"pushed"`) {
		t.Fatalf("event %q %q, want config_changed for pushed", typ, data)
	}
	t.Logf("config_changed arrived %v after the create", time.Since(created))

	// The config lists the tunnel and the push URL.
	req, _ := http.NewRequest("GET", "http://"+e.addr+"/api/agent/config", nil)
	req.Header.Set("Authorization", "Bearer "+secret)
	cresp, err := e.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Tunnels []struct{ Name, Upstream string }
		PushURL string `json:"push_url"`
	}
	json.NewDecoder(cresp.Body).Decode(&cfg)
	cresp.Body.Close()
	if len(cfg.Tunnels) != 1 || cfg.Tunnels[0].Name != "pushed" || cfg.PushURL != "http://localhost:"+e.port+"/api/agent/push" {
		t.Fatalf("config: %+v", cfg)
	}

	if code := admin("DELETE", "/api/tunnels/pushed", ""); code != 200 {
		t.Fatalf("delete: %d", code)
	}
	if typ, data := nextEvent(t, lines, 10*time.Second); typ != api.EventTunnelDeleted || !strings.Contains(data, "pushed") {
		t.Fatalf("event %q %q, want tunnel_deleted", typ, data)
	}

	// An operator's notify reaches every connected agent.
	if code := admin("POST", "/api/agents/notify", ""); code != 200 {
		t.Fatalf("notify: %d", code)
	}
	if typ, data := nextEvent(t, lines, 10*time.Second); typ != api.EventConfigChanged || !strings.Contains(data, `"reason":"notify"`) {
		t.Fatalf("event %q %q, want config_changed from notify", typ, data)
	}

	// A second connection with the same token closes the first.
	_, lines2 := openPush(t, e, secret)
	if l, _ := next(t, lines2, 10*time.Second); l.text != ": connected" {
		t.Fatalf("second connection's first line %q", l.text)
	}
	deadline := time.After(15 * time.Second)
	for open := true; open; {
		select {
		case _, open = <-lines:
		case <-deadline:
			t.Fatal("the first push connection stayed open after a second one for the same token")
		}
	}

	// Revoked: token_revoked on the open stream, then 401.
	if code := admin("DELETE", "/api/tokens/"+tokID, ""); code != 200 {
		t.Fatalf("revoke: %d", code)
	}
	if typ, _ := nextEvent(t, lines2, 10*time.Second); typ != api.EventTokenRevoked {
		t.Fatalf("event %q, want token_revoked", typ)
	}
	req, _ = http.NewRequest("GET", "http://"+e.addr+"/api/agent/push", nil)
	req.Header.Set("Authorization", "Bearer "+secret)
	rresp, err := e.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var body struct{ Error struct{ Code string } }
	json.NewDecoder(rresp.Body).Decode(&body)
	rresp.Body.Close()
	if rresp.StatusCode != 401 || body.Error.Code != "token_revoked" {
		t.Fatalf("push with a revoked token: %d %+v", rresp.StatusCode, body)
	}
}
