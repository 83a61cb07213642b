package agent

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/edge"
	"github.com/sluicehq/sluice/internal/errpage"
	"github.com/sluicehq/sluice/internal/inspect"
	"github.com/sluicehq/sluice/internal/testtool"
)

// pipeAgent runs an agent with cfg at an in-process edge (adjusted by
// mut) until the test ends, and returns it, the edge's address and a function
// that sends a GET for path to its tunnel; the edge confirmed pipes, or
// not.
func pipeAgent(t *testing.T, mut func(*edge.Config), cfg Config, pipes bool) (*Agent, string, func(path string, hdr http.Header) (*http.Response, string)) {
	t.Helper()
	addr, a := tunnelAgent(t, "v2", mut, cfg)
	testtool.Eventually(t, "the session to serve", func() bool { return a.sess.Load() != nil })
	if got := a.sess.Load().Pipes(); got != pipes {
		t.Fatalf("pipes confirmed: %v, want %v", got, pipes)
	}
	get := func(path string, hdr http.Header) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", "http://"+addr+path, nil)
		req.Host = "unit.localhost"
		for k, vv := range hdr {
			req.Header[k] = vv
		}
		tr := &http.Transport{DisableKeepAlives: true, ResponseHeaderTimeout: time.Minute} // a ceiling
		defer tr.CloseIdleConnections()
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("GET %s: body: %v", path, err)
		}
		return resp, string(b)
	}
	return a, addr, get
}

// The pages of a pipe's failures are the agent's own (upstreamError), for
// the request as it asked (JSON, HTML or text): the local server down,
// silent past the response header timeout, or closing the connection
// without an answer.
func TestPipeErrorPages(t *testing.T) {
	t.Parallel()
	t.Run("refused", func(t *testing.T) {
		t.Parallel()
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		up := &url.URL{Scheme: "http", Host: ln.Addr().String()}
		ln.Close()
		console := &syncBuffer{} // the page gets its console line
		_, _, get := pipeAgent(t, nil, Config{Upstream: up, Console: console}, true)
		resp, b := get("/", http.Header{"Accept": {"text/html"}})
		if resp.StatusCode != http.StatusBadGateway || resp.Header.Get("X-Sluice-Error") != "upstream_refused" ||
			!strings.Contains(b, "<h1>Local server not reachable</h1>") || !strings.Contains(b, up.Host) {
			t.Errorf("%d %q %q", resp.StatusCode, resp.Header.Get("X-Sluice-Error"), b)
		}
		if l := console.String(); !strings.Contains(l, "GET     /      ") || !strings.Contains(l, " 502 ") || strings.Count(l, "\n") != 1 {
			t.Errorf("console: %q", l)
		}
	})
	t.Run("timeout", func(t *testing.T) {
		t.Parallel()
		addr, _ := rawServer(t, func(_ int, c net.Conn) {
			readRequest(bufio.NewReader(c))
			io.Copy(io.Discard, c) // no answer
		})
		_, _, get := pipeAgent(t, nil, Config{Upstream: &url.URL{Scheme: "http", Host: addr}, ResponseHeaderTimeout: 100 * time.Millisecond}, true)
		resp, b := get("/slow", http.Header{"Accept": {"application/json"}})
		var page struct {
			Error struct {
				Code    string `json:"code"`
				Status  int    `json:"status"`
				Message string `json:"message"`
			} `json:"error"`
		}
		if err := json.Unmarshal([]byte(b), &page); err != nil {
			t.Fatalf("%d %q: %v", resp.StatusCode, b, err)
		}
		if resp.StatusCode != http.StatusGatewayTimeout || page.Error.Code != "upstream_timeout" || page.Error.Status != 504 ||
			!strings.Contains(page.Error.Message, addr+" did not answer in time") {
			t.Errorf("%d %+v", resp.StatusCode, page)
		}
	})
	t.Run("informational then silence", func(t *testing.T) {
		// A 103 Early Hints does not stop the response header timeout:
		// the final head must come within it (as through the agent's
		// own client). The 103 passes; the timeout's page follows.
		t.Parallel()
		addr, _ := rawServer(t, func(_ int, c net.Conn) {
			readRequest(bufio.NewReader(c))
			io.WriteString(c, "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n")
			io.Copy(io.Discard, c) // no final answer
		})
		_, _, get := pipeAgent(t, nil, Config{Upstream: &url.URL{Scheme: "http", Host: addr}, ResponseHeaderTimeout: 100 * time.Millisecond}, true)
		resp, b := get("/hints", http.Header{"Accept": {"text/plain"}})
		if resp.StatusCode != http.StatusGatewayTimeout || resp.Header.Get("X-Sluice-Error") != "upstream_timeout" ||
			!strings.Contains(b, addr+" did not answer in time") {
			t.Errorf("%d %q %q", resp.StatusCode, resp.Header.Get("X-Sluice-Error"), b)
		}
	})
	t.Run("closed without an answer", func(t *testing.T) {
		t.Parallel()
		addr, _ := rawServer(t, func(_ int, c net.Conn) {
			readRequest(bufio.NewReader(c))
		})
		_, _, get := pipeAgent(t, nil, Config{Upstream: &url.URL{Scheme: "http", Host: addr}}, true)
		resp, b := get("/", nil)
		if resp.StatusCode != http.StatusBadGateway || resp.Header.Get("X-Sluice-Error") != "upstream_error" ||
			!strings.HasPrefix(b, "Local server error: the request to "+addr+" failed.") {
			t.Errorf("%d %q %q", resp.StatusCode, resp.Header.Get("X-Sluice-Error"), b)
		}
	})
}

