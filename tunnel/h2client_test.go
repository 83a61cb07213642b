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
)

// h2Servers are the agents the edge's client must work with: our own
// server, and x/net's (the agent of older releases).
var h2Servers = []struct {
	name  string
	serve func(ctx context.Context, conn net.Conn, handler http.Handler)
}{
	{"own", func(ctx context.Context, conn net.Conn, handler http.Handler) {
		serveH2(ctx, conn, handler, h2ServerConfig{Window: 256 << 10})
	}},
	{"x/net", func(ctx context.Context, conn net.Conn, handler http.Handler) {
		srv := &http2.Server{MaxConcurrentStreams: h2MaxStreams, MaxReadFrameSize: h2AgentFrameSize, MaxUploadBufferPerStream: 256 << 10}
		srv.ServeConn(conn, &http2.ServeConnOpts{Context: ctx, Handler: handler})
	}},
}

// h2cPair starts serve with handler on one end of a memPipe and returns
// the edge's client on the other. Both have ended when the test does.
func h2cPair(t *testing.T, serve func(context.Context, net.Conn, http.Handler), cfg h2ClientConfig, handler http.Handler) *h2cConn {
	t.Helper()
	cli, srv := memPipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		serve(context.Background(), srv, handler)
	}()
	c, err := newH2Client(cli, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.close()
		srv.Close()
		wait(t, done, "the server")
	})
	return c
}

func h2cDo(t *testing.T, c *h2cConn, req *http.Request) (*http.Response, []byte) {
	t.Helper()
	resp, _, err := c.roundTrip(req, false)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: body: %v", req.Method, req.URL, err)
	}
	return resp, b
}

func newReq(method, path string, body io.Reader) *http.Request {
	req, _ := http.NewRequest(method, "http://t.example"+path, body)
	return req
}

