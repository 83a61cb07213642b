package e2e

// End-to-end tests of the tunnel: a real "sluice edge" and "sluice http"
// (child processes), an httptest upstream in this process, and real HTTP
// clients that send Host NAME.localhost:PORT to the edge's 127.0.0.1 port.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// outBuf collects a child's output and lets a test wait for some text.
type outBuf struct {
	mu      sync.Mutex
	b       bytes.Buffer
	changed chan struct{} // closed and replaced at each write
}

func newOutBuf() *outBuf { return &outBuf{changed: make(chan struct{})} }

func (o *outBuf) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.b.Write(p)
	close(o.changed)
	o.changed = make(chan struct{})
	return len(p), nil
}

func (o *outBuf) snapshot() (string, <-chan struct{}) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.b.String(), o.changed
}

func (o *outBuf) String() string {
	s, _ := o.snapshot()
	return s
}

// proc is a sluice child process. It is killed (and waited for) in
// t.Cleanup; its output is logged when the test failed.
type proc struct {
	label          string
	cmd            *exec.Cmd
	stdout, stderr *outBuf
	done           chan struct{} // closed when the process has exited
	err            error         // Wait's result, once done is closed
}

func startProc(t testing.TB, label string, args ...string) *proc {
	t.Helper()
	return startProcEnv(t, label, nil, args...)
}

// startProcEnv is startProc with extra environment variables.
func startProcEnv(t testing.TB, label string, env []string, args ...string) *proc {
	t.Helper()
	p := &proc{label: label, stdout: newOutBuf(), stderr: newOutBuf(), done: make(chan struct{})}
	p.cmd = exec.Command(sluiceBin, args...)
	if env != nil {
		p.cmd.Env = append(os.Environ(), env...)
	}
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start sluice %v: %v", args, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			t.Logf("%s (sluice %s) exited: %v\n--- stdout:\n%s--- stderr:\n%s", p.label, strings.Join(args, " "), p.err, p.stdout, p.stderr)
		}
	})
	return p
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *proc) kill() {
	p.cmd.Process.Kill()
	<-p.done
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// waitOutput waits until out (p.stdout or p.stderr) contains want. It
// reports false if the process exited first or the timeout passed.
func (p *proc) waitOutput(out *outBuf, want string, timeout time.Duration) bool {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		s, changed := out.snapshot()
		if strings.Contains(s, want) {
			return true
		}
		select {
		case <-changed:
		case <-p.done:
			return strings.Contains(out.String(), want)
		case <-deadline.C:
			return false
		}
	}
}

// freePort returns a port that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// edgeProc is a running "sluice edge".
type edgeProc struct {
	*proc
	port int
	addr string // 127.0.0.1:port
}

var errAddrInUse = errors.New("address already in use")

// startEdge starts an edge on a free port, trying other ports when the one
// picked was taken meanwhile.
func startEdge(t testing.TB, token string, extra ...string) *edgeProc {
	t.Helper()
	for attempt := 0; ; attempt++ {
		e, err := startEdgeAt(t, freePort(t), token, extra...)
		if err == nil {
			return e
		}
		if attempt == 4 {
			t.Fatalf("no free port for the edge after 5 attempts: %v", err)
		}
	}
}

// startEdgeAt starts an edge on port and waits until it listens; it returns
// errAddrInUse if the port is taken.
func startEdgeAt(t testing.TB, port int, token string, extra ...string) (*edgeProc, error) {
	t.Helper()
	addr := "127.0.0.1:" + strconv.Itoa(port)
	args := append([]string{"edge", "--listen", addr, "--domain", "localhost", "--token", token}, extra...)
	p := startProc(t, "edge "+addr, args...)
	if p.waitOutput(p.stderr, "sluice edge listening on "+addr, 15*time.Second) {
		return &edgeProc{proc: p, port: port, addr: addr}, nil
	}
	if p.exited() && strings.Contains(p.stderr.String(), "address already in use") {
		return nil, fmt.Errorf("%s: %w", addr, errAddrInUse)
	}
	t.Fatalf("edge on %s did not start (exited: %v, %v)\nstderr: %s", addr, p.exited(), p.err, p.stderr)
	return nil, nil
}

// publicURL is the tunnel's public base URL at the edge.
func (e *edgeProc) publicURL(name string) string {
	return fmt.Sprintf("http://%s.localhost:%d", name, e.port)
}

// startAgent runs "sluice http UPSTREAM_PORT" for tunnel name and waits for
// its "Forwarding" line. proto is its --protocol; extra are more flags.
func startAgent(t *testing.T, e *edgeProc, proto, name, token string, upstreamPort int, extra ...string) *proc {
	t.Helper()
	return startAgentEnv(t, e, nil, proto, name, token, upstreamPort, extra...)
}

// startAgentEnv is startAgent with extra environment variables.
func startAgentEnv(t *testing.T, e *edgeProc, env []string, proto, name, token string, upstreamPort int, extra ...string) *proc {
	t.Helper()
	args := append([]string{"http", strconv.Itoa(upstreamPort), "--edge", "http://" + e.addr, "--token", token, "--name", name, "--protocol", proto}, extra...)
	p := startProcEnv(t, "agent "+name, env, args...)
	want := fmt.Sprintf("Forwarding %s -> http://127.0.0.1:%d\n", e.publicURL(name), upstreamPort)
	if !p.waitOutput(p.stdout, want, 15*time.Second) {
		t.Fatalf("agent %s never printed %q (exited: %v, %v)\nstdout: %s\nstderr: %s", name, want, p.exited(), p.err, p.stdout, p.stderr)
	}
	return p
}