// SetUpstream moves the pipes: requests go to the new upstream at once
// (the pipes to the old one are dropped), through the handler while the
// new one cannot be piped (its Host rewritten), and through pipes again
// once it can.
func TestPipeSetUpstream(t *testing.T) {
	t.Parallel()
	answer := func(name string) *httptest.Server {
		s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, name+" "+r.Host)
		}))
		t.Cleanup(s.Close)
		return s
	}
	a, b := answer("a"), answer("b")
	aURL, _ := url.Parse(a.URL)
	bURL, _ := url.Parse(b.URL)
	ag, _, get := pipeAgent(t, nil, Config{Upstream: aURL}, true)
	if _, body := get("/", nil); body != "a unit.localhost" {
		t.Fatalf("before: %q", body)
	}
	ag.SetUpstream(bURL, "rewrite")
	testtool.Eventually(t, "requests to reach b through the handler", func() bool {
		_, body := get("/", nil)
		return body == "b "+bURL.Host
	})
	ag.SetUpstream(bURL, "preserve")
	testtool.Eventually(t, "requests to reach b through pipes", func() bool {
		_, body := get("/", nil)
		return body == "b unit.localhost"
	})
	for range 3 {
		if _, body := get("/", nil); body != "b unit.localhost" {
			t.Fatalf("after: %q", body)
		}
	}
}

// An edge with pipes turned off (sluice edge --pipes=false) does not
// confirm them, and serves the agent's requests as streams of their own.
func TestPipesOffAtEdge(t *testing.T) {
	t.Parallel()
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "up") }))
	t.Cleanup(up.Close)
	u, _ := url.Parse(up.URL)
	_, _, get := pipeAgent(t, func(c *edge.Config) { c.DisablePipes = true }, Config{Upstream: u}, false)
	if _, b := get("/", nil); b != "up" {
		t.Errorf("GET: %q", b)
	}
}

