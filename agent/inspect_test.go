package agent

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/sluicehq/sluice/internal/inspect"
	"github.com/sluicehq/sluice/sse"
)

// The inspector records what passes through the tunnel, over both
// protocols: a POST with its body, an SSE stream's events, a WebSocket's
// messages both ways (through the tunnel's own hijacking writers).
func TestInspectorThroughTheTunnel(t *testing.T) {
	for _, proto := range []string{"v1", "v2"} {
		t.Run(proto, func(t *testing.T) {
			t.Parallel()
			mux := http.NewServeMux()
			mux.HandleFunc("/echo", echoRequest)
			mux.HandleFunc("/events", func(w http.ResponseWriter, r *http.Request) {
				s, err := sse.NewStream(w, r, sse.StreamConfig{KeepAlive: -1})
				if err != nil {
					return
				}
				defer s.Close()
				s.Send(r.Context(), sse.Event{Type: "a", ID: "1", Data: "one"})
				s.Send(r.Context(), sse.Event{Data: "two"})
			})
			mux.HandleFunc("/ws", func(w http.ResponseWriter, r *http.Request) {
				ws, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
				if err != nil {
					return
				}
				defer ws.Close()
				for {
					typ, msg, err := ws.ReadMessage()
					if err != nil {
						return
					}
					ws.WriteMessage(typ, append([]byte("echo: "), msg...))
				}
			})
			up := httptest.NewServer(mux)
			t.Cleanup(up.Close)
			upURL, _ := url.Parse(up.URL)
			in := inspect.New(inspect.Config{})
			t.Cleanup(in.Close)
			console := &syncBuffer{}
			addr := tunnelToConfig(t, proto, nil, Config{Upstream: upURL, Inspector: in, Console: console})
			base := "http://unit.localhost:" + strings.Split(addr, ":")[1]
			dial := func(network, _ string) (net.Conn, error) { return net.Dial(network, addr) }
			c := &http.Client{Timeout: time.Minute, Transport: &http.Transport{Dial: dial}}
			defer c.CloseIdleConnections()

			resp, err := c.Post(base+"/echo", "text/plain", strings.NewReader("hello"))
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			resp, err = c.Get(base + "/events")
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			ws, resp, err := (&websocket.Dialer{NetDial: dial}).Dial("ws"+strings.TrimPrefix(base, "http")+"/ws", nil)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			ws.WriteMessage(websocket.TextMessage, []byte("hi"))
			if _, msg, err := ws.ReadMessage(); err != nil || string(msg) != "echo: hi" {
				t.Fatalf("echo %q %v", msg, err)
			}
			ws.Close()

			byPath := map[string]inspect.Request{}
			deadline := time.Now().Add(time.Minute)
			for len(byPath) < 3 {
				clear(byPath)
				for _, r := range in.List() {
					if r.State == inspect.StateDone {
						r, _ = in.Get(r.ID)
						byPath[r.Path] = r
					}
				}
				if time.Now().After(deadline) {
					t.Fatalf("finished records: %+v (all: %+v)", byPath, in.List())
				}
				time.Sleep(10 * time.Millisecond)
			}
			if r := byPath["/echo"]; r.Method != "POST" || r.Status != 200 || r.RequestBodySize != 5 || r.ResponseBodySize == 0 {
				t.Errorf("/echo: %+v", r)
			}
			if r := byPath["/events"]; r.Stream != inspect.StreamSSE || len(r.Items) != 2 || r.Items[0].Text != "one" || r.Items[1].Text != "two" {
				t.Errorf("/events: %+v", r)
			}
			r := byPath["/ws"]
			if r.Status != 101 || r.Stream != inspect.StreamWebSocket || len(r.Items) < 2 ||
				r.Items[0].Direction != "in" || r.Items[0].Text != "hi" || r.Items[1].Direction != "out" || r.Items[1].Text != "echo: hi" {
				t.Errorf("/ws: %+v", r)
			}
			if out := console.String(); !strings.Contains(out, "POST    /echo") || !strings.Contains(out, "/ws") {
				t.Errorf("console %q", out)
			}
		})
	}
}