// TestH2ClientRequests: the edge's client against both servers: heads,
// bodies beyond every window each way, HEAD and 204, trailers declared
// and not, 1xx, Content-Length, many streams at once; and the budget is
// all given back.
func TestH2ClientRequests(t *testing.T) {
	big := make([]byte, 3<<20+17)
	rand.Read(big)
	mux := http.NewServeMux()
	mux.HandleFunc("/small", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Add("Set-Cookie", "a=1")
		w.Header().Add("Set-Cookie", "b=2")
		w.Header().Set("Content-Length", "15")
		io.WriteString(w, "<html>ok</html>")
	})
	mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Length", fmt.Sprint(r.ContentLength))
		io.Copy(w, r.Body)
	})
	mux.HandleFunc("/request", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s %s host=%s uri=%s ua=%q te=%q conn=%q big=%d", r.Method, r.URL.Path, r.Host, r.RequestURI,
			r.Header.Get("User-Agent"), r.Header.Get("Te"), r.Header.Get("Connection"), len(r.Header.Get("X-Big")))
	})
	mux.HandleFunc("/empty", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })
	mux.HandleFunc("/trailers", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Declared")
		io.WriteString(w, "body")
		w.(http.Flusher).Flush()
		w.Header().Set("X-Declared", "d")
		w.Header().Set(http.TrailerPrefix+"X-Late", "l")
	})
	mux.HandleFunc("/hints", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</a.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Del("Link")
		io.WriteString(w, "hinted")
	})
	for _, srv := range h2Servers {
		t.Run(srv.name, func(t *testing.T) {
			budget := NewBudget(64 << 20)
			c := h2cPair(t, srv.serve, h2ClientConfig{Budget: budget, Window: 1 << 20}, mux)

			resp, body := h2cDo(t, c, newReq("GET", "/small", nil))
			if string(body) != "<html>ok</html>" || resp.ContentLength != 15 || resp.StatusCode != 200 || resp.Status != "200 OK" ||
				resp.Proto != "HTTP/2.0" || len(resp.Header["Set-Cookie"]) != 2 {
				t.Errorf("small: %s %d %q %v", resp.Status, resp.ContentLength, body, resp.Header)
			}
			resp, body = h2cDo(t, c, newReq("POST", "/echo", bytes.NewReader(big)))
			if !bytes.Equal(body, big) || resp.Header.Get("X-Length") != fmt.Sprint(len(big)) || resp.ContentLength != -1 {
				t.Errorf("echo: %d bytes back, X-Length %s", len(body), resp.Header.Get("X-Length"))
			}
			resp, body = h2cDo(t, c, newReq("POST", "/echo", io.MultiReader(bytes.NewReader(big[:100]), bytes.NewReader(big[100:200000]))))
			if !bytes.Equal(body, big[:200000]) || resp.Header.Get("X-Length") != "-1" {
				t.Errorf("echo of unknown length: %d bytes back, X-Length %s", len(body), resp.Header.Get("X-Length"))
			}
			req := newReq("GET", "/request?q=1", nil)
			req.Header.Set("User-Agent", "")
			req.Header.Set("Te", "trailers")
			req.Header.Set("Connection", "close")
			req.Header.Set("X-Big", strings.Repeat("b", 40<<10)) // a header block in HEADERS and CONTINUATIONs
			if _, body = h2cDo(t, c, req); string(body) != `GET /request host=t.example uri=/request?q=1 ua="" te="trailers" conn="" big=40960` {
				t.Errorf("request: %s", body)
			}
			resp, body = h2cDo(t, c, newReq("HEAD", "/small", nil))
			if len(body) != 0 || resp.StatusCode != 200 || resp.ContentLength != 15 {
				t.Errorf("HEAD: %d %d %q", resp.StatusCode, resp.ContentLength, body)
			}
			if resp, body = h2cDo(t, c, newReq("GET", "/empty", nil)); resp.StatusCode != http.StatusNoContent || len(body) != 0 {
				t.Errorf("empty: %d %q", resp.StatusCode, body)
			}
			resp, err := roundTripOnly(c, newReq("GET", "/trailers", nil))
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := resp.Trailer["X-Declared"]; !ok || len(resp.Trailer) != 1 || resp.Header.Get("Trailer") != "" {
				t.Errorf("trailers before the body: %v, header %v", resp.Trailer, resp.Header)
			}
			body, err = io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || string(body) != "body" || resp.Trailer.Get("X-Declared") != "d" || resp.Trailer.Get("X-Late") != "l" {
				t.Errorf("trailers: %q %v %v", body, resp.Trailer, err)
			}
			var hints []string
			ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
				Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
					hints = append(hints, fmt.Sprint(code, " ", h.Get("Link")))
					return nil
				},
			})
			req, _ = http.NewRequestWithContext(ctx, "GET", "http://t.example/hints", nil)
			if resp, body = h2cDo(t, c, req); string(body) != "hinted" || fmt.Sprint(hints) != "[103 </a.css>; rel=preload]" || resp.Header.Get("Link") != "" {
				t.Errorf("1xx: %v, body %q, header %v", hints, body, resp.Header)
			}

			var wg sync.WaitGroup
			for i := range 30 {
				wg.Go(func() {
					data := bytes.Repeat([]byte{byte(i)}, 300<<10+i)
					resp, _, err := c.roundTrip(newReq("POST", "/echo", bytes.NewReader(data)), false)
					if err != nil {
						t.Error(err)
						return
					}
					defer resp.Body.Close()
					if got, err := io.ReadAll(resp.Body); err != nil || !bytes.Equal(got, data) {
						t.Errorf("stream %d: %d bytes, %v", i, len(got), err)
					}
				})
			}
			wg.Wait()
			if r := c.reserved(); r != 0 {
				t.Errorf("the connection still reserves %d bytes after every body was read", r)
			}
			if u := budget.Used(); u != 0 {
				t.Errorf("the budget still has %d bytes used", u)
			}
		})
	}
}

func roundTripOnly(c *h2cConn, req *http.Request) (*http.Response, error) {
	resp, _, err := c.roundTrip(req, false)
	return resp, err
}

// TestH2ClientDuplex: a full-duplex stream's head comes while its request
// body is open, and bytes go both ways as they are written.
func TestH2ClientDuplex(t *testing.T) {
	echo := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
		rc := http.NewResponseController(w)
		rc.EnableFullDuplex()
		rc.Flush()
		buf := make([]byte, 1<<10)
		for {
			n, err := r.Body.Read(buf)
			if n > 0 {
				w.Write(buf[:n])
				rc.Flush()
			}
			if err != nil {
				return
			}
		}
	})
	for _, srv := range h2Servers {
		t.Run(srv.name, func(t *testing.T) {
			c := h2cPair(t, srv.serve, h2ClientConfig{}, echo)
			resp, w, err := c.roundTrip(newReq("POST", "/", nil), true)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			for _, msg := range []string{"ping", strings.Repeat("x", 100<<10)} {
				if _, err := w.Write([]byte(msg)); err != nil {
					t.Fatal(err)
				}
				got := make([]byte, len(msg))
				if _, err := io.ReadFull(resp.Body, got); err != nil || string(got) != msg {
					t.Fatalf("echo of %d bytes: %d bytes, %v", len(msg), len(got), err)
				}
			}
			w.Close()
			if b, err := io.ReadAll(resp.Body); err != nil || len(b) != 0 {
				t.Fatalf("after the request body's end: %q, %v", b, err)
			}
			if _, err := w.Write([]byte("late")); err == nil {
				t.Fatal("a write after Close passed")
			}
		})
	}
}

