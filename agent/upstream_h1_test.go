package agent

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/textproto"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/h1client"
	"github.com/sluicehq/sluice/internal/testtool"
	"github.com/sluicehq/sluice/tunnel"
)

// countedServer is an HTTP/1.1 server on loopback that counts the
// connections it accepted and those it saw closed.
type countedServer struct {
	*httptest.Server
	opened, closed atomic.Int32
}

func newCountedServer(t *testing.T, h http.HandlerFunc) *countedServer {
	t.Helper()
	s := &countedServer{Server: httptest.NewUnstartedServer(h)}
	s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		switch st {
		case http.StateNew:
			s.opened.Add(1)
		case http.StateClosed, http.StateHijacked:
			s.closed.Add(1)
		}
	}
	s.Start()
	t.Cleanup(s.Close)
	return s
}

// testUpstream returns the agent's upstream transport with newProxy's
// settings, changed by mut.
func testUpstream(t *testing.T, mut func(*http.Transport)) *upstreamTransport {
	t.Helper()
	h1 := &http.Transport{
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		ResponseHeaderTimeout: time.Minute,
		MaxIdleConns:          256,
		MaxIdleConnsPerHost:   256,
		IdleConnTimeout:       4 * time.Second,
		DisableCompression:    true,
		ExpectContinueTimeout: time.Second,
		ReadBufferSize:        upstreamReadBuffer,
		WriteBufferSize:       upstreamWriteBuffer,
	}
	if mut != nil {
		mut(h1)
	}
	ut := newUpstreamTransport(h1)
	t.Cleanup(ut.CloseIdleConnections)
	return ut
}

// fetch sends a request through rt and reads the whole body.
func fetch(t *testing.T, rt http.RoundTripper, method, url string, body io.Reader) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := rt.RoundTrip(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: body: %v", method, url, err)
	}
	return resp, string(b)
}

