package tunnel

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// h2Client starts serveH2 with handler on one end of a memPipe and
// returns x/net's client connection on the other (the edge's client).
// The server must have returned when the test ends.
func h2Client(t *testing.T, window int, handler http.Handler) *http2.ClientConn {
	t.Helper()
	cli, srv := memPipe()
	return h2ClientOn(t, cli, srv, window, handler)
}

func h2ClientOn(t *testing.T, cli, srv net.Conn, window int, handler http.Handler) *http2.ClientConn {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		serveH2(context.Background(), srv, handler, h2ServerConfig{Window: window})
	}()
	tr := &http2.Transport{AllowHTTP: true, DisableCompression: true, MaxReadFrameSize: h2FrameSize}
	cc, err := tr.NewClientConn(cli)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cc.Close()
		cli.Close()
		wait(t, done, "serveH2")
	})
	return cc
}

func h2Get(t *testing.T, cc *http2.ClientConn, method, path string, body io.Reader) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest(method, "http://t.example"+path, body)
	resp, err := cc.RoundTrip(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: body: %v", method, path, err)
	}
	return resp, b
}

func TestH2ServerRequests(t *testing.T) {
	big := make([]byte, 3<<20+17)
	rand.Read(big)
	mux := http.NewServeMux()
	mux.HandleFunc("/small", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Add("Set-Cookie", "a=1")
		w.Header().Add("Set-Cookie", "b=2")
		io.WriteString(w, "<html>ok</html>")
	})
	mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Length", fmt.Sprint(r.ContentLength))
		io.Copy(w, r.Body)
	})
	mux.HandleFunc("/request", func(w http.ResponseWriter, r *http.Request) {
		// (httputil.ReverseProxy aborts a response whose upstream failed
		// only in a request with http.ServerContextKey.)
		fmt.Fprintf(w, "%s %s %s host=%s uri=%s cookie=%s remote=%t nobody=%t server=%t",
			r.Method, r.Proto, r.URL.Path, r.Host, r.RequestURI, r.Header.Get("Cookie"), r.RemoteAddr != "", r.Body == http.NoBody,
			r.Context().Value(http.ServerContextKey) != nil)
	})
	mux.HandleFunc("/empty", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })
	mux.HandleFunc("/trailers", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Declared")
		io.WriteString(w, "body")
		w.(http.Flusher).Flush()
		w.Header().Set("X-Declared", "d")
		w.Header().Set(http.TrailerPrefix+"X-Late", "l")
	})
	mux.HandleFunc("/reqtrailers", func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		fmt.Fprintf(w, "%q", r.Trailer.Get("X-T"))
	})
	cc := h2Client(t, 64<<10, mux)

	resp, body := h2Get(t, cc, "GET", "/small", nil)
	if string(body) != "<html>ok</html>" || resp.ContentLength != 15 || resp.Header.Get("Content-Type") != "text/html; charset=utf-8" ||
		len(resp.Header["Set-Cookie"]) != 2 {
		t.Errorf("small: %d %q %v", resp.ContentLength, body, resp.Header)
	}
	// Bodies beyond both windows (64 KiB each way, x/net's client's own
	// SETTINGS), of known and unknown length.
	resp, body = h2Get(t, cc, "POST", "/echo", bytes.NewReader(big))
	if !bytes.Equal(body, big) || resp.Header.Get("X-Length") != fmt.Sprint(len(big)) {
		t.Errorf("echo: %d bytes back, X-Length %s", len(body), resp.Header.Get("X-Length"))
	}
	resp, body = h2Get(t, cc, "POST", "/echo", io.MultiReader(bytes.NewReader(big[:100]), bytes.NewReader(big[100:200000])))
	if !bytes.Equal(body, big[:200000]) || resp.Header.Get("X-Length") != "-1" {
		t.Errorf("echo of unknown length: %d bytes back, X-Length %s", len(body), resp.Header.Get("X-Length"))
	}
	req, _ := http.NewRequest("GET", "http://t.example/request?q=1", nil)
	req.Header.Add("Cookie", "a=1")
	req.Header.Add("Cookie", "b=2")
	resp, err := cc.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := "GET HTTP/2.0 /request host=t.example uri=/request?q=1 cookie=a=1; b=2 remote=true nobody=true server=true"; string(body) != want {
		t.Errorf("request: %q, want %q", body, want)
	}
	resp, body = h2Get(t, cc, "HEAD", "/small", nil)
	if len(body) != 0 || resp.StatusCode != 200 {
		t.Errorf("HEAD: %d %q", resp.StatusCode, body)
	}
	resp, _ = h2Get(t, cc, "GET", "/empty", nil)
	if resp.StatusCode != http.StatusNoContent {
		t.Errorf("empty: %d", resp.StatusCode)
	}
	resp, body = h2Get(t, cc, "GET", "/trailers", nil)
	if string(body) != "body" || resp.Trailer.Get("X-Declared") != "d" || resp.Trailer.Get("X-Late") != "l" {
		t.Errorf("trailers: %q %v", body, resp.Trailer)
	}
	req, _ = http.NewRequest("POST", "http://t.example/reqtrailers", strings.NewReader("x"))
	req.Trailer = http.Header{"X-T": {"v"}}
	resp, err = cc.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != `"v"` {
		t.Errorf("request trailers: %s", body)
	}
}