// TestH2ClientCancel: the request's context ending, or the response
// body's Close before its end, resets the stream: the handler's context
// ends, and the stream's share of the budget comes back.
func TestH2ClientCancel(t *testing.T) {
	for _, srv := range h2Servers {
		t.Run(srv.name, func(t *testing.T) {
			started := make(chan struct{}, 2)
			ended := make(chan struct{}, 2)
			handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(200)
				io.WriteString(w, "data: 1\n\n")
				http.NewResponseController(w).Flush()
				started <- struct{}{}
				<-r.Context().Done()
				ended <- struct{}{}
			})
			budget := NewBudget(0)
			c := h2cPair(t, srv.serve, h2ClientConfig{Budget: budget}, handler)

			resp, err := roundTripOnly(c, newReq("GET", "/", nil))
			if err != nil {
				t.Fatal(err)
			}
			<-started
			resp.Body.Close()
			waitFor(t, ended, "the handler's end after Close")

			ctx, cancel := context.WithCancel(context.Background())
			req, _ := http.NewRequestWithContext(ctx, "GET", "http://t.example/", nil)
			resp, err = roundTripOnly(c, req)
			if err != nil {
				t.Fatal(err)
			}
			<-started
			cancel()
			waitFor(t, ended, "the handler's end after the context's")
			if _, err := io.ReadAll(resp.Body); !errors.Is(err, context.Canceled) {
				t.Errorf("the body of a cancelled request: %v", err)
			}
			resp.Body.Close()
			if u := budget.Used(); u != 0 || c.reserved() != 0 {
				t.Errorf("%d bytes of the budget used (%d reserved) after both streams ended", u, c.reserved())
			}

			// A context that ends before the head: RoundTrip fails.
			ctx, cancel = context.WithCancel(context.Background())
			req, _ = http.NewRequestWithContext(ctx, "GET", "http://t.example/", nil)
			time.AfterFunc(10*time.Millisecond, cancel)
			hold := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() })
			c2 := h2cPair(t, srv.serve, h2ClientConfig{}, hold)
			if _, err := roundTripOnly(c2, req); !errors.Is(err, context.Canceled) {
				t.Errorf("a request cancelled before its head: %v", err)
			}
		})
	}
}

func waitFor(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(time.Minute):
		t.Fatalf("%s did not come", what)
	}
}

// readSignal is a request body that says when it is first read.
type readSignal struct {
	io.Reader
	once sync.Once
	read chan struct{}
}

func (r *readSignal) Read(p []byte) (int, error) {
	r.once.Do(func() { close(r.read) })
	return r.Reader.Read(p)
}

// TestH2ClientContinue: a request that expects 100-continue holds its body
// back until the agent's 100, which goes to Got1xxResponse first; after a
// final response above 299 the body is never read.
func TestH2ClientContinue(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("/read", func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		fmt.Fprint(w, n)
	})
	mux.HandleFunc("/refuse", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusExpectationFailed)
	})
	for _, srv := range h2Servers {
		t.Run(srv.name, func(t *testing.T) {
			c := h2cPair(t, srv.serve, h2ClientConfig{ContinueTimeout: time.Hour}, mux)
			var got100 atomic.Bool
			body := &readSignal{Reader: strings.NewReader("hello"), read: make(chan struct{})}
			ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
				Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
					select {
					case <-body.read:
						t.Error("the body was read before the 100 was passed on")
					default:
					}
					got100.Store(code == 100)
					return nil
				},
			})
			req, _ := http.NewRequestWithContext(ctx, "POST", "http://t.example/read", body)
			req.Header.Set("Expect", "100-continue")
			if _, b := h2cDo(t, c, req); string(b) != "5" || !got100.Load() {
				t.Errorf("after the 100: %q, 100 seen %t", b, got100.Load())
			}

			body = &readSignal{Reader: strings.NewReader("hello"), read: make(chan struct{})}
			req, _ = http.NewRequest("POST", "http://t.example/refuse", body)
			req.Header.Set("Expect", "100-continue")
			if resp, _ := h2cDo(t, c, req); resp.StatusCode != http.StatusExpectationFailed {
				t.Errorf("refused: %d", resp.StatusCode)
			}
			select {
			case <-body.read:
				t.Error("the body of a refused request was read")
			default:
			}
		})
	}
}
