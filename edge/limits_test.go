package edge_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/sluicehq/sluice/edge"
	"github.com/sluicehq/sluice/internal/testtool"
	"github.com/sluicehq/sluice/tunnel"
)

// serveAgent runs a real agent (protocol v1 or v2) for tunnel name that
// serves upstream, until the test ends.
func (e *testEdge) serveAgent(t *testing.T, name, protocol string, upstream http.Handler) {
	t.Helper()
	e.serveAgentConfig(t, tunnel.DialConfig{TunnelID: name, Token: "T", Protocol: protocol}, upstream)
}

// serveAgentConfig runs a real agent with cfg (its URL: this edge's)
// that serves upstream, until the test ends.
func (e *testEdge) serveAgentConfig(t *testing.T, cfg tunnel.DialConfig, upstream http.Handler) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cfg.URL = "ws://" + e.addr + "/agent"
	as, err := tunnel.Dial(ctx, cfg)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		as.Serve(ctx, upstream)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
}

// rawRequest sends a request head on a new connection from the local
// address from (such as 127.0.0.2) and returns the connection; the
// caller writes the body, if any.
func (e *testEdge) rawRequest(t *testing.T, from, head string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	c, err := d.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := io.WriteString(c, head); err != nil {
		t.Fatal(err)
	}
	return c
}

// readStatus reads a response's status line and headers from c.
func readStatus(t *testing.T, c net.Conn) *http.Response {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(patience))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("reading the answer: %v", err)
	}
	c.SetReadDeadline(time.Time{})
	return resp
}

const slowUpload = "POST /upload HTTP/1.1\r\nHost: up.localhost\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n"

// Slow uploads from one address fill only that address's share of
// streams: past it, that address gets 429 with Retry-After at once (an
// early answer, though its upload is unread), counted in /metrics, and
// another address is served with 200. (The attack: 1,030 uploads
// sending a byte every 5 s made the tunnel answer 503 to everyone.)
func TestSlowUploadsFromOneAddressLeaveOthersServed(t *testing.T) {
	t.Parallel()
	for _, protocol := range []string{tunnel.ProtocolV1, tunnel.ProtocolV2} {
		t.Run(protocol, func(t *testing.T) {
			t.Parallel()
			const perIP = 8
			e := startEdge(t, func(c *edge.Config) {
				c.MaxStreamsPerIP = perIP
				c.Session.MaxStreams = 2 * perIP // one address alone could fill the tunnel
			})
			var started atomic.Int64
			e.serveAgent(t, "up", protocol, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/upload" {
					started.Add(1)
				}
				io.Copy(io.Discard, r.Body)
				io.WriteString(w, "ok")
			}))
			for range perIP {
				e.rawRequest(t, "127.0.0.2", slowUpload)
			}
			testtool.Eventually(t, "every upload started", func() bool { return started.Load() == perIP })
			for range 3 * perIP { // the 1,030 against 1,024 streams, scaled
				c := e.rawRequest(t, "127.0.0.2", slowUpload)
				// Over the limit: the answer comes though the upload is
				// still open and unread.
				resp := readStatus(t, c)
				if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
					t.Fatalf("upload over the per-address limit: %s, Retry-After %q", resp.Status, resp.Header.Get("Retry-After"))
				}
			}
			c := e.rawRequest(t, "127.0.0.3", "GET / HTTP/1.1\r\nHost: up.localhost\r\n\r\n")
			if resp := readStatus(t, c); resp.StatusCode != 200 {
				t.Fatalf("another address: %s, want 200", resp.Status)
			}
			if got := metricValue(e.metrics(t), `sluice_limited_total{reason="streams_per_ip"}`); got != 3*perIP {
				t.Fatalf("streams_per_ip refusals counted: %v, want %d", got, 3*perIP)
			}
		})
	}
}

// An early answer (here 503: the tunnel carries its maximum of streams)
// reaches a client whose upload is slow at once: the edge does not first
// read up to 256 KiB of it.
func TestEarlyAnswerReachesSlowUploader(t *testing.T) {
	t.Parallel()
	e := startEdge(t, func(c *edge.Config) { c.Session.MaxStreams = 1 })
	var started atomic.Int64
	e.serveAgent(t, "up", tunnel.ProtocolV2, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		started.Add(1)
		io.Copy(io.Discard, r.Body)
	}))
	e.rawRequest(t, "127.0.0.1", slowUpload) // holds the only stream
	testtool.Eventually(t, "the upload started", func() bool { return started.Load() == 1 })
	c := e.rawRequest(t, "127.0.0.1", slowUpload)
	resp := readStatus(t, c)
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("got %s, want 503", resp.Status)
	}
	if !resp.Close {
		t.Errorf("an early answer to an unread upload should close the connection")
	}
}