// Pipes are offered for HTTP tunnels (the pipe prints the console's line
// and makes the inspector's record), not for an upstream that cannot be
// piped as it is.
func TestOffersPipes(t *testing.T) {
	t.Parallel()
	up := &url.URL{Scheme: "http", Host: "127.0.0.1:1"}
	in := inspect.New(inspect.Config{})
	t.Cleanup(in.Close)
	for _, c := range []struct {
		cfg  Config
		want bool
	}{
		{Config{}, true},
		{Config{Console: io.Discard}, true},
		{Config{Console: io.Discard, Inspector: in}, true},
		{Config{Inspector: in}, true},
		{Config{Type: "tcp", LocalAddr: "127.0.0.1:1"}, false},
	} {
		c.cfg.Edge, c.cfg.Name = "http://127.0.0.1:1", "x"
		if c.cfg.Type == "" {
			c.cfg.Upstream = up
		}
		a, err := New(c.cfg)
		if err != nil {
			t.Fatal(err)
		}
		if got := a.offersPipes(); got != c.want {
			t.Errorf("%+v: offersPipes = %v", c.cfg, got)
		}
	}
	for u, want := range map[string]bool{
		"http://127.0.0.1:3000": true, "http://127.0.0.1:3000/": true, "http://localhost": true,
		"http://127.0.0.1:3000/api": false, "http://127.0.0.1:3000/?x=1": false,
		"https://127.0.0.1:3000": false, "h2c://127.0.0.1:3000": false,
	} {
		pu, _ := url.Parse(u)
		if got := (&upstreamTarget{url: pu}).pipeable(); got != want {
			t.Errorf("%s: pipeable = %v", u, got)
		}
	}
	pu, _ := url.Parse("http://127.0.0.1:3000")
	for h, want := range map[string]bool{"": true, "preserve": true, "rewrite": false, "example.com": false} {
		if got := (&upstreamTarget{url: pu, hostHeader: h}).pipeable(); got != want {
			t.Errorf("host header %q: pipeable = %v", h, got)
		}
	}
}

// With the console's line, requests still take pipes, and each gets its
// line as the handler prints it: method, target, status, body bytes (a
// chunked body's data), a HEAD's, and an error page's.
func TestPipeConsoleLines(t *testing.T) {
	t.Parallel()
	addr, _ := rawServer(t, func(_ int, c net.Conn) {
		eachRequest(c, func(req *http.Request, _ *bufio.Reader) bool {
			switch req.URL.Path {
			case "/chunked":
				io.WriteString(c, "HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n"+
					"5\r\nhello\r\n7;x=y\r\n, world\r\n0\r\nX-T: 1\r\n\r\n")
			case "/early":
				io.WriteString(c, "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"+
					"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc")
			default:
				body := strings.Repeat("x", 1500)
				io.WriteString(c, "HTTP/1.1 404 Not Found\r\nContent-Length: 1500\r\n\r\n")
				if req.Method != http.MethodHead {
					io.WriteString(c, body)
				}
			}
			return true
		})
	})
	console := &syncBuffer{}
	_, _, get := pipeAgent(t, nil, Config{Upstream: &url.URL{Scheme: "http", Host: addr}, Console: console}, true)
	for i, path := range []string{"/chunked", "/early", "/missing?q=1"} {
		if resp, _ := get(path, nil); resp.StatusCode >= 500 {
			t.Fatalf("%s: %d", path, resp.StatusCode)
		}
		// The line is out before the response's last bytes leave the
		// agent: by its framing, not when the pipe closes.
		if n := strings.Count(console.String(), "\n"); n != i+1 {
			t.Fatalf("after %s: %d console lines:\n%s", path, n, console.String())
		}
	}
	want := []string{
		"GET     /chunked                                 201",
		"GET     /early                                   200",
		"GET     /missing?q=1                             404",
	}
	sizes := []string{"  12 B", "  3 B", "  1.5 KB"}
	lines := strings.Split(strings.TrimSuffix(console.String(), "\n"), "\n")
	if len(lines) != 3 {
		t.Fatalf("console:\n%s", console.String())
	}
	for i, l := range lines {
		if !strings.Contains(l, want[i]) || !strings.HasSuffix(l, sizes[i]) {
			t.Errorf("line %d: %q, want %q ... %q", i, l, want[i], sizes[i])
		}
	}
}