// TestH2ServerConcurrentStreams: streams share the connection's windows
// and each keeps its own (64 KiB): many uploads and downloads at once.
func TestH2ServerConcurrentStreams(t *testing.T) {
	cc := h2Client(t, 64<<10, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.Copy(w, r.Body) }))
	var wg sync.WaitGroup
	for i := range 40 {
		wg.Go(func() {
			data := bytes.Repeat([]byte{byte(i)}, 100<<10+i)
			req, _ := http.NewRequest("POST", "http://t.example/", bytes.NewReader(data))
			resp, err := cc.RoundTrip(req)
			if err != nil {
				t.Error(err)
				return
			}
			defer resp.Body.Close()
			got, err := io.ReadAll(resp.Body)
			if err != nil || !bytes.Equal(got, data) {
				t.Errorf("stream %d: %d bytes, %v", i, len(got), err)
			}
		})
	}
	wg.Wait()
}

// TestH2ServerHeadersFirst: a flush sends the headers at once, before any
// body byte (streaming rule 1), and a 103 goes out at once too.
func TestH2ServerHeadersFirst(t *testing.T) {
	release := make(chan struct{})
	cc := h2Client(t, 0, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</a.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(200)
		http.NewResponseController(w).Flush()
		<-release
		io.WriteString(w, "data: 1\n\n")
	}))
	var hints atomic.Int32
	ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
		Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
			if code == http.StatusEarlyHints && h.Get("Link") != "" {
				hints.Add(1)
			}
			return nil
		},
	})
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://t.example/", nil)
	resp, err := cc.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" || hints.Load() != 1 {
		t.Fatalf("head: %d %v, %d early hints", resp.StatusCode, resp.Header, hints.Load())
	}
	close(release)
	if b, err := io.ReadAll(resp.Body); err != nil || string(b) != "data: 1\n\n" {
		t.Fatalf("body %q, %v", b, err)
	}
}

// TestH2ServerAbort: a handler that panics (http.ErrAbortHandler or any
// value) mid-body resets its stream: the client sees an error, never a
// complete body (streaming rule 6).
func TestH2ServerAbort(t *testing.T) {
	for _, v := range []any{http.ErrAbortHandler, "boom"} {
		t.Run(fmt.Sprint(v), func(t *testing.T) {
			cc := h2Client(t, 0, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				io.WriteString(w, "partial")
				panic(v)
			}))
			req, _ := http.NewRequest("GET", "http://t.example/", nil)
			resp, err := cc.RoundTrip(req)
			if err == nil {
				_, err = io.ReadAll(resp.Body)
				resp.Body.Close()
			}
			var se http2.StreamError
			if !errors.As(err, &se) || se.Code != http2.ErrCodeInternal {
				t.Fatalf("got %v, want a reset (INTERNAL_ERROR)", err)
			}
		})
	}
}