// protocols are the agent protocols the end-to-end suite runs for.
var protocols = []string{"v1", "v2"}

// forProtocols runs test once per protocol, as parallel subtests "v1" and
// "v2": the whole tunnel suite holds for both.
func forProtocols(t *testing.T, test func(t *testing.T, proto string)) {
	t.Parallel()
	for _, proto := range protocols {
		t.Run(proto, func(t *testing.T) {
			t.Parallel()
			test(t, proto)
		})
	}
}

// tunnelClient returns a client that sends every request to the edge at
// edgeAddr, whatever the URL's host, so that Host NAME.localhost:PORT
// is sent as it is.
func tunnelClient(t *testing.T, edgeAddr string) *http.Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, edgeAddr)
		},
		DisableCompression: true,
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{
		Transport:     tr,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// do sends one request and reads the whole response body.
func do(t *testing.T, c *http.Client, method, url string, body []byte, hdr http.Header) (*http.Response, []byte) {
	t.Helper()
	resp, b, err := tryDo(c, method, url, body, hdr, 20*time.Second)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	return resp, b
}

func tryDo(c *http.Client, method, url string, body []byte, hdr http.Header, timeout time.Duration) (*http.Response, []byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return nil, nil, err
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp, b, fmt.Errorf("reading the body: %w", err)
	}
	return resp, b, nil
}

// testUpstream is the local server behind a tunnel. Tests add their own
// handlers to mux (ServeMux registration is safe while serving). stop is
// closed in cleanup, before the server closes, to release handlers that
// wait.
type testUpstream struct {
	mux  *http.ServeMux
	srv  *httptest.Server
	port int
	stop chan struct{}
}

func newTestUpstream(t *testing.T) *testUpstream {
	u := &testUpstream{mux: http.NewServeMux(), stop: make(chan struct{})}
	u.srv = httptest.NewServer(u.mux)
	u.port = u.srv.Listener.Addr().(*net.TCPAddr).Port
	t.Cleanup(func() {
		close(u.stop)
		u.srv.Close()
	})
	return u
}

// namedUpstream answers every request with its name.
func namedUpstream(t *testing.T, name string) *testUpstream {
	u := newTestUpstream(t)
	u.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, name)
	})
	return u
}

