package edge_test

// Registration rules: tokens, tunnel names, the first frame, a name taken
// with another token, and replacement by an agent with the same token.

import (
	"bytes"
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

// expectRefused checks that the edge answers with an error frame of code
// and closes the connection.
func expectRefused(t *testing.T, a *rawAgent, code string) {
	t.Helper()
	f := a.read(t, 5*time.Second)
	if f.typ() != "error" || f.str("code") != code {
		t.Fatalf("answer = %s, want an error frame with code %q", f.raw, code)
	}
	if f.str("message") == "" {
		t.Errorf("error frame without a message: %s", f.raw)
	}
	a.expectClosed(t, 5*time.Second)
}

func TestRegisterRules(t *testing.T) {
	t.Parallel()
	e := startEdge(t, func(c *edge.Config) { c.RegisterTimeout = 500 * time.Millisecond })
	long := strings.Repeat("a", 64)
	cases := []struct {
		name, first, code string
	}{
		{"wrong token", `{"type":"register","tunnel_id":"good","agent_token":"wrong"}`, "unauthorized"},
		{"no token", `{"type":"register","tunnel_id":"good"}`, "unauthorized"},
		{"bad characters", `{"type":"register","tunnel_id":"Bad_Name!","agent_token":"T"}`, "invalid_tunnel_id"},
		{"empty name", `{"type":"register","tunnel_id":"","agent_token":"T"}`, "invalid_tunnel_id"},
		{"64 characters", `{"type":"register","tunnel_id":"` + long + `","agent_token":"T"}`, "invalid_tunnel_id"},
		{"leading hyphen", `{"type":"register","tunnel_id":"-x","agent_token":"T"}`, "invalid_tunnel_id"},
		{"dotted name", `{"type":"register","tunnel_id":"a.b","agent_token":"T"}`, "invalid_tunnel_id"},
		{"first frame not register", `{"type":"http_response","request_id":"1","status":200,"headers":{},"body_b64":""}`, "bad_register"},
		{"first frame not JSON", `hello`, "bad_register"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a := e.dial(t)
			a.send(t, tc.first)
			expectRefused(t, a, tc.code)
		})
	}
	t.Run("binary first frame", func(t *testing.T) {
		a := e.dial(t)
		a.ws.WriteMessage(websocket.BinaryMessage, []byte(`{"type":"register","tunnel_id":"good","agent_token":"T"}`))
		f := a.read(t, 5*time.Second)
		if f.typ() != "error" {
			t.Fatalf("answer = %s, want an error frame", f.raw)
		}
		a.expectClosed(t, 5*time.Second)
	})
	t.Run("no first frame", func(t *testing.T) {
		a := e.dial(t)
		t0 := time.Now()
		a.expectClosed(t, 5*time.Second)
		if d := time.Since(t0); d < 400*time.Millisecond {
			t.Errorf("closed after %v, before the 500 ms register timeout", d)
		}
	})
	// The refused names are not online, and the limits are exact: 63
	// characters and an upper-case name (lowered) are fine.
	if r := e.get(t, "good.localhost", "/"); r.err != nil || r.resp.StatusCode != 404 {
		t.Errorf("good.localhost after refused registrations: %v, want 404", r)
	}
	ok63 := strings.Repeat("b", 63)
	e.register(t, ok63, "T")
	a := e.dial(t)
	a.send(t, `{"type":"register","tunnel_id":"MiXeD","agent_token":"T"}`)
	if f := a.read(t, 5*time.Second); f.typ() != "registered" || f.str("tunnel_id") != "mixed" {
		t.Errorf("upper-case name: %s, want registered as mixed", f.raw)
	}
	page := e.metrics(t)
	if got := metricValue(page, `sluice_agent_registrations_total{result="bad_token"}`); got != 2 {
		t.Errorf("bad_token registrations = %v, want 2", got)
	}
	if got := metricValue(page, `sluice_tunnels_online`); got != 2 {
		t.Errorf("sluice_tunnels_online = %v, want 2", got)
	}
}