// TestH2ServerCancel: the client's RST_STREAM (x/net's client sends one
// when the response body is closed early, as the edge does when its
// client left) ends the request's context and fails the handler's reads
// and writes.
func TestH2ServerCancel(t *testing.T) {
	started := make(chan struct{})
	ended := make(chan error, 1)
	cc := h2Client(t, 0, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(200)
		http.NewResponseController(w).Flush()
		close(started)
		<-r.Context().Done()
		_, rerr := r.Body.Read(make([]byte, 10))
		_, werr := w.Write(make([]byte, 10<<10))
		ended <- errors.Join(rerr, werr)
	}))
	pr, pw := io.Pipe()
	defer pw.Close()
	req, _ := http.NewRequest("POST", "http://t.example/", pr)
	resp, err := cc.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	<-started
	resp.Body.Close()
	select {
	case err := <-ended:
		if !errors.Is(err, ErrStreamReset) {
			t.Fatalf("reads and writes after the reset: %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("the handler's context did not end")
	}
}

// TestH2ServerConnEnd: when the connection ends, held handlers see their
// contexts end and serveH2 returns once they did.
func TestH2ServerConnEnd(t *testing.T) {
	cli, srv := memPipe()
	started := make(chan struct{}, 10)
	done := make(chan error, 1)
	go func() {
		done <- serveH2(context.Background(), srv, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(200)
			http.NewResponseController(w).Flush()
			started <- struct{}{}
			<-r.Context().Done()
		}), h2ServerConfig{})
	}()
	tr := &http2.Transport{AllowHTTP: true}
	cc, err := tr.NewClientConn(cli)
	if err != nil {
		t.Fatal(err)
	}
	var bodies []io.Closer
	for range 10 {
		req, _ := http.NewRequest("GET", "http://t.example/", nil)
		resp, err := cc.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		bodies = append(bodies, resp.Body)
		<-started
	}
	cli.Close()
	select {
	case err := <-done:
		if err == nil {
			t.Error("serveH2 returned no error")
		}
	case <-time.After(time.Minute):
		t.Fatal("serveH2 did not return")
	}
	for _, b := range bodies {
		b.Close()
	}
	cc.Close()
}

// recordingConn is a memPipe end that records the server's writes.
type recordingConn struct {
	net.Conn
	mu     sync.Mutex
	writes [][]byte
}

func (c *recordingConn) WriteBuffers(v [][]byte) (int, error) {
	var b []byte
	for _, p := range v {
		b = append(b, p...)
	}
	c.mu.Lock()
	c.writes = append(c.writes, b)
	c.mu.Unlock()
	return c.Conn.Write(b)
}

func (c *recordingConn) queue(p []byte) error {
	_, err := c.Conn.Write(p)
	return err
}

// TestH2ServerSmallResponseOneWrite: a small response is one write,
// HEADERS and DATA with END_STREAM.
func TestH2ServerSmallResponseOneWrite(t *testing.T) {
	cli, srv := memPipe()
	rec := &recordingConn{Conn: srv}
	cc := h2ClientOn(t, cli, rec, 0, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "hello, ")
		io.WriteString(w, "world")
	}))
	_, body := h2Get(t, cc, "GET", "/", nil)
	if string(body) != "hello, world" {
		t.Fatalf("body %q", body)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.writes) != 1 {
		t.Fatalf("%d writes, want 1", len(rec.writes))
	}
	fr := http2.NewFramer(nil, bytes.NewReader(rec.writes[0]))
	var types []string
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			break
		}
		types = append(types, fmt.Sprintf("%v:%v", f.Header().Type, f.Header().Flags.Has(http2.FlagDataEndStream)))
	}
	if got := strings.Join(types, " "); got != "HEADERS:false DATA:true" {
		t.Fatalf("frames %s", got)
	}
}