func TestLeanRequest(t *testing.T) {
	t.Parallel()
	req := func(method, url string, body io.Reader, mut func(*http.Request)) *http.Request {
		r, err := http.NewRequest(method, url, body)
		if err != nil {
			t.Fatal(err)
		}
		if mut != nil {
			mut(r)
		}
		return r
	}
	small := func() io.Reader { return strings.NewReader("a small body") }
	for _, tc := range []struct {
		name string
		req  *http.Request
		want bool
	}{
		{"GET", req("GET", "http://127.0.0.1:1/", nil, nil), true},
		{"POST with a small body", req("POST", "http://127.0.0.1:1/", small(), nil), true},
		{"POST with NoBody", req("POST", "http://127.0.0.1:1/", http.NoBody, nil), true},
		{"body of 64 KiB", req("PUT", "http://127.0.0.1:1/", strings.NewReader(strings.Repeat("x", h1client.BodyMax)), nil), true},
		{"body over 64 KiB", req("PUT", "http://127.0.0.1:1/", strings.NewReader(strings.Repeat("x", h1client.BodyMax+1)), nil), false},
		{"streamed body", req("POST", "http://127.0.0.1:1/", io.MultiReader(small()), nil), false},
		{"chunked body", req("POST", "http://127.0.0.1:1/", small(), func(r *http.Request) { r.TransferEncoding = []string{"chunked"} }), false},
		{"request trailers", req("POST", "http://127.0.0.1:1/", small(), func(r *http.Request) { r.Trailer = http.Header{"X-T": nil} }), false},
		{"Expect", req("POST", "http://127.0.0.1:1/", small(), func(r *http.Request) { r.Header.Set("Expect", "100-continue") }), false},
		{"upgrade", req("GET", "http://127.0.0.1:1/", nil, func(r *http.Request) {
			r.Header.Set("Connection", "keep-alive, Upgrade")
			r.Header.Set("Upgrade", "websocket")
		}), false},
		{"https", req("GET", "https://127.0.0.1:1/", nil, nil), false},
		{"h2c", req("GET", "h2c://127.0.0.1:1/", nil, nil), false},
		{"CONNECT", req("CONNECT", "http://127.0.0.1:1/", nil, nil), false},
		{"invalid field name", req("GET", "http://127.0.0.1:1/", nil, func(r *http.Request) { r.Header["Bad\r\nName"] = []string{"x"} }), false},
		{"invalid field value", req("GET", "http://127.0.0.1:1/", nil, func(r *http.Request) { r.Header["X"] = []string{"a\r\nb: c"} }), false},
	} {
		if got := h1client.Lean(tc.req); got != tc.want {
			t.Errorf("%s: Lean = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// Sequential requests share one connection, whatever their kind of body
// (length, chunked with trailers, none for HEAD and 204).
func TestLeanKeepAlive(t *testing.T) {
	t.Parallel()
	srv := newCountedServer(t, func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		switch r.URL.Path {
		case "/204":
			w.WriteHeader(http.StatusNoContent)
		case "/chunked":
			w.Header().Set("Trailer", "X-Sum")
			io.WriteString(w, "a")
			http.NewResponseController(w).Flush()
			io.WriteString(w, "b")
			w.Header().Set("X-Sum", "ab")
		default:
			w.Header().Set("Content-Length", fmt.Sprint(len(body)+len(r.Method)+1))
			fmt.Fprintf(w, "%s %s", r.Method, body)
		}
	})
	ut := testUpstream(t, nil)
	if _, b := fetch(t, ut, "GET", srv.URL+"/", nil); b != "GET " {
		t.Errorf("GET: %q", b)
	}
	if _, b := fetch(t, ut, "POST", srv.URL+"/", strings.NewReader("form")); b != "POST form" {
		t.Errorf("POST: %q", b)
	}
	resp, b := fetch(t, ut, "HEAD", srv.URL+"/", nil)
	if resp.StatusCode != 200 || b != "" || resp.ContentLength != 5 {
		t.Errorf("HEAD: %d %q length %d, want 200, no body, length 5", resp.StatusCode, b, resp.ContentLength)
	}
	if resp, b := fetch(t, ut, "GET", srv.URL+"/204", nil); resp.StatusCode != 204 || b != "" {
		t.Errorf("204: %d %q", resp.StatusCode, b)
	}
	resp, b = fetch(t, ut, "GET", srv.URL+"/chunked", nil)
	if b != "ab" || resp.Trailer.Get("X-Sum") != "ab" || resp.ContentLength != -1 {
		t.Errorf("chunked: %q, trailers %v, length %d; want ab, X-Sum: ab, -1", b, resp.Trailer, resp.ContentLength)
	}
	if _, b := fetch(t, ut, "GET", srv.URL+"/", nil); b != "GET " {
		t.Errorf("GET: %q", b)
	}
	if n := srv.opened.Load(); n != 1 {
		t.Errorf("%d connections for six sequential requests, want 1", n)
	}
}

// A connection is not reused after Connection: close from either side, a
// body closed before its end, or more idle time than IdleConnTimeout.
func TestLeanConnectionNotReused(t *testing.T) {
	t.Parallel()
	// keepServing answers every request on a connection, with
	// Connection: close when asked to but without closing it: only the
	// client's rule keeps it from being used again.
	keepServing := func(_ int, c net.Conn) {
		br := bufio.NewReader(c)
		for {
			req, err := readRequest(br)
			if err != nil {
				return
			}
			if req.URL.Query().Has("close") {
				io.WriteString(c, "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok")
			} else {
				io.WriteString(c, okResponse)
			}
		}
	}
	t.Run("server says close", func(t *testing.T) {
		t.Parallel()
		addr, accepted := rawServer(t, keepServing)
		ut := testUpstream(t, nil)
		fetch(t, ut, "GET", "http://"+addr+"/?close", nil)
		fetch(t, ut, "GET", "http://"+addr+"/", nil)
		if n := accepted(); n != 2 {
			t.Errorf("%d connections, want 2", n)
		}
	})
	t.Run("client says close", func(t *testing.T) {
		t.Parallel()
		addr, accepted := rawServer(t, keepServing)
		ut := testUpstream(t, nil)
		req, _ := http.NewRequest("GET", "http://"+addr+"/", nil)
		req.Close = true
		resp, err := ut.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		io.ReadAll(resp.Body)
		resp.Body.Close()
		fetch(t, ut, "GET", "http://"+addr+"/", nil)
		if n := accepted(); n != 2 {
			t.Errorf("%d connections, want 2", n)
		}
	})
	t.Run("body not read to its end", func(t *testing.T) {
		t.Parallel()
		srv := newCountedServer(t, func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Query().Has("big") {
				w.Write(make([]byte, 1<<20))
				return
			}
			io.WriteString(w, "ok")
		})
		// No idle timeout to close it for us.
		ut := testUpstream(t, func(tr *http.Transport) { tr.IdleConnTimeout = time.Hour })
		req, _ := http.NewRequest("GET", srv.URL+"/?big", nil)
		resp, err := ut.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(resp.Body, make([]byte, 10)); err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if _, err := resp.Body.Read(make([]byte, 10)); !errors.Is(err, http.ErrBodyReadAfterClose) {
			t.Errorf("Read after Close: %v, want %v", err, http.ErrBodyReadAfterClose)
		}
		testtool.Eventually(t, "the server to see the connection closed", func() bool { return srv.closed.Load() == 1 })
		fetch(t, ut, "GET", srv.URL+"/", nil)
		if n := srv.opened.Load(); n != 2 {
			t.Errorf("%d connections, want 2", n)
		}
	})
	t.Run("idle too long", func(t *testing.T) {
		t.Parallel()
		srv := newCountedServer(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
		ut := testUpstream(t, func(tr *http.Transport) { tr.IdleConnTimeout = 50 * time.Millisecond })
		fetch(t, ut, "GET", srv.URL+"/", nil)
		// The idle connection's timer closes it.
		testtool.Eventually(t, "the idle connection to be closed", func() bool { return srv.closed.Load() == 1 })
		fetch(t, ut, "GET", srv.URL+"/", nil)
		if n := srv.opened.Load(); n != 2 {
			t.Errorf("%d connections, want 2", n)
		}
	})
}

// rawServer serves each accepted connection with serve(i, conn), i
// counting from 0, and returns its address and the number accepted.
// Connections still open when the test ends are closed, and the test
// waits for serve to return.
func rawServer(t *testing.T, serve func(i int, c net.Conn)) (addr string, accepted func() int) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns []net.Conn
	)
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			i := len(conns)
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() {
				defer c.Close()
				serve(i, c)
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String(), func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(conns)
	}
}

// eachRequest reads the requests on c, each with its body, and calls
// answer for each (with c's reader) until it returns false or c ends.
func eachRequest(c net.Conn, answer func(req *http.Request, br *bufio.Reader) bool) {
	br := bufio.NewReader(c)
	for {
		req, err := readRequest(br)
		if err != nil || !answer(req, br) {
			return
		}
	}
}

// readRequest reads one request and its body from br.
func readRequest(br *bufio.Reader) (*http.Request, error) {
	req, err := http.ReadRequest(br)
	if err != nil {
		return nil, err
	}
	_, err = io.Copy(io.Discard, req.Body)
	return req, err
}

const okResponse = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

// An idle connection is asked whether it is open without allocating (the
// question is made once per connection), and a byte the server sends
// unasked makes it not open.
// Not parallel: AllocsPerRun refuses to run beside parallel tests.
func TestLeanIdleOpen(t *testing.T) {
	stray := make(chan struct{})
	done := t.Context().Done()
	addr, _ := rawServer(t, func(i int, c net.Conn) {
		br := bufio.NewReader(c)
		if _, err := readRequest(br); err != nil {
			return
		}
		io.WriteString(c, okResponse)
		select {
		case <-stray:
		case <-done:
			return
		}
		io.WriteString(c, "x")
		io.Copy(io.Discard, c)
	})
	ut := testUpstream(t, nil)
	fetch(t, ut, "GET", "http://"+addr+"/", nil)
	list := ut.lean.Idle(addr)
	if len(list) != 1 {
		t.Fatalf("%d idle connections, want 1", len(list))
	}
	c := list[0]
	if !c.Open() {
		t.Fatal("an idle connection the server keeps is not open")
	}
	if runtime.GOOS != "windows" {
		if n := testing.AllocsPerRun(100, func() { c.Open() }); n != 0 {
			t.Errorf("open allocates %v times, want 0", n)
		}
	}
	close(stray)
	testtool.Eventually(t, "the stray byte to make the connection not open", func() bool { return !c.Open() })
}

// A kept-alive connection that the server closes: the next request finds
// it closed before it is sent (a POST with a body too), or, when the
// server closes it as the request arrives, a request that can be sent
// again is, once, on a new connection; one that cannot is not.
func TestLeanStaleConnection(t *testing.T) {
	t.Parallel()
	t.Run("closed while idle", func(t *testing.T) {
		t.Parallel()
		closed := make(chan struct{})
		addr, accepted := rawServer(t, func(i int, c net.Conn) {
			br := bufio.NewReader(c)
			if _, err := readRequest(br); err != nil {
				return
			}
			io.WriteString(c, okResponse)
			if i == 0 {
				c.Close()
				close(closed)
				return
			}
			io.Copy(io.Discard, c)
		})
		ut := testUpstream(t, nil)
		fetch(t, ut, "GET", "http://"+addr+"/", nil)
		<-closed
		// The server's FIN has reached the pooled connection.
		testtool.Eventually(t, "the pooled connection to see the close", func() bool {
			list := ut.lean.Idle(addr)
			return len(list) == 1 && !list[0].Open()
		})
		if resp, b := fetch(t, ut, "POST", "http://"+addr+"/", strings.NewReader("once")); resp.StatusCode != 200 || b != "ok" {
			t.Errorf("POST: %d %q", resp.StatusCode, b)
		}
		if n := accepted(); n != 2 {
			t.Errorf("%d connections, want 2", n)
		}
	})
	// The server reads a second request on its first connection, then
	// closes it without an answer.
	closesSecond := func(i int, c net.Conn) {
		br := bufio.NewReader(c)
		for n := 0; ; n++ {
			if _, err := readRequest(br); err != nil {
				return
			}
			if i == 0 && n == 1 {
				return // closed by rawServer
			}
			io.WriteString(c, okResponse)
		}
	}
	t.Run("closed as the request arrives: GET retried", func(t *testing.T) {
		t.Parallel()
		addr, accepted := rawServer(t, closesSecond)
		ut := testUpstream(t, nil)
		fetch(t, ut, "GET", "http://"+addr+"/", nil)
		if resp, b := fetch(t, ut, "GET", "http://"+addr+"/", nil); resp.StatusCode != 200 || b != "ok" {
			t.Errorf("GET: %d %q", resp.StatusCode, b)
		}
		if n := accepted(); n != 2 {
			t.Errorf("%d connections, want 2", n)
		}
	})
	t.Run("closed as the request arrives: POST not retried", func(t *testing.T) {
		t.Parallel()
		addr, accepted := rawServer(t, closesSecond)
		ut := testUpstream(t, nil)
		fetch(t, ut, "GET", "http://"+addr+"/", nil)
		req, _ := http.NewRequest("POST", "http://"+addr+"/", nil)
		if resp, err := ut.RoundTrip(req); err == nil {
			resp.Body.Close()
			t.Fatalf("POST answered %d, want an error (it may have had its effect)", resp.StatusCode)
		}
		if n := accepted(); n != 1 {
			t.Errorf("%d connections, want 1 (no retry)", n)
		}
	})
}

// No response head within ResponseHeaderTimeout: a timeout (net.Error),
// which upstreamError answers with 504.
func TestLeanResponseHeaderTimeout(t *testing.T) {
	t.Parallel()
	gone := make(chan struct{})
	srv := newCountedServer(t, func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
		close(gone)
	})
	ut := testUpstream(t, func(tr *http.Transport) { tr.ResponseHeaderTimeout = 100 * time.Millisecond })
	req, _ := http.NewRequest("GET", srv.URL+"/", nil)
	errc := make(chan error, 1)
	go func() {
		resp, err := ut.RoundTrip(req)
		if err == nil {
			resp.Body.Close()
		}
		errc <- err
	}()
	var err error
	select {
	case err = <-errc:
	case <-time.After(time.Minute):
		srv.CloseClientConnections()
		<-errc
		t.Fatal("no timeout after a minute")
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Errorf("%v (%T), want a net.Error timeout", err, err)
	}
	select {
	case <-gone:
	case <-time.After(time.Minute):
		t.Fatal("the server did not see the connection end")
	}
}

