package edge

import (
	"errors"
	"io"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sluicehq/sluice/internal/errpage"
	"github.com/sluicehq/sluice/tunnel"
	"github.com/sluicehq/sluice/wire"
)

// What one visitor may cost the edge, besides the buffer budget
// (tunnel.Budget, Config.MaxBuffer): concurrent streams per client IP, a
// request body that stops sending (BodyIdleTimeout), a client that stops
// reading (WriteIdleTimeout). And early answers (an error before the
// request body was read) reach a slow uploader at once.

// ipStreams counts the public streams in flight per client IP. One mutex
// guards the map; an address is forgotten when its count drops to zero.
type ipStreams struct {
	mu sync.Mutex
	n  map[string]int
}

// acquire counts a stream for ip, unless ip already has max.
func (l *ipStreams) acquire(ip string, max int) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.n == nil {
		l.n = map[string]int{}
	}
	if l.n[ip] >= max {
		return false
	}
	l.n[ip]++
	return true
}

func (l *ipStreams) release(ip string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.n[ip]--; l.n[ip] <= 0 {
		delete(l.n, ip)
	}
}

// admitStream counts a public stream for the client's address, or answers
// 429 with Retry-After when the address already has MaxStreamsPerIP in
// flight. The caller calls done when the stream ends.
func (s *Server) admitStream(w http.ResponseWriter, r *http.Request) (done func(), ok bool) {
	ip := s.clientIP(r)
	if !s.perIP.acquire(ip, s.cfg.MaxStreamsPerIP) {
		s.metrics.limited.WithLabelValues("streams_per_ip").Inc()
		w.Header().Set("Retry-After", "1")
		errpage.Write(w, r, http.StatusTooManyRequests, wire.CodeTooManyStreams, "Too many requests",
			"this address has "+strconv.Itoa(s.cfg.MaxStreamsPerIP)+" requests in flight at this edge, its maximum; try again when some have finished.")
		return nil, false
	}
	return func() { s.perIP.release(ip) }, true
}

// guard prepares a public request for a tunnel: its body, if any, ends
// when it sends nothing for BodyIdleTimeout; writes of the response fail
// when the client reads nothing for WriteIdleTimeout; and an answer
// written before the body was read (an error page) goes out at once, with
// Connection: close, instead of net/http first reading up to 256 KiB of
// the upload. It returns the writer and a shallow copy of r to serve them
// with; r itself keeps its body, which net/http inspects and closes after
// the answer.
func (s *Server) guard(w http.ResponseWriter, r *http.Request) (*guardWriter, *http.Request) {
	gw := &guardWriter{ResponseWriter: w, rc: *http.NewResponseController(w), idle: s.cfg.WriteIdleTimeout, m: s.metrics, proto: r.ProtoMajor}
	rc := &gw.rc // (a value in gw: one allocation less per request)
	if r.Body == nil || r.Body == http.NoBody {
		return gw, r
	}
	// Full duplex: the response may start while the upload goes on (an
	// HTTP/1 server otherwise reads the rest of the body first, or
	// refuses further reads). HTTP/2 is full duplex already.
	rc.EnableFullDuplex()
	rc.SetReadDeadline(time.Now().Add(s.cfg.BodyIdleTimeout))
	gw.body = &guardBody{src: r.Body, rc: rc, idle: s.cfg.BodyIdleTimeout, m: s.metrics}
	r2 := *r
	r2.Body = gw.body
	return gw, &r2
}

// finish ends what guard set up once the handler is done with the
// request: a body still being read (a v1 pump waiting for a slow upload)
// is ended at once, so that nothing waits for it.
func (gw *guardWriter) finish() {
	if gw.body != nil && !gw.body.eof() {
		gw.rc.SetReadDeadline(time.Now())
	}
	if !gw.until.IsZero() {
		// The server's own last writes (the end of a chunked body) and
		// the connection's next request see no deadline of this one.
		gw.rc.SetWriteDeadline(time.Time{})
	}
}

// guardBody is a public request body whose reads move the connection's
// read deadline: a body that sends nothing for idle fails with a timeout.
// Close does not close the body below, which net/http does after the
// answer (closing it first would read the rest of a slow upload).
type guardBody struct {
	src  io.ReadCloser
	rc   *http.ResponseController
	idle time.Duration
	m    *metrics
	mu   sync.Mutex // guards done
	done bool       // EOF seen
}