// h2Raw is a raw HTTP/2 client on a memPipe to serveH2: the frames it
// sends are the test's, those it reads the server's.
type h2Raw struct {
	fr   *http2.Framer
	enc  *hpack.Encoder
	hbuf bytes.Buffer
	cli  net.Conn
	done chan struct{} // closed when serveH2 returned
}

func newH2Raw(t *testing.T, window int, handler http.Handler) *h2Raw {
	t.Helper()
	cli, srv := memPipe()
	r := &h2Raw{cli: cli, fr: http2.NewFramer(cli, cli), done: make(chan struct{})}
	r.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	r.enc = hpack.NewEncoder(&r.hbuf)
	go func() {
		defer close(r.done)
		serveH2(context.Background(), srv, handler, h2ServerConfig{Window: window})
	}()
	t.Cleanup(func() {
		cli.Close()
		wait(t, r.done, "serveH2")
	})
	io.WriteString(cli, http2.ClientPreface)
	return r
}

func (r *h2Raw) headers(t *testing.T, id uint32, end bool, fields ...string) {
	t.Helper()
	r.hbuf.Reset()
	for i := 0; i+1 < len(fields); i += 2 {
		r.enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
	}
	if err := r.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: r.hbuf.Bytes(), EndStream: end, EndHeaders: true}); err != nil {
		t.Fatal(err)
	}
}

// until reads frames until one matches, failing t if the connection
// ends first.
func (r *h2Raw) until(t *testing.T, what string, match func(http2.Frame) bool) http2.Frame {
	t.Helper()
	r.cli.SetReadDeadline(time.Now().Add(time.Minute))
	defer r.cli.SetReadDeadline(time.Time{})
	for {
		f, err := r.fr.ReadFrame()
		if err != nil {
			t.Fatalf("waiting for %s: %v", what, err)
		}
		if match(f) {
			return f
		}
	}
}

var getFields = []string{":method", "GET", ":scheme", "http", ":authority", "t", ":path", "/"}