// An upload that sends nothing for BodyIdleTimeout is ended: the upstream
// sees its body fail, the client gets an answer or a closed connection.
// And the session can then close (a v1 request-body pump no longer waits
// in the stalled upload's Read).
func TestIdleUploadIsEnded(t *testing.T) {
	t.Parallel()
	for _, protocol := range []string{tunnel.ProtocolV1, tunnel.ProtocolV2} {
		t.Run(protocol, func(t *testing.T) {
			t.Parallel()
			e := startEdge(t, func(c *edge.Config) { c.BodyIdleTimeout = 200 * time.Millisecond })
			upErr := make(chan error, 1)
			e.serveAgent(t, "up", protocol, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_, err := io.Copy(io.Discard, r.Body)
				upErr <- err
			}))
			c := e.rawRequest(t, "127.0.0.1", slowUpload)
			select {
			case err := <-upErr:
				if err == nil {
					t.Fatal("the upstream read the stalled upload to a clean end")
				}
			case <-time.After(patience):
				t.Fatal("the stalled upload was never ended")
			}
			c.SetReadDeadline(time.Now().Add(patience))
			var ne net.Error
			if _, err := c.Read(make([]byte, 1024)); errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("the client got neither an answer nor a close: %v", err)
			}
			e.waitMetric(t, `sluice_limited_total{reason="body_idle"}`, 1, 10*time.Second)
		})
	}
}

// The v1 session's Close returns while a request body is stalled: the
// edge ends the body's reads when the public request is over.
func TestCloseWithStalledUpload(t *testing.T) {
	t.Parallel()
	e := startEdge(t, nil) // default 60 s body idle timeout: Close must not wait for it
	answered := make(chan struct{})
	e.serveAgent(t, "up", tunnel.ProtocolV1, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "early") // answers without reading the upload
		close(answered)
	}))
	c := e.rawRequest(t, "127.0.0.1", slowUpload)
	<-answered
	if resp := readStatus(t, c); resp.StatusCode != 200 {
		t.Fatalf("got %s", resp.Status)
	}
	closed := make(chan struct{})
	go func() {
		e.srv.Close()
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(30 * time.Second): // far below the 60 s body idle timeout
		t.Fatal("Close waits for the stalled upload")
	}
}

// A client that reads nothing of a download for WriteIdleTimeout is cut;
// an event stream with nothing to send for longer lives on.
func TestWriteIdleCutsNonReadersNotQuietStreams(t *testing.T) {
	t.Parallel()
	const idle = 300 * time.Millisecond
	e := startEdge(t, func(c *edge.Config) { c.WriteIdleTimeout = idle })
	event := make(chan struct{})
	e.serveAgent(t, "up", tunnel.ProtocolV2, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/events" {
			w.Header().Set("Content-Type", "text/event-stream")
			w.WriteHeader(200)
			w.(http.Flusher).Flush()
			<-event
			io.WriteString(w, "data: late\n\n")
			return
		}
		chunk := make([]byte, 64<<10)
		for range 1 << 12 { // 256 MiB: far more than the buffers
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	}))
	quiet := e.rawRequest(t, "127.0.0.1", "GET /events HTTP/1.1\r\nHost: up.localhost\r\n\r\n")
	qr := bufio.NewReader(quiet)
	quiet.SetReadDeadline(time.Now().Add(patience))
	if resp, err := http.ReadResponse(qr, nil); err != nil || resp.StatusCode != 200 {
		t.Fatalf("events: %v %v", resp, err)
	}
	// A client with a small receive buffer that never reads.
	slow, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	slow.(*net.TCPConn).SetReadBuffer(4 << 10)
	io.WriteString(slow, "GET /big HTTP/1.1\r\nHost: up.localhost\r\n\r\n")
	e.waitMetric(t, `sluice_limited_total{reason="write_idle"}`, 1, 10*time.Second)
	// The quiet stream, idle for longer than the timeout (and than the
	// deadline's 1.25 x), still gets its event.
	lateEvent(t, 2*idle, event, qr)
}

