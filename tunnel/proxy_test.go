package tunnel

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"runtime"
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/sluicehq/sluice/internal/testtool"
)

// newTestProxy fronts upstream with a Proxy whose large buffers are
// reserved from budget.
func newTestProxy(t *testing.T, upstream *httptest.Server, budget *Budget) *httptest.Server {
	t.Helper()
	u, err := url.Parse(upstream.URL)
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{DisableCompression: true}
	t.Cleanup(tr.CloseIdleConnections)
	p := NewProxy(Proxy{
		Rewrite:   func(pr *httputil.ProxyRequest) { pr.SetURL(u) },
		Transport: tr,
		Buffers:   &BufferPool{Budget: budget},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			http.Error(w, err.Error(), http.StatusBadGateway)
		},
	}, nil)
	front := httptest.NewServer(p)
	t.Cleanup(front.Close)
	return front
}

// TestProxyBuffersOnlyWhileMoving: a held event stream gets its headers at
// once, its events one by one, and holds no large copy buffer while it
// waits; a large body takes one while it moves and gives it back.
func TestProxyBuffersOnlyWhileMoving(t *testing.T) {
	t.Parallel()
	send := make(chan string)
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<18) // 4 MiB
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/big" {
			w.Write(big)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		for {
			select {
			case ev := <-send:
				io.WriteString(w, ev)
				w.(http.Flusher).Flush()
			case <-r.Context().Done():
				return
			}
		}
	}))
	defer upstream.Close()
	budget := NewBudget(1 << 30)
	front := newTestProxy(t, upstream, budget)

	resp, err := http.Get(front.URL + "/events")
	if err != nil {
		t.Fatal(err) // the headers came with no event sent yet
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("Content-Type %q", ct)
	}
	br := bufio.NewReader(resp.Body)
	for i := range 3 {
		ev := "data: " + strings.Repeat("x", 100*(i+1)) + "\n\n"
		send <- ev
		got := make([]byte, len(ev))
		if _, err := io.ReadFull(br, got); err != nil || string(got) != ev {
			t.Fatalf("event %d: %q, %v", i, got, err)
		}
		if used := budget.Used(); used != 0 {
			t.Fatalf("a held stream with small events reserves %d bytes of large buffers", used)
		}
	}

	resp2, err := http.Get(front.URL + "/big")
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(resp2.Body)
	resp2.Body.Close()
	if err != nil || !bytes.Equal(got, big) {
		t.Fatalf("big body: %d bytes, %v", len(got), err)
	}
	if peak := budget.Peak(); peak < copyBufferSize {
		t.Fatalf("a 4 MiB body never took a large buffer (peak %d)", peak)
	}
	if used := budget.Used(); used != 0 {
		t.Fatalf("%d bytes of large buffers still reserved after the body", used)
	}
}

// TestProxyPassesThrough: the query as sent (httputil would drop the
// parameter with a semicolon), the request body but not its trailers
// (docs/protocol.md), and both kinds of response trailers.
func TestProxyPassesThrough(t *testing.T) {
	t.Parallel()
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Trailer", "X-Declared")
		w.Header().Set("X-Query", r.URL.RawQuery)
		w.Header().Set("X-Req-Trailer", r.Trailer.Get("X-Sum"))
		w.Header().Set("X-Body", string(body))
		w.WriteHeader(http.StatusOK)
		io.WriteString(w, "body")
		w.Header().Set("X-Declared", "d")
		w.Header().Set(http.TrailerPrefix+"X-Late", "l")
	}))
	defer upstream.Close()
	front := newTestProxy(t, upstream, nil)

	req, _ := http.NewRequest(http.MethodPost, front.URL+"/p?a=1;b=2&c=%zz", io.NopCloser(strings.NewReader("hello")))
	req.ContentLength = -1
	req.Trailer = http.Header{"X-Sum": {"42"}}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for name, want := range map[string]string{"X-Query": "a=1;b=2&c=%zz", "X-Req-Trailer": "", "X-Body": "hello"} {
		if v := resp.Header.Get(name); v != want {
			t.Errorf("%s: %q, want %q", name, v, want)
		}
	}
	if string(got) != "body" || resp.Trailer.Get("X-Declared") != "d" || resp.Trailer.Get("X-Late") != "l" {
		t.Errorf("body %q, trailers %v", got, resp.Trailer)
	}
}

