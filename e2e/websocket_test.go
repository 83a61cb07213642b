package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"golang.org/x/net/http2"
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

// Public clients over HTTP/2 still get working WebSockets: the TLS edge
// speaks h2 for ordinary requests, does not announce extended CONNECT (RFC
// 8441; the HTTP/2 WebSocket form breaks httputil.ReverseProxy,
// golang/go#53208), so clients open their WebSockets over HTTP/1.1, as
// browsers do, and those pass through.
func TestWebSocketWithHTTP2Edge(t *testing.T) {
	t.Parallel()
	certFile, keyFile, pool := selfSigned(t)
	closes := make(chan int, 8)
	up := newTestUpstream(t)
	up.mux.HandleFunc("/ws", wsEcho(closes))
	up.mux.HandleFunc("/plain", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "plain") })
	e := startEdge(t, "T", "--tls-cert", certFile, "--tls-key", keyFile)
	a := startProcEnv(t, "agent h2ws", []string{"SSL_CERT_FILE=" + certFile},
		"http", strconv.Itoa(up.port), "--edge", "https://"+e.addr, "--token", "T", "--name", "h2ws")
	if !a.waitOutput(a.stdout, "Forwarding", 15*time.Second) {
		t.Fatalf("agent did not connect\nstdout: %s\nstderr: %s", a.stdout, a.stderr)
	}
	dial := func(ctx context.Context, network, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, network, e.addr)
	}
	base := fmt.Sprintf("https://h2ws.localhost:%d", e.port)

	// An ordinary request goes over HTTP/2.
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true, DialContext: dial}}
	resp, body := do(t, c, "GET", base+"/plain", nil, nil)
	if resp.ProtoMajor != 2 || string(body) != "plain" {
		t.Fatalf("GET /plain: %s %q, want HTTP/2 and %q", resp.Proto, body, "plain")
	}

	// The edge's HTTP/2 SETTINGS do not announce extended CONNECT.
	tc, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", e.addr,
		&tls.Config{RootCAs: pool, ServerName: "h2ws.localhost", NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	if p := tc.ConnectionState().NegotiatedProtocol; p != "h2" {
		t.Fatalf("ALPN %q, want h2", p)
	}
	tc.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(tc, http2.ClientPreface)
	fr := http2.NewFramer(tc, tc)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	f, err := fr.ReadFrame()
	if err != nil {
		t.Fatal(err)
	}
	sf, ok := f.(*http2.SettingsFrame)
	if !ok {
		t.Fatalf("first frame %v, want SETTINGS", f)
	}
	if v, ok := sf.Value(http2.SettingEnableConnectProtocol); ok && v == 1 {
		t.Fatal("the edge announces SETTINGS_ENABLE_CONNECT_PROTOCOL: HTTP/2 clients would send WebSockets as extended CONNECT, which the proxy does not carry (golang/go#53208)")
	}

	// And the WebSocket, over HTTP/1.1 on the same TLS listener, works.
	d := websocket.Dialer{NetDialContext: dial, TLSClientConfig: &tls.Config{RootCAs: pool}, HandshakeTimeout: 10 * time.Second}
	ws, _, err := d.Dial(fmt.Sprintf("wss://h2ws.localhost:%d/ws", e.port), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	if err := ws.WriteMessage(websocket.TextMessage, []byte("over tls")); err != nil {
		t.Fatal(err)
	}
	if typ, msg, err := ws.ReadMessage(); err != nil || typ != websocket.TextMessage || string(msg) != "over tls" {
		t.Fatalf("echo: %d %q %v", typ, msg, err)
	}
}
