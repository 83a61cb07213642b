package edge_test

// What public clients see when things go wrong, the apex pages, dead-agent
// detection and the concurrent streams limit.

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/sluicehq/sluice/edge"
)

type errorBody struct {
	Error struct {
		Code    string `json:"code"`
		Status  int    `json:"status"`
		Message string `json:"message"`
	} `json:"error"`
}

func TestUnknownTunnel(t *testing.T) {
	t.Parallel()
	e := startEdge(t, nil)

	req := e.newRequest(t, "GET", "nope.localhost", "/x", nil)
	req.Header.Set("Accept", "text/html,application/xhtml+xml,*/*;q=0.8")
	r := e.do(req)
	if r.err != nil || r.resp.StatusCode != 404 {
		t.Fatalf("HTML: %v, want 404", r)
	}
	if ct := r.resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/html") {
		t.Errorf("HTML: Content-Type %q", ct)
	}
	if !strings.Contains(string(r.body), "nope.localhost") {
		t.Errorf("HTML 404 does not name the host: %s", r.body)
	}

	req = e.newRequest(t, "GET", "nope.localhost:8080", "/x", nil)
	req.Header.Set("Accept", "application/json")
	r = e.do(req)
	if r.err != nil || r.resp.StatusCode != 404 {
		t.Fatalf("JSON: %v, want 404", r)
	}
	if ct := r.resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("JSON: Content-Type %q", ct)
	}
	var eb errorBody
	if err := json.Unmarshal(r.body, &eb); err != nil {
		t.Fatalf("JSON 404 body %q: %v", r.body, err)
	}
	if eb.Error.Code != "tunnel_not_found" || eb.Error.Status != 404 || !strings.Contains(eb.Error.Message, "nope.localhost") {
		t.Errorf("JSON 404 = %+v", eb)
	}

	// Not a DNS label: also 404, naming the host.
	r = e.get(t, "under_score.localhost", "/")
	if r.err != nil || r.resp.StatusCode != 404 || !strings.Contains(string(r.body), "under_score.localhost") {
		t.Errorf("invalid label: %v", r)
	}
}

func TestApexPages(t *testing.T) {
	t.Parallel()
	e := startEdge(t, nil)
	for _, host := range []string{"localhost", "127.0.0.1:" + e.port, "LOCALHOST."} {
		r := e.get(t, host, "/healthz")
		if r.err != nil || r.resp.StatusCode != 200 || strings.TrimSpace(string(r.body)) != "ok" {
			t.Errorf("healthz with Host %s: %v", host, r)
		}
	}
	r := e.get(t, "localhost", "/")
	if r.err != nil || r.resp.StatusCode != 200 || !strings.HasPrefix(r.resp.Header.Get("Content-Type"), "text/html") ||
		!strings.Contains(string(r.body), "sluice edge") {
		t.Errorf("landing page: %v", r)
	}
	r = e.get(t, "localhost", "/no-such-page")
	if r.err != nil || r.resp.StatusCode != 404 {
		t.Errorf("unknown apex page: %v, want 404", r)
	}
	page := e.metrics(t)
	for _, name := range []string{"sluice_tunnels_online", "sluice_open_streams", "go_goroutines"} {
		if !strings.Contains(page, "\n"+name+" ") {
			t.Errorf("metric %s missing from /metrics", name)
		}
	}
}

// TestAgentOffline: a tunnel whose agent left answers 502 "agent offline"
// at once, not 404 and not a hang.
func TestAgentOffline(t *testing.T) {
	t.Parallel()
	e := startEdge(t, nil)
	a := e.register(t, "gone", "T")
	a.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, "bye"), time.Now().Add(time.Second))
	a.ws.Close()

	t0 := time.Now()
	e.waitOffline(t, "gone.localhost", time.Second)
	t.Logf("offline after %v", time.Since(t0))

	req := e.newRequest(t, "GET", "gone.localhost", "/", nil)
	req.Header.Set("Accept", "application/json")
	r := e.do(req)
	if r.err != nil || r.resp.StatusCode != 502 {
		t.Fatalf("JSON: %v in %v", r, r.dur)
	}
	var eb errorBody
	if err := json.Unmarshal(r.body, &eb); err != nil || eb.Error.Code != "agent_offline" || !strings.Contains(strings.ToLower(eb.Error.Message), "agent offline") {
		t.Errorf("JSON 502 = %s (%v)", r.body, err)
	}
	req = e.newRequest(t, "GET", "gone.localhost", "/", nil)
	req.Header.Set("Accept", "text/html")
	r = e.do(req)
	if r.err != nil || r.resp.StatusCode != 502 || !strings.Contains(strings.ToLower(string(r.body)), "agent offline") || !strings.Contains(string(r.body), "gone.localhost") {
		t.Errorf("HTML: %v", r)
	}
	// The proxy answers "agent offline" as soon as the session is closed;
	// the gauge follows when the session's Run has returned.
	e.waitMetric(t, "sluice_tunnels_online", 0, time.Minute)
}