// The request's context ends mid-body: the upstream connection is closed
// (the server's handler sees its context end) and Read returns the
// context's error.
func TestLeanCancelMidBody(t *testing.T) {
	t.Parallel()
	gone := make(chan struct{})
	srv := newCountedServer(t, func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "first")
		http.NewResponseController(w).Flush()
		<-r.Context().Done()
		close(gone)
	})
	ut := testUpstream(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+"/", nil)
	resp, err := ut.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if _, err := io.ReadFull(resp.Body, make([]byte, 5)); err != nil {
		t.Fatal(err)
	}
	cancel()
	select {
	case <-gone:
	case <-time.After(time.Minute):
		t.Fatal("the server did not see the connection end")
	}
	if _, err := resp.Body.Read(make([]byte, 10)); !errors.Is(err, context.Canceled) {
		t.Errorf("Read after cancel: %v, want context.Canceled", err)
	}
}

// 103 Early Hints reach the caller's httptrace; the final response
// follows on the same connection.
func TestLeanEarlyHints(t *testing.T) {
	t.Parallel()
	srv := newCountedServer(t, earlyHints)
	ut := testUpstream(t, nil)
	for range 2 {
		var hints []string
		trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
			hints = append(hints, fmt.Sprint(code, " ", h.Get("Link")))
			return nil
		}}
		req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), "GET", srv.URL+"/", nil)
		resp, err := ut.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if want := "[103 </style.css>; rel=preload]"; fmt.Sprint(hints) != want || string(b) != "hinted" {
			t.Errorf("hints %v body %q, want %s hinted", hints, b, want)
		}
	}
	if n := srv.opened.Load(); n != 1 {
		t.Errorf("%d connections, want 1", n)
	}
	// Without a trace the hints are skipped.
	if resp, b := fetch(t, ut, "GET", srv.URL+"/", nil); resp.StatusCode != 200 || b != "hinted" {
		t.Errorf("%d %q", resp.StatusCode, b)
	}
}

