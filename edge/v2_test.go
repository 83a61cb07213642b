package edge_test

import (
	"io"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/sluicehq/sluice/edge"
	"github.com/sluicehq/sluice/tunnel"
)

// dialV2 opens a WebSocket to /agent offering sluice.v2, registers name,
// and returns the connection after the registered answer.
func (e *testEdge) dialV2(t *testing.T, name string) *websocket.Conn {
	t.Helper()
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second, Subprotocols: []string{tunnel.Subprotocol}}
	ws, _, err := d.Dial("ws://"+e.addr+"/agent", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ws.Close() })
	if ws.Subprotocol() != tunnel.Subprotocol {
		t.Fatalf("the edge chose subprotocol %q, want %q", ws.Subprotocol(), tunnel.Subprotocol)
	}
	if err := ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"register","tunnel_id":"`+name+`","agent_token":"T"}`)); err != nil {
		t.Fatal(err)
	}
	ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	typ, msg, err := ws.ReadMessage()
	if err != nil || typ != websocket.TextMessage || !strings.Contains(string(msg), `"registered"`) {
		t.Fatalf("register: %d %s %v", typ, msg, err)
	}
	ws.SetReadDeadline(time.Time{})
	return ws
}

// A v2 agent that sends bytes that are not HTTP/2 loses its own session:
// its tunnel answers "agent offline", while the edge and another tunnel,
// with a stream in flight, go on.
func TestV2GarbageDropsOnlyThatAgent(t *testing.T) {
	t.Parallel()
	e := startEdge(t, nil)
	b := e.register(t, "bravo", "T")
	bc := e.goHead(e.newRequest(t, "GET", "bravo.localhost", "/feed", nil))
	br := b.expectRequest(t)
	b.start(t, br.ID, 200, map[string]string{"Content-Type": "text/plain"})
	bResp := awaitHead(t, bc, 5*time.Second)
	defer bResp.Body.Close()

	ws := e.dialV2(t, "alpha")
	if err := ws.WriteMessage(websocket.BinaryMessage, []byte("this is not an HTTP/2 connection\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	r := e.waitOffline(t, "alpha.localhost", 10*time.Second)
	r.resp.Body.Close()

	if res := e.get(t, "localhost", "/healthz"); res.err != nil || res.resp.StatusCode != 200 {
		t.Fatalf("/healthz after the bad agent: %v", res)
	}
	b.chunk(t, br.ID, []byte("still here"))
	b.end(t, br.ID)
	body, err := io.ReadAll(bResp.Body)
	if err != nil || string(body) != "still here" {
		t.Fatalf("bravo's stream: %q %v", body, err)
	}
}

// A v2 agent that reads nothing after registering (so it answers no ping,
// and not even HTTP/2's preface) is dropped after the pong timeout: its
// tunnel answers "agent offline", and requests that waited on it get that
// answer too.
func TestV2SilentAgentDropped(t *testing.T) {
	// Not parallel, as TestDeadAgent: the pong timeout is tight under -race.
	e := startEdge(t, func(c *edge.Config) {
		c.Session.PingInterval = 100 * time.Millisecond
		c.Session.PongTimeout = 500 * time.Millisecond
	})
	start := time.Now()
	e.dialV2(t, "silent") // and never read again
	r := e.waitOffline(t, "silent.localhost", 10*time.Second)
	r.resp.Body.Close()
	took := time.Since(start)
	t.Logf("silent v2 agent dropped after %v (pong timeout 500 ms)", took.Round(time.Millisecond))
	if took < 400*time.Millisecond {
		t.Fatalf("dropped after %v, before its pong timeout", took)
	}
}