// TestAgentLeavesMidRequest: requests in flight when their agent goes away
// end at once: a 502 before the response head, an aborted body after it.
func TestAgentLeavesMidRequest(t *testing.T) {
	t.Parallel()
	e := startEdge(t, nil)

	t.Run("before the head", func(t *testing.T) {
		a := e.register(t, "leave1", "T")
		c := e.goDo(e.newRequest(t, "GET", "leave1.localhost", "/", nil))
		a.expectRequest(t)
		a.ws.Close()
		r := await(t, c, 3*time.Second)
		if r.err == nil && r.resp.StatusCode != 502 {
			t.Errorf("%v, want 502 or an error", r)
		}
		if r.resp != nil && r.resp.Header.Get("X-Sluice-Error") != "agent_offline" {
			t.Errorf("X-Sluice-Error = %q, want agent_offline", r.resp.Header.Get("X-Sluice-Error"))
		}
	})

	t.Run("mid-body", func(t *testing.T) {
		a := e.register(t, "leave2", "T")
		req := e.newRequest(t, "GET", "leave2.localhost", "/", nil)
		hc := e.goHead(req)
		r := a.expectRequest(t)
		a.start(t, r.ID, 200, map[string]string{"Content-Type": "text/plain"})
		a.chunk(t, r.ID, []byte("partial"))
		h := awaitHead(t, hc, 5*time.Second)
		defer h.Body.Close()
		buf := make([]byte, len("partial"))
		if _, err := io.ReadFull(h.Body, buf); err != nil {
			t.Fatal(err)
		}
		a.ws.Close()
		done := make(chan error, 1)
		go func() {
			_, err := io.ReadAll(h.Body)
			done <- err
		}()
		select {
		case err := <-done:
			if err == nil {
				t.Error("body ended cleanly after the agent left mid-stream; want an abort")
			}
		case <-time.After(3 * time.Second):
			t.Fatal("client still reading 3 s after the agent left")
		}
	})
}

// TestDeadAgent: an agent that stops reading its socket (so it answers no
// ping) is dropped after PongTimeout; one that answers pings is kept.
func TestDeadAgent(t *testing.T) {
	// Not parallel: the 500 ms pong timeout is tight on a loaded 2-core
	// machine under -race, and large-body tests run in parallel.
	e := startEdge(t, func(c *edge.Config) {
		c.Session.PingInterval = 100 * time.Millisecond
		c.Session.PongTimeout = 500 * time.Millisecond
	})
	a := e.register(t, "stall", "T")

	// Serve requests (and so answer pings, which gorilla does while
	// reading) for well over the pong timeout: until the edge has pinged
	// ten times (a second at the least; counted, not timed, so that a busy
	// machine that pings less often only makes it longer).
	const wantPings = 10
	var pings sync.WaitGroup
	var npings atomic.Int32
	a.ws.SetPingHandler(func(data string) error {
		npings.Add(1)
		return a.ws.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(time.Second))
	})
	a.ws.SetReadDeadline(time.Time{})
	pings.Add(1)
	go func() {
		defer pings.Done()
		for {
			typ, msg, err := a.ws.ReadMessage()
			if err != nil {
				return
			}
			if typ != websocket.TextMessage {
				continue
			}
			f := frame{raw: msg}
			if json.Unmarshal(msg, &f.m) != nil {
				continue
			}
			if req, err := parseRequest(f); err == nil {
				a.ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"http_response","request_id":"`+req.ID+`","status":200,"headers":{},"body_b64":"YWxpdmU="}`))
			}
		}
	}()
	start := time.Now()
	for npings.Load() < wantPings {
		r := e.get(t, "stall.localhost", "/")
		if r.err != nil || r.resp.StatusCode != 200 || string(r.body) != "alive" {
			t.Fatalf("agent answering pings was not served after %v and %d pings: %v", time.Since(start), npings.Load(), r)
		}
		if time.Since(start) > time.Minute {
			t.Fatalf("the edge pinged %d times in a minute, want %d", npings.Load(), wantPings)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("agent kept through %d pings over %v", npings.Load(), time.Since(start))

	// Stall: stop reading entirely. The socket stays open.
	a.ws.SetReadDeadline(time.Now()) // unblock the reader, which then stops
	pings.Wait()
	t0 := time.Now()
	e.waitOffline(t, "stall.localhost", 2*time.Second)
	t.Logf("stalled agent dropped after %v", time.Since(t0))
}

func TestMaxStreams(t *testing.T) {
	t.Parallel()
	e := startEdge(t, func(c *edge.Config) { c.Session.MaxStreams = 2 })
	a := e.register(t, "busy", "T")

	c1 := e.goDo(e.newRequest(t, "GET", "busy.localhost", "/1", nil))
	r1 := a.expectRequest(t)
	c2 := e.goDo(e.newRequest(t, "GET", "busy.localhost", "/2", nil))
	r2 := a.expectRequest(t)

	req := e.newRequest(t, "GET", "busy.localhost", "/3", nil)
	req.Header.Set("Accept", "application/json")
	r := e.do(req)
	if r.err != nil || r.resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("third request: %v, want 503", r)
	}
	if ra := r.resp.Header.Get("Retry-After"); ra == "" {
		t.Error("503 without Retry-After")
	}
	var eb errorBody
	if err := json.Unmarshal(r.body, &eb); err != nil || eb.Error.Code != "too_many_streams" || !strings.Contains(eb.Error.Message, "2") {
		t.Errorf("503 body = %s", r.body)
	}

	a.respond(t, r1.ID, 200, nil, []byte("1"))
	a.respond(t, r2.ID, 200, nil, []byte("2"))
	for i, c := range []<-chan result{c1, c2} {
		if res := await(t, c, 5*time.Second); res.err != nil || res.resp.StatusCode != 200 || string(res.body) != string(rune('1'+i)) {
			t.Errorf("request %d: %v", i+1, res)
		}
	}
	// With the streams done, a new one is accepted.
	c3 := e.goDo(e.newRequest(t, "GET", "busy.localhost", "/3", nil))
	r3 := a.expectRequest(t)
	if r3.Path != "/3" {
		t.Fatalf("agent got %s, want /3", r3.raw)
	}
	a.respond(t, r3.ID, 200, nil, []byte("3"))
	if res := await(t, c3, 5*time.Second); res.err != nil || res.resp.StatusCode != 200 {
		t.Errorf("after the limit cleared: %v", res)
	}
}