func earlyHints(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Link", "</style.css>; rel=preload")
	w.WriteHeader(http.StatusEarlyHints)
	w.Header().Del("Link")
	io.WriteString(w, "hinted")
}

// Through the agent, over both protocols, a public client gets the
// local server's 103.
func TestEarlyHintsThroughAgent(t *testing.T) {
	t.Parallel()
	for _, proto := range []string{"v1", "v2"} {
		t.Run(proto, func(t *testing.T) {
			t.Parallel()
			addr := tunnelTo(t, proto, nil, http.HandlerFunc(earlyHints))
			var (
				mu    sync.Mutex
				hints []string
			)
			trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
				mu.Lock()
				defer mu.Unlock()
				hints = append(hints, fmt.Sprint(code, " ", h.Get("Link")))
				return nil
			}}
			req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), "GET", "http://"+addr+"/", nil)
			req.Host = "unit.localhost"
			resp, b := publicDo(t, req)
			mu.Lock()
			defer mu.Unlock()
			if want := "[103 </style.css>; rel=preload]"; resp.StatusCode != 200 || fmt.Sprint(hints) != want || string(b) != "hinted" {
				t.Errorf("%d, hints %v, body %q; want 200, %s, hinted", resp.StatusCode, hints, b, want)
			}
		})
	}
}