func TestTunnelTaken(t *testing.T) {
	t.Parallel()
	e := startEdge(t, func(c *edge.Config) { c.Tokens = []string{"T", "T2"} })
	first := e.register(t, "taken", "T")

	second := e.dial(t)
	second.send(t, `{"type":"register","tunnel_id":"taken","agent_token":"T2"}`)
	expectRefused(t, second, "tunnel_taken")

	// The first keeps serving.
	c := e.goDo(e.newRequest(t, "GET", "taken.localhost", "/still", nil))
	r := first.expectRequest(t)
	first.respond(t, r.ID, 200, nil, []byte("first"))
	if res := await(t, c, 5*time.Second); res.err != nil || res.resp.StatusCode != 200 || string(res.body) != "first" {
		t.Fatalf("first agent after the refused one: %v", res)
	}

	// Once the first has left, the name stays reserved for its token for
	// a while: TestOfflineNameReserved.
}

// TestReplaceSameToken: an agent with the name and token of an online one
// replaces it at once: new requests go to the new agent, the old one is
// told (an error frame "tunnel_replaced") and closed once its requests in
// flight are done. The new registration never waits for the old session,
// even when the old agent is stuck.
func TestReplaceSameToken(t *testing.T) {
	t.Parallel()
	e := startEdge(t, nil)

	// serveOne checks that a request to host reaches a and is answered.
	serveOne := func(t *testing.T, a *rawAgent, host, body string) {
		t.Helper()
		c := e.goDo(e.newRequest(t, "GET", host, "/"+body, nil))
		r := a.expectRequest(t)
		if r.Path != "/"+body {
			t.Fatalf("agent got %s, want /%s", r.raw, body)
		}
		a.respond(t, r.ID, 200, nil, []byte(body))
		if res := await(t, c, 5*time.Second); res.err != nil || res.resp.StatusCode != 200 || string(res.body) != body {
			t.Fatalf("request to %s: %v, want %q", host, res, body)
		}
	}
	// expectReplaced checks what the old agent finds on its socket: the
	// tunnel_replaced error, then the end of the connection.
	expectReplaced := func(t *testing.T, old *rawAgent) {
		t.Helper()
		f := old.read(t, 3*time.Second)
		if f.typ() != "error" || f.str("code") != "tunnel_replaced" {
			t.Fatalf("old agent got %s, want an error frame tunnel_replaced", f.raw)
		}
		old.expectClosed(t, 3*time.Second)
	}

	t.Run("idle old agent that reads nothing", func(t *testing.T) {
		old := e.register(t, "rep1", "T")
		// old never reads from here on.
		t0 := time.Now()
		fresh := e.register(t, "rep1", "T")
		// The new registration must not wait for the old session, which
		// the edge keeps for its grace period (30 s): half of that is a
		// slow machine, not a wait.
		if d := time.Since(t0); d > 15*time.Second {
			t.Errorf("replacing registration took %v: it waited for the old session", d)
		}
		serveOne(t, fresh, "rep1.localhost", "fresh")
		expectReplaced(t, old)
		serveOne(t, fresh, "rep1.localhost", "again")
		// One tunnel online: the replacement is not counted twice, and
		// the old session's end does not take the new one offline.
		e.waitMetric(t, "sluice_tunnels_online", 1, 2*time.Second)
	})

	t.Run("request in flight on the old agent finishes", func(t *testing.T) {
		old := e.register(t, "rep2", "T")
		c := e.goDo(e.newRequest(t, "GET", "rep2.localhost", "/slow", nil))
		r := old.expectRequest(t)
		fresh := e.register(t, "rep2", "T")
		serveOne(t, fresh, "rep2.localhost", "fresh")
		f := old.read(t, 3*time.Second)
		if f.typ() != "error" || f.str("code") != "tunnel_replaced" {
			t.Fatalf("old agent got %s, want an error frame tunnel_replaced", f.raw)
		}
		old.respond(t, r.ID, 200, nil, []byte("slow"))
		if res := await(t, c, 5*time.Second); res.err != nil || res.resp.StatusCode != 200 || string(res.body) != "slow" {
			t.Fatalf("request in flight on the replaced agent: %v", res)
		}
		old.expectClosed(t, 3*time.Second)
	})

	t.Run("stuck old agent", func(t *testing.T) {
		old := e.register(t, "rep3", "T")
		// Jam the old agent: an 8 MiB body becomes a ~11 MiB frame that
		// the old agent never reads, so the edge's write to it blocks.
		const size = 8 << 20
		jam := e.goDo(e.newRequest(t, "POST", "rep3.localhost", "/jam", bytes.NewReader(make([]byte, size))))
		if unreadBytes(old.ws.UnderlyingConn()) >= 0 {
			// Wait until the frame fills the old agent's socket and stops.
			// Reading and encoding 8 MiB under the race detector, beside
			// the other packages' tests on two cores, has taken over 10 s.
			deadline := time.Now().Add(60 * time.Second)
			last := 0
			for {
				n := unreadBytes(old.ws.UnderlyingConn())
				if n > 0 && n == last {
					t.Logf("old agent's socket holds %d unread bytes; the edge's write is blocked", n)
					break
				}
				select {
				case r := <-jam:
					t.Fatalf("the jam request ended before it filled the old agent's socket: %v", r)
				default:
				}
				if time.Now().After(deadline) {
					t.Fatalf("the jam request did not fill the old agent's socket (%d bytes unread)", n)
				}
				last = n
				time.Sleep(50 * time.Millisecond)
			}
		}
		t0 := time.Now()
		fresh := e.register(t, "rep3", "T")
		// The new registration must not wait for the old session, which
		// the edge keeps for its grace period (30 s): half of that is a
		// slow machine, not a wait.
		if d := time.Since(t0); d > 15*time.Second {
			t.Errorf("replacing registration took %v: it waited for the old session", d)
		}
		serveOne(t, fresh, "rep3.localhost", "fresh")
		// The jammed request stays with the old session for the grace
		// period; the edge's shutdown at cleanup ends it.
	})
}