func randomBytes(t *testing.T, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func jsonError(t *testing.T, resp *http.Response, body []byte) (code, message string) {
	t.Helper()
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Fatalf("Content-Type %q with Accept: application/json; body %q", ct, body)
	}
	var v struct {
		Error struct {
			Code    string `json:"code"`
			Status  int    `json:"status"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatalf("body is not JSON: %v: %q", err, body)
	}
	if v.Error.Status != resp.StatusCode {
		t.Errorf("error.status %d, response status %d", v.Error.Status, resp.StatusCode)
	}
	return v.Error.Code, v.Error.Message
}

// readEvent reads one event block of an event stream, up to and including
// its blank line.
func readEvent(br *bufio.Reader) (string, error) {
	var sb strings.Builder
	for {
		line, err := br.ReadString('\n')
		sb.WriteString(line)
		if err != nil {
			return sb.String(), err
		}
		if line == "\n" {
			return sb.String(), nil
		}
	}
}

// TestTunnel runs one edge and one agent and checks, in parallel subtests,
// what goes through the tunnel. The v2 agent offers pipes (its console
// lines and inspector on, as by default): simple requests go as HTTP/1.1
// bytes on pooled streams the agent pumps to the local server
// (docs/protocol.md, "Pipes"), the others as streams of their own.
func TestTunnel(t *testing.T) { forProtocols(t, testTunnel) }

// TestTunnelPipes is the same suite through a v2 agent without its
// inspector, which pipes with nothing to record.
func TestTunnelPipes(t *testing.T) {
	t.Parallel()
	testTunnelWith(t, "v2", "--inspect", "off")
}

func testTunnel(t *testing.T, proto string) { testTunnelWith(t, proto) }

// testTunnelWith is the tunnel suite with agents started with proto and
// agentFlags.
func testTunnelWith(t *testing.T, proto string, agentFlags ...string) {
	const token = "tunnel-test-token"
	up := newTestUpstream(t)
	e := startEdge(t, token)
	startAgent(t, e, proto, "app", token, up.port, agentFlags...)
	if proto == "v2" {
		// The edge confirmed pipes (its log line of the registration).
		if !e.waitOutput(e.stderr, " pipe]", 15*time.Second) {
			t.Fatalf("the edge did not confirm pipes:\n%s", e.stderr)
		}
	}
	c := tunnelClient(t, e.addr)
	base := e.publicURL("app")
	publicHost := fmt.Sprintf("app.localhost:%d", e.port)

	t.Run("RoundTrips", func(t *testing.T) {
		t.Parallel()
		payload := randomBytes(t, 300<<10)
		cookies := []string{"a=1; Path=/", "b=2; HttpOnly", "c=3; Expires=Wed, 21 Oct 2015 07:28:00 GMT"}
		up.mux.HandleFunc("/rt/", func(w http.ResponseWriter, r *http.Request) {
			h := w.Header()
			h.Set("X-Got-Method", r.Method)
			h.Set("X-Got-URI", r.RequestURI)
			multi, _ := json.Marshal(r.Header["X-Multi"])
			h.Set("X-Got-Multi", string(multi))
			switch {
			case strings.HasPrefix(r.URL.Path, "/rt/etag"):
				h.Set("ETag", `"v1"`)
				if r.Header.Get("If-None-Match") == `"v1"` {
					w.WriteHeader(http.StatusNotModified)
					return
				}
				io.WriteString(w, "fresh")
			case r.Method == http.MethodGet || r.Method == http.MethodHead:
				h.Set("Content-Type", "application/octet-stream")
				h.Set("Content-Length", strconv.Itoa(len(payload)))
				for _, c := range cookies {
					h.Add("Set-Cookie", c)
				}
				w.Write(payload)
			case r.Method == http.MethodPost || r.Method == http.MethodPut:
				body, err := io.ReadAll(r.Body)
				if err != nil {
					http.Error(w, err.Error(), 500)
					return
				}
				h.Set("X-Got-Content-Length", strconv.FormatInt(r.ContentLength, 10))
				for i := range body {
					body[i] ^= 0x5a
				}
				h.Set("Content-Type", "application/octet-stream")
				if r.Method == http.MethodPost {
					w.WriteHeader(http.StatusCreated)
				}
				w.Write(body)
			case r.Method == http.MethodDelete:
				h.Set("X-Deleted", "yes")
				w.WriteHeader(http.StatusNoContent)
			default:
				w.WriteHeader(http.StatusMethodNotAllowed)
			}
		})
		xor := func(b []byte) []byte {
			out := make([]byte, len(b))
			for i := range b {
				out[i] = b[i] ^ 0x5a
			}
			return out
		}

		uri := "/rt/data/a%2Fb%20c%C3%A9?q=a%26b%3Dc&x=%E2%9C%93&sp=a+b%2B&empty=&k=1&k=2"
		multi := http.Header{"X-Multi": {"one", "two"}}

		t.Run("GET", func(t *testing.T) {
			resp, body := do(t, c, "GET", base+uri, nil, multi)
			if resp.StatusCode != 200 {
				t.Fatalf("status %d: %q", resp.StatusCode, body)
			}
			if !bytes.Equal(body, payload) {
				t.Errorf("body: %d bytes, differs from the upstream's %d", len(body), len(payload))
			}
			if resp.ContentLength != int64(len(payload)) {
				t.Errorf("Content-Length %d, want %d", resp.ContentLength, len(payload))
			}
			if got := resp.Header.Get("X-Got-URI"); got != uri {
				t.Errorf("upstream got request URI %q, want %q", got, uri)
			}
			if got := resp.Header.Get("X-Got-Multi"); got != `["one","two"]` {
				t.Errorf("upstream got X-Multi %s, want [\"one\",\"two\"]", got)
			}
			if got := resp.Header.Values("Set-Cookie"); !reflect.DeepEqual(got, cookies) {
				t.Errorf("Set-Cookie %q, want %q", got, cookies)
			}
		})
		t.Run("HEAD", func(t *testing.T) {
			resp, body := do(t, c, "HEAD", base+uri, nil, multi)
			if resp.StatusCode != 200 || len(body) != 0 {
				t.Fatalf("status %d, %d body bytes", resp.StatusCode, len(body))
			}
			if resp.Header.Get("X-Got-Method") != "HEAD" {
				t.Errorf("upstream got method %q", resp.Header.Get("X-Got-Method"))
			}
			if resp.ContentLength != int64(len(payload)) {
				t.Errorf("Content-Length %d, want %d", resp.ContentLength, len(payload))
			}
			if got := resp.Header.Values("Set-Cookie"); !reflect.DeepEqual(got, cookies) {
				t.Errorf("Set-Cookie %q, want %q", got, cookies)
			}
		})
		for _, m := range []struct {
			method string
			status int
		}{{"POST", 201}, {"PUT", 200}} {
			t.Run(m.method, func(t *testing.T) {
				reqBody := randomBytes(t, 256<<10+123)
				resp, body := do(t, c, m.method, base+uri, reqBody, multi)
				if resp.StatusCode != m.status {
					t.Fatalf("status %d, want %d: %q", resp.StatusCode, m.status, body)
				}
				if resp.Header.Get("X-Got-Method") != m.method {
					t.Errorf("upstream got method %q", resp.Header.Get("X-Got-Method"))
				}
				if got := resp.Header.Get("X-Got-Content-Length"); got != strconv.Itoa(len(reqBody)) {
					t.Errorf("upstream got Content-Length %s, want %d", got, len(reqBody))
				}
				if !bytes.Equal(body, xor(reqBody)) {
					t.Errorf("request or response body altered: got %d bytes back for %d sent", len(body), len(reqBody))
				}
				if got := resp.Header.Get("X-Got-URI"); got != uri {
					t.Errorf("upstream got request URI %q, want %q", got, uri)
				}
				if got := resp.Header.Get("X-Got-Multi"); got != `["one","two"]` {
					t.Errorf("upstream got X-Multi %s", got)
				}
			})
		}
		t.Run("DELETE 204", func(t *testing.T) {
			resp, body := do(t, c, "DELETE", base+"/rt/data/x?id=7", nil, nil)
			if resp.StatusCode != 204 || len(body) != 0 {
				t.Fatalf("status %d, body %q", resp.StatusCode, body)
			}
			if resp.Header.Get("X-Got-Method") != "DELETE" || resp.Header.Get("X-Deleted") != "yes" {
				t.Errorf("headers %v", resp.Header)
			}
			if resp.Header.Get("Content-Length") != "" || resp.Header.Get("Transfer-Encoding") != "" || len(resp.TransferEncoding) != 0 {
				t.Errorf("204 with body framing: %v %v", resp.Header, resp.TransferEncoding)
			}
		})
		t.Run("304", func(t *testing.T) {
			resp, body := do(t, c, "GET", base+"/rt/etag", nil, nil)
			if resp.StatusCode != 200 || string(body) != "fresh" {
				t.Fatalf("status %d, body %q", resp.StatusCode, body)
			}
			resp, body = do(t, c, "GET", base+"/rt/etag", nil, http.Header{"If-None-Match": {`"v1"`}})
			if resp.StatusCode != 304 || len(body) != 0 {
				t.Fatalf("status %d, body %q", resp.StatusCode, body)
			}
			if resp.Header.Get("ETag") != `"v1"` {
				t.Errorf("ETag %q", resp.Header.Get("ETag"))
			}
			if len(resp.TransferEncoding) != 0 {
				t.Errorf("304 with Transfer-Encoding %v", resp.TransferEncoding)
			}
		})
	})

	// Heads far larger than the agent's buffers toward the local server
	// (1 KiB each way): a long request header, long response headers and
	// a chunked body still pass whole.
	t.Run("LargeHeaders", func(t *testing.T) {
		t.Parallel()
		long := strings.Repeat("0123456789abcdef", 1<<10) // 16 KiB
		up.mux.HandleFunc("/large-headers", func(w http.ResponseWriter, r *http.Request) {
			if got := r.Header.Get("X-Long"); got != long {
				http.Error(w, fmt.Sprintf("X-Long: %d bytes, want %d", len(got), len(long)), http.StatusBadRequest)
				return
			}
			for i := range 3 {
				w.Header().Add("X-Long-Reply", strconv.Itoa(i)+long)
			}
			for i := range 3 {
				fmt.Fprintf(w, "part %d;", i)
				http.NewResponseController(w).Flush()
			}
		})
		resp, body := do(t, c, "GET", base+"/large-headers", nil, http.Header{"X-Long": {long}})
		if resp.StatusCode != 200 || string(body) != "part 0;part 1;part 2;" {
			t.Fatalf("status %d, body %q", resp.StatusCode, body)
		}
		got := resp.Header.Values("X-Long-Reply")
		if len(got) != 3 {
			t.Fatalf("%d X-Long-Reply headers, want 3", len(got))
		}
		for i, v := range got {
			if v != strconv.Itoa(i)+long {
				t.Errorf("X-Long-Reply %d: %d bytes, differs", i, len(v))
			}
		}
	})

	t.Run("ForwardingHeaders", func(t *testing.T) {
		t.Parallel()
		type seen struct {
			Host   string
			Header http.Header
		}
		up.mux.HandleFunc("/fwd", func(w http.ResponseWriter, r *http.Request) {
			// Hop-by-hop headers in the response too, for the proxies to drop.
			w.Header().Set("Connection", "X-Resp-Hop")
			w.Header().Set("X-Resp-Hop", "1")
			w.Header().Set("Keep-Alive", "timeout=9")
			w.Header().Set("Content-Type", "application/json")
			json.NewEncoder(w).Encode(seen{r.Host, r.Header})
		})
		hdr := http.Header{
			"X-Forwarded-For":  {"203.0.113.7"},
			"Connection":       {"X-Foo"},
			"X-Foo":            {"bar"},
			"Keep-Alive":       {"timeout=5"},
			"Proxy-Connection": {"keep-alive"},
			"X-End-To-End":     {"kept"},
		}
		resp, body := do(t, c, "GET", base+"/fwd", nil, hdr)
		if resp.StatusCode != 200 {
			t.Fatalf("status %d: %q", resp.StatusCode, body)
		}
		var s seen
		if err := json.Unmarshal(body, &s); err != nil {
			t.Fatalf("%v: %q", err, body)
		}
		h := s.Header
		if got := h.Values("X-Forwarded-For"); !reflect.DeepEqual(got, []string{"203.0.113.7, 127.0.0.1"}) {
			t.Errorf("X-Forwarded-For %q, want [\"203.0.113.7, 127.0.0.1\"]", got)
		}
		if got := h.Values("X-Forwarded-Host"); !reflect.DeepEqual(got, []string{publicHost}) {
			t.Errorf("X-Forwarded-Host %q, want %q", got, publicHost)
		}
		if got := h.Values("X-Forwarded-Proto"); !reflect.DeepEqual(got, []string{"http"}) {
			t.Errorf("X-Forwarded-Proto %q, want http", got)
		}
		if s.Host != publicHost {
			t.Errorf("upstream saw Host %q, want %q (--host-header preserve)", s.Host, publicHost)
		}
		for _, k := range []string{"X-Foo", "Keep-Alive", "Proxy-Connection"} {
			if v, ok := h[k]; ok {
				t.Errorf("hop-by-hop %s: %q reached the upstream", k, v)
			}
		}
		for _, v := range h.Values("Connection") {
			if strings.Contains(strings.ToLower(v), "x-foo") {
				t.Errorf("the client's Connection: X-Foo reached the upstream")
			}
		}
		if h.Get("X-End-To-End") != "kept" {
			t.Errorf("X-End-To-End %q, want kept", h.Get("X-End-To-End"))
		}
		if v, ok := resp.Header["X-Resp-Hop"]; ok {
			t.Errorf("response hop-by-hop X-Resp-Hop: %q reached the client", v)
		}
		if v := resp.Header.Get("Keep-Alive"); v == "timeout=9" {
			t.Errorf("the upstream's Keep-Alive reached the client")
		}
	})

	t.Run("SSE", func(t *testing.T) {
		t.Parallel()
		events := []string{
			"id: 1\nevent: tick\ndata: one\n\n",
			"id: 2\ndata: two\ndata: lines\n\n",
			"data: three\n\n",
		}
		// Streaming is checked by cause, not by clock: the upstream sends
		// nothing more until the client has what was sent so far (the
		// headers, then each event), and holds the stream open meanwhile.
		// A tunnel that held the headers back for body bytes, or an event
		// for more bytes or for the stream's end, would leave both waiting
		// until the ceiling. The delays are logged, not judged: a busy
		// machine sets them.
		gotHeaders := make(chan struct{})
		gotEvent := make(chan int, len(events))
		sentAt := make(chan time.Time, len(events))
		up.mux.HandleFunc("/sse-slow", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/event-stream")
			w.Header().Set("Cache-Control", "no-cache")
			w.WriteHeader(200)
			rc := http.NewResponseController(w)
			rc.Flush()
			wait := func(c <-chan struct{}) bool {
				select {
				case <-c:
					return true
				case <-r.Context().Done():
				case <-up.stop:
				}
				return false
			}
			if !wait(gotHeaders) {
				return
			}
			for i, ev := range events {
				sentAt <- time.Now()
				io.WriteString(w, ev)
				rc.Flush()
				select {
				case got := <-gotEvent:
					if got != i {
						return
					}
				case <-r.Context().Done():
					return
				case <-up.stop:
					return
				}
			}
		})
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "GET", base+"/sse-slow", nil)
		req.Header.Set("Accept", "text/event-stream")
		start := time.Now()
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("the headers, sent before any body byte: %v", err)
		}
		defer resp.Body.Close()
		t.Logf("status and headers after %v", time.Since(start).Round(time.Microsecond))
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
			t.Fatalf("status %d, Content-Type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		if got := resp.Header.Get("X-Accel-Buffering"); got != "no" {
			t.Errorf("X-Accel-Buffering %q on the streamed response, want no", got)
		}
		if resp.Header.Get("Cache-Control") != "no-cache" {
			t.Errorf("Cache-Control %q", resp.Header.Get("Cache-Control"))
		}
		close(gotHeaders)
		br := bufio.NewReader(resp.Body)
		for i, want := range events {
			got, err := readEvent(br)
			recv := time.Now()
			if err != nil {
				t.Fatalf("event %d, sent while the upstream holds the stream open: %v after %q", i, err, got)
			}
			if got != want {
				t.Fatalf("event %d = %q, want %q", i, got, want)
			}
			t.Logf("event %d: %v after the upstream wrote it", i, recv.Sub(<-sentAt).Round(time.Microsecond))
			gotEvent <- i
		}
		rest, err := io.ReadAll(br)
		if err != nil || len(rest) != 0 {
			t.Errorf("after the last event: %q, %v; want a clean end", rest, err)
		}
	})

	t.Run("SSEEventsCommand", func(t *testing.T) {
		t.Parallel()
		up.mux.HandleFunc("/sse", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/event-stream")
			w.WriteHeader(200)
			rc := http.NewResponseController(w)
			rc.Flush()
			for _, ev := range []string{
				"retry: 5000\nid: 1\nevent: tick\ndata: one\n\n",
				": a comment\nid: 2\ndata: two\ndata: lines\n\n",
				"data: \"three\" <&>\n\n",
			} {
				io.WriteString(w, ev)
				rc.Flush()
			}
		})
		r := run(t, 20*time.Second, "events", fmt.Sprintf("http://127.0.0.1:%d/sse", e.port), "--json", "--no-reconnect",
			"-H", "Host: "+publicHost)
		if r.code != 0 {
			t.Fatalf("exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
		}
		want := `{"type":"tick","data":"one","id":"1","retry":5000}` + "\n" +
			`{"type":"message","data":"two\nlines","id":"2","retry":5000}` + "\n" +
			`{"type":"message","data":"\"three\" <&>","id":"2","retry":5000}` + "\n"
		if r.stdout != want {
			t.Fatalf("stdout\n%s\nwant\n%s", r.stdout, want)
		}
	})

	t.Run("ClientLeavesCancelsUpstream", func(t *testing.T) {
		t.Parallel()
		cancelled := make(chan time.Time, 1)
		up.mux.HandleFunc("/hang", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/event-stream")
			io.WriteString(w, "data: first\n\n")
			http.NewResponseController(w).Flush()
			select {
			case <-r.Context().Done():
				cancelled <- time.Now()
			case <-up.stop:
			}
		})
		cc := tunnelClient(t, e.addr)
		resp, err := cc.Get(base + "/hang")
		if err != nil {
			t.Fatal(err)
		}
		ev, err := readEvent(bufio.NewReader(resp.Body))
		if err != nil || ev != "data: first\n\n" {
			resp.Body.Close()
			t.Fatalf("first event %q, %v", ev, err)
		}
		left := time.Now()
		resp.Body.Close() // mid-stream: the transport closes the connection
		select {
		case at := <-cancelled:
			d := at.Sub(left)
			// Logged, not judged: nothing but the carried cancellation
			// ends the upstream's wait before the ceiling.
			t.Logf("upstream request cancelled %v after the client left", d.Round(time.Microsecond))
		case <-time.After(10 * time.Second):
			t.Fatal("the upstream request was not cancelled 10s after the public client left")
		}
	})

	t.Run("UpstreamDiesMidBody", func(t *testing.T) {
		t.Parallel()
		const total, part = 100000, 40000
		payload := randomBytes(t, total)
		up.mux.HandleFunc("/die/", func(w http.ResponseWriter, r *http.Request) {
			contentLength := strings.HasSuffix(r.URL.Path, "/content-length")
			if strings.HasPrefix(r.URL.Path, "/die/hijack/") {
				conn, brw, err := http.NewResponseController(w).Hijack()
				if err != nil {
					panic(err)
				}
				defer conn.Close()
				if contentLength {
					fmt.Fprintf(brw, "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n", total)
					brw.Write(payload[:part])
				} else {
					brw.WriteString("HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
					fmt.Fprintf(brw, "%x\r\n", part)
					brw.Write(payload[:part])
					brw.WriteString("\r\n")
				}
				brw.Flush()
				return // closed without the rest
			}
			w.Header().Set("Content-Type", "application/octet-stream")
			if contentLength {
				w.Header().Set("Content-Length", strconv.Itoa(total))
			}
			w.Write(payload[:part])
			http.NewResponseController(w).Flush()
			panic(http.ErrAbortHandler)
		})
		for _, how := range []string{"panic", "hijack"} {
			for _, framing := range []string{"content-length", "chunked"} {
				t.Run(how+"/"+framing, func(t *testing.T) {
					t.Parallel()
					resp, body, err := tryDo(c, "GET", base+"/die/"+how+"/"+framing, nil, nil, 20*time.Second)
					if resp == nil {
						t.Fatalf("no response: %v", err)
					}
					if resp.StatusCode != 200 {
						t.Fatalf("status %d, want the upstream's 200: %q", resp.StatusCode, body)
					}
					if framing == "content-length" && resp.ContentLength != total {
						t.Errorf("Content-Length %d, want %d", resp.ContentLength, total)
					}
					if err == nil {
						t.Fatalf("io.ReadAll ended cleanly after %d bytes: the upstream died after %d of %d", len(body), part, total)
					}
					t.Logf("client got %d bytes then %v", len(body), err)
					if len(body) > part || !bytes.Equal(body, payload[:len(body)]) {
						t.Errorf("the %d bytes received are not a prefix of what the upstream sent", len(body))
					}
				})
			}
		}
	})

	t.Run("Range", func(t *testing.T) {
		t.Parallel()
		content := randomBytes(t, 64<<10)
		modTime := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
		up.mux.HandleFunc("/file.bin", func(w http.ResponseWriter, r *http.Request) {
			http.ServeContent(w, r, "file.bin", modTime, bytes.NewReader(content))
		})
		resp, body := do(t, c, "GET", base+"/file.bin", nil, http.Header{"Range": {"bytes=100-199"}})
		if resp.StatusCode != http.StatusPartialContent {
			t.Fatalf("status %d, want 206", resp.StatusCode)
		}
		if got, want := resp.Header.Get("Content-Range"), fmt.Sprintf("bytes 100-199/%d", len(content)); got != want {
			t.Errorf("Content-Range %q, want %q", got, want)
		}
		if resp.ContentLength != 100 {
			t.Errorf("Content-Length %d, want 100", resp.ContentLength)
		}
		if !bytes.Equal(body, content[100:200]) {
			t.Errorf("got %d bytes, not bytes 100-199", len(body))
		}
		if resp.Header.Get("Accept-Ranges") != "bytes" || resp.Header.Get("Last-Modified") != modTime.Format(http.TimeFormat) {
			t.Errorf("Accept-Ranges %q, Last-Modified %q", resp.Header.Get("Accept-Ranges"), resp.Header.Get("Last-Modified"))
		}
	})

	t.Run("UnknownTunnel", func(t *testing.T) {
		t.Parallel()
		url := fmt.Sprintf("http://nope.localhost:%d/some/path", e.port)
		resp, body := do(t, c, "GET", url, nil, nil)
		if resp.StatusCode != 404 {
			t.Fatalf("status %d, want 404: %q", resp.StatusCode, body)
		}
		if !strings.Contains(string(body), "nope.localhost") {
			t.Errorf("404 body does not name nope.localhost: %q", body)
		}
		resp, body = do(t, c, "GET", url, nil, http.Header{"Accept": {"application/json"}})
		if resp.StatusCode != 404 {
			t.Fatalf("status %d with Accept: application/json, want 404", resp.StatusCode)
		}
		code, msg := jsonError(t, resp, body)
		if code != "tunnel_not_found" {
			t.Errorf("error.code %q, want tunnel_not_found", code)
		}
		if !strings.Contains(msg, "nope.localhost") {
			t.Errorf("error.message does not name nope.localhost: %q", msg)
		}
	})

	t.Run("UpstreamNotRunning", func(t *testing.T) {
		t.Parallel()
		closed := freePort(t)
		startAgent(t, e, proto, "down", token, closed, agentFlags...)
		addr := fmt.Sprintf("127.0.0.1:%d", closed)
		resp, body := do(t, c, "GET", e.publicURL("down")+"/", nil, nil)
		if resp.StatusCode != 502 {
			t.Fatalf("status %d, want 502: %q", resp.StatusCode, body)
		}
		if !strings.Contains(string(body), addr) {
			t.Errorf("502 body does not name %s: %q", addr, body)
		}
		resp, body = do(t, c, "GET", e.publicURL("down")+"/", nil, http.Header{"Accept": {"application/json"}})
		if resp.StatusCode != 502 {
			t.Fatalf("status %d with Accept: application/json, want 502", resp.StatusCode)
		}
		if _, msg := jsonError(t, resp, body); !strings.Contains(msg, addr) {
			t.Errorf("error.message does not name %s: %q", addr, msg)
		}
	})
}

// TestAgentKilledAndRestarted: a killed agent makes the edge answer 502
// "agent offline" at once; a new agent with the same name and token serves
// again.
func TestAgentKilledAndRestarted(t *testing.T) { forProtocols(t, testAgentKilledAndRestarted) }

func testAgentKilledAndRestarted(t *testing.T, proto string) {
	const token = "killed-agent-token"
	up := namedUpstream(t, "hello")
	e := startEdge(t, token)
	a := startAgent(t, e, proto, "k", token, up.port)
	c := tunnelClient(t, e.addr)
	url := e.publicURL("k") + "/"
	if resp, body := do(t, c, "GET", url, nil, nil); resp.StatusCode != 200 || string(body) != "hello" {
		t.Fatalf("before the kill: %d %q", resp.StatusCode, body)
	}

	a.kill()
	killed := time.Now()
	var last string
poll:
	for {
		resp, body, err := tryDo(c, "GET", url, nil, nil, 5*time.Second)
		switch {
		case err != nil:
			last = err.Error()
		case resp.StatusCode == 502 && strings.Contains(strings.ToLower(string(body)), "agent offline"):
			d := time.Since(killed)
			// Logged, not judged: the ceiling below is a third of the pong
			// timeout (30 s), so only the closed connection, seen at once,
			// gets here in time.
			t.Logf("502 agent offline %v after SIGKILL: %q", d.Round(time.Microsecond), body)
			break poll
		default:
			last = fmt.Sprintf("%d %q", resp.StatusCode, body)
		}
		if time.Since(killed) > 10*time.Second {
			t.Fatalf("no 502 \"agent offline\" 10s after the agent was killed; last answer: %s", last)
		}
		time.Sleep(10 * time.Millisecond)
	}
	resp, body := do(t, c, "GET", url, nil, http.Header{"Accept": {"application/json"}})
	if code, _ := jsonError(t, resp, body); resp.StatusCode != 502 || code != "agent_offline" {
		t.Errorf("JSON answer while offline: %d %q", resp.StatusCode, body)
	}

	startAgent(t, e, proto, "k", token, up.port)
	if resp, body := do(t, c, "GET", url, nil, nil); resp.StatusCode != 200 || string(body) != "hello" {
		t.Fatalf("after the agent restarted: %d %q", resp.StatusCode, body)
	}
}

// TestEdgeRestartAgentReconnects: an edge killed and started again on the
// same port gets its agent back without anyone touching the agent.
func TestEdgeRestartAgentReconnects(t *testing.T) { forProtocols(t, testEdgeRestartAgentReconnects) }

func testEdgeRestartAgentReconnects(t *testing.T, proto string) {
	const token = "edge-restart-token"
	up := namedUpstream(t, "still here")
	e := startEdge(t, token)
	a := startAgent(t, e, proto, "r", token, up.port)
	c := tunnelClient(t, e.addr)
	url := e.publicURL("r") + "/"
	if resp, body := do(t, c, "GET", url, nil, nil); resp.StatusCode != 200 || string(body) != "still here" {
		t.Fatalf("before the restart: %d %q", resp.StatusCode, body)
	}

	e.kill()
	killed := time.Now()
	var e2 *edgeProc
	for {
		var err error
		if e2, err = startEdgeAt(t, e.port, token); err == nil {
			break
		}
		if time.Since(killed) > 5*time.Second {
			t.Fatalf("could not start the edge again on port %d: %v", e.port, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	restarted := time.Now()
	c.Transport.(*http.Transport).CloseIdleConnections()
	var last string
	for {
		resp, body, err := tryDo(c, "GET", url, nil, nil, 5*time.Second)
		if err == nil && resp.StatusCode == 200 && string(body) == "still here" {
			break
		}
		if err != nil {
			last = err.Error()
		} else {
			last = fmt.Sprintf("%d %q", resp.StatusCode, body)
		}
		if time.Since(restarted) > 15*time.Second {
			t.Fatalf("the agent did not come back 15s after the edge restarted; last answer: %s\nagent stderr: %s", last, a.stderr)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("tunnel serves again %v after the edge restarted (%v after it was killed; edge restart took %v)",
		time.Since(restarted).Round(time.Millisecond), time.Since(killed).Round(time.Millisecond), restarted.Sub(killed).Round(time.Millisecond))
	if n := strings.Count(a.stdout.String(), "Forwarding "+e2.publicURL("r")); n != 2 {
		t.Errorf("agent printed %d Forwarding lines, want 2:\n%s", n, a.stdout)
	}
	if !strings.Contains(a.stderr.String(), "reconnecting in") {
		t.Errorf("agent stderr does not say it reconnects: %s", a.stderr)
	}
}

// TestAgentNameTaken: an online name cannot be taken with another token;
// with the same token a second agent replaces the first.
func TestAgentNameTaken(t *testing.T) { forProtocols(t, testAgentNameTaken) }

func testAgentNameTaken(t *testing.T, proto string) {
	const tokA, tokB = "token-a", "token-b"
	tokens := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(tokens, []byte("# second credential\n"+tokB+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	e := startEdge(t, tokA, "--tokens", tokens)
	upA, upB, upC := namedUpstream(t, "A"), namedUpstream(t, "B"), namedUpstream(t, "C")
	a := startAgent(t, e, proto, "shared", tokA, upA.port)
	c := tunnelClient(t, e.addr)
	url := e.publicURL("shared") + "/"
	if _, body := do(t, c, "GET", url, nil, nil); string(body) != "A" {
		t.Fatalf("first agent: %q", body)
	}

	r := run(t, 20*time.Second, "http", strconv.Itoa(upB.port), "--edge", "http://"+e.addr, "--token", tokB, "--name", "shared", "--protocol", proto)
	if r.code == 0 {
		t.Fatalf("second agent with another token exited 0\nstdout: %s\nstderr: %s", r.stdout, r.stderr)
	}
	if !strings.Contains(r.stderr, "taken") && !strings.Contains(r.stderr, "already online") {
		t.Errorf("refused agent's message does not say the tunnel is taken: %q", r.stderr)
	}
	if strings.Contains(r.stdout, "Forwarding") {
		t.Errorf("refused agent printed %q", r.stdout)
	}
	t.Logf("refused: exit %d, %s", r.code, strings.TrimSpace(r.stderr))
	if resp, body := do(t, c, "GET", url, nil, nil); resp.StatusCode != 200 || string(body) != "A" {
		t.Fatalf("first agent after the refusal: %d %q", resp.StatusCode, body)
	}
	if strings.Contains(a.stderr.String(), "tunnel lost") {
		t.Errorf("the refused agent disturbed the first: %s", a.stderr)
	}

	startAgent(t, e, proto, "shared", tokA, upC.port)
	if resp, body := do(t, c, "GET", url, nil, nil); resp.StatusCode != 200 || string(body) != "C" {
		t.Fatalf("after the replacement: %d %q, want 200 from the new agent", resp.StatusCode, body)
	}
	// Requests keep succeeding, and the new agent keeps the tunnel: the
	// replaced agent must not take it back (its first reconnect would come
	// within 300ms).
	seen := map[string]int{}
	var failed []string
	for end := time.Now().Add(1500 * time.Millisecond); time.Now().Before(end); {
		resp, body, err := tryDo(c, "GET", url, nil, nil, 5*time.Second)
		switch {
		case err != nil:
			failed = append(failed, err.Error())
		case resp.StatusCode != 200:
			failed = append(failed, fmt.Sprintf("%d %q", resp.StatusCode, body))
		default:
			seen[string(body)]++
		}
		time.Sleep(25 * time.Millisecond)
	}
	t.Logf("answers in the 1.5s after the replacement: %v, %d failed", seen, len(failed))
	if len(failed) > 0 {
		t.Errorf("%d requests failed after the replacement, first: %s", len(failed), failed[0])
	}
	if seen["A"] > 0 {
		t.Errorf("the replaced agent took the tunnel back: %d answers came from it", seen["A"])
	}
	if n := strings.Count(a.stdout.String(), "Forwarding "); n > 1 {
		t.Errorf("the replaced agent registered %d more times (the edge closed its session without saying it was "+
			"replaced, so it reconnects like after a lost connection and the two agents take the name from each other); its stderr:\n%s", n-1, a.stderr)
	}
}