// With the inspector, requests still take pipes, and each is recorded as
// the handler records it: the same requests sent through pipes and
// through streams (the edge's pipes off) give the same records: request
// head, status, headers without the hop-by-hop fields, the body
// de-chunked, trailers, an SSE response's events while it is open, a
// body that ends with the connection, an error page, a response cut by
// the client leaving.
func TestPipeInspectorRecords(t *testing.T) {
	t.Parallel()
	next := map[bool]chan struct{}{true: make(chan struct{}), false: make(chan struct{})}
	stop := make(chan struct{})
	serve := func(piped bool) func(int, net.Conn) {
		return func(_ int, c net.Conn) {
			eachRequest(c, func(req *http.Request, br *bufio.Reader) bool {
				switch req.URL.Path {
				case "/chunked":
					io.WriteString(c, "HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\nX-Up: 1\r\n\r\n"+
						"5\r\nhello\r\n7;x=y\r\n, world\r\n0\r\nX-T: 1\r\n\r\n")
				case "/json":
					body := `{"a":[1,2,3]}`
					fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\nKeep-Alive: timeout=5\r\n\r\n%s", len(body), body)
				case "/events":
					io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"+
						"1a\r\nevent: a\nid: 1\ndata: one\n\n\r\n")
					select { // the first event is recorded while the stream is open
					case <-next[piped]:
					case <-stop:
						return false
					}
					io.WriteString(c, "b\r\ndata: two\n\n\r\n0\r\n\r\n")
				case "/hold":
					io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nstart\r\n")
					io.Copy(io.Discard, br) // until the agent closes the connection
					return false
				case "/silent":
					io.Copy(io.Discard, br) // no answer, until the agent closes the connection
					return false
				case "/close":
					io.WriteString(c, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nbye, all")
					return false
				}
				return true
			})
		}
	}
	records := map[bool]map[string]inspect.Request{}
	for _, piped := range []bool{true, false} {
		addr, _ := rawServer(t, serve(piped))
		t.Cleanup(func() {
			select {
			case <-stop:
			default:
				close(stop) // before rawServer's cleanup waits for its handlers
			}
		})
		in := inspect.New(inspect.Config{})
		t.Cleanup(in.Close)
		var mut func(*edge.Config)
		if !piped {
			mut = func(c *edge.Config) { c.DisablePipes = true }
		}
		_, tunnel, get := pipeAgent(t, mut, Config{Upstream: &url.URL{Scheme: "http", Host: addr}, Inspector: in, Console: io.Discard}, piped)
		hdr := http.Header{"X-Test": {"yes"}, "Accept": {"application/json"}}
		for _, path := range []string{"/chunked", "/json?x=1", "/close"} {
			get(path, hdr)
		}
		// An SSE response: its first event is in the record while the
		// stream is open.
		done := make(chan string)
		go func() {
			_, b := get("/events", hdr)
			done <- b
		}()
		testtool.Eventually(t, "the first event recorded", func() bool {
			for _, r := range in.List() {
				if r.Path == "/events" {
					r, _ = in.Get(r.ID)
					return len(r.Items) == 1 && r.Items[0].Text == "one" && r.State == inspect.StateStreaming
				}
			}
			return false
		})
		close(next[piped])
		if b := <-done; b != "event: a\nid: 1\ndata: one\n\ndata: two\n\n" {
			t.Errorf("piped %v: /events: %q", piped, b)
		}
		// A response cut by the client leaving.
		holdReq, _ := http.NewRequest("GET", "http://"+tunnel+"/hold", nil)
		holdReq.Host = "unit.localhost"
		tr := &http.Transport{DisableKeepAlives: true}
		resp, err := tr.RoundTrip(holdReq)
		if err != nil {
			t.Fatalf("GET /hold: %v", err)
		}
		buf := make([]byte, 5)
		if _, err := io.ReadFull(resp.Body, buf); err != nil || string(buf) != "start" {
			t.Fatalf("/hold: %q %v", buf, err)
		}
		resp.Body.Close()
		tr.CloseIdleConnections()
		// A client that leaves before any answer.
		ctx, cancel := context.WithCancel(context.Background())
		silentReq, _ := http.NewRequestWithContext(ctx, "GET", "http://"+tunnel+"/silent", nil)
		silentReq.Host = "unit.localhost"
		left := make(chan error, 1)
		go func() {
			_, err := tr.RoundTrip(silentReq)
			left <- err
		}()
		testtool.Eventually(t, "the silent request recorded", func() bool {
			for _, r := range in.List() {
				if r.Path == "/silent" {
					return true
				}
			}
			return false
		})
		cancel()
		if err := <-left; err == nil {
			t.Errorf("piped %v: /silent answered", piped)
		}
		tr.CloseIdleConnections()

		recs := map[string]inspect.Request{}
		testtool.Eventually(t, "every record ended", func() bool {
			clear(recs)
			for _, r := range in.List() {
				if r.State == inspect.StateStreaming || r.State == inspect.StateWaiting {
					return false
				}
				r, _ = in.Get(r.ID)
				recs[r.Path] = r
			}
			return len(recs) == 6
		})
		// The local server down: the agent's error page is the response.
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		down := &url.URL{Scheme: "http", Host: ln.Addr().String()}
		ln.Close()
		inDown := inspect.New(inspect.Config{})
		t.Cleanup(inDown.Close)
		_, _, getDown := pipeAgent(t, mut, Config{Upstream: down, Inspector: inDown}, piped)
		if resp, _ := getDown("/down", hdr); resp.StatusCode != http.StatusBadGateway {
			t.Errorf("piped %v: /down: %s", piped, resp.Status)
		}
		testtool.Eventually(t, "the error page's record", func() bool {
			l := inDown.List()
			if len(l) != 1 || l[0].State != inspect.StateDone {
				return false
			}
			recs["/down"], _ = inDown.Get(l[0].ID)
			return true
		})
		records[piped] = recs
	}
	for path, p := range records[true] {
		s := records[false][path]
		for _, r := range []*inspect.Request{&p, &s} {
			// What differs by nature: the times, the ID, the protocol
			// the agent got the request in, the date.
			r.ID, r.Time, r.HeadersMS, r.DurationMS, r.Proto = "", time.Time{}, 0, 0, ""
			for i := range r.Items {
				r.Items[i].TimeMS = 0
			}
			delete(r.ResponseHeaders, "Date")
			delete(r.ResponseHeaders, errpage.IDHeader) // the error page's
		}
		if !reflect.DeepEqual(p, s) {
			t.Errorf("%s: the records differ:\n piped: %+v\nstream: %+v", path, p, s)
		}
	}
	want := map[string]func(r inspect.Request) bool{
		"/chunked": func(r inspect.Request) bool {
			return r.Status == 201 && r.ResponseBodySize == 12 && r.ResponseTrailers.Get("X-T") == "1" &&
				r.ResponseHeaders.Get("X-Up") == "1" && r.ResponseHeaders.Get("Transfer-Encoding") == "" && r.State == inspect.StateDone
		},
		"/json?x=1": func(r inspect.Request) bool {
			return r.Status == 200 && r.ResponseBodySize == 13 && r.ResponseHeaders.Get("Keep-Alive") == "" &&
				r.RequestHeaders.Get("X-Test") == "yes" && r.Method == "GET"
		},
		"/close": func(r inspect.Request) bool {
			return r.Status == 200 && r.ResponseBodySize == 8 && r.State == inspect.StateDone
		},
		"/silent": func(r inspect.Request) bool { return r.Status == 499 && r.State == inspect.StateDone },
		"/down": func(r inspect.Request) bool {
			return r.Status == 502 && r.ResponseHeaders.Get("Content-Type") == "application/json" && r.ResponseBodySize > 0
		},
		"/events": func(r inspect.Request) bool {
			return r.Stream == inspect.StreamSSE && len(r.Items) == 2 && r.Items[1].Text == "two"
		},
		"/hold": func(r inspect.Request) bool {
			return r.State == inspect.StateFailed && r.Error == inspect.ErrAborted.Error() && r.ResponseBodySize == 5
		},
	}
	for path, ok := range want {
		if r, found := records[true][path]; !found || !ok(r) {
			t.Errorf("piped %s: %+v", path, r)
		}
	}
}
