package h1_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice/edge/h1"
	"github.com/sluicehq/sluice/internal/testcert"
	"github.com/sluicehq/sluice/internal/testtool"
)

// ceiling bounds every wait for an event in these tests.
const ceiling = time.Minute

func waitFor[T any](t *testing.T, what string, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(ceiling):
		t.Fatalf("no %s after %v", what, ceiling)
		panic("unreachable")
	}
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(ceiling))
	t.Cleanup(func() { c.Close() })
	return c
}

// TestClientLeaves: a client that closes its connection while the
// handler waits cancels the request's context (cancellation carried from
// the visitor to the tunnel).
func TestClientLeaves(t *testing.T) {
	started := make(chan struct{})
	ended := make(chan error, 1)
	s := serveBoth(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-r.Context().Done()
		ended <- r.Context().Err()
	}), nil)
	c := dial(t, s.lean)
	io.WriteString(c, "GET /wait HTTP/1.1\r\nHost: t\r\n\r\n")
	waitFor(t, "request", started)
	c.Close()
	if err := waitFor(t, "cancellation", ended); !errors.Is(err, context.Canceled) {
		t.Fatalf("the request's context ended with %v", err)
	}
}

// TestBodyEndsWithHandler: a request body read after its handler returned
// fails (the connection has moved on), as with net/http.
func TestBodyEndsWithHandler(t *testing.T) {
	bodies := make(chan io.Reader, 1)
	s := serveBoth(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		bodies <- r.Body
		w.Write(b[:2])
	}), nil)
	c := dial(t, s.lean)
	io.WriteString(c, "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\nabcd")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	if string(got) != "ab" {
		t.Fatalf("body %q", got)
	}
	body := waitFor(t, "body", bodies)
	if n, err := body.Read(make([]byte, 2)); n != 0 || !errors.Is(err, http.ErrBodyReadAfterClose) {
		t.Fatalf("a read after the handler got %d, %v; want http.ErrBodyReadAfterClose", n, err)
	}
	// The body read to its end: the connection serves another request.
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
	if resp, err = http.ReadResponse(br, nil); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("second request: %v, %v", resp, err)
	}
}

// TestUnreadBodyCloses: a request body the handler left unread ends the
// connection, and the response says so, even while the client still sends.
func TestUnreadBodyCloses(t *testing.T) {
	s := serveBoth(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "too large", http.StatusRequestEntityTooLarge)
	}), nil)
	c := dial(t, s.lean)
	io.WriteString(c, "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000\r\n\r\nsome of it")
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("%v after %q", err, got)
	}
	if !bytes.HasPrefix(got, []byte("HTTP/1.1 413 ")) || !bytes.Contains(got, []byte("\r\nConnection: close\r\n")) || !bytes.HasSuffix(got, []byte("too large\n")) {
		t.Fatalf("got %q", got)
	}
}

// TestShutdown: Shutdown closes idle connections at once, lets a request
// in flight finish, and then returns; Serve returns http.ErrServerClosed.
func TestShutdown(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{}, 1)
	front := &h1.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/slow" {
				started <- struct{}{}
				<-release
			}
			io.WriteString(w, "done "+r.URL.Path)
		}),
		Lean:     func(*http.Request) bool { return true },
		Fallback: &http.Server{},
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- front.Serve(ln) }()
	idle := dial(t, ln.Addr().String())
	io.WriteString(idle, "GET /fast HTTP/1.1\r\nHost: t\r\n\r\n")
	idleR := bufio.NewReader(idle)
	if resp, err := http.ReadResponse(idleR, nil); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("%v %v", resp, err)
	} else {
		io.ReadAll(resp.Body)
	}
	busy := dial(t, ln.Addr().String())
	io.WriteString(busy, "GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
	waitFor(t, "the slow request", started)

	shut := make(chan error, 1)
	go func() { shut <- front.Shutdown(context.Background()) }()
	if _, err := idleR.ReadByte(); err != io.EOF {
		t.Fatalf("the idle connection: %v, want it closed", err)
	}
	if err := waitFor(t, "Serve's return", served); !errors.Is(err, http.ErrServerClosed) {
		t.Fatalf("Serve returned %v", err)
	}
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned (%v) while a request ran", err)
	default:
	}
	close(release)
	got, err := io.ReadAll(busy)
	if err != nil || !bytes.Contains(got, []byte("\r\nConnection: close\r\n")) || !bytes.HasSuffix(got, []byte("done /slow")) {
		t.Fatalf("the request in flight got %q, %v", got, err)
	}
	if err := waitFor(t, "Shutdown's return", shut); err != nil {
		t.Fatal(err)
	}
	front.Close()
}

// TestTimeouts: a head that does not come whole within ReadHeaderTimeout,
// and a kept-alive connection idle for IdleTimeout, are closed.
func TestTimeouts(t *testing.T) {
	// Each server has a short timeout only for what it tests (a short
	// ReadHeaderTimeout counts from the accept: on a busy machine the
	// request itself could come later).
	slowHead := &h1.Server{
		Handler:           http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}),
		Lean:              func(*http.Request) bool { return true },
		Fallback:          &http.Server{},
		ReadHeaderTimeout: 50 * time.Millisecond,
		IdleTimeout:       time.Minute,
	}
	slow := dial(t, serve(t, slowHead.Serve, slowHead.Close))
	io.WriteString(slow, "GET / HTTP/1.1\r\nHost:")
	if got, err := io.ReadAll(slow); err != nil || len(got) != 0 {
		t.Fatalf("a slow head got %q, %v; want the connection closed", got, err)
	}
	idleConn := &h1.Server{
		Handler:           http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}),
		Lean:              func(*http.Request) bool { return true },
		Fallback:          &http.Server{},
		ReadHeaderTimeout: time.Minute,
		IdleTimeout:       50 * time.Millisecond,
	}
	idle := dial(t, serve(t, idleConn.Serve, idleConn.Close))
	io.WriteString(idle, "GET / HTTP/1.1\r\nHost: t\r\n\r\n")
	got, err := io.ReadAll(idle)
	if err != nil || !bytes.HasPrefix(got, []byte("HTTP/1.1 200 OK\r\n")) || bytes.Contains(got, []byte("Connection: close")) {
		t.Fatalf("an idle connection got %q, %v; want a kept-alive answer, then the connection closed", got, err)
	}
}

