package tunnel

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/testtool"
)

// pipeRig is a v2 tunnel whose agent pipes to a local server: a public
// proxy in front of the edge's session, the agent's session, its handler
// (which answers "handler", for what does not take a pipe) and how many
// pipes it dialed.
type pipeRig struct {
	front   string // the public proxy's URL
	sess    Session
	agent   *AgentSession
	handled atomic.Int32  // requests the agent's handler served
	dials   atomic.Int32  // pipes dialed
	refuse  atomic.Bool   // the pipe dial answers ErrNoPipe
	held    chan struct{} // a request to /hold waits for it to close
}

// newPipeRig starts it, the agent's pipes dialing local (host:port; ""
// offers none), with the edge's cfg and the agent's protocol.
func newPipeRig(t *testing.T, edgeCfg AcceptConfig, proto, local string) *pipeRig {
	t.Helper()
	rig := &pipeRig{held: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	sessions := make(chan Session, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cfg := edgeCfg
		cfg.Authorize = func(_ context.Context, reg *Registration) (*Grant, error) {
			return &Grant{TunnelID: reg.TunnelID, PublicURL: "http://" + reg.TunnelID + ".example"}, nil
		}
		s, err := Accept(w, r, cfg)
		if err != nil {
			return
		}
		sessions <- s
		s.Run(ctx)
	}))
	dc := DialConfig{URL: "ws" + strings.TrimPrefix(srv.URL, "http"), TunnelID: "t", Protocol: proto}
	if local != "" {
		dc.Pipe = func(ctx context.Context) (net.Conn, error) {
			if rig.refuse.Load() {
				return nil, ErrNoPipe
			}
			rig.dials.Add(1)
			var d net.Dialer
			return d.DialContext(ctx, "tcp", local)
		}
	}
	as, err := Dial(ctx, dc)
	if err != nil {
		t.Fatal(err)
	}
	rig.agent = as
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		as.Serve(ctx, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			rig.handled.Add(1)
			if r.URL.Path == "/hold" {
				select {
				case <-rig.held:
				case <-r.Context().Done():
				}
			}
			io.Copy(io.Discard, r.Body)
			io.WriteString(w, "handler")
		}))
	}()
	rig.sess = <-sessions
	front := httptest.NewServer(NewProxy(Proxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme, pr.Out.URL.Host = "http", pr.In.Host
		},
		Transport: rig.sess,
		Buffers:   &BufferPool{},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			http.Error(w, err.Error(), http.StatusBadGateway)
		},
	}, nil))
	rig.front = front.URL
	t.Cleanup(func() {
		front.CloseClientConnections()
		front.Close()
		cancel()
		rig.sess.Close()
		wg.Wait()
		srv.CloseClientConnections()
		srv.Close()
	})
	return rig
}

// do sends a request through the rig's front with a client of its own
// (a connection per call: the pipes, not the visitor's connection, are
// what is reused), and returns the body.
func (rig *pipeRig) do(t *testing.T, method, path string, body io.Reader, hdr http.Header) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(method, rig.front+path, body)
	for k, vv := range hdr {
		req.Header[k] = vv
	}
	tr := &http.Transport{DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: body: %v", method, path, err)
	}
	return resp, string(b)
}

// upstreamServer is the local server: it answers "up PATH host=HOST" and
// counts its connections.
func upstreamServer(t *testing.T, h http.HandlerFunc) (*httptest.Server, *atomic.Int32) {
	t.Helper()
	var conns atomic.Int32
	if h == nil {
		h = func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "up "+r.URL.RequestURI()+" host="+r.Host+" cookie="+r.Header.Get("Cookie"))
		}
	}
	up := httptest.NewUnstartedServer(h)
	up.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			conns.Add(1)
		}
	}
	up.Start()
	t.Cleanup(up.Close)
	return up, &conns
}

