package inspect

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/http/httputil"
	"net/textproto"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/sluicehq/sluice/sse"
)

// through serves upstream behind a real ReverseProxy (streaming, as the
// agent's) wrapped by in.Wrap, and returns the front's URL.
//
// The front is full duplex, as the agent's servers are (HTTP/2, and the
// v1 tunnel's writer) and as the edge makes its HTTP/1 one: otherwise
// net/http's HTTP/1 server, when the response starts before it saw the
// request body's EOF, reads that EOF itself and closes the body, and the
// proxy's Transport, whose last read of the body (checking for bytes past
// Content-Length) then fails, closes its connection to the upstream in
// the middle of the response. A plain ReverseProxy without the inspector
// cuts a POST's response that way too, now and then on a busy machine.
func through(t *testing.T, in *Inspector, upstream http.Handler) string {
	t.Helper()
	up := httptest.NewServer(upstream)
	t.Cleanup(up.Close)
	u, _ := url.Parse(up.URL)
	rp := &httputil.ReverseProxy{
		Rewrite:       func(pr *httputil.ProxyRequest) { pr.SetURL(u) },
		FlushInterval: -1,
		ErrorLog:      nil,
	}
	h := in.Wrap(rp)
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.NewResponseController(w).EnableFullDuplex()
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(front.Close)
	return front.URL
}

// waitFor polls the record with id until ok says yes, for a generous
// while, and returns it.
func waitFor(t *testing.T, in *Inspector, id string, what string, ok func(Request) bool) Request {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		r, found := in.Get(id)
		if found && ok(r) {
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: never happened; the record: %+v", what, r)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// only returns the only recorded request.
func only(t *testing.T, in *Inspector) Request {
	t.Helper()
	list := in.List()
	if len(list) != 1 {
		t.Fatalf("%d requests recorded, want 1", len(list))
	}
	r, _ := in.Get(list[0].ID)
	return r
}

func done(r Request) bool { return r.State == StateDone || r.State == StateFailed }

func TestCaptureRequestAndResponse(t *testing.T) {
	in := New(Config{})
	defer in.Close()
	base := through(t, in, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Add("Set-Cookie", "a=1")
		w.Header().Add("Set-Cookie", "b=2")
		w.Header().Set("Trailer", "X-Digest")
		w.WriteHeader(http.StatusCreated)
		fmt.Fprintf(w, `{"got":%q}`, body)
		w.Header().Set("X-Digest", "abc")
	}))
	// A chunked request with a trailer (which the ReverseProxy does not
	// pass on: it copies the request's trailers before they are read).
	pr, pw := io.Pipe()
	req, _ := http.NewRequest("POST", base+"/items?x=1", pr)
	req.Header.Set("Authorization", "Bearer secret")
	req.Trailer = http.Header{"X-Sum": nil}
	go func() {
		io.WriteString(pw, `{"name":`)
		io.WriteString(pw, `"a"}`)
		req.Trailer.Set("X-Sum", "42")
		pw.Close()
	}()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 201 || string(got) != `{"got":"{\"name\":\"a\"}"}` || resp.Trailer.Get("X-Digest") != "abc" {
		t.Fatalf("the client got %d %s, trailer %v", resp.StatusCode, got, resp.Trailer)
	}
	r := waitFor(t, in, only(t, in).ID, "the end", done)
	if r.Method != "POST" || r.Path != "/items?x=1" || r.Status != 201 || r.State != StateDone || r.Error != "" {
		t.Fatalf("record %+v", r)
	}
	if r.RequestHeaders.Get("Authorization") != "Bearer secret" || len(r.ResponseHeaders["Set-Cookie"]) != 2 {
		t.Fatalf("headers %v / %v", r.RequestHeaders, r.ResponseHeaders)
	}
	if r.RequestBodySize != 12 || r.RequestBodyTruncated || r.ResponseBodySize != int64(len(got)) || r.ResponseBodyTruncated {
		t.Fatalf("sizes: %+v", r)
	}
	if r.RequestTrailers.Get("X-Sum") != "42" || r.ResponseTrailers.Get("X-Digest") != "abc" {
		t.Fatalf("trailers %v / %v", r.RequestTrailers, r.ResponseTrailers)
	}
	reqBody, _, _ := in.Body(r.ID, true)
	respBody, _, _ := in.Body(r.ID, false)
	if string(reqBody) != `{"name":"a"}` || !bytes.Equal(respBody, got) {
		t.Fatalf("bodies %q / %q", reqBody, respBody)
	}
}