// Heads beyond MaxResponseHeaderBytes end the request.
func TestLeanHeadLimit(t *testing.T) {
	t.Parallel()
	srv := newCountedServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Big", strings.Repeat("x", 8<<10))
	})
	ut := testUpstream(t, func(tr *http.Transport) { tr.MaxResponseHeaderBytes = 4 << 10 })
	req, _ := http.NewRequest("GET", srv.URL+"/", nil)
	resp, err := ut.RoundTrip(req)
	if err == nil {
		resp.Body.Close()
	}
	if !errors.Is(err, h1client.ErrHeadTooLarge) {
		t.Errorf("%v, want %v", err, h1client.ErrHeadTooLarge)
	}
}

// A refused connection keeps ECONNREFUSED for upstreamError's page.
func TestLeanRefused(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	req, _ := http.NewRequest("GET", "http://"+addr+"/", nil)
	resp, err := testUpstream(t, nil).RoundTrip(req)
	if err == nil {
		resp.Body.Close()
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("%v, want ECONNREFUSED", err)
	}
}

// Requests the lean client does not take still get net/http's transport:
// Expect: 100-continue waits for the server's 100 before the body, and a
// streamed upload runs alongside its response (full duplex).
func TestUpstreamNetHTTPCases(t *testing.T) {
	t.Parallel()
	srv := newCountedServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/duplex" {
			http.NewResponseController(w).EnableFullDuplex()
			w.WriteHeader(200)
			http.NewResponseController(w).Flush()
			sc := bufio.NewScanner(r.Body)
			for sc.Scan() {
				fmt.Fprintf(w, "echo %s\n", sc.Text())
				http.NewResponseController(w).Flush()
			}
			return
		}
		io.Copy(w, r.Body)
	})
	ut := testUpstream(t, nil)
	t.Run("Expect", func(t *testing.T) {
		var got100 atomic.Bool
		trace := &httptrace.ClientTrace{Got100Continue: func() { got100.Store(true) }}
		req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), "PUT", srv.URL+"/", strings.NewReader("after 100"))
		req.Header.Set("Expect", "100-continue")
		resp, err := ut.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !got100.Load() || string(b) != "after 100" {
			t.Errorf("100 Continue seen: %v, body %q", got100.Load(), b)
		}
	})
	t.Run("streamed upload", func(t *testing.T) {
		pr, pw := io.Pipe()
		defer pw.Close()
		req, _ := http.NewRequest("POST", srv.URL+"/duplex", pr)
		type result struct {
			resp *http.Response
			err  error
		}
		done := make(chan result, 1)
		go func() {
			resp, err := ut.RoundTrip(req)
			done <- result{resp, err}
		}()
		var res result
		select {
		case res = <-done:
		case <-time.After(time.Minute):
			pw.Close()
			<-done
			t.Fatal("no response head while the upload is open")
		}
		if res.err != nil {
			t.Fatal(res.err)
		}
		defer res.resp.Body.Close()
		br := bufio.NewReader(res.resp.Body)
		for _, line := range []string{"one", "two"} {
			io.WriteString(pw, line+"\n")
			if got, err := br.ReadString('\n'); got != "echo "+line+"\n" {
				t.Fatalf("%q, %v; want echo %s", got, err, line)
			}
		}
		pw.Close()
		if rest, err := io.ReadAll(br); err != nil || len(rest) != 0 {
			t.Errorf("after the upload: %q, %v", rest, err)
		}
	})
}

