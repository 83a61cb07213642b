// Package muxcompare measures stream multiplexers for protocol v2, where the
// multiplexer's bytes cross a WebSocket's binary messages (tunnel.WSConn):
// hashicorp/yamux, xtaci/smux (protocol 2) and HTTP/2 framing
// (golang.org/x/net/http2), against a direct connection. It is its own
// module so that none of them becomes a dependency of sluice.
//
// Every variant has the same shape:
//
//	client --HTTP/1.1--> public httptest.Server (httputil.ReverseProxy, "edge")
//	       --mux stream over WSConn (WebSocket server side)-->
//	       agent (WebSocket client side) --http.Handler in process
//
// The edge opens the streams; the agent accepts them and serves HTTP on them.
// "direct" is the client talking to an httptest.Server running the handler.
//
// Run it with
//
//	go test -run xxx -bench . -benchtime 1s
//
// See README.md for the figures.
package muxcompare

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/hashicorp/yamux"
	"github.com/sluicehq/sluice/tunnel"
	"github.com/xtaci/smux"
	"golang.org/x/net/http2"
)

const (
	bulkSize    = 64 << 20 // bytes per download or upload op
	chunkSize   = 64 << 10 // the handler's write size
	smallSize   = 100      // /small's body
	smallConc   = 50       // concurrent goroutines for /small
	heldStreams = 1000     // /sse requests held open per memory op
	wsBufSize   = 64 << 10 // gorilla Upgrader and Dialer buffer sizes
)

var pattern = func() []byte {
	b := make([]byte, chunkSize)
	for i := range b {
		b[i] = byte('a' + i%26)
	}
	return b
}()

// upstream is the handler the agent serves (and "direct" serves).
func upstream() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /download", func(w http.ResponseWriter, r *http.Request) {
		n, err := strconv.ParseInt(r.URL.Query().Get("n"), 10, 64)
		if err != nil || n < 0 {
			http.Error(w, "bad n", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
		for n > 0 {
			m := min(n, int64(len(pattern)))
			if _, err := w.Write(pattern[:m]); err != nil {
				return
			}
			n -= m
		}
	})
	mux.HandleFunc("POST /upload", func(w http.ResponseWriter, r *http.Request) {
		n, err := io.Copy(io.Discard, r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		io.WriteString(w, strconv.FormatInt(n, 10))
	})
	small := []byte(strings.Repeat("x", smallSize))
	mux.HandleFunc("GET /small", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(len(small)))
		w.Write(small)
	})
	mux.HandleFunc("GET /sse", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "no-cache")
		w.WriteHeader(http.StatusOK)
		http.NewResponseController(w).Flush()
		<-r.Context().Done()
	})
	return mux
}

// ---------------------------------------------------------------------------
// Variants

// A variant builds the edge's RoundTripper for handler h (the agent side
// serving it), or returns a nil RoundTripper for "direct".
type variant struct {
	name  string
	setup func(tb testing.TB, h http.Handler) (rt http.RoundTripper, closeFn func())
}

var variants = []variant{
	{"direct", nil},
	{"yamux", yamuxSetup(yamuxOpts{})},
	{"yamux-coalesce", yamuxSetup(yamuxOpts{coalesce: true})},
	{"yamux-1M", yamuxSetup(yamuxOpts{window: 1 << 20})},
	{"yamux-1M-coalesce", yamuxSetup(yamuxOpts{window: 1 << 20, coalesce: true})},
	{"smux", smuxSetup(nil)},
	{"smux-1M", smuxSetup(func(c *smux.Config) { c.MaxStreamBuffer = 1 << 20; c.MaxReceiveBuffer = 16 << 20 })},
	{"smux-1M-64K", smuxSetup(func(c *smux.Config) {
		c.MaxStreamBuffer = 1 << 20
		c.MaxReceiveBuffer = 16 << 20
		c.MaxFrameSize = 65535
	})},
	{"h2", h2Setup(nil, nil)},
	{"h2-tuned", h2Setup(
		func(s *http2.Server) {
			s.MaxUploadBufferPerStream = 4 << 20
			s.MaxUploadBufferPerConnection = 16 << 20
			s.MaxReadFrameSize = 1 << 20
		},
		func(t *http2.Transport) { t.MaxReadFrameSize = 1 << 20 },
	)},
}