// Bodies are kept up to the limit and counted beyond it, exactly.
func TestCaptureCutAtLimit(t *testing.T) {
	const limit = 1000
	const size = 3<<20 + 12345 // beyond countBatch, not a multiple of it
	in := New(Config{BodyLimit: limit})
	defer in.Close()
	data := make([]byte, size)
	rand.Read(data)
	base := through(t, in, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		w.Header().Set("X-Got", fmt.Sprint(n))
		w.Write(data)
	}))
	resp, err := http.Post(base+"/up", "application/octet-stream", bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !bytes.Equal(got, data) || resp.Header.Get("X-Got") != fmt.Sprint(size) {
		t.Fatalf("the transfer was changed: %d bytes back, upstream got %s", len(got), resp.Header.Get("X-Got"))
	}
	r := waitFor(t, in, only(t, in).ID, "the end", done)
	if r.RequestBodySize != size || r.RequestBodyCaptured != limit || !r.RequestBodyTruncated ||
		r.ResponseBodySize != size || r.ResponseBodyCaptured != limit || !r.ResponseBodyTruncated {
		t.Fatalf("sizes: %+v", r)
	}
	body, _, _ := in.Body(r.ID, false)
	if !bytes.Equal(body, data[:limit]) {
		t.Fatal("the kept response body is not the body's start")
	}
}

// An SSE response written with the sse package's own Stream, through the
// proxy: each event appears in the record while the stream is open.
func TestCaptureSSE(t *testing.T) {
	in := New(Config{})
	defer in.Close()
	next := make(chan sse.Event)
	base := through(t, in, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s, err := sse.NewStream(w, r, sse.StreamConfig{KeepAlive: -1})
		if err != nil {
			t.Error(err)
			return
		}
		defer s.Close()
		for ev := range next {
			if err := s.Send(r.Context(), ev); err != nil {
				return
			}
		}
	}))
	resp, err := http.Get(base + "/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	id := only(t, in).ID
	p := sse.NewParser(resp.Body, sse.ParserConfig{})
	events := []sse.Event{
		{Type: "tick", ID: "1", Data: "one"},
		{Data: "two\nlines"},
		{Type: "tock", ID: "3", Data: strings.Repeat("é", 40000)}, // 80,000 bytes: cut at the item limit
	}
	for i, ev := range events {
		next <- ev
		if _, err := p.Next(); err != nil {
			t.Fatal(err)
		}
		r := waitFor(t, in, id, fmt.Sprintf("event %d in the record", i+1), func(r Request) bool { return r.ItemCount == i+1 })
		if r.State != StateStreaming || r.Stream != StreamSSE {
			t.Fatalf("while open: %+v", r)
		}
	}
	close(next)
	io.Copy(io.Discard, resp.Body)
	r := waitFor(t, in, id, "the end", done)
	want := []Item{
		{N: 1, Kind: "event", Event: "tick", EventID: "1", Size: 3, Text: "one"},
		{N: 2, Kind: "event", Event: "message", EventID: "1", Size: 9, Text: "two\nlines"},
		{N: 3, Kind: "event", Event: "tock", EventID: "3", Size: 80000, Text: strings.Repeat("é", itemTextLimit/2), Truncated: true},
	}
	if len(r.Items) != len(want) {
		t.Fatalf("items %+v", r.Items)
	}
	for i, it := range r.Items {
		it.TimeMS = 0
		if it != want[i] {
			t.Fatalf("item %d: %+v, want %+v", i, it, want[i])
		}
	}
}

