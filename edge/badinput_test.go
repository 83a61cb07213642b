package edge_test

// Bad input from agents is logged and counted, and hurts nothing else: not
// the edge, not the agent's other streams, not other tunnels.

import (
	"bytes"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/sluicehq/sluice/edge"
)

// sendLarge sends one text message of size bytes that looks like a
// response chunk for id, in pieces through NextWriter so that neither the
// test nor gorilla holds it whole.
func (a *rawAgent) sendLarge(t *testing.T, id string, size int) {
	t.Helper()
	prefix := `{"type":"http_response_chunk","request_id":"` + id + `","data_b64":"`
	suffix := `"}`
	a.ws.SetWriteDeadline(time.Now().Add(60 * time.Second))
	w, err := a.ws.NextWriter(websocket.TextMessage)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(w, prefix); err != nil {
		t.Fatal(err)
	}
	piece := bytes.Repeat([]byte("QUFB"), 256<<10/4) // 256 KiB of base64
	left := size - len(prefix) - len(suffix)
	for left > 0 {
		n := min(left, len(piece))
		if _, err := w.Write(piece[:n]); err != nil {
			t.Fatalf("writing a %d-byte frame: %v", size, err)
		}
		left -= n
	}
	if _, err := io.WriteString(w, suffix); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestBadAgentInput(t *testing.T) {
	t.Parallel()
	e := startEdge(t, func(c *edge.Config) { c.Session.V1.MaxFrameSize = 1 << 20 })
	a := e.register(t, "alpha", "T")
	b := e.register(t, "bravo", "T")

	// A stream in flight on another tunnel: head and first chunk through.
	bc := make(chan result, 1)
	breq := e.newRequest(t, "GET", "bravo.localhost", "/feed", nil)
	go func() {
		resp, err := e.client.Do(breq)
		bc <- result{resp: resp, err: err}
	}()
	br := b.expectRequest(t)
	b.start(t, br.ID, 200, map[string]string{"Content-Type": "text/plain"})
	b.chunk(t, br.ID, []byte("before;"))
	bRes := await(t, bc, 5*time.Second)
	if bRes.err != nil {
		t.Fatalf("bravo head: %v", bRes.err)
	}
	bResp := bRes.resp
	defer bResp.Body.Close()
	first := make([]byte, len("before;"))
	if _, err := io.ReadFull(bResp.Body, first); err != nil || string(first) != "before;" {
		t.Fatalf("bravo first chunk: %q %v", first, err)
	}

	// Two requests in flight on the misbehaving agent.
	a1 := e.goDo(e.newRequest(t, "GET", "alpha.localhost", "/one", nil))
	r1 := a.expectRequest(t)
	a2 := e.goDo(e.newRequest(t, "GET", "alpha.localhost", "/two", nil))
	r2 := a.expectRequest(t)

	// The garbage.
	garbage := []struct{ kind, frame string }{
		{"invalid", `{"type":`},
		{"invalid", `not json at all`},
		{"invalid", `[1,2,3]`},
		{"invalid", `{"type":"http_response_chunk","request_id":"` + r1.ID + `","data_b64":"!!not base64!!"}`},
		{"unknown_type", `{"type":"bogus","request_id":"` + r1.ID + `"}`},
		{"unknown_type", `{"request_id":"` + r1.ID + `"}`},
		{"unknown_request_id", `{"type":"http_response","request_id":"999999","status":200,"headers":{},"body_b64":""}`},
		{"unknown_request_id", `{"type":"http_response_chunk","request_id":"nope","data_b64":"eA=="}`},
		{"chunk_before_start", `{"type":"http_response_chunk","request_id":"` + r2.ID + `","data_b64":"eA=="}`},
	}
	want := map[string]float64{}
	for _, g := range garbage {
		a.send(t, g.frame)
		want[g.kind]++
	}
	a.ws.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if err := a.ws.WriteMessage(websocket.BinaryMessage, []byte{0, 1, 2, 0xff}); err != nil {
		t.Fatal(err)
	}
	want["binary"]++
	t0 := time.Now()
	a.sendLarge(t, r1.ID, 8<<20)
	want["oversized"]++
	t.Logf("8 MiB frame sent in %v", time.Since(t0))

	for kind, n := range want {
		e.waitMetric(t, frameErrors(kind), n, 10*time.Second)
	}
	logs := e.logs.String()
	for kind := range want {
		if !strings.Contains(logs, "kind="+kind) {
			t.Errorf("no log line for a bad frame of kind %s", kind)
		}
	}

	// The stream the chunk-before-start broke fails (not a hang)...
	if res := await(t, a2, 5*time.Second); res.err == nil && res.resp.StatusCode < 500 {
		t.Errorf("request whose agent sent a chunk before the start: %v, want an error status", res)
	}

	// ...and everything else goes on. The other tunnel's stream ends
	// intact.
	b.chunk(t, br.ID, []byte("after"))
	b.end(t, br.ID)
	rest, err := io.ReadAll(bResp.Body)
	if err != nil || string(rest) != "after" {
		t.Errorf("bravo rest of body = %q, %v; want %q", rest, err, "after")
	}

	// The misbehaving agent's earlier stream completes.
	a.start(t, r1.ID, 200, map[string]string{"Content-Type": "text/plain"})
	a.chunk(t, r1.ID, []byte("one"))
	a.end(t, r1.ID)
	if res := await(t, a1, 5*time.Second); res.err != nil || res.resp.StatusCode != 200 || string(res.body) != "one" {
		t.Fatalf("alpha /one after the garbage: %v", res)
	}

	// A duplicate end is late, counted once.
	late := metricValue(e.metrics(t), frameErrors("late"))
	a.end(t, r1.ID)
	e.waitMetric(t, frameErrors("late"), late+1, 5*time.Second)

	// The same agent answers a new request.
	a3 := e.goDo(e.newRequest(t, "POST", "alpha.localhost", "/three", strings.NewReader("payload")))
	r3 := a.expectRequest(t)
	if r3.Path != "/three" || string(r3.Body) != "payload" {
		t.Fatalf("alpha got %s", r3.raw)
	}
	a.respond(t, r3.ID, 200, nil, []byte("three"))
	if res := await(t, a3, 5*time.Second); res.err != nil || res.resp.StatusCode != 200 || string(res.body) != "three" {
		t.Fatalf("alpha /three after the garbage: %v", res)
	}

	// The edge is fine and the counts did not move further.
	if r := e.get(t, "localhost", "/healthz"); r.err != nil || r.resp.StatusCode != 200 {
		t.Fatalf("healthz: %v", r)
	}
	page := e.metrics(t)
	for kind, n := range want {
		if got := metricValue(page, frameErrors(kind)); got != n {
			t.Errorf("%s = %v, want %v", frameErrors(kind), got, n)
		}
	}
}

// TestUnknownRequestIDNotCountedLate: a frame naming a request_id the edge
// never issued is an unknown_request_id error, and only that; "late" is for
// frames of streams that existed and ended.
func TestUnknownRequestIDNotCountedLate(t *testing.T) {
	t.Parallel()
	e := startEdge(t, nil)
	a := e.register(t, "ghost", "T")
	a.send(t, `{"type":"http_response","request_id":"4242","status":200,"headers":{},"body_b64":""}`)
	a.send(t, `{"type":"http_response_end","request_id":"not-a-number"}`)
	// A full exchange after them: once it is through, the read loop has
	// handled both.
	c := e.goDo(e.newRequest(t, "GET", "ghost.localhost", "/", nil))
	r := a.expectRequest(t)
	a.respond(t, r.ID, 200, nil, []byte("ok"))
	if res := await(t, c, 5*time.Second); res.err != nil || res.resp.StatusCode != 200 {
		t.Fatalf("public answer: %v", res)
	}
	page := e.metrics(t)
	if got := metricValue(page, frameErrors("unknown_request_id")); got != 2 {
		t.Errorf("unknown_request_id = %v, want 2", got)
	}
	if got := metricValue(page, frameErrors("late")); got != 0 {
		t.Errorf(`late = %v, want 0: frames for request ids that were never issued are also counted as "late" (double-counted)`, got)
	}
}

// TestOversizedFrame100MiB: a 100 MiB frame (over the default 32 MiB
// limit) is skipped and counted; the agent's stream in flight and its next
// request still work.
func TestOversizedFrame100MiB(t *testing.T) {
	if testing.Short() {
		t.Skip("100 MiB frame")
	}
	e := startEdge(t, nil)
	a := e.register(t, "huge", "T")
	c := e.goDo(e.newRequest(t, "GET", "huge.localhost", "/before", nil))
	r := a.expectRequest(t)

	t0 := time.Now()
	a.sendLarge(t, r.ID, 100<<20)
	e.waitMetric(t, frameErrors("oversized"), 1, 30*time.Second)
	t.Logf("100 MiB frame sent and skipped in %v", time.Since(t0))
	if !strings.Contains(e.logs.String(), "kind=oversized") {
		t.Error("oversized frame not logged")
	}

	a.respond(t, r.ID, 200, nil, []byte("before"))
	if res := await(t, c, 5*time.Second); res.err != nil || res.resp.StatusCode != 200 || string(res.body) != "before" {
		t.Fatalf("request in flight across the frame: %v", res)
	}
	c = e.goDo(e.newRequest(t, "GET", "huge.localhost", "/after", nil))
	r = a.expectRequest(t)
	a.respond(t, r.ID, 200, nil, []byte("after"))
	if res := await(t, c, 5*time.Second); res.err != nil || res.resp.StatusCode != 200 || string(res.body) != "after" {
		t.Fatalf("request after the frame: %v", res)
	}
}