// TestRegisteredIsFirstFrame: the edge must not send a request to an agent
// (nor write to its socket from two goroutines at once) before its
// registered frame. Public clients hammer a tunnel while agents register
// under its name one after another; every agent's first frame must be
// registered, and each then gets a request. Under -race, the race detector
// also sees the registered write and the request writes unsynchronized.
func TestRegisteredIsFirstFrame(t *testing.T) {
	// Not parallel: a race report is then this test's.
	e := startEdge(t, nil)

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var sent atomic.Int64
	var failMu sync.Mutex
	var failures []error
	// Every answer here is immediate (404, 502, or the agent's request
	// failing when it leaves), so a short timeout only cuts a hang.
	hammer := &http.Client{Transport: e.client.Transport, Timeout: 3 * time.Second}
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				req, _ := http.NewRequest("GET", "http://"+e.addr+"/", nil)
				req.Host = "hammer.localhost"
				resp, err := hammer.Do(req)
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				} else {
					// Every request gets an answer (404, 502 or the agent's);
					// a broken connection means the edge's handler died.
					failMu.Lock()
					failures = append(failures, err)
					failMu.Unlock()
				}
				sent.Add(1)
			}
		}()
	}
	defer func() {
		close(stop)
		wg.Wait()
		if len(failures) > 0 {
			t.Errorf("%d public requests failed without an HTTP answer (the edge's handler panicked, dropped or never answered them), first: %v",
				len(failures), failures[0])
		}
	}()

	deadline := time.Now().Add(1500 * time.Millisecond)
	i := 0
	for ; i < 500 && time.Now().Before(deadline); i++ {
		a := e.dial(t)
		a.send(t, `{"type":"register","tunnel_id":"hammer","agent_token":"T"}`)
		f, err := a.readFrame(3 * time.Second)
		if err != nil || f.typ() != "registered" {
			a.ws.Close()
			t.Fatalf("registration %d: first frame from the edge is %s (%v), want registered", i, f.raw, err)
		}
		// Each agent gets a request, written by a public request's
		// goroutine, then leaves (its requests in flight fail at once).
		f, err = a.readFrame(3 * time.Second)
		a.ws.Close()
		if err != nil || f.typ() != "http_request" {
			t.Fatalf("registration %d: second frame %s (%v), want http_request", i, f.raw, err)
		}
	}
	t.Logf("%d registrations, %d public requests", i, sent.Load())
}