// A parser that falls behind skips bytes and starts again at the next
// event; the response never waits for it.
func TestCaptureSSEFallsBehind(t *testing.T) {
	in := New(Config{})
	defer in.Close()
	c := &capture{in: in, e: in.Begin(httptest.NewRequest("GET", "/events", nil), "")}
	// The feed's goroutine waits for one before it that has not ended:
	// the queue fills.
	f := newSSEFeed(c)
	hold := make(chan struct{})
	f.done = hold
	f.push([]byte("id: 1\ndata: one\n\n"))
	f.push([]byte("data: " + strings.Repeat("x", sseQueueBytes))) // skipped
	f.push([]byte("xxx\n\nid: 3\ndata: three\n\n"))
	close(hold)
	f.close()
	c.e.End(nil)
	r, _ := in.Get(c.e.ID())
	if len(r.Items) != 2 || r.Items[0].Text != "one" || r.Items[1].Text != "three" || r.Items[1].EventID != "3" {
		t.Fatalf("items %+v", r.Items)
	}
	if !strings.Contains(r.CaptureNote, fmt.Sprintf("%d bytes were skipped", sseQueueBytes+6)) {
		t.Fatalf("note %q", r.CaptureNote)
	}
}

func TestCaptureNDJSON(t *testing.T) {
	for _, ct := range []string{"application/x-ndjson", "application/jsonl; charset=utf-8", "application/json-seq"} {
		t.Run(ct, func(t *testing.T) {
			in := New(Config{})
			defer in.Close()
			rs := ""
			if strings.HasPrefix(ct, "application/json-seq") {
				rs = "\x1e"
			}
			base := through(t, in, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", ct)
				rc := http.NewResponseController(w)
				for _, part := range []string{rs + `{"a":1}` + "\n" + rs + `{"b":`, `2}` + "\r\n\n", rs + `{"c":3}`} {
					io.WriteString(w, part)
					rc.Flush()
				}
			}))
			resp, err := http.Get(base + "/export")
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			r := waitFor(t, in, only(t, in).ID, "the end", done)
			var lines []string
			for _, it := range r.Items {
				lines = append(lines, it.Text)
			}
			if r.Stream != StreamNDJSON || strings.Join(lines, "|") != `{"a":1}|{"b":2}|{"c":3}` {
				t.Fatalf("stream %q, lines %q", r.Stream, lines)
			}
		})
	}
}

// A compressed stream is marked, not parsed.
func TestCaptureCompressedStream(t *testing.T) {
	in := New(Config{})
	defer in.Close()
	h := in.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/x-ndjson")
		w.Header().Set("Content-Encoding", "gzip")
		w.Write([]byte("\x1f\x8b not really\n"))
	}))
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil))
	r := only(t, in)
	if r.ItemCount != 0 || !strings.Contains(r.CaptureNote, "compressed (gzip)") || r.ResponseBodySize != 14 {
		t.Fatalf("record %+v", r)
	}
}

// wsEcho answers each message with "echo: " and the message, with small
// buffers so that long messages go out fragmented.
func wsEcho(compress bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		up := websocket.Upgrader{WriteBufferSize: 1024, EnableCompression: compress}
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer ws.Close()
		for {
			typ, msg, err := ws.ReadMessage()
			if err != nil {
				return
			}
			if err := ws.WriteMessage(typ, append([]byte("echo: "), msg...)); err != nil {
				return
			}
		}
	})
}

