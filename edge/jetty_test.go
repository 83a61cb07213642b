package edge_test

// The compatibility contract with plain Jetty agents: an agent that sends
// register without features gets whole http_request frames with plain
// string headers, and may answer with a whole http_response or the
// streamed http_response_start / _chunk / _end trio.

import (
	"bytes"
	"encoding/base64"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/edge"
)

const jettyMaxBody = 4 << 10

func TestJettyAgent(t *testing.T) {
	t.Parallel()
	e := startEdge(t, func(c *edge.Config) { c.Session.V1.MaxBody = jettyMaxBody })

	// Register exactly as a Jetty agent does and check the answer carries
	// nothing a Jetty agent does not expect.
	a := e.dial(t)
	a.send(t, `{"type":"register","tunnel_id":"jetty","agent_token":"T"}`)
	reg := a.read(t, 5*time.Second)
	if reg.typ() != "registered" || reg.str("tunnel_id") != "jetty" {
		t.Fatalf("answer to register: %s", reg.raw)
	}
	if _, ok := reg.m["features"]; ok {
		t.Errorf("registered for a plain agent carries features: %s", reg.raw)
	}
	if pu := reg.str("public_url"); pu != "http://jetty.localhost:"+e.port {
		t.Errorf("public_url = %q, want http://jetty.localhost:%s", pu, e.port)
	}
	const host = "jetty.localhost"

	t.Run("whole response", func(t *testing.T) {
		req := e.newRequest(t, "GET", host, "/a%20b/c?x=1&y=%2F", nil)
		req.Header.Add("X-Multi", "one")
		req.Header.Add("X-Multi", "two")
		req.Header.Add("Cookie", "a=1")
		req.Header.Add("Cookie", "b=2")
		req.Header.Set("Accept", "application/json")
		c := e.goDo(req)

		r := a.expectRequest(t)
		if r.Method != "GET" || r.Path != "/a%20b/c" || r.Query != "x=1&y=%2F" {
			t.Errorf("method, path, query = %q %q %q, want GET /a%%20b/c x=1&y=%%2F", r.Method, r.Path, r.Query)
		}
		want := map[string]string{
			"Host":              host,
			"X-Multi":           "one, two",
			"Cookie":            "a=1; b=2",
			"Accept":            "application/json",
			"X-Forwarded-Host":  host,
			"X-Forwarded-Proto": "http",
			"X-Forwarded-For":   "127.0.0.1",
		}
		for k, v := range want {
			if r.Headers[k] != v {
				t.Errorf("request header %s = %q, want %q (all: %v)", k, r.Headers[k], v, r.Headers)
			}
		}
		if len(r.Body) != 0 {
			t.Errorf("GET body = %q, want empty", r.Body)
		}
		body := []byte("hello \x00\xff world")
		a.respond(t, r.ID, 203, map[string]string{"Content-Type": "application/octet-stream", "X-Reply": "yes", "Set-Cookie": "s=1; Path=/"}, body)

		res := await(t, c, 5*time.Second)
		if res.err != nil || res.resp.StatusCode != 203 {
			t.Fatalf("public answer: %v", res)
		}
		if !bytes.Equal(res.body, body) {
			t.Errorf("body = %q, want %q", res.body, body)
		}
		if res.resp.ContentLength != int64(len(body)) {
			t.Errorf("whole http_response of %d bytes reached the client with Content-Length %d (chunked); want the length, which the edge knows", len(body), res.resp.ContentLength)
		}
		for k, v := range map[string]string{"Content-Type": "application/octet-stream", "X-Reply": "yes", "Set-Cookie": "s=1; Path=/"} {
			if got := res.resp.Header.Get(k); got != v {
				t.Errorf("response header %s = %q, want %q", k, got, v)
			}
		}
	})

	t.Run("streamed response", func(t *testing.T) {
		c := e.goDo(e.newRequest(t, "GET", host, "/stream", nil))
		r := a.expectRequest(t)
		if r.Path != "/stream" {
			t.Fatalf("path = %q", r.Path)
		}
		a.start(t, r.ID, 201, map[string]string{"Content-Type": "text/plain; charset=utf-8", "X-Streamed": "1"})
		var want []byte
		for i := range 5 {
			chunk := []byte(strings.Repeat(strconv.Itoa(i), 1000+i) + "\n")
			want = append(want, chunk...)
			a.chunk(t, r.ID, chunk)
		}
		a.end(t, r.ID)

		res := await(t, c, 5*time.Second)
		if res.err != nil || res.resp.StatusCode != 201 {
			t.Fatalf("public answer: %v", res)
		}
		if !bytes.Equal(res.body, want) {
			t.Errorf("streamed body: got %d bytes, want %d; equal prefix? %v", len(res.body), len(want), bytes.HasPrefix(want, res.body))
		}
		if got := res.resp.Header.Get("X-Streamed"); got != "1" {
			t.Errorf("X-Streamed = %q", got)
		}
		if got := res.resp.Header.Get("Content-Type"); got != "text/plain; charset=utf-8" {
			t.Errorf("Content-Type = %q", got)
		}
	})

	t.Run("first chunk reaches the client before the end", func(t *testing.T) {
		req := e.newRequest(t, "GET", host, "/live", nil)
		hc := e.goHead(req)
		r := a.expectRequest(t)
		a.start(t, r.ID, 200, map[string]string{"Content-Type": "text/event-stream"})
		a.chunk(t, r.ID, []byte("data: one\n\n"))
		h := awaitHead(t, hc, 5*time.Second)
		defer h.Body.Close()
		buf := make([]byte, len("data: one\n\n"))
		got := make(chan error, 1)
		go func() { _, err := io.ReadFull(h.Body, buf); got <- err }()
		select {
		case err := <-got:
			if err != nil || string(buf) != "data: one\n\n" {
				t.Fatalf("first chunk: %q %v", buf, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("first chunk not delivered before the end of the stream")
		}
		if got := h.Header.Get("X-Accel-Buffering"); got != "no" {
			t.Errorf("X-Accel-Buffering = %q, want no on a streamed response", got)
		}
		a.chunk(t, r.ID, []byte("data: two\n\n"))
		a.end(t, r.ID)
		rest, err := io.ReadAll(h.Body)
		if err != nil || string(rest) != "data: two\n\n" {
			t.Errorf("rest = %q, %v", rest, err)
		}
	})

	binary := make([]byte, jettyMaxBody) // exactly at the limit
	for i := range binary {
		binary[i] = byte(i*7 + i>>8)
	}

	t.Run("POST binary body", func(t *testing.T) {
		req := e.newRequest(t, "POST", host, "/upload?kind=bin", bytes.NewReader(binary))
		req.Header.Set("Content-Type", "application/octet-stream")
		c := e.goDo(req)
		r := a.expectRequest(t)
		if r.Method != "POST" || r.Path != "/upload" || r.Query != "kind=bin" {
			t.Errorf("method, path, query = %q %q %q", r.Method, r.Path, r.Query)
		}
		if !bytes.Equal(r.Body, binary) {
			t.Errorf("agent got a body of %d bytes, want the %d sent (equal: false)", len(r.Body), len(binary))
		}
		if r.Headers["Content-Length"] != strconv.Itoa(len(binary)) {
			t.Errorf("Content-Length header = %q, want %d", r.Headers["Content-Length"], len(binary))
		}
		// Echo it back reversed, as binary.
		echo := append([]byte(nil), r.Body...)
		for i, j := 0, len(echo)-1; i < j; i, j = i+1, j-1 {
			echo[i], echo[j] = echo[j], echo[i]
		}
		a.respond(t, r.ID, 200, map[string]string{"Content-Type": "application/octet-stream"}, echo)
		res := await(t, c, 5*time.Second)
		if res.err != nil || res.resp.StatusCode != 200 || !bytes.Equal(res.body, echo) {
			t.Fatalf("public answer: %v (body equal: %v)", res, bytes.Equal(res.body, echo))
		}
	})

	t.Run("chunked upload arrives whole", func(t *testing.T) {
		// No Content-Length: the edge must read the body and send it
		// whole, with a Content-Length and no Transfer-Encoding.
		pr, pw := io.Pipe()
		go func() {
			for i := 0; i < len(binary); i += 1000 {
				pw.Write(binary[i:min(i+1000, len(binary))])
			}
			pw.Close()
		}()
		req := e.newRequest(t, "PUT", host, "/chunked", pr)
		c := e.goDo(req)
		r := a.expectRequest(t)
		if !bytes.Equal(r.Body, binary) {
			t.Errorf("agent got %d body bytes, want %d", len(r.Body), len(binary))
		}
		if r.Headers["Content-Length"] != strconv.Itoa(len(binary)) {
			t.Errorf("Content-Length = %q, want %d", r.Headers["Content-Length"], len(binary))
		}
		if te, ok := r.Headers["Transfer-Encoding"]; ok {
			t.Errorf("Transfer-Encoding %q sent to a Jetty agent with a whole body", te)
		}
		a.respond(t, r.ID, 204, nil, nil)
		res := await(t, c, 5*time.Second)
		if res.err != nil || res.resp.StatusCode != 204 {
			t.Fatalf("public answer: %v", res)
		}
	})

	t.Run("body over the limit is 413 and never reaches the agent", func(t *testing.T) {
		big := append(append([]byte(nil), binary...), 'x') // limit + 1
		req := e.newRequest(t, "POST", host, "/too-big", bytes.NewReader(big))
		res := e.do(req)
		if res.err != nil || res.resp.StatusCode != http.StatusRequestEntityTooLarge {
			t.Fatalf("public answer: %v, want 413", res)
		}
		if !strings.Contains(string(res.body), strconv.Itoa(jettyMaxBody)) || !strings.Contains(strings.ToLower(string(res.body)), "too large") {
			t.Errorf("413 body does not say the body is too large and the limit %d: %q", jettyMaxBody, res.body)
		}
		// Same with an unknown length.
		req = e.newRequest(t, "POST", host, "/too-big-chunked", io.MultiReader(bytes.NewReader(big)))
		req.ContentLength = -1
		if res := e.do(req); res.err != nil || res.resp.StatusCode != http.StatusRequestEntityTooLarge {
			t.Fatalf("chunked: public answer: %v, want 413", res)
		}
		// The next frame the agent sees is the next request, not those.
		c := e.goDo(e.newRequest(t, "GET", host, "/after-413", nil))
		r := a.expectRequest(t)
		if r.Path != "/after-413" {
			t.Fatalf("agent got %s, want the request after the 413s", r.raw)
		}
		a.respond(t, r.ID, 200, nil, []byte("ok"))
		if res := await(t, c, 5*time.Second); res.err != nil || res.resp.StatusCode != 200 || string(res.body) != "ok" {
			t.Fatalf("after 413: %v", res)
		}
	})

	t.Run("PHP-style JSON", func(t *testing.T) {
		// json_encode escapes "/" and writes numbers unquoted; base64 of
		// 0xff bytes is all slashes.
		body := []byte{0xff, 0xff, 0xff, 0xfb, 0xef, 0xbe, '<', '/', '>'}
		b64 := strings.ReplaceAll(base64.StdEncoding.EncodeToString(body), "/", `\/`)
		if !strings.Contains(b64, `\/`) {
			t.Fatalf("test body has no slash in base64: %s", b64)
		}

		c := e.goDo(e.newRequest(t, "GET", host, "/php", nil))
		r := a.expectRequest(t)
		a.send(t, `{"type":"http_response","request_id":"`+r.ID+`","status":301,`+
			`"headers":{"Location":"http:\/\/example.com\/a\/b","Content-Type":"text\/html; charset=UTF-8","X-Note":"a\/b \u0041"},`+
			`"body_b64":"`+b64+`"}`)
		res := await(t, c, 5*time.Second)
		if res.err != nil || res.resp.StatusCode != 301 {
			t.Fatalf("public answer: %v", res)
		}
		if got := res.resp.Header.Get("Location"); got != "http://example.com/a/b" {
			t.Errorf("Location = %q", got)
		}
		if got := res.resp.Header.Get("Content-Type"); got != "text/html; charset=UTF-8" {
			t.Errorf("Content-Type = %q", got)
		}
		if got := res.resp.Header.Get("X-Note"); got != "a/b A" {
			t.Errorf("X-Note = %q, want %q", got, "a/b A")
		}
		if !bytes.Equal(res.body, body) {
			t.Errorf("body = %x, want %x", res.body, body)
		}

		// The streamed trio, PHP-style, with a numeric request_id.
		c = e.goDo(e.newRequest(t, "GET", host, "/php-stream", nil))
		r = a.expectRequest(t)
		a.send(t, `{"type":"http_response_start","request_id":`+r.ID+`,"status":200,"headers":{"Content-Type":"application\/json"}}`)
		a.send(t, `{"type":"http_response_chunk","request_id":`+r.ID+`,"data_b64":"`+b64+`"}`)
		a.send(t, `{"type":"http_response_end","request_id":`+r.ID+`}`)
		res = await(t, c, 5*time.Second)
		if res.err != nil || res.resp.StatusCode != 200 || !bytes.Equal(res.body, body) {
			t.Fatalf("public answer: %v", res)
		}
		if got := res.resp.Header.Get("Content-Type"); got != "application/json" {
			t.Errorf("Content-Type = %q", got)
		}
	})
}

// TestJettyPHPEmptyHeaders: PHP's json_encode writes an empty array, the
// natural "no headers" of a PHP agent, as [] rather than {}. A response
// with "headers":[] must still reach the client, not be dropped as an
// invalid frame (which leaves the client waiting).
func TestJettyPHPEmptyHeaders(t *testing.T) {
	t.Parallel()
	e := startEdge(t, nil)
	a := e.register(t, "php", "T")
	c := e.goDo(e.newRequest(t, "GET", "php.localhost", "/", nil))
	r := a.expectRequest(t)
	a.send(t, `{"type":"http_response","request_id":"`+r.ID+`","status":200,"headers":[],"body_b64":"b2s="}`)
	select {
	case res := <-c:
		if res.err != nil || res.resp.StatusCode != 200 || string(res.body) != "ok" {
			t.Fatalf("public answer: %v", res)
		}
	case <-time.After(time.Minute):
		page := e.metrics(t)
		t.Fatalf(`an http_response with "headers":[] (PHP's json_encode of an empty array) was not delivered within a minute; `+
			`frame errors invalid=%v; the client hangs`, metricValue(page, frameErrors("invalid")))
	}
}

// TestBodyLimitDefaultMessage: with the default body limit (32 MiB) the
// 413 page must state that limit.
func TestBodyLimitDefaultMessage(t *testing.T) {
	t.Parallel()
	e := startEdge(t, nil) // Session.MaxBody zero: the default, 32 MiB
	e.register(t, "big", "T")
	big := make([]byte, 32<<20+1)
	res := e.do(e.newRequest(t, "POST", "big.localhost", "/", bytes.NewReader(big)))
	if res.err != nil || res.resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("public answer: %v, want 413", res)
	}
	if !strings.Contains(string(res.body), strconv.Itoa(32<<20)) && !strings.Contains(string(res.body), "32 MiB") {
		t.Errorf("413 with the default limit does not state the limit (32 MiB = %d bytes): %q", 32<<20, res.body)
	}
}