// Simple requests take one pipe, reused, to the local server; the others
// take the agent's handler. Only v2 agents that offer pipes get them, and
// only from an edge that uses them.
func TestPipeCarriesSimpleRequests(t *testing.T) {
	t.Parallel()
	up, conns := upstreamServer(t, nil)
	rig := newPipeRig(t, AcceptConfig{}, ProtocolV2, up.Listener.Addr().String())
	if !rig.agent.Pipes() {
		t.Fatal("the edge did not confirm pipes")
	}
	host := strings.TrimPrefix(rig.front, "http://")
	for i := range 5 {
		resp, b := rig.do(t, "GET", "/p?i="+itoa(i), nil, nil)
		if want := "up /p?i=" + itoa(i) + " host=" + host + " cookie="; resp.StatusCode != 200 || b != want {
			t.Fatalf("GET %d: %d %q, want %q", i, resp.StatusCode, b, want)
		}
	}
	if resp, b := rig.do(t, "HEAD", "/h", nil, nil); resp.StatusCode != 200 || b != "" {
		t.Errorf("HEAD: %d %q", resp.StatusCode, b)
	}
	if d, c := rig.dials.Load(), conns.Load(); d != 1 || c != 1 {
		t.Errorf("%d pipes dialed, %d local connections; want 1 and 1", d, c)
	}
	if n := rig.handled.Load(); n != 0 {
		t.Errorf("the handler served %d simple requests", n)
	}
	// Not simple: a body, a method other than GET and HEAD, two Cookie
	// fields (HTTP/2 joins them; a pipe would not).
	rig.do(t, "POST", "/post", strings.NewReader("x"), nil)
	rig.do(t, "DELETE", "/del", nil, nil)
	rig.do(t, "GET", "/cookies", nil, http.Header{"Cookie": {"a=1", "b=2"}})
	if n := rig.handled.Load(); n != 3 {
		t.Errorf("the handler served %d requests, want 3", n)
	}
	if _, b := rig.do(t, "GET", "/cookie", nil, http.Header{"Cookie": {"a=1"}}); !strings.HasSuffix(b, "cookie=a=1") {
		t.Errorf("one Cookie field: %q", b)
	}

	for name, c := range map[string]struct {
		cfg   AcceptConfig
		proto string
	}{"v1": {AcceptConfig{}, ProtocolV1}, "disabled at the edge": {AcceptConfig{DisablePipes: true}, ProtocolV2}} {
		t.Run(name, func(t *testing.T) {
			rig := newPipeRig(t, c.cfg, c.proto, up.Listener.Addr().String())
			if rig.agent.Pipes() {
				t.Fatal("pipes confirmed")
			}
			if _, b := rig.do(t, "GET", "/", nil, nil); b != "handler" {
				t.Errorf("GET: %q, want the handler's", b)
			}
			if rig.dials.Load() != 0 {
				t.Error("a pipe was dialed")
			}
		})
	}
}

// An agent that refuses pipes (ErrNoPipe: its upstream cannot be piped
// now) gets requests as streams of their own, and pipes again after
// ResetPipes; ResetPipes also drops the pipes held, which went where the
// upstream was.
func TestPipeRefusedAndReset(t *testing.T) {
	t.Parallel()
	up, conns := upstreamServer(t, nil)
	rig := newPipeRig(t, AcceptConfig{}, ProtocolV2, up.Listener.Addr().String())
	rig.refuse.Store(true)
	for range 3 {
		if _, b := rig.do(t, "GET", "/", nil, nil); b != "handler" {
			t.Fatalf("GET while refused: %q", b)
		}
	}
	rig.refuse.Store(false)
	if err := rig.agent.ResetPipes(); err != nil {
		t.Fatal(err)
	}
	testtool.Eventually(t, "requests to take pipes again", func() bool {
		_, b := rig.do(t, "GET", "/", nil, nil)
		return strings.HasPrefix(b, "up ")
	})
	if d := rig.dials.Load(); d != 1 {
		t.Fatalf("%d pipes dialed, want 1", d)
	}
	// The pipe is held idle; a reset drops it, and the next request
	// takes a new one.
	if err := rig.agent.ResetPipes(); err != nil {
		t.Fatal(err)
	}
	testtool.Eventually(t, "a new pipe after the reset", func() bool {
		_, b := rig.do(t, "GET", "/", nil, nil)
		return strings.HasPrefix(b, "up ") && rig.dials.Load() == 2
	})
	if c := conns.Load(); c != 2 {
		t.Errorf("%d local connections, want 2", c)
	}
}

// A pipe the local server closed while it was idle is not reused: the
// next request takes a new one (or, when the close crosses it, is sent
// again on a new one), and every request is answered.
func TestPipeClosedByServer(t *testing.T) {
	t.Parallel()
	addr := serveLocal(t, func(c *net.TCPConn) {
		// One response, kept alive as far as the client knows, then
		// closed.
		if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	})
	rig := newPipeRig(t, AcceptConfig{}, ProtocolV2, addr)
	for i := range 6 {
		if resp, b := rig.do(t, "GET", "/", nil, nil); resp.StatusCode != 200 || b != "ok" {
			t.Fatalf("GET %d: %d %q", i, resp.StatusCode, b)
		}
	}
	if n := rig.handled.Load(); n != 0 {
		t.Errorf("the handler served %d requests", n)
	}
}