func TestCaptureWebSocket(t *testing.T) {
	in := New(Config{})
	defer in.Close()
	base := through(t, in, wsEcho(false))
	d := websocket.Dialer{WriteBufferSize: 1024}
	ws, resp, err := d.Dial("ws"+strings.TrimPrefix(base, "http")+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	long := strings.Repeat("0123456789", 500) // 5,000 bytes: fragmented both ways
	pongs := make(chan string, 1)
	ws.SetPongHandler(func(s string) error { pongs <- s; return nil })
	send := []struct {
		typ int
		msg []byte
	}{{websocket.TextMessage, []byte("hello")}, {websocket.BinaryMessage, []byte{0, 1, 0xfe, 0xff}}, {websocket.TextMessage, []byte(long)}}
	id := only(t, in).ID
	// The capture sees a message from the client when the proxy reads
	// it, before passing it on, and a message to the client after the
	// proxy wrote it: the client may have the echo, and send its next
	// message, before the echo is captured. So each exchange waits for
	// its echo's capture; the items are then in a known order.
	for i, m := range send {
		if err := ws.WriteMessage(m.typ, m.msg); err != nil {
			t.Fatal(err)
		}
		typ, got, err := ws.ReadMessage()
		if err != nil || typ != m.typ || string(got) != "echo: "+string(m.msg) {
			t.Fatalf("echo: %d %q %v", typ, got, err)
		}
		waitFor(t, in, id, fmt.Sprintf("echo %d captured", i+1), func(r Request) bool { return r.ItemCount == 2*(i+1) })
	}
	if err := ws.WriteControl(websocket.PingMessage, []byte("p"), time.Now().Add(10*time.Second)); err != nil {
		t.Fatal(err)
	}
	ws.SetReadDeadline(time.Now().Add(20 * time.Second))
	go ws.ReadMessage() // reads the pong (and then fails when closed)
	if got := <-pongs; got != "p" {
		t.Fatalf("pong %q", got)
	}
	waitFor(t, in, id, "the pong captured", func(r Request) bool { return r.ItemCount == 8 })
	if r, _ := in.Get(id); r.RequestBodySize == 0 || r.ResponseBodySize == 0 {
		t.Fatalf("while open: sizes %+v", r)
	}
	ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(1000, "bye"), time.Now().Add(10*time.Second))
	waitFor(t, in, id, "the server's close", func(r Request) bool { return r.ItemCount == 10 })
	if r, _ := in.Get(id); r.State != StateStreaming {
		t.Fatalf("ended before the connection closed: %+v", r)
	}
	// The record ends when the connection closes both ways.
	ws.Close()
	r := waitFor(t, in, id, "the end", done)
	type msg struct{ dir, op, text string }
	var got []msg
	for _, it := range r.Items {
		got = append(got, msg{it.Direction, it.Opcode, it.Text})
		if it.Kind != "message" {
			t.Fatalf("item %+v", it)
		}
	}
	want := []msg{
		{"in", "text", "hello"}, {"out", "text", "echo: hello"},
		{"in", "binary", "0001feff"}, {"out", "binary", "6563686f3a200001feff"},
		{"in", "text", long}, {"out", "text", "echo: " + long},
		{"in", "ping", "70"}, {"out", "pong", "70"},
		{"in", "close", "1000 bye"}, {"out", "close", "1000"},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("items\n got %q\nwant %q", got, want)
	}
	if r.Status != 101 || r.Stream != StreamWebSocket || r.ResponseHeaders.Get("Upgrade") != "websocket" || r.CaptureNote != "" {
		t.Fatalf("record %+v", r)
	}
	if r.RequestBodySize == 0 || r.ResponseBodySize == 0 || r.RequestBodyCaptured != 0 {
		t.Fatalf("sizes %+v", r)
	}
}