// TestH2ServerProtocolErrors: what a peer does wrong ends the stream or
// the connection with the error RFC 9113 names, and nothing else.
func TestH2ServerProtocolErrors(t *testing.T) {
	// (A handler that reads would give credit back, racing the frame
	// past the window.)
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() })
	rst := func(id uint32, code http2.ErrCode) func(http2.Frame) bool {
		return func(f http2.Frame) bool {
			rf, is := f.(*http2.RSTStreamFrame)
			return is && rf.StreamID == id && rf.ErrCode == code
		}
	}
	goaway := func(code http2.ErrCode) func(http2.Frame) bool {
		return func(f http2.Frame) bool {
			g, is := f.(*http2.GoAwayFrame)
			return is && g.ErrCode == code
		}
	}
	for _, tc := range []struct {
		name  string
		send  func(t *testing.T, r *h2Raw)
		want  func(http2.Frame) bool
		alive bool // the connection goes on
	}{
		{"not SETTINGS first", func(t *testing.T, r *h2Raw) { r.fr.WritePing(false, [8]byte{}) }, goaway(http2.ErrCodeProtocol), false},
		{"DATA on an idle stream", func(t *testing.T, r *h2Raw) {
			r.fr.WriteSettings()
			r.fr.WriteData(5, false, []byte("x"))
		}, goaway(http2.ErrCodeProtocol), false},
		{"past the stream window", func(t *testing.T, r *h2Raw) {
			r.fr.WriteSettings()
			r.headers(t, 1, false, getFields...)
			r.fr.WriteData(1, false, make([]byte, 16<<10))
			r.fr.WriteData(1, false, make([]byte, 1))
		}, rst(1, http2.ErrCodeFlowControl), true},
		{"no :path", func(t *testing.T, r *h2Raw) {
			r.fr.WriteSettings()
			r.headers(t, 1, true, ":method", "GET", ":scheme", "http")
		}, rst(1, http2.ErrCodeProtocol), true},
		{"body past Content-Length", func(t *testing.T, r *h2Raw) {
			r.fr.WriteSettings()
			r.headers(t, 1, false, append(getFields, "content-length", "1")...)
			r.fr.WriteData(1, false, []byte("ab"))
		}, rst(1, http2.ErrCodeProtocol), true},
		{"even stream", func(t *testing.T, r *h2Raw) {
			r.fr.WriteSettings()
			r.headers(t, 2, true, getFields...)
		}, goaway(http2.ErrCodeProtocol), false},
		{"oversized frame", func(t *testing.T, r *h2Raw) {
			r.fr.WriteSettings()
			r.headers(t, 1, false, getFields...)
			r.fr.WriteData(1, false, make([]byte, h2AgentFrameSize+1))
		}, goaway(http2.ErrCodeFrameSize), false},
		{"PUSH_PROMISE", func(t *testing.T, r *h2Raw) {
			r.fr.WriteSettings()
			r.fr.WritePushPromise(http2.PushPromiseParam{StreamID: 1, PromiseID: 2, BlockFragment: []byte{0x82}, EndHeaders: true})
		}, goaway(http2.ErrCodeProtocol), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newH2Raw(t, 16<<10, ok)
			tc.send(t, r)
			r.until(t, "the error", tc.want)
			if !tc.alive {
				wait(t, r.done, "serveH2, after the connection's error,")
				return
			}
			// A PING still gets its answer.
			r.fr.WritePing(false, [8]byte{7})
			r.until(t, "the ping's ack", func(f http2.Frame) bool {
				p, is := f.(*http2.PingFrame)
				return is && p.IsAck() && p.Data[0] == 7
			})
		})
	}
}

// TestH2ServerBodyBufferBounded: bytes a handler does not read wait up
// to the stream's window; the peer gets no more credit until it reads.
func TestH2ServerBodyBufferBounded(t *testing.T) {
	read := make(chan struct{})
	r := newH2Raw(t, 32<<10, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-read
		n, _ := io.Copy(io.Discard, r.Body)
		fmt.Fprint(w, n)
	}))
	r.fr.WriteSettings()
	r.headers(t, 1, false, getFields...)
	for range 2 {
		r.fr.WriteData(1, false, make([]byte, 16<<10))
	}
	// The stream's window is spent: the handler holds 32 KiB. It reads
	// them, and the credit comes back.
	close(read)
	r.until(t, "credit for the stream", func(f http2.Frame) bool {
		w, is := f.(*http2.WindowUpdateFrame)
		return is && w.StreamID == 1 && w.Increment >= 16<<10
	})
	r.fr.WriteData(1, true, []byte("x"))
	f := r.until(t, "the response", func(f http2.Frame) bool { _, is := f.(*http2.DataFrame); return is })
	if got := string(f.(*http2.DataFrame).Data()); got != fmt.Sprint(32<<10+1) {
		t.Fatalf("the handler read %s bytes", got)
	}
}

// TestH2ServerContentLengthEnds: the last byte of a Content-Length body
// carries END_STREAM: the client has the whole body before the handler
// returns.
func TestH2ServerContentLengthEnds(t *testing.T) {
	release := make(chan struct{})
	cc := h2Client(t, 0, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "5")
		io.WriteString(w, "hello")
		http.NewResponseController(w).Flush()
		<-release
	}))
	defer close(release)
	_, body := h2Get(t, cc, "GET", "/", nil)
	if string(body) != "hello" {
		t.Fatalf("body %q", body)
	}
}