// wsPair connects a WebSocket over 127.0.0.1: edge is the server side,
// agent the client side, both wrapped in tunnel.WSConn.
func wsPair(tb testing.TB) (edge, agent *tunnel.WSConn, closeFn func()) {
	tb.Helper()
	ch := make(chan *websocket.Conn, 1)
	up := websocket.Upgrader{ReadBufferSize: wsBufSize, WriteBufferSize: wsBufSize}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		ch <- ws
	}))
	d := websocket.Dialer{ReadBufferSize: wsBufSize, WriteBufferSize: wsBufSize}
	aws, _, err := d.Dial("ws"+strings.TrimPrefix(srv.URL, "http")+"/", nil)
	if err != nil {
		srv.Close()
		tb.Fatal(err)
	}
	ews := <-ch
	edge = tunnel.NewWSConn(ews, time.Minute)
	agent = tunnel.NewWSConn(aws, time.Minute)
	return edge, agent, func() {
		edge.Close()
		agent.Close()
		srv.Close()
	}
}

// streamTransport is the edge's http.Transport whose connections are the
// multiplexer's streams. (64 KiB Read/WriteBufferSize made no difference:
// net/http copies a request body in 32 KiB pieces either way.)
func streamTransport(open func() (net.Conn, error)) *http.Transport {
	return &http.Transport{
		DialContext:         func(context.Context, string, string) (net.Conn, error) { return open() },
		MaxIdleConns:        1000,
		MaxIdleConnsPerHost: 1000,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
}

// yamuxCoalesce is an alternative adapter for yamux: yamux's send loop
// writes a data frame's 12-byte header and its body as two Writes, which
// WSConn turns into two WebSocket messages. This holds a data header (type
// 0, length > 0) and sends it with the next Write as one message through
// WSConn.WriteBuffers. Only yamux's send loop writes, so no lock is needed.
type yamuxCoalesce struct {
	wsConn
	hdr  [12]byte
	held bool
}

// wsConn is what the variants need of *tunnel.WSConn.
type wsConn interface {
	net.Conn
	WriteBuffers(v [][]byte) (int, error)
}

func (c *yamuxCoalesce) Write(p []byte) (int, error) {
	if c.held {
		c.held = false
		n, err := c.wsConn.WriteBuffers([][]byte{c.hdr[:], p})
		return max(n-len(c.hdr), 0), err
	}
	if len(p) == 12 && p[1] == 0 && binary.BigEndian.Uint32(p[8:]) > 0 {
		copy(c.hdr[:], p)
		c.held = true
		return len(p), nil
	}
	return c.wsConn.Write(p)
}

type yamuxOpts struct {
	window   uint32 // MaxStreamWindowSize; 0: the default (256 KiB)
	coalesce bool   // the yamuxCoalesce adapter
}

func yamuxSetup(o yamuxOpts) func(testing.TB, http.Handler) (http.RoundTripper, func()) {
	return func(tb testing.TB, h http.Handler) (http.RoundTripper, func()) {
		edgeWS, agentWS, closeWS := wsPair(tb)
		cfg := yamux.DefaultConfig()
		cfg.LogOutput = io.Discard
		if o.window > 0 {
			cfg.MaxStreamWindowSize = o.window
		}
		var ec, ac io.ReadWriteCloser = edgeWS, agentWS
		if o.coalesce {
			ec, ac = &yamuxCoalesce{wsConn: edgeWS}, &yamuxCoalesce{wsConn: agentWS}
		}
		es, err := yamux.Client(ec, cfg)
		if err != nil {
			tb.Fatal(err)
		}
		as, err := yamux.Server(ac, cfg)
		if err != nil {
			tb.Fatal(err)
		}
		agent := &http.Server{Handler: h, ErrorLog: quietLog}
		go agent.Serve(as) // the session is a net.Listener
		tr := streamTransport(es.Open)
		return tr, func() {
			tr.CloseIdleConnections()
			es.Close()
			agent.Close()
			as.Close()
			closeWS()
		}
	}
}

// smuxListener serves an smux session's accepted streams with http.Serve.
type smuxListener struct{ s *smux.Session }

func (l smuxListener) Accept() (net.Conn, error) { return l.s.AcceptStream() }
func (l smuxListener) Close() error              { return l.s.Close() }
func (l smuxListener) Addr() net.Addr            { return l.s.LocalAddr() }

func smuxSetup(tune func(*smux.Config)) func(testing.TB, http.Handler) (http.RoundTripper, func()) {
	return func(tb testing.TB, h http.Handler) (http.RoundTripper, func()) {
		edgeWS, agentWS, closeWS := wsPair(tb)
		cfg := smux.DefaultConfig()
		cfg.Version = 2
		if tune != nil {
			tune(cfg)
		}
		es, err := smux.Client(edgeWS, cfg)
		if err != nil {
			tb.Fatal(err)
		}
		as, err := smux.Server(agentWS, cfg)
		if err != nil {
			tb.Fatal(err)
		}
		agent := &http.Server{Handler: h, ErrorLog: quietLog}
		go agent.Serve(smuxListener{as})
		tr := streamTransport(func() (net.Conn, error) { return es.OpenStream() })
		return tr, func() {
			tr.CloseIdleConnections()
			es.Close()
			agent.Close()
			as.Close()
			closeWS()
		}
	}
}

// h2MaxStreams replaces the http2.Server's default of 250 concurrent
// streams in every HTTP/2 variant: with it, a single ClientConn (no pool)
// fails the 251st concurrent request at once with "http2: client conn not
// usable" (a 502 from the proxy); see TestH2DefaultStreamLimit.
const h2MaxStreams = 4000

func h2Setup(tuneS func(*http2.Server), tuneT func(*http2.Transport)) func(testing.TB, http.Handler) (http.RoundTripper, func()) {
	return func(tb testing.TB, h http.Handler) (http.RoundTripper, func()) {
		edgeWS, agentWS, closeWS := wsPair(tb)
		srv := &http2.Server{MaxConcurrentStreams: h2MaxStreams}
		if tuneS != nil {
			tuneS(srv)
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			srv.ServeConn(agentWS, &http2.ServeConnOpts{Handler: h, BaseConfig: &http.Server{ErrorLog: quietLog}})
		}()
		tr := &http2.Transport{AllowHTTP: true}
		if tuneT != nil {
			tuneT(tr)
		}
		cc, err := tr.NewClientConn(edgeWS)
		if err != nil {
			tb.Fatal(err)
		}
		return cc, func() {
			cc.Close()
			closeWS()
			<-done
		}
	}
}

var quietLog = log.New(io.Discard, "", 0)

// ---------------------------------------------------------------------------
// Environment: the public server and the client.

type env struct {
	url    string
	client *http.Client
	tr     *http.Transport
	close  func()
}

func newEnv(tb testing.TB, v variant) *env {
	tb.Helper()
	h := upstream()
	var public *httptest.Server
	closeVariant := func() {}
	if v.setup == nil {
		public = httptest.NewServer(h)
	} else {
		var rt http.RoundTripper
		rt, closeVariant = v.setup(tb, h)
		rp := &httputil.ReverseProxy{
			Rewrite: func(pr *httputil.ProxyRequest) {
				pr.Out.URL.Scheme = "http"
				pr.Out.URL.Host = "agent"
				pr.Out.Host = "agent"
			},
			Transport:     rt,
			FlushInterval: -1,
			ErrorLog:      quietLog,
		}
		public = httptest.NewServer(rp)
	}
	public.Config.ErrorLog = quietLog
	tr := &http.Transport{
		MaxIdleConns:        2000,
		MaxIdleConnsPerHost: 2000,
		DisableCompression:  true,
	}
	e := &env{url: public.URL, client: &http.Client{Transport: tr}, tr: tr}
	e.close = func() {
		tr.CloseIdleConnections()
		closed := make(chan struct{})
		go func() { public.Close(); close(closed) }()
		select {
		case <-closed:
		case <-time.After(10 * time.Second):
			tb.Errorf("%s: public server's Close still blocked after 10s", v.name)
		}
		closeVariant()
	}
	return e
}

func (e *env) download(n int64) error {
	resp, err := e.client.Get(e.url + "/download?n=" + strconv.FormatInt(n, 10))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	got, err := io.Copy(io.Discard, resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != 200 || got != n {
		return fmt.Errorf("download: status %d, %d bytes, want %d", resp.StatusCode, got, n)
	}
	return nil
}

type patternReader struct{ left int64 }

func (r *patternReader) Read(p []byte) (int, error) {
	if r.left == 0 {
		return 0, io.EOF
	}
	n := copy(p[:min(int64(len(p)), r.left)], pattern)
	r.left -= int64(n)
	return n, nil
}

func (e *env) upload(n int64) error {
	req, err := http.NewRequest("POST", e.url+"/upload", &patternReader{left: n})
	if err != nil {
		return err
	}
	req.ContentLength = n
	resp, err := e.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != 200 || string(body) != strconv.FormatInt(n, 10) {
		return fmt.Errorf("upload: status %d, body %q, want %d", resp.StatusCode, body, n)
	}
	return nil
}

func (e *env) small() error {
	resp, err := e.client.Get(e.url + "/small")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	n, err := io.Copy(io.Discard, resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != 200 || n != smallSize {
		return fmt.Errorf("small: status %d, %d bytes", resp.StatusCode, n)
	}
	return nil
}

// hold opens n /sse requests (50 at a time) and returns once all have their
// headers; release cancels them and closes the bodies.
func (e *env) hold(n int) (release func(), err error) {
	ctx, cancel := context.WithCancel(context.Background())
	resps := make([]*http.Response, n)
	errs := make(chan error, n)
	var wg sync.WaitGroup
	next := make(chan int)
	for range smallConc {
		wg.Go(func() {
			for i := range next {
				req, _ := http.NewRequestWithContext(ctx, "GET", e.url+"/sse", nil)
				resp, err := e.client.Do(req)
				if err != nil {
					errs <- err
					continue
				}
				if resp.StatusCode != 200 {
					errs <- fmt.Errorf("sse: status %d", resp.StatusCode)
				}
				resps[i] = resp
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	release = func() {
		cancel()
		for _, r := range resps {
			if r != nil {
				r.Body.Close()
			}
		}
	}
	select {
	case err = <-errs:
	default:
	}
	return release, err
}

// ---------------------------------------------------------------------------
// Benchmarks

func BenchmarkDownload(b *testing.B) {
	for _, v := range variants {
		b.Run(v.name, func(b *testing.B) {
			e := newEnv(b, v)
			defer e.close()
			if err := e.download(1 << 20); err != nil { // warm up
				b.Fatal(err)
			}
			b.SetBytes(bulkSize)
			b.ResetTimer()
			for range b.N {
				if err := e.download(bulkSize); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkUpload(b *testing.B) {
	for _, v := range variants {
		b.Run(v.name, func(b *testing.B) {
			e := newEnv(b, v)
			defer e.close()
			if err := e.upload(1 << 20); err != nil {
				b.Fatal(err)
			}
			b.SetBytes(bulkSize)
			b.ResetTimer()
			for range b.N {
				if err := e.upload(bulkSize); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkSmall(b *testing.B) {
	for _, v := range variants {
		b.Run(v.name, func(b *testing.B) {
			e := newEnv(b, v)
			defer e.close()
			if err := e.small(); err != nil {
				b.Fatal(err)
			}
			procs := runtime.GOMAXPROCS(0)
			b.SetParallelism((smallConc + procs - 1) / procs) // 50 goroutines on 2 cores
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := e.small(); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
		})
	}
}

type heldCost struct{ kb, goroutines, openMS float64 }

var (
	directMu   sync.Mutex
	directCost *heldCost // the last "direct" figure, the client's own cost
)

// measureHeld returns the memory (KiB of HeapInuse+StackInuse) and
// goroutines per held /sse stream, over the idle state.
func measureHeld(tb testing.TB, e *env) heldCost {
	tb.Helper()
	memNow := func() (uint64, int) {
		runtime.GC()
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapInuse + m.StackInuse, runtime.NumGoroutine()
	}
	m0, g0 := memNow()
	start := time.Now()
	release, err := e.hold(heldStreams)
	open := time.Since(start)
	if err != nil {
		release()
		tb.Fatal(err)
	}
	m1, g1 := memNow()
	release()
	if !settle(g0, 10*time.Second) {
		tb.Errorf("goroutines did not return to %d after releasing the streams: %d", g0, runtime.NumGoroutine())
	}
	return heldCost{
		kb:         (float64(m1) - float64(m0)) / 1024 / heldStreams,
		goroutines: float64(g1-g0) / heldStreams,
		openMS:     float64(open) / 1e6,
	}
}

// settle waits until at most g goroutines run.
func settle(g int, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for runtime.NumGoroutine() > g {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
	return true
}

// warmHeld opens and releases a few held streams (pools, first streams),
// after a small request has started every long-lived goroutine (the
// http2.Server reads frames in a goroutine it starts after the preface).
func warmHeld(tb testing.TB, e *env) {
	tb.Helper()
	if err := e.small(); err != nil {
		tb.Fatal(err)
	}
	g0 := runtime.NumGoroutine()
	release, err := e.hold(10)
	release()
	if err != nil {
		tb.Fatal(err)
	}
	if !settle(g0, 10*time.Second) {
		tb.Errorf("warm-up: goroutines did not return to %d: %d", g0, runtime.NumGoroutine())
	}
}

func directHeld(tb testing.TB) heldCost {
	directMu.Lock()
	defer directMu.Unlock()
	if directCost == nil {
		e := newEnv(tb, variants[0])
		defer e.close()
		warmHeld(tb, e)
		c := measureHeld(tb, e)
		directCost = &c
	}
	return *directCost
}

func BenchmarkHeldStreams(b *testing.B) {
	for _, v := range variants {
		b.Run(v.name, func(b *testing.B) {
			e := newEnv(b, v)
			defer e.close()
			warmHeld(b, e)
			var sum heldCost
			for range b.N {
				c := measureHeld(b, e)
				sum.kb += c.kb
				sum.goroutines += c.goroutines
				sum.openMS = max(sum.openMS, c.openMS)
			}
			c := heldCost{sum.kb / float64(b.N), sum.goroutines / float64(b.N), sum.openMS}
			if v.setup == nil {
				directMu.Lock()
				directCost = &c
				directMu.Unlock()
			}
			b.ReportMetric(c.kb, "KiB/stream")
			b.ReportMetric(c.goroutines, "goroutines/stream")
			b.ReportMetric(c.openMS, "max-open-ms")
			if v.setup != nil {
				d := directHeld(b)
				b.ReportMetric(c.kb-d.kb, "net-KiB/stream")
				b.ReportMetric(c.goroutines-d.goroutines, "net-goroutines/stream")
			}
		})
	}
}

// ---------------------------------------------------------------------------
// Tests: every variant carries every request, and leaves no goroutine behind.

func TestVariants(t *testing.T) {
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			g0 := runtime.NumGoroutine()
			e := newEnv(t, v)
			if err := e.download(3<<20 + 17); err != nil {
				t.Error(err)
			}
			if err := e.upload(3<<20 + 17); err != nil {
				t.Error(err)
			}
			var wg sync.WaitGroup
			for range smallConc {
				wg.Go(func() {
					for range 20 {
						if err := e.small(); err != nil {
							t.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			release, err := e.hold(300) // over http2's default of 250 streams
			if err != nil {
				t.Error(err)
			}
			release()
			e.close()
			if !settle(g0, 10*time.Second) {
				buf := make([]byte, 1<<20)
				n := runtime.Stack(buf, true)
				t.Errorf("leak: %d goroutines, %d before\n%s", runtime.NumGoroutine(), g0, buf[:min(n, 8000)])
			}
		})
	}
}

// TestH2DefaultStreamLimit shows why h2Setup raises MaxConcurrentStreams:
// with http2.Server's default (250), a 251st concurrent request on the one
// ClientConn fails at once.
func TestH2DefaultStreamLimit(t *testing.T) {
	setup := func(tb testing.TB, h http.Handler) (http.RoundTripper, func()) {
		edgeWS, agentWS, closeWS := wsPair(tb)
		srv := &http2.Server{}
		go srv.ServeConn(agentWS, &http2.ServeConnOpts{Handler: h})
		cc, err := (&http2.Transport{AllowHTTP: true}).NewClientConn(edgeWS)
		if err != nil {
			tb.Fatal(err)
		}
		return cc, func() { cc.Close(); closeWS() }
	}
	var rt http.RoundTripper
	e := newEnv(t, variant{"h2-default-streams", func(tb testing.TB, h http.Handler) (http.RoundTripper, func()) {
		var c func()
		rt, c = setup(tb, h)
		return rt, c
	}})
	defer e.close()
	release, err := e.hold(250)
	defer release()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://agent/small", nil)
	resp, err := rt.RoundTrip(req)
	if err == nil {
		resp.Body.Close()
		t.Errorf("the 251st stream went through (status %d)", resp.StatusCode)
		return
	}
	t.Logf("the 251st stream failed: %v", err)
}

// BenchmarkBareStreams measures what a multiplexer itself keeps per open
// stream, without HTTP: the edge opens 1000 streams and writes a byte on
// each, the agent accepts them and reads the byte; no goroutine per stream
// on either side beyond the library's own.
func BenchmarkBareStreams(b *testing.B) {
	type bare struct {
		name string
		pair func(edge, agent *tunnel.WSConn) (open func() (net.Conn, error), accept func() (net.Conn, error), closeFn func())
	}
	yamuxPair := func(window uint32) func(edge, agent *tunnel.WSConn) (func() (net.Conn, error), func() (net.Conn, error), func()) {
		return func(edge, agent *tunnel.WSConn) (func() (net.Conn, error), func() (net.Conn, error), func()) {
			cfg := yamux.DefaultConfig()
			cfg.LogOutput = io.Discard
			if window > 0 {
				cfg.MaxStreamWindowSize = window
			}
			es, _ := yamux.Client(edge, cfg)
			as, _ := yamux.Server(agent, cfg)
			return es.Open, as.Accept, func() { es.Close(); as.Close() }
		}
	}
	smuxPair := func(tune func(*smux.Config)) func(edge, agent *tunnel.WSConn) (func() (net.Conn, error), func() (net.Conn, error), func()) {
		return func(edge, agent *tunnel.WSConn) (func() (net.Conn, error), func() (net.Conn, error), func()) {
			cfg := smux.DefaultConfig()
			cfg.Version = 2
			if tune != nil {
				tune(cfg)
			}
			es, _ := smux.Client(edge, cfg)
			as, _ := smux.Server(agent, cfg)
			return func() (net.Conn, error) { return es.OpenStream() },
				func() (net.Conn, error) { return as.AcceptStream() },
				func() { es.Close(); as.Close() }
		}
	}
	for _, v := range []bare{
		{"yamux", yamuxPair(0)},
		{"yamux-1M", yamuxPair(1 << 20)},
		{"smux", smuxPair(nil)},
		{"smux-1M", smuxPair(func(c *smux.Config) { c.MaxStreamBuffer = 1 << 20; c.MaxReceiveBuffer = 16 << 20 })},
	} {
		b.Run(v.name, func(b *testing.B) {
			edge, agent, closeWS := wsPair(b)
			defer closeWS()
			open, accept, closeMux := v.pair(edge, agent)
			defer closeMux()
			var kb, gs float64
			for range b.N {
				runtime.GC()
				runtime.GC()
				var m0, m1 runtime.MemStats
				runtime.ReadMemStats(&m0)
				g0 := runtime.NumGoroutine()
				var ec, ac []net.Conn
				for range heldStreams {
					c, err := open()
					if err != nil {
						b.Fatal(err)
					}
					if _, err := c.Write([]byte{1}); err != nil {
						b.Fatal(err)
					}
					ec = append(ec, c)
					a, err := accept()
					if err != nil {
						b.Fatal(err)
					}
					if _, err := io.ReadFull(a, make([]byte, 1)); err != nil {
						b.Fatal(err)
					}
					ac = append(ac, a)
				}
				runtime.GC()
				runtime.GC()
				runtime.ReadMemStats(&m1)
				kb += (float64(m1.HeapInuse+m1.StackInuse) - float64(m0.HeapInuse+m0.StackInuse)) / 1024 / heldStreams
				gs += float64(runtime.NumGoroutine()-g0) / heldStreams
				for _, c := range append(ec, ac...) {
					c.Close()
				}
			}
			b.ReportMetric(kb/float64(b.N), "KiB/stream")
			b.ReportMetric(gs/float64(b.N), "goroutines/stream")
		})
	}
}