func TestCaptureWebSocketCompressed(t *testing.T) {
	in := New(Config{})
	defer in.Close()
	base := through(t, in, wsEcho(true))
	d := websocket.Dialer{EnableCompression: true}
	ws, resp, err := d.Dial("ws"+strings.TrimPrefix(base, "http")+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	defer ws.Close()
	ws.WriteMessage(websocket.TextMessage, []byte(strings.Repeat("squeeze me ", 100)))
	if _, got, err := ws.ReadMessage(); err != nil || !strings.HasPrefix(string(got), "echo: squeeze") {
		t.Fatalf("echo %q %v", got, err)
	}
	id := only(t, in).ID
	r := waitFor(t, in, id, "both messages", func(r Request) bool { return r.ItemCount >= 2 })
	for _, it := range r.Items[:2] {
		if it.Opcode != "text" || !strings.HasPrefix(it.Text, "compressed, ") || it.Text != fmt.Sprintf("compressed, %d bytes", it.Size) {
			t.Fatalf("item %+v", it)
		}
	}
}

// Bytes that are not WebSocket frames stop the decoding, with a note; the
// connection carries them as they are.
func TestCaptureWebSocketUndecodable(t *testing.T) {
	in := New(Config{})
	defer in.Close()
	front := httptest.NewServer(in.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		defer conn.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		brw.Write([]byte{0x83, 0x00, 'r', 'a', 'w'}) // a reserved opcode
		brw.Flush()
	})))
	defer front.Close()
	conn, err := net.Dial("tcp", front.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	io.WriteString(conn, "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
	got, _ := io.ReadAll(conn)
	if !bytes.HasSuffix(got, []byte{0x83, 0x00, 'r', 'a', 'w'}) {
		t.Fatalf("the client got %q", got)
	}
	r := waitFor(t, in, only(t, in).ID, "the end", done)
	if r.Status != 101 || !strings.Contains(r.CaptureNote, "reserved opcode") || r.ItemCount != 0 {
		t.Fatalf("record %+v", r)
	}
}

// Expect: 100-continue through the capture and a proxy: the client gets
// the local server's 100 before it sends the body; 103 passes too.
func TestCaptureInformational(t *testing.T) {
	in := New(Config{})
	defer in.Close()
	base := through(t, in, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hints" {
			w.Header().Add("Link", "</a.css>; rel=preload")
			w.WriteHeader(http.StatusEarlyHints)
			io.WriteString(w, "hinted")
			return
		}
		n, _ := io.Copy(io.Discard, r.Body)
		fmt.Fprintf(w, "got %d", n)
	}))
	addr := strings.TrimPrefix(base, "http://")

	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	io.WriteString(conn, "POST /accept HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
	tp := textproto.NewReader(bufio.NewReader(conn))
	line, err := tp.ReadLine()
	if err != nil || line != "HTTP/1.1 100 Continue" {
		t.Fatalf("before the body: %q %v", line, err)
	}
	tp.ReadMIMEHeader()
	io.WriteString(conn, "hello")
	// The local server's own 100 Continue may follow the proxy's (when
	// the proxy's transport stopped waiting for it, after a second, and
	// sent the body): more than one 1xx may come before the final head.
	for {
		if line, err = tp.ReadLine(); err != nil || !strings.HasPrefix(line, "HTTP/1.1 1") {
			break
		}
		tp.ReadMIMEHeader()
	}
	if line != "HTTP/1.1 200 OK" {
		t.Fatalf("after the body: %q %v", line, err)
	}

	var got1xx []int
	var mu sync.Mutex
	ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
		Got1xxResponse: func(code int, _ textproto.MIMEHeader) error {
			mu.Lock()
			got1xx = append(got1xx, code)
			mu.Unlock()
			return nil
		},
	})
	req, _ := http.NewRequestWithContext(ctx, "GET", base+"/hints", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(got1xx) != "[103]" || string(body) != "hinted" {
		t.Fatalf("1xx %v, body %q", got1xx, body)
	}
	for _, r := range in.List() {
		r = waitFor(t, in, r.ID, "the end", done)
		if r.Status != 200 {
			t.Fatalf("%s: status %d, want the final one", r.Path, r.Status)
		}
		if r.Path == "/accept" && r.RequestBodySize != 5 {
			t.Fatalf("body %+v", r)
		}
	}
}

// The writer keeps what the one underneath can do, through
// http.ResponseController.
func TestCaptureResponseController(t *testing.T) {
	in := New(Config{})
	defer in.Close()
	errs := make(chan error, 4)
	front := httptest.NewServer(in.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		errs <- rc.SetWriteDeadline(time.Now().Add(time.Minute))
		errs <- rc.SetReadDeadline(time.Now().Add(time.Minute))
		errs <- rc.EnableFullDuplex()
		io.WriteString(w, "x")
		errs <- rc.Flush()
	})))
	defer front.Close()
	resp, err := http.Get(front.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	for range 4 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	// A writer that cannot flush says so.
	var flushErr error
	in.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		flushErr = http.NewResponseController(w).Flush()
	})).ServeHTTP(struct{ http.ResponseWriter }{httptest.NewRecorder()}, httptest.NewRequest("GET", "/", nil))
	if flushErr == nil {
		t.Fatal("Flush on a writer that cannot flush succeeded")
	}
}