// TestLeanBodyReady: the lean client's response body is Ready (a read
// would not wait) when it has a length and bytes of it came with the head,
// or once it ended; a chunked body's buffered bytes are not enough.
func TestLeanBodyReady(t *testing.T) {
	t.Parallel()
	more := make(chan struct{})
	srv := newCountedServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/sized" {
			w.Header().Set("Content-Length", "5")
			io.WriteString(w, "hello")
			return
		}
		io.WriteString(w, "a")
		w.(http.Flusher).Flush()
		<-more
		io.WriteString(w, "b")
	})
	ut := testUpstream(t, nil)
	ready := func(res *http.Response) bool {
		rb, ok := res.Body.(tunnel.ReadyBody)
		if !ok {
			t.Fatalf("%T is not a ReadyBody", res.Body)
		}
		return rb.Ready()
	}
	req, _ := http.NewRequest("GET", srv.URL+"/sized", nil)
	res, err := ut.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	if !ready(res) {
		t.Error("a sized body that came with its head: not Ready")
	}
	io.ReadAll(res.Body)
	res.Body.Close()

	req, _ = http.NewRequest("GET", srv.URL+"/chunked", nil)
	res, err = ut.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	if ready(res) {
		t.Error("a chunked body: Ready")
	}
	close(more)
	if b, err := io.ReadAll(res.Body); err != nil || string(b) != "ab" {
		t.Fatalf("read %q, %v", b, err)
	}
	if !ready(res) {
		t.Error("a body read to its end: not Ready")
	}
	res.Body.Close()
}