// A streamed response through a pipe: its headers and each event come as
// they are written, and the visitor leaving ends the local server's
// request (cancellation carried on a pipe: it is closed, not reused).
func TestPipeStreamsAndCancels(t *testing.T) {
	t.Parallel()
	next := make(chan struct{})
	gone := make(chan struct{})
	up, _ := upstreamServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		for i := 0; ; i++ {
			select {
			case <-next:
			case <-r.Context().Done():
				close(gone)
				return
			}
			io.WriteString(w, "data: "+itoa(i)+"\n\n")
			w.(http.Flusher).Flush()
		}
	})
	rig := newPipeRig(t, AcceptConfig{}, ProtocolV2, up.Listener.Addr().String())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", rig.front+"/sse", nil)
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("Content-Type %q", ct)
	}
	br := bufio.NewReader(resp.Body)
	for i := range 3 {
		next <- struct{}{}
		line, err := br.ReadString('\n')
		if err != nil || line != "data: "+itoa(i)+"\n" {
			t.Fatalf("event %d: %q, %v", i, line, err)
		}
		br.ReadString('\n')
	}
	if rig.handled.Load() != 0 || rig.dials.Load() != 1 {
		t.Fatalf("handler %d, pipes %d: the stream did not take a pipe", rig.handled.Load(), rig.dials.Load())
	}
	cancel()
	select {
	case <-gone:
	case <-time.After(time.Minute):
		t.Fatal("the local server's request did not end when the visitor left")
	}
}

// A control message that is not pipe_reset, or pipe_reset from an agent
// without pipes, is counted and ignored.
func TestPipeResetWithoutPipes(t *testing.T) {
	t.Parallel()
	var bad atomic.Int32
	cfg := Config{OnFrameError: func(kind string) {
		if kind == "unexpected_text" {
			bad.Add(1)
		}
	}}
	rig := newPipeRig(t, AcceptConfig{Config: cfg}, ProtocolV2, "")
	as := rig.agent
	testtool.Eventually(t, "the session to serve", func() bool { return as.conn.Load() != nil })
	if err := writePipeReset(as.conn.Load(), time.Minute); err != nil {
		t.Fatal(err)
	}
	testtool.Eventually(t, "the pipe_reset to be counted", func() bool { return bad.Load() == 1 })
	if _, b := rig.do(t, "GET", "/", nil, nil); b != "handler" {
		t.Errorf("the session after it: %q", b)
	}
}

// Large bodies through a pipe, of known length and chunked, arrive whole
// and in order (read through the proxy's large buffers while they flow).
func TestPipeLargeBodies(t *testing.T) {
	t.Parallel()
	data := randomBytes(4 << 20)
	up, _ := upstreamServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/sized" {
			w.Header().Set("Content-Length", itoa(len(data)))
		}
		for b := data; len(b) > 0; {
			n := min(len(b), 100_000)
			w.Write(b[:n])
			w.(http.Flusher).Flush()
			b = b[n:]
		}
	})
	rig := newPipeRig(t, AcceptConfig{}, ProtocolV2, up.Listener.Addr().String())
	for _, path := range []string{"/sized", "/chunked", "/sized"} {
		resp, b := rig.do(t, "GET", path, nil, nil)
		if resp.StatusCode != 200 || b != string(data) {
			t.Fatalf("GET %s: %d, %d bytes, equal %v", path, resp.StatusCode, len(b), b == string(data))
		}
	}
	if rig.handled.Load() != 0 || rig.dials.Load() != 1 {
		t.Errorf("handler %d, pipes %d", rig.handled.Load(), rig.dials.Load())
	}
}

// Idle pipes count as streams, and make room when a new stream finds the
// session's limit reached: a request is not refused for a pipe that waits.
func TestPipeIdleMakesRoom(t *testing.T) {
	t.Parallel()
	up, _ := upstreamServer(t, nil)
	rig := newPipeRig(t, AcceptConfig{Config: Config{MaxStreams: 2}}, ProtocolV2, up.Listener.Addr().String())
	if _, b := rig.do(t, "GET", "/", nil, nil); !strings.HasPrefix(b, "up ") {
		t.Fatalf("GET: %q", b)
	}
	held := make(chan string, 1)
	go func() {
		// Not rig.do: it fails the test, which only the test's goroutine may.
		tr := &http.Transport{DisableKeepAlives: true}
		defer tr.CloseIdleConnections()
		resp, err := (&http.Client{Transport: tr}).Post(rig.front+"/hold", "text/plain", strings.NewReader("x"))
		if err != nil {
			held <- err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		held <- string(b)
	}()
	testtool.Eventually(t, "the held request to reach the handler", func() bool { return rig.handled.Load() == 1 })
	// The idle pipe and the held request fill the limit of 2.
	if resp, b := rig.do(t, "POST", "/", strings.NewReader("y"), nil); resp.StatusCode != 200 || b != "handler" {
		t.Errorf("POST at the limit: %d %q", resp.StatusCode, b)
	}
	close(rig.held)
	if b := <-held; b != "handler" {
		t.Errorf("held POST: %q", b)
	}
}