// A replay is recorded once, as a replay, even through two Wraps (the
// API's around the agent's).
func TestCaptureReplayMark(t *testing.T) {
	in := New(Config{})
	defer in.Close()
	inner := in.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	ctx, mark, done := in.withReplay(context.Background(), "7")
	in.Wrap(inner).ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil).WithContext(ctx))
	done()
	r := only(t, in)
	if mark.Entry == nil || mark.Entry.ID() != r.ID || r.ReplayOf != "7" || r.State != StateDone {
		t.Fatalf("record %+v, mark %+v", r, mark)
	}
	inner.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil))
	if list := in.List(); len(list) != 2 || list[0].ReplayOf != "" {
		t.Fatalf("the next request: %+v", list)
	}
}

// A handler that aborts (the proxy when the local server fails
// mid-response) is recorded as failed, and the panic goes on.
func TestCaptureAbort(t *testing.T) {
	in := New(Config{})
	defer in.Close()
	h := in.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "partial")
		panic(http.ErrAbortHandler)
	}))
	func() {
		defer func() {
			if p := recover(); p != http.ErrAbortHandler {
				t.Fatalf("recovered %v", p)
			}
		}()
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil))
	}()
	r := only(t, in)
	if r.State != StateFailed || !strings.Contains(r.Error, "aborted") || r.ResponseBodySize != 7 {
		t.Fatalf("record %+v", r)
	}
}

// The parser's goroutine runs only while there is something to parse: it
// ends between events, and the next one carries the last event ID over.
func TestCaptureSSEGoroutineEndsWhenIdle(t *testing.T) {
	in := New(Config{})
	defer in.Close()
	c := &capture{in: in, e: in.Begin(httptest.NewRequest("GET", "/events", nil), "")}
	f := newSSEFeed(c)
	running := func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return f.running
	}
	idle := func(what string, items int) {
		t.Helper()
		waitFor(t, in, c.e.ID(), what, func(r Request) bool { return r.ItemCount == items && !running() })
	}
	f.push([]byte("id: 1\ndata: one\n\n"))
	idle("the first event", 1)
	f.push([]byte("data: tw"))
	if !running() {
		t.Fatal("no goroutine for an event in progress")
	}
	f.push([]byte("o\r\n\r\n"))
	idle("the second event", 2)
	f.push([]byte("id: 7\n\n")) // no event, a new last event ID
	idle("the id", 2)
	f.push([]byte("data: three\r\r"))
	idle("the third event", 3)
	f.close()
	c.e.End(nil)
	r, _ := in.Get(c.e.ID())
	if r.Items[1].Text != "two" || r.Items[1].EventID != "1" || r.Items[2].Text != "three" || r.Items[2].EventID != "7" {
		t.Fatalf("items %+v", r.Items)
	}
}

func TestStreamKind(t *testing.T) {
	for _, tc := range []struct {
		ct   string
		kind string
		seq  bool
	}{
		{"text/event-stream", StreamSSE, false},
		{"Text/Event-Stream; charset=utf-8", StreamSSE, false},
		{" application/x-ndjson ", StreamNDJSON, false},
		{"application/jsonl; charset=utf-8", StreamNDJSON, false},
		{"application/json-seq", StreamNDJSON, true},
		{"text/event-stream; charset", "", false}, // not a media type: mime.ParseMediaType refuses it
		{"text/event-streams", "", false},
		{"application/json", "", false},
		{"", "", false},
	} {
		if kind, seq := streamKind(tc.ct); kind != tc.kind || seq != tc.seq {
			t.Errorf("%q: %q %v, want %q %v", tc.ct, kind, seq, tc.kind, tc.seq)
		}
	}
}