func (b *guardBody) Read(p []byte) (int, error) {
	if b.eof() {
		return 0, io.EOF
	}
	b.rc.SetReadDeadline(time.Now().Add(b.idle))
	n, err := b.src.Read(p)
	switch {
	case err == io.EOF:
		b.mu.Lock()
		b.done = true
		b.mu.Unlock()
		// No deadline after the body: net/http's check for a client
		// that hangs up reads the connection from now on.
		b.rc.SetReadDeadline(time.Time{})
	case errors.Is(err, os.ErrDeadlineExceeded):
		b.m.limited.WithLabelValues("body_idle").Inc()
	}
	return n, err
}

func (b *guardBody) eof() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.done
}

func (b *guardBody) Close() error { return nil }

// guardWriter is a public response whose writes must make progress within
// idle. Over HTTP/1 the write deadline is moved only when it is near:
// before a write or flush, if less than idle is left of it, it is set to
// idle + idle/4 from now, and it is cleared when the handler ends
// (finish). (Over HTTP/2, see arm.) So a write
// that makes no progress is cut between idle and 1.25 × idle after it
// began, a response with nothing to send (a quiet event stream) is never
// cut (a deadline that passes while nothing is written cuts nothing, and
// the next write moves it first), and a response's writes move the
// deadline about once per idle/4 rather than twice each (setting and
// clearing it around every write and flush was 2 % of the edge's CPU per
// small request, and four timer changes per event of a stream).
type guardWriter struct {
	http.ResponseWriter
	rc    http.ResponseController
	idle  time.Duration
	until time.Time // the write deadline set; zero: none
	m     *metrics
	body  *guardBody
	proto int
	cut   bool // the write deadline passed (counted once)
}

func (gw *guardWriter) WriteHeader(code int) {
	if code >= 400 && gw.body != nil && !gw.body.eof() && gw.proto == 1 {
		// An early answer: the connection ends after it rather than
		// read the rest of the upload.
		gw.Header().Set("Connection", "close")
	}
	gw.ResponseWriter.WriteHeader(code)
}

// arm makes sure the next write has at least idle before the deadline.
// Over HTTP/2 (net/http's server) a deadline that passes resets the
// stream even while nothing is written, so there it is set to idle before
// each write and cleared after it (written), as it always was.
func (gw *guardWriter) arm() {
	if gw.cut {
		return // the connection is done for (its writes fail from now on)
	}
	now := time.Now()
	if gw.proto != 1 {
		gw.until = now.Add(gw.idle)
		gw.rc.SetWriteDeadline(gw.until)
		return
	}
	if gw.until.Sub(now) >= gw.idle {
		return
	}
	gw.until = now.Add(gw.idle + gw.idle/4)
	gw.rc.SetWriteDeadline(gw.until)
}

func (gw *guardWriter) Write(p []byte) (int, error) {
	gw.arm()
	n, err := gw.ResponseWriter.Write(p)
	gw.written(err)
	return n, err
}

// Flush is where a streamed response's bytes go out.
func (gw *guardWriter) Flush() {
	gw.arm()
	gw.written(gw.rc.Flush())
}

// FlushError is Flush with its error, for http.ResponseController.
func (gw *guardWriter) FlushError() error {
	gw.arm()
	err := gw.rc.Flush()
	gw.written(err)
	return err
}

func (gw *guardWriter) written(err error) {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		if !gw.cut {
			gw.cut = true
			gw.m.limited.WithLabelValues("write_idle").Inc()
		}
		return
	}
	if gw.proto != 1 {
		gw.rc.SetWriteDeadline(time.Time{})
		gw.until = time.Time{}
	}
}

// Unwrap lets http.ResponseController reach the connection.
func (gw *guardWriter) Unwrap() http.ResponseWriter { return gw.ResponseWriter }

// watchBudget exports the budget's use in /metrics.
func (m *metrics) watchBudget(b *tunnel.Budget) {
	m.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "sluice_buffered_bytes", Help: "Body bytes the edge holds or let agents send (window granted), of its budget (--max-buffer).",
		}, func() float64 { return float64(b.Used()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "sluice_buffered_bytes_max", Help: "The edge's budget of buffered body bytes (--max-buffer).",
		}, func() float64 { return float64(b.Max()) }),
	)
}