// lateEvent waits quiet (wall-clock time on real sockets: the deadlines
// are the kernel's and net/http's, so a wait), lets the upstream send its
// late event, and reads the stream up to it.
func lateEvent(t *testing.T, quiet time.Duration, event chan struct{}, br *bufio.Reader) {
	t.Helper()
	time.Sleep(quiet)
	close(event)
	var got strings.Builder
	for !strings.Contains(got.String(), "data: late") {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("quiet event stream cut after %v: %v (got %q)", quiet, err, got.String())
		}
		got.WriteString(line)
	}
}

// Over HTTP/2 a write deadline that passes resets the stream even when
// nothing is being written (net/http's server runs a timer per stream), so
// the guard there sets it around each write and clears it after: a quiet
// event stream outlives the timeout over HTTP/2 too.
func TestWriteIdleQuietStreamOverHTTP2(t *testing.T) {
	t.Parallel()
	const idle = 300 * time.Millisecond
	e := startEdge(t, func(c *edge.Config) { c.WriteIdleTimeout = idle })
	event := make(chan struct{})
	e.serveAgent(t, "up", tunnel.ProtocolV2, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "data: first\n\n")
		w.(http.Flusher).Flush()
		select {
		case <-event:
		case <-r.Context().Done():
			return
		}
		io.WriteString(w, "data: late\n\n")
	}))
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	defer tr.CloseIdleConnections()
	req := e.newRequest(t, "GET", "up.localhost", "/events", nil)
	resp, err := (&http.Client{Transport: tr, Timeout: time.Minute}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.Proto != "HTTP/2.0" || resp.StatusCode != 200 {
		t.Fatalf("events: %s %d, want HTTP/2.0 200", resp.Proto, resp.StatusCode)
	}
	br := bufio.NewReader(resp.Body)
	if line, err := br.ReadString('\n'); err != nil || line != "data: first\n" {
		t.Fatalf("first event: %q %v", line, err)
	}
	lateEvent(t, 3*idle, event, br)
}