// TestProxyAbortsMidStream: a body that fails midway aborts the client's
// connection rather than ending it as if complete.
func TestProxyAbortsMidStream(t *testing.T) {
	t.Parallel()
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "100")
		w.WriteHeader(http.StatusOK)
		io.WriteString(w, "only part")
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler)
	}))
	defer upstream.Close()
	front := newTestProxy(t, upstream, nil)
	resp, err := http.Get(front.URL)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err == nil {
		t.Fatalf("a body cut at %d of 100 bytes ended without an error", len(got))
	}
}

// TestProxyWaitsWithoutBuffer: behind the Proxy, a held event stream of
// protocol v2 waits for its next event in the body's writeNext (through
// the session's wrapper), holding no copy buffer; a v1 body keeps the
// proxy's read loop. (Not parallel: it looks at every goroutine.)
func TestProxyWaitsWithoutBuffer(t *testing.T) {
	for name, features := range map[string][]string{"v2": v2Features, "v1": allFeatures} {
		t.Run(name, func(t *testing.T) {
			send := make(chan string)
			upstream := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "text/event-stream")
				w.WriteHeader(http.StatusOK)
				http.NewResponseController(w).Flush()
				for {
					select {
					case ev := <-send:
						io.WriteString(w, ev)
						http.NewResponseController(w).Flush()
					case <-r.Context().Done():
						return
					}
				}
			})
			url := tunnelFront(t, features, upstream)
			resp, err := http.Get(url)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			for i := range 2 {
				if i == 1 {
					// The stream waits for its next event.
					wantWait(t, name == "v2")
				}
				ev := "data: " + strings.Repeat("x", 5000) + "\n\n" // more than the small copy buffer
				send <- ev
				got := make([]byte, len(ev))
				if _, err := io.ReadFull(resp.Body, got); err != nil || string(got) != ev {
					t.Fatalf("event %d: %.20q, %v", i, got, err)
				}
			}
		})
	}
}

// wantWait waits until the Proxy's copy waits for the body's next bytes,
// and checks where: in writeNext (chunks), or in a Read.
func wantWait(t *testing.T, chunks bool) {
	t.Helper()
	var copying string // the copy's goroutine, once it waits
	testtool.Eventually(t, "the copy waiting for the body", func() bool {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		for g := range strings.SplitSeq(string(buf), "\n\n") {
			head, _, _ := strings.Cut(g, "\n")
			waiting := strings.Contains(head, "[sync.Cond.Wait") || strings.Contains(head, "[chan receive")
			if waiting && strings.Contains(g, "tunnel.(*Proxy).copyBody") {
				copying = g
				return true
			}
		}
		return false
	})
	if inWriteNext := strings.Contains(copying, "tunnel.(*h2cBody).writeNext"); inWriteNext != chunks {
		t.Fatalf("the copy waits in writeNext: %v, want %v:\n%s", inWriteNext, chunks, copying)
	}
	if strings.Contains(copying, ").Read(") == chunks {
		t.Fatalf("the copy waits in a Read: %v, want %v:\n%s", !chunks, !chunks, copying)
	}
}

// readsOf is a body that returns its reads as given, the last one with
// io.EOF (alone if it is empty).
type readsOf []string

func (r *readsOf) Read(p []byte) (int, error) {
	if len(*r) == 0 {
		return 0, io.EOF
	}
	n := copy(p, (*r)[0])
	*r = (*r)[1:]
	if len(*r) == 0 {
		return n, io.EOF
	}
	return n, nil
}

// flushCounter is a ResponseWriter that counts its flushes.
type flushCounter struct {
	header  http.Header
	body    bytes.Buffer
	flushes int
	at      []int // the body's length at each flush
}

