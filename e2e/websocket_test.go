package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// wsEcho is a WebSocket echo server: each message comes back with its type.
// A text message "close CODE" makes the server close with that code. The
// close code each connection ended with is sent on closes.
func wsEcho(closes chan<- int) http.HandlerFunc {
	up := websocket.Upgrader{}
	return func(w http.ResponseWriter, r *http.Request) {
		ws, err := up.Upgrade(w, r, http.Header{"X-Upstream": {"echo"}})
		if err != nil {
			return
		}
		defer ws.Close()
		for {
			typ, msg, err := ws.ReadMessage()
			if err != nil {
				code := -1
				var ce *websocket.CloseError
				if errors.As(err, &ce) {
					code = ce.Code
				}
				select {
				case closes <- code:
				default:
				}
				return
			}
			var code int
			if typ == websocket.TextMessage {
				if _, err := fmt.Sscanf(string(msg), "close %d", &code); err == nil {
					ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, "server says bye"), time.Now().Add(time.Second))
					continue
				}
			}
			if err := ws.WriteMessage(typ, msg); err != nil {
				return
			}
		}
	}
}

// WebSocket passthrough: a real WebSocket client through the public URL to a
// local echo server, text and binary messages both ways, close codes carried
// in both directions, for each protocol.
func TestWebSocketPassthrough(t *testing.T) { forProtocols(t, testWebSocketPassthrough) }

func testWebSocketPassthrough(t *testing.T, proto string) {
	closes := make(chan int, 64)
	up := newTestUpstream(t)
	up.mux.HandleFunc("/ws", wsEcho(closes))
	e := startEdge(t, "T")
	agent := startAgent(t, e, proto, "ws", "T", up.port)
	d := websocket.Dialer{
		NetDialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var nd net.Dialer
			return nd.DialContext(ctx, network, e.addr)
		},
		HandshakeTimeout: 10 * time.Second,
	}
	url := fmt.Sprintf("ws://ws.localhost:%d/ws", e.port)
	dial := func(t *testing.T) *websocket.Conn {
		t.Helper()
		ws, resp, err := d.Dial(url, nil)
		if err != nil {
			status := ""
			if resp != nil {
				status = resp.Status
			}
			t.Fatalf("dial %s: %v %s", url, err, status)
		}
		if got := resp.Header.Get("X-Upstream"); got != "echo" {
			t.Errorf("101 response header X-Upstream %q, want the upstream's %q", got, "echo")
		}
		t.Cleanup(func() { ws.Close() })
		ws.SetReadDeadline(time.Now().Add(20 * time.Second))
		return ws
	}

	t.Run("MessagesAndClientClose", func(t *testing.T) {
		ws := dial(t)
		big := randomBytes(t, 300<<10) // several chunks and windows
		msgs := []struct {
			typ  int
			data []byte
		}{
			{websocket.TextMessage, []byte("hello")},
			{websocket.BinaryMessage, []byte{0, 1, 2, 255, 0}},
			{websocket.TextMessage, []byte("ünïcödé ✓")},
			{websocket.BinaryMessage, big},
			{websocket.TextMessage, []byte("")},
		}
		for _, m := range msgs {
			if err := ws.WriteMessage(m.typ, m.data); err != nil {
				t.Fatal(err)
			}
		}
		for i, m := range msgs {
			typ, got, err := ws.ReadMessage()
			if err != nil {
				t.Fatalf("message %d: %v", i, err)
			}
			if typ != m.typ || !bytes.Equal(got, m.data) {
				t.Fatalf("message %d: type %d, %d bytes; want type %d, %d bytes", i, typ, len(got), m.typ, len(m.data))
			}
		}
		ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(4001, "client says bye"), time.Now().Add(time.Second))
		select {
		case code := <-closes:
			if code != 4001 {
				t.Errorf("upstream saw close code %d, want 4001", code)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the upstream never saw the client's close")
		}
		// The agent's console line says 101, once the connection ended.
		if !agent.waitOutput(agent.stdout, "/ws                                      101", 10*time.Second) {
			t.Errorf("no console line with 101 for the WebSocket:\n%s", agent.stdout)
		}
	})

	t.Run("ServerClose", func(t *testing.T) {
		ws := dial(t)
		if err := ws.WriteMessage(websocket.TextMessage, []byte("close 4002")); err != nil {
			t.Fatal(err)
		}
		_, _, err := ws.ReadMessage()
		var ce *websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != 4002 || ce.Text != "server says bye" {
			t.Fatalf("read after the server's close: %v, want close 4002 \"server says bye\"", err)
		}
		ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(4002, ""), time.Now().Add(time.Second))
		select {
		case <-closes:
		case <-time.After(10 * time.Second):
			t.Fatal("the upstream's connection did not end after the close handshake")
		}
	})

	t.Run("ManyConcurrent", func(t *testing.T) {
		const n = 20
		conns := make([]*websocket.Conn, n)
		for i := range conns {
			conns[i] = dial(t)
		}
		for round := 0; round < 5; round++ {
			for i, ws := range conns {
				if err := ws.WriteMessage(websocket.TextMessage, fmt.Appendf(nil, "%d/%d", i, round)); err != nil {
					t.Fatal(err)
				}
			}
			for i, ws := range conns {
				_, got, err := ws.ReadMessage()
				if want := fmt.Sprintf("%d/%d", i, round); err != nil || string(got) != want {
					t.Fatalf("conn %d: %q, %v; want %q", i, got, err, want)
				}
			}
		}
		for _, ws := range conns {
			ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
		}
		for range conns {
			select {
			case <-closes:
			case <-time.After(10 * time.Second):
				t.Fatal("not every upstream connection ended")
			}
		}
	})
}