// Clients that never read a v2 download hold no more than --max-buffer
// (plus a 16 KiB window floor per stream): the edge's buffered-bytes
// metric stays within it, the agent is held back, and a client that reads
// still gets its whole download. (The issue: 100 such clients added 420 MB.)
func TestBudgetHoldsUnreadDownloads(t *testing.T) {
	t.Parallel()
	const (
		clients   = 50
		maxBuffer = 8 << 20
		size      = 32 << 20
	)
	e := startEdge(t, func(c *edge.Config) { c.MaxBuffer = maxBuffer })
	var written atomic.Int64
	e.serveAgent(t, "dl", tunnel.ProtocolV2, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", fmt.Sprint(size))
		chunk := make([]byte, 32<<10)
		for n := 0; n < size; n += len(chunk) {
			if _, err := w.Write(chunk); err != nil {
				return
			}
			written.Add(int64(len(chunk)))
		}
	}))
	for range clients {
		c := e.rawRequest(t, "127.0.0.1", "GET /file HTTP/1.1\r\nHost: dl.localhost\r\n\r\n")
		c.(*net.TCPConn).SetReadBuffer(4 << 10) // and never reads
	}
	limit := float64(maxBuffer + clients*16<<10)
	var peak float64
	last, since := int64(-1), time.Now()
	// The upstream stops once the budget and the kernel's socket buffers
	// (some MB per connection) are full: under -race on a busy machine,
	// writing that much takes minutes.
	for deadline := time.Now().Add(5 * patience); time.Since(since) < time.Second; {
		if time.Now().After(deadline) {
			t.Fatal("the upstream never stopped writing")
		}
		v := metricValue(e.metrics(t), "sluice_buffered_bytes")
		peak = max(peak, v)
		if v > limit {
			t.Fatalf("sluice_buffered_bytes = %v, over %v", v, limit)
		}
		if w := written.Load(); w != last {
			last, since = w, time.Now()
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("%d clients never reading: buffered bytes peaked at %.0f KiB (budget %d KiB); the upstream wrote %d MiB of %d MiB asked",
		clients, peak/1024, maxBuffer>>10, last>>20, clients*size>>20)
	// A reader is served in full.
	r := e.get(t, "dl.localhost", "/file")
	if r.err != nil || len(r.body) != size {
		t.Fatalf("a reading client: %v, %d bytes", r.err, len(r.body))
	}
}

// Whole request bodies for a plain Jetty agent (which takes no streamed
// bodies) come out of the budget too: past it, the edge answers 503 at
// once instead of holding another body. (The issue: 10 uploads of 31 MB
// to a plain Jetty agent took the edge from 49 to 938 MB.)
func TestWholeBodiesWithinBudget(t *testing.T) {
	t.Parallel()
	const (
		maxBuffer = 8 << 20
		size      = 3 << 20 // with its base64 encoding, 7 MiB: one fits
		uploads   = 6
	)
	e := startEdge(t, func(c *edge.Config) { c.MaxBuffer = maxBuffer })
	e.register(t, "jetty", "T") // never answers
	results := make([]<-chan result, uploads)
	for i := range results {
		results[i] = e.goDo(e.newRequest(t, "POST", "jetty.localhost", "/up", bytes.NewReader(make([]byte, size))))
	}
	busy := 0
	for _, c := range results[:uploads-1] {
		// All but at most one are refused; the one the agent holds
		// waits until the test ends, so wait for the refusals only.
		select {
		case r := <-c:
			if r.err == nil && r.resp.StatusCode == http.StatusServiceUnavailable {
				busy++
			}
		case <-time.After(patience):
		}
		if v := metricValue(e.metrics(t), "sluice_buffered_bytes"); v > maxBuffer {
			t.Fatalf("sluice_buffered_bytes = %v, over the budget %d", v, maxBuffer)
		}
	}
	if busy < uploads-2 {
		t.Fatalf("%d of %d whole-body uploads refused as busy, want at least %d", busy, uploads, uploads-2)
	}
	t.Logf("%d of %d uploads of %d MiB refused with 503 under a %d MiB budget", busy, uploads, size>>20, maxBuffer>>20)
}

// An upgraded connection (WebSocket) follows the same rule as any other
// response: a client that reads nothing for --write-idle-timeout is cut,
// while a quiet connection with nothing to send lives on.
func TestWriteIdleCutsNonReadingWebSocket(t *testing.T) {
	t.Parallel()
	const idle = time.Second
	e := startEdge(t, func(c *edge.Config) { c.WriteIdleTimeout = idle })
	upgrader := websocket.Upgrader{}
	flooded := make(chan error, 1)
	e.serveAgent(t, "ws", tunnel.ProtocolV2, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := upgrader.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer ws.Close()
		if r.URL.Path == "/quiet" {
			for { // reads, never writes, until the client leaves
				if _, _, err := ws.ReadMessage(); err != nil {
					return
				}
			}
		}
		msg := make([]byte, 64<<10)
		for {
			if err := ws.WriteMessage(websocket.BinaryMessage, msg); err != nil {
				flooded <- err
				return
			}
		}
	}))
	dial := func(path string, rbuf int) *websocket.Conn {
		d := websocket.Dialer{NetDial: func(network, addr string) (net.Conn, error) {
			c, err := net.Dial(network, e.addr)
			if err == nil && rbuf > 0 {
				c.(*net.TCPConn).SetReadBuffer(rbuf)
			}
			return c, err
		}}
		ws, _, err := d.Dial("ws://ws.localhost"+path, nil)
		if err != nil {
			t.Fatalf("dial %s: %v", path, err)
		}
		t.Cleanup(func() { ws.Close() })
		return ws
	}
	quiet := dial("/quiet", 0)
	dial("/flood", 4<<10) // and never read
	e.waitMetric(t, `sluice_limited_total{reason="write_idle"}`, 1, time.Minute)
	select {
	case err := <-flooded:
		t.Logf("the upstream's writes ended: %v", err)
	case <-time.After(patience):
		t.Fatal("the upstream still writes to a client that was cut")
	}
	// The quiet connection, idle for longer than the timeout, still works.
	time.Sleep(2 * idle)
	if err := quiet.WriteMessage(websocket.TextMessage, []byte("still here")); err != nil {
		t.Fatalf("quiet WebSocket cut: %v", err)
	}
	quiet.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if _, _, err := quiet.ReadMessage(); err == nil {
		t.Fatal("the quiet upstream sent something")
	} else if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
		t.Fatalf("quiet WebSocket ended: %v", err)
	}
}