func (f *flushCounter) Header() http.Header         { return f.header }
func (f *flushCounter) WriteHeader(int)             {}
func (f *flushCounter) Write(p []byte) (int, error) { return f.body.Write(p) }
func (f *flushCounter) Flush()                      { f.flushes++; f.at = append(f.at, f.body.Len()) }

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// TestProxyLastBytesGoWithTheEnd: the bytes of a body's last read (those
// that came with io.EOF) are not flushed by the copy: the end of the
// response, as the handler returns, takes them in the same write (and, at
// the agent, the same HTTP/2 frame as END_STREAM). Every other read is
// flushed as it comes.
func TestProxyLastBytesGoWithTheEnd(t *testing.T) {
	for _, tc := range []struct {
		reads []string
		at    []int // the flushes, by the body's length then
	}{
		{[]string{"all"}, nil},
		{[]string{"a", "bc"}, []int{1}},
		{[]string{"a", "bc", ""}, []int{1, 3}},
		{[]string{"a", "b", "c", "d"}, []int{1, 2, 3}},
	} {
		reads := readsOf(tc.reads)
		p := NewProxy(Proxy{
			Rewrite: func(pr *httputil.ProxyRequest) {},
			Transport: roundTripFunc(func(*http.Request) (*http.Response, error) {
				return &http.Response{StatusCode: http.StatusOK, Header: http.Header{}, Body: io.NopCloser(&reads)}, nil
			}),
			Buffers:      &BufferPool{},
			ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) { t.Fatal(err) },
		}, nil)
		w := &flushCounter{header: http.Header{}}
		p.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/", nil))
		// (A flush before any byte is the headers' own, after
		// headerFlushDelay: a busy machine may be that slow.)
		at := slices.DeleteFunc(w.at, func(n int) bool { return n == 0 })
		if want := strings.Join(tc.reads, ""); w.body.String() != want || !slices.Equal(at, tc.at) {
			t.Errorf("reads %q: wrote %q, flushed at %v; want %q, flushed at %v", tc.reads, w.body.String(), w.at, want, tc.at)
		}
	}
}

// gatedBody is a body whose one read waits for gate, then returns data
// and io.EOF; it says it is ready as told (a ReadyBody that lies, so that
// the timer it spares can be seen to be missing).
type gatedBody struct {
	ready bool
	gate  chan struct{}
	data  string
}

func (b *gatedBody) Ready() bool  { return b.ready }
func (b *gatedBody) Close() error { return nil }

func (b *gatedBody) Read(p []byte) (int, error) {
	<-b.gate
	return copy(p, b.data), io.EOF
}

// TestProxyHeadersFlushTimer: a response's headers are flushed alone
// when its body has no bytes by headerFlushDelay; a ReadyBody that says
// its bytes are there sets no timer.
func TestProxyHeadersFlushTimer(t *testing.T) {
	for _, ready := range []bool{false, true} {
		synctest.Test(t, func(t *testing.T) {
			body := &gatedBody{ready: ready, gate: make(chan struct{}), data: "x"}
			p := NewProxy(Proxy{
				Rewrite: func(pr *httputil.ProxyRequest) {},
				Transport: roundTripFunc(func(*http.Request) (*http.Response, error) {
					return &http.Response{StatusCode: http.StatusOK, Header: http.Header{}, Body: body}, nil
				}),
				Buffers:      &BufferPool{},
				ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) { t.Error(err) },
			}, nil)
			w := &flushCounter{header: http.Header{}}
			done := make(chan struct{})
			go func() {
				defer close(done)
				p.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/", nil))
			}()
			time.Sleep(10 * headerFlushDelay)
			synctest.Wait()
			alone := slices.Equal(w.at, []int{0})
			close(body.gate)
			<-done
			if alone == ready || w.body.String() != "x" {
				t.Errorf("Ready %v: flushes at %v before the body, wrote %q; want the headers flushed alone: %v", ready, w.at, w.body.String(), !ready)
			}
		})
	}
}
