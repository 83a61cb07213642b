package edge_test

// Test helpers: an edge on a loopback listener, raw WebSocket agents that
// speak protocol v1 JSON by hand (no sluice agent code), public HTTP
// requests and the /metrics page.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/sluicehq/sluice/edge"
	"github.com/sluicehq/sluice/wire"
)

// logBuffer collects the edge's logs.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// patience is the least time a test waits for something that must happen:
// the timeouts the tests give are what they expect on a quiet machine, and
// a busy one (two cores shared with other test packages) can take many
// times as long. Only a hang should fail a test.
const patience = time.Minute

// waitFor returns how long to wait for an event expected within timeout.
func waitFor(timeout time.Duration) time.Duration { return max(timeout, patience) }

type testEdge struct {
	srv    *edge.Server
	addr   string // 127.0.0.1:PORT
	port   string
	logs   *logBuffer
	client *http.Client
}

// startEdge runs an edge with token "T" and domain localhost on a loopback
// listener; mut adjusts the configuration first.
func startEdge(t *testing.T, mut func(*edge.Config)) *testEdge {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return startEdgeOn(t, ln, mut)
}

// startEdgeOn is startEdge on the listener ln.
func startEdgeOn(t *testing.T, ln net.Listener, mut func(*edge.Config)) *testEdge {
	t.Helper()
	logs := &logBuffer{}
	cfg := edge.Config{
		Tokens: []string{"T"},
		Domain: "localhost",
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if mut != nil {
		mut(&cfg)
	}
	srv, err := edge.New(cfg)
	if err != nil {
		ln.Close()
		t.Fatalf("edge.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, ln, time.Second) }()
	tr := &http.Transport{MaxIdleConnsPerHost: 16}
	e := &testEdge{
		srv:  srv,
		addr: ln.Addr().String(),
		logs: logs,
		client: &http.Client{
			Transport:     tr,
			Timeout:       2 * time.Minute, // a hang, not a slow machine
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}
	_, e.port, _ = net.SplitHostPort(e.addr)
	t.Cleanup(func() {
		tr.CloseIdleConnections()
		cancel()
		select {
		case err := <-served:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Errorf("Serve did not return within 15 s of its context ending")
		}
		srv.Close()
		tr.CloseIdleConnections()
	})
	return e
}

// ---- agents ----

// rawAgent is a hand-written protocol v1 agent on a gorilla WebSocket.
// Its methods that take t are for the test goroutine only.
type rawAgent struct {
	ws *websocket.Conn
}

// dial opens a WebSocket to /agent.
func (e *testEdge) dial(t *testing.T) *rawAgent {
	t.Helper()
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second, WriteBufferSize: 64 << 10, ReadBufferSize: 64 << 10}
	ws, resp, err := d.Dial("ws://"+e.addr+"/agent", nil)
	if err != nil {
		t.Fatalf("dial /agent: %v (response %v)", err, resp)
	}
	t.Cleanup(func() { ws.Close() })
	return &rawAgent{ws: ws}
}

// register connects a plain Jetty agent: exactly the register frame a
// Jetty agent sends (no features), and expects registered. A refusal that
// asks to register again (an admin's decision, perhaps another edge's,
// landed during the registration) is retried, as agents do.
func (e *testEdge) register(t *testing.T, name, token string) *rawAgent {
	t.Helper()
	var a *rawAgent
	var f frame
	for try := 0; ; try++ {
		a = e.dial(t)
		a.send(t, `{"type":"register","tunnel_id":"`+name+`","agent_token":"`+token+`"}`)
		f = a.read(t, 5*time.Second)
		if try < 5 && f.typ() == "error" && f.str("code") == wire.CodeInternal {
			a.ws.Close()
			continue
		}
		break
	}
	if f.typ() != "registered" {
		t.Fatalf("register %q: got %s, want registered", name, f.raw)
	}
	if got := f.str("tunnel_id"); got != name {
		t.Fatalf("registered tunnel_id = %q, want %q (%s)", got, name, f.raw)
	}
	return a
}

func (a *rawAgent) send(t *testing.T, s string) {
	t.Helper()
	a.ws.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if err := a.ws.WriteMessage(websocket.TextMessage, []byte(s)); err != nil {
		t.Fatalf("agent write: %v", err)
	}
}

func (a *rawAgent) sendJSON(t *testing.T, v any) {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	a.send(t, string(b))
}

// frame is a frame as a Jetty agent sees it: a JSON object.
type frame struct {
	raw []byte
	m   map[string]any
}

func (f frame) typ() string { return f.str("type") }

func (f frame) str(key string) string {
	s, _ := f.m[key].(string)
	return s
}

// readFrame reads one message within timeout.
func (a *rawAgent) readFrame(timeout time.Duration) (frame, error) {
	a.ws.SetReadDeadline(time.Now().Add(timeout))
	typ, msg, err := a.ws.ReadMessage()
	if err != nil {
		return frame{}, err
	}
	if typ != websocket.TextMessage {
		return frame{raw: msg}, fmt.Errorf("edge sent a non-text message (type %d)", typ)
	}
	f := frame{raw: msg}
	if err := json.Unmarshal(msg, &f.m); err != nil {
		return f, fmt.Errorf("edge sent a frame that is not a JSON object: %v: %q", err, msg)
	}
	return f, nil
}

func (a *rawAgent) read(t *testing.T, timeout time.Duration) frame {
	timeout = waitFor(timeout)
	t.Helper()
	f, err := a.readFrame(timeout)
	if err != nil {
		t.Fatalf("agent read: %v", err)
	}
	return f
}

// request is an http_request frame as a Jetty agent reads it.
type request struct {
	raw     []byte
	ID      string
	Method  string
	Path    string
	Query   string
	Headers map[string]string
	Body    []byte
}

// parseRequest checks that f is a whole http_request in the form a plain
// Jetty agent understands: string fields, header values plain strings,
// the whole body in body_b64.
func parseRequest(f frame) (request, error) {
	r := request{raw: f.raw}
	if f.typ() != "http_request" {
		return r, fmt.Errorf("frame type %q, want http_request: %s", f.typ(), f.raw)
	}
	for _, k := range []string{"request_id", "method", "path", "query", "body_b64"} {
		if _, ok := f.m[k].(string); !ok {
			return r, fmt.Errorf("http_request field %q is %T, want a string: %s", k, f.m[k], f.raw)
		}
	}
	r.ID, r.Method, r.Path, r.Query = f.str("request_id"), f.str("method"), f.str("path"), f.str("query")
	hs, ok := f.m["headers"].(map[string]any)
	if !ok {
		return r, fmt.Errorf("http_request headers are %T, want an object: %s", f.m["headers"], f.raw)
	}
	r.Headers = map[string]string{}
	for k, v := range hs {
		s, ok := v.(string)
		if !ok {
			return r, fmt.Errorf("header %q is %T (%v), want a plain string for a Jetty agent: %s", k, v, v, f.raw)
		}
		r.Headers[k] = s
	}
	body, err := base64.StdEncoding.DecodeString(f.str("body_b64"))
	if err != nil {
		return r, fmt.Errorf("body_b64: %v", err)
	}
	r.Body = body
	for k := range f.m {
		switch k {
		case "type", "request_id", "method", "path", "query", "headers", "body_b64":
		default:
			return r, fmt.Errorf("http_request has field %q a Jetty agent does not know: %s", k, f.raw)
		}
	}
	return r, nil
}

// expectRequest reads the next frame and requires a whole http_request.
func (a *rawAgent) expectRequest(t *testing.T) request {
	t.Helper()
	r, err := parseRequest(a.read(t, 5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// respond sends a whole http_response.
func (a *rawAgent) respond(t *testing.T, id string, status int, headers map[string]string, body []byte) {
	t.Helper()
	if headers == nil {
		headers = map[string]string{}
	}
	a.sendJSON(t, map[string]any{
		"type": "http_response", "request_id": id, "status": status,
		"headers": headers, "body_b64": base64.StdEncoding.EncodeToString(body),
	})
}

func (a *rawAgent) start(t *testing.T, id string, status int, headers map[string]string) {
	t.Helper()
	if headers == nil {
		headers = map[string]string{}
	}
	a.sendJSON(t, map[string]any{"type": "http_response_start", "request_id": id, "status": status, "headers": headers})
}

func (a *rawAgent) chunk(t *testing.T, id string, data []byte) {
	t.Helper()
	a.sendJSON(t, map[string]any{"type": "http_response_chunk", "request_id": id, "data_b64": base64.StdEncoding.EncodeToString(data)})
}

func (a *rawAgent) end(t *testing.T, id string) {
	t.Helper()
	a.sendJSON(t, map[string]any{"type": "http_response_end", "request_id": id})
}

// expectClosed waits for the edge to close the connection: reads (and
// drops) frames until a read fails with something other than a timeout.
func (a *rawAgent) expectClosed(t *testing.T, timeout time.Duration) {
	timeout = waitFor(timeout)
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		a.ws.SetReadDeadline(deadline)
		_, _, err := a.ws.ReadMessage()
		if err == nil {
			continue
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("connection still open %v after it should have been closed", timeout)
		}
		return // a close frame, EOF or a reset
	}
}

// ---- public side ----

type result struct {
	resp *http.Response
	body []byte
	err  error // from Do or from reading the body
	dur  time.Duration
}

func (r result) String() string {
	if r.resp == nil {
		return fmt.Sprintf("error %v", r.err)
	}
	return fmt.Sprintf("%d %v body %q err %v", r.resp.StatusCode, r.resp.Header, truncate(r.body), r.err)
}

func truncate(b []byte) string {
	if len(b) > 300 {
		return string(b[:300]) + "..."
	}
	return string(b)
}

// newRequest builds a request to the edge's listener with the given Host.
func (e *testEdge) newRequest(t *testing.T, method, host, path string, body io.Reader) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+e.addr+path, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = host
	return req
}

func (e *testEdge) do(req *http.Request) result {
	t0 := time.Now()
	resp, err := e.client.Do(req)
	if err != nil {
		return result{err: err, dur: time.Since(t0)}
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	return result{resp: resp, body: body, err: err, dur: time.Since(t0)}
}

// goDo sends req in the background.
func (e *testEdge) goDo(req *http.Request) <-chan result {
	c := make(chan result, 1)
	go func() { c <- e.do(req) }()
	return c
}

func (e *testEdge) get(t *testing.T, host, path string) result {
	t.Helper()
	return e.do(e.newRequest(t, "GET", host, path, nil))
}

func await(t *testing.T, c <-chan result, timeout time.Duration) result {
	timeout = waitFor(timeout)
	t.Helper()
	select {
	case r := <-c:
		return r
	case <-time.After(timeout):
		t.Fatalf("public request still waiting after %v", timeout)
		return result{}
	}
}

// ---- metrics ----

func (e *testEdge) metrics(t *testing.T) string {
	t.Helper()
	r := e.get(t, "127.0.0.1:"+e.port, "/metrics")
	if r.err != nil || r.resp.StatusCode != 200 {
		t.Fatalf("GET /metrics: %v", r)
	}
	return string(r.body)
}

// metricValue returns the value of series (name{labels} exactly as
// exposed) in a metrics page, and 0 if it is absent.
func metricValue(page, series string) float64 {
	sc := bufio.NewScanner(strings.NewReader(page))
	for sc.Scan() {
		line := sc.Text()
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err == nil {
				return f
			}
		}
	}
	return 0
}

func frameErrors(kind string) string { return `sluice_frame_errors_total{kind="` + kind + `"}` }

// waitMetric polls /metrics until series has value want.
func (e *testEdge) waitMetric(t *testing.T, series string, want float64, timeout time.Duration) {
	timeout = waitFor(timeout)
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		got := metricValue(e.metrics(t), series)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s = %v after %v, want %v", series, got, timeout, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitOffline polls the tunnel until it answers 502 agent_offline.
func (e *testEdge) waitOffline(t *testing.T, host string, timeout time.Duration) result {
	timeout = waitFor(timeout)
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		req := e.newRequest(t, "GET", host, "/poll", nil)
		ctx, cancel := context.WithDeadline(context.Background(), deadline.Add(time.Second))
		r := e.do(req.WithContext(ctx))
		cancel()
		if r.resp != nil && r.resp.StatusCode == http.StatusBadGateway && r.resp.Header.Get("X-Sluice-Error") == "agent_offline" {
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not offline after %v; last answer: %v", host, timeout, r)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// goHead sends req in the background and delivers its response as soon as
// the head arrives, with the body still streaming.
func (e *testEdge) goHead(req *http.Request) <-chan headResult {
	hc := make(chan headResult, 1)
	go func() {
		resp, err := e.client.Do(req)
		hc <- headResult{resp, err}
	}()
	return hc
}

type headResult struct {
	resp *http.Response
	err  error
}

// awaitHead waits for a goHead response head.
func awaitHead(t *testing.T, hc <-chan headResult, timeout time.Duration) *http.Response {
	timeout = waitFor(timeout)
	t.Helper()
	select {
	case h := <-hc:
		if h.err != nil {
			t.Fatal(h.err)
		}
		return h.resp
	case <-time.After(timeout):
		t.Fatal("no response head")
		return nil
	}
}
