package tunnel

import (
	"context"
	"io"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/gorilla/websocket"
	"github.com/sluicehq/sluice/wire"
)

// Issue 11, finding 9: what an authenticated agent can make the edge hold.

// A frame over the limit is read into memory up to the limit only: the
// buffer never grows past max+1 bytes, and the rest stays unread (to be
// discarded in chunks). Before, the buffer doubled past the limit (a 33 MiB
// frame over the 32 MiB limit cost 64 MiB).
func TestReadUpToBuffersNoMoreThanTheLimit(t *testing.T) {
	const max = 1 << 20
	for _, size := range []int{0, 1, max - 1, max, max + 1, 10 * max} {
		src := &countingReader{r: io.LimitReader(zeros{}, int64(size))}
		var buf []byte
		n, err := readUpTo(src, &buf, max)
		if err != nil {
			t.Fatal(err)
		}
		if want := min(size, max+1); n != want || len(buf) != want {
			t.Errorf("size %d: read %d (len %d), want %d", size, n, len(buf), want)
		}
		if cap(buf) > max+1 {
			t.Errorf("size %d: buffer of %d bytes for a limit of %d", size, cap(buf), max)
		}
		if src.n > max+1 {
			t.Errorf("size %d: %d bytes consumed into the buffer", size, src.n)
		}
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

// A v1 agent's response head over MaxHeaderBytes fails its request (the
// edge holds none of it past the frame) and is counted; the session goes
// on.
func TestOversizedResponseHeadV1(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var kinds sync.Map
		cfg := Config{MaxHeaderBytes: 64 << 10, OnFrameError: func(kind string) {
			n, _ := kinds.LoadOrStore(kind, new(atomic.Int64))
			n.(*atomic.Int64).Add(1)
		}}
		sess, stop := bubbleTunnel(t, cfg, ProtocolV1, bigHeadUpstream())
		defer stop()
		client := &http.Client{Transport: sess}
		if resp, err := client.Get("http://t.example/big"); err == nil {
			resp.Body.Close()
			t.Fatalf("a head of 5 MB passed: %d, %d header fields", resp.StatusCode, len(resp.Header))
		}
		if n, ok := kinds.Load("oversized_head"); !ok || n.(*atomic.Int64).Load() != 1 {
			t.Errorf("oversized_head not counted once")
		}
		if body := getText(t, sess, "http://t.example/small"); body != "small" {
			t.Fatalf("after the big head: %q", body)
		}
	})
}

// The same over protocol v2: the edge's HTTP/2 client advertises and
// enforces MaxHeaderBytes (SETTINGS_MAX_HEADER_LIST_SIZE). A head far over
// it is a connection error in x/net's framer (it stops decoding it at
// twice the limit): the session ends, and the agent reconnects.
func TestOversizedResponseHeadV2(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sess, stop := bubbleTunnel(t, Config{MaxHeaderBytes: 64 << 10}, ProtocolV2, bigHeadUpstream())
		defer stop()
		client := &http.Client{Transport: sess}
		if resp, err := client.Get("http://t.example/big"); err == nil {
			resp.Body.Close()
			t.Fatalf("a head of 5 MB passed: %d, %d header fields", resp.StatusCode, len(resp.Header))
		}
	})
}

// bigHeadUpstream answers /big with 5 MB of headers, anything else with
// "small".
func bigHeadUpstream() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/big" {
			v := strings.Repeat("x", 8<<10)
			for i := range 640 { // 640 × 8 KiB: 5 MB
				w.Header().Add("X-Big-"+itoa(i), v)
			}
		}
		io.WriteString(w, strings.TrimPrefix(r.URL.Path, "/"))
	})
}

// An agent that never reads, but sends a message every 2 s (so that its
// read deadline, 5 s here, keeps moving: the agent sent one every
// 5 s against the default 30 s), is dropped once the edge's writes to it are
// stuck: its ping cannot be written within the pong timeout. Before, the
// ping loop just returned, and the session, its requests' goroutines and
// its connection stayed forever.
func TestNonReadingAgentDroppedInBubble(t *testing.T) {
	for _, protocol := range []string{ProtocolV1, ProtocolV2} {
		t.Run(protocol, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				cfg := Config{PingInterval: time.Second, PongTimeout: 5 * time.Second}
				e := startBubbleEdge(cfg)
				e.ln.limit = 1 << 10 // "kernel buffers" of 1 KiB each way
				defer e.close()
				d := websocket.Dialer{NetDialContext: e.ln.dial}
				if protocol == ProtocolV2 {
					d.Subprotocols = []string{Subprotocol}
				}
				ws, _, err := d.Dial("ws://edge.test/agent", nil)
				if err != nil {
					t.Fatal(err)
				}
				defer ws.Close()
				registerRaw(t, ws)
				sess := <-e.sessions

				// The agent: a message every 2 s, never a read.
				agentDone := make(chan struct{})
				defer func() { <-agentDone }()
				go func() {
					defer close(agentDone)
					noop := wire.AppendFrame(nil, &wire.Frame{Type: "noop"}, wire.EncodeOptions{})
					for {
						select {
						case <-sess.Done():
							return
						case <-time.After(2 * time.Second):
						}
						ws.SetWriteDeadline(time.Now().Add(time.Second))
						if ws.WriteMessage(websocket.TextMessage, noop) != nil {
							return
						}
					}
				}()

				// A visitor whose request head (8 KiB) fills the agent's
				// buffers. (One: in a bubble, a second would wait on the
				// session's write mutex, which stops the fake clock.)
				ctx, cancel := context.WithCancel(context.Background())
				visited := make(chan struct{})
				defer func() { cancel(); <-visited }()
				go func() {
					defer close(visited)
					req, _ := http.NewRequestWithContext(ctx, "GET", "http://t.example/", nil)
					req.Header.Set("X-Pad", strings.Repeat("p", 8<<10))
					if resp, err := sess.RoundTrip(req); err == nil {
						resp.Body.Close()
					}
				}()
				start := time.Now()
				select {
				case <-sess.Done():
				case <-time.After(10 * time.Minute):
					t.Fatal("an agent that reads nothing is still connected after 10 minutes")
				}
				if took := time.Since(start); took > 2*cfg.PongTimeout+cfg.PingInterval {
					t.Errorf("dropped after %v, want about the pong timeout %v", took, cfg.PongTimeout)
				}
			})
		})
	}
}

// Issue 11, finding 6: before it has authenticated, an agent's WebSocket
// costs the edge little. 200 handshakes wait for their register frame; the
// heap they hold (edge and these clients together, in one process) stays
// under 48 KiB each. Before, the edge's fixed 64 KiB buffers each way made
// it about 150 KB each.
func TestPreAuthHandshakeHeap(t *testing.T) {
	const n = 200
	url, _ := acceptor(t, Config{HandshakeTimeout: 10 * time.Minute})
	d := websocket.Dialer{ReadBufferSize: 1024, WriteBufferSize: 1024}
	before := liveHeap()
	conns := make([]*websocket.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range n {
		c, _, err := d.Dial(url, nil)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	after := liveHeap()
	per := (int64(after) - int64(before)) / n
	t.Logf("%d pending handshakes: %d bytes of heap each", n, per)
	if per > 48<<10 {
		t.Errorf("a pending handshake holds %d bytes of heap, want at most %d", per, 48<<10)
	}
}

// liveHeap is the heap in use after a collection.
func liveHeap() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}