// TestPanics: a handler's panic ends its connection (logged, unless it is
// http.ErrAbortHandler, which aborts a body mid-way) and not the server.
func TestPanics(t *testing.T) {
	var mu sync.Mutex
	var logged bytes.Buffer
	front := &h1.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			switch r.URL.Path {
			case "/panic":
				panic("boom")
			case "/abort":
				io.WriteString(w, "partial")
				w.(http.Flusher).Flush()
				panic(http.ErrAbortHandler)
			}
			io.WriteString(w, "fine")
		}),
		Lean:     func(*http.Request) bool { return true },
		Fallback: &http.Server{ErrorLog: log.New(writerFunc(func(p []byte) (int, error) { mu.Lock(); defer mu.Unlock(); return logged.Write(p) }), "", 0)},
	}
	addr := serve(t, front.Serve, front.Close)
	if got := exchange(t, addr, "GET /panic HTTP/1.1\r\nHost: t\r\n\r\n"); got != "" {
		t.Fatalf("a panic's answer: %q", got)
	}
	resp, err := http.Get("http://" + addr + "/abort")
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "partial" || !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("an aborted body: %q, %v; want the first bytes, then unexpected EOF", b, err)
	}
	if got := exchange(t, addr, "GET /fine HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"); !strings.HasSuffix(got, "fine") {
		t.Fatalf("after the panics: %q", got)
	}
	mu.Lock()
	defer mu.Unlock()
	if !strings.Contains(logged.String(), "panic serving") || !strings.Contains(logged.String(), "boom") || strings.Count(logged.String(), "panic serving") != 1 {
		t.Fatalf("logged %q; want the panic, once (not the abort)", logged.String())
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// TestHTTP2AndTLS: HTTP/2 with prior knowledge is the fallback's; over TLS,
// HTTP/1.1 is served here (with the request's TLS state), HTTP/2 (ALPN)
// and the requests h1 does not serve go to the fallback, which gives them
// the TLS state too, and plain HTTP to the TLS port gets net/http's 400.
func TestHTTP2AndTLS(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.Proto)
		if r.TLS != nil && r.TLS.HandshakeComplete {
			io.WriteString(w, " tls")
		}
	})
	s := serveBoth(t, h, nil)
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Get("http://" + s.lean + "/")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "HTTP/2.0" || resp.Header.Get(fallbackMark) == "" {
		t.Fatalf("h2c: %q, fields %v", b, resp.Header)
	}

	cert := testcert.New(t, time.Time{}, time.Time{}, "127.0.0.1")
	var mu sync.Mutex
	var logged bytes.Buffer
	fb := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set(fallbackMark, "net/http")
			h.ServeHTTP(w, r)
		}),
		ErrorLog: log.New(writerFunc(func(p []byte) (int, error) { mu.Lock(); defer mu.Unlock(); return logged.Write(p) }), "", 0),
	}
	front := &h1.Server{Handler: h, Lean: func(r *http.Request) bool { return r.URL.Path != "/other" }, Fallback: fb, ReadHeaderTimeout: time.Minute}
	addr := serve(t, func(ln net.Listener) error {
		return front.Serve(tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert.TLS}, NextProtos: []string{"h2", "http/1.1"}}))
	}, front.Close)
	for _, tc := range []struct {
		h2       bool
		path     string
		want     string
		fallback bool
	}{
		{false, "/", "HTTP/1.1 tls", false},
		{false, "/other", "HTTP/1.1 tls", true},
		{true, "/", "HTTP/2.0 tls", true},
	} {
		ttr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: cert.Pool}, Protocols: new(http.Protocols)}
		ttr.Protocols.SetHTTP1(!tc.h2)
		ttr.Protocols.SetHTTP2(tc.h2)
		resp, err := (&http.Client{Transport: ttr}).Get("https://" + addr + tc.path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		ttr.CloseIdleConnections()
		if string(b) != tc.want || (resp.Header.Get(fallbackMark) != "") != tc.fallback {
			t.Fatalf("TLS %s (h2 %v): %q, fields %v; want %q, from the fallback: %v", tc.path, tc.h2, b, resp.Header, tc.want, tc.fallback)
		}
	}
	got := exchange(t, addr, "GET / HTTP/1.1\r\nHost: t\r\n\r\n")
	if got != "HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n" {
		t.Fatalf("plain HTTP to the TLS port: %q", got)
	}
	// The line is logged after the answer is written, as net/http does: wait for it.
	testtool.Eventually(t, "the handshake error logged", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return strings.Contains(logged.String(), "http: TLS handshake error from ") && strings.Contains(logged.String(), "client sent an HTTP request to an HTTPS server")
	})
}
