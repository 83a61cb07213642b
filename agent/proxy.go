package agent

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"github.com/sluicehq/sluice/wire"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sluicehq/sluice/internal/errpage"
	"github.com/sluicehq/sluice/internal/h1client"
	"github.com/sluicehq/sluice/tunnel"
)

// The buffers of each upstream connection. Response bodies bypass the read
// buffer (the proxy reads them up to 64 KiB at a time) and request bodies
// the write buffer; what goes through them is the response head and chunk
// lines, and the request head. net/http's transport holds both as long as
// the connection (and so every held stream); the agent's own client
// (upstream.go) holds the read buffer, and the write buffer only while it
// writes a request.
var upstreamReadBuffer, upstreamWriteBuffer = 1 << 10, 1 << 10

// upstreamDialer connects to the local server: the upstream transport's,
// and the pipes' (pipe.go).
var upstreamDialer = &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}

// newProxy returns the local reverse proxy to upstream (HTTP/1.1, h2c, or
// HTTPS with HTTP/2 through ALPN, verified with upstreamTLS): forwarding headers
// from the edge kept, Host as configured, every chunk flushed, no total
// timeout (only one for the response headers), and errors that name the
// upstream.
func newProxy(cfg *Config, upstreamTLS *tls.Config, target func() *upstreamTarget) http.Handler {
	transport := &http.Transport{
		DialContext:           upstreamDialer.DialContext,
		ResponseHeaderTimeout: cfg.ResponseHeaderTimeout,
		MaxIdleConns:          256,
		MaxIdleConnsPerHost:   256,
		IdleConnTimeout:       h1client.IdleTimeout, // shorter than local servers' keep-alive

		DisableCompression:    true, // bodies pass through as the client asked
		ExpectContinueTimeout: time.Second,
		ReadBufferSize:        upstreamReadBuffer,
		WriteBufferSize:       upstreamWriteBuffer,
		TLSClientConfig:       upstreamTLS,
	}
	// https:// upstreams: HTTP/2 when the server offers it through ALPN
	// (upgrades such as WebSocket still ask for HTTP/1.1 alone).
	transport.Protocols = new(http.Protocols)
	transport.Protocols.SetHTTP1(true)
	transport.Protocols.SetHTTP2(true)
	return tunnel.NewProxy(tunnel.Proxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			tg := target()
			up := tg.url
			pr.SetURL(up)
			// The edge set these for the public client; keep them.
			for _, h := range tunnel.ForwardingHeaders {
				if v := pr.In.Header[h]; v != nil {
					pr.Out.Header[h] = v
				}
			}
			switch tg.hostHeader {
			case "", "preserve":
				pr.Out.Host = pr.In.Host
			case "rewrite":
				pr.Out.Host = up.Host
			default:
				pr.Out.Host = tg.hostHeader
			}
		},
		Transport: newUpstreamTransport(transport),
		Buffers:   &tunnel.BufferPool{},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			upstreamError(w, r, target().url, err, cfg.Logger)
		},
	}, log.New(io.Discard, "", 0))
}

// statusClientLeft is the status of a request whose public client left
// before the answer (nginx's 499): what the console and the inspector show.
const statusClientLeft = 499

// upstreamError answers when the local server could not be reached. The
// page names the upstream as configured and says what kind of failure it
// was; the error itself (socket errors, resolver addresses) goes to the
// agent's log under the page's request id, never to the visitor.
func upstreamError(w http.ResponseWriter, r *http.Request, up *url.URL, err error, log *slog.Logger) {
	var ne net.Error
	var cve *tls.CertificateVerificationError
	var id string
	switch {
	case errors.Is(err, context.Canceled):
		w.WriteHeader(statusClientLeft)
		return
	case errors.Is(err, syscall.ECONNREFUSED):
		id = errpage.Write(w, r, http.StatusBadGateway, wire.CodeUpstreamRefused, "Local server not reachable",
			fmt.Sprintf("the agent could not connect to %s: connection refused. Is the local server running on that port?", up.Host))
	case errors.As(err, &cve):
		id = errpage.Write(w, r, http.StatusBadGateway, wire.CodeUpstreamError, "Local server's certificate not trusted",
			fmt.Sprintf("the agent does not trust the TLS certificate of %s. Start it with --upstream-ca FILE (the certificate's CA) or --upstream-insecure.", up.Host))
	case errpage.IsGRPC(r) && r.Header.Get("Grpc-Timeout") != "" && strings.Contains(err.Error(), "CANCEL"):
		// A gRPC server resets a call whose deadline (grpc-timeout)
		// passed with CANCEL: the caller's deadline, told as one.
		id = errpage.Write(w, r, http.StatusGatewayTimeout, wire.CodeUpstreamTimeout, "Deadline exceeded",
			fmt.Sprintf("%s ended the call at its deadline.", up.Host))
	case errors.As(err, &ne) && ne.Timeout():
		id = errpage.Write(w, r, http.StatusGatewayTimeout, wire.CodeUpstreamTimeout, "Local server timed out",
			fmt.Sprintf("%s did not answer in time.", up.Host))
	default:
		id = errpage.Write(w, r, http.StatusBadGateway, wire.CodeUpstreamError, "Local server error",
			fmt.Sprintf("the request to %s failed.", up.Host))
	}
	log.Warn("upstream error", "upstream", up.Host, "method", r.Method, "path", r.URL.Path, "request_id", id, "err", err)
}

// console prints one line per request, like ngrok's: time, method, path,
// status, duration, response bytes.
type console struct {
	mu sync.Mutex
	w  io.Writer
}

func (c *console) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &recorder{ResponseWriter: w, code: http.StatusOK}
		defer func() { c.line(start, r.Method, r.URL.RequestURI(), rec.code, atomic.LoadInt64(&rec.n)) }()
		h.ServeHTTP(rec, r)
	})
}

// line prints the line of a request that started at start, answered
// with code and n body bytes: now, as it ended. Pipes print theirs too.
func (c *console) line(start time.Time, method, uri string, code int, n int64) {
	c.mu.Lock()
	fmt.Fprintf(c.w, "%s  %-7s %-40s %3d  %8s  %s\n", start.Format("15:04:05"), method, trim(uri, 40),
		code, time.Since(start).Round(time.Millisecond), size(n))
	c.mu.Unlock()
}

func trim(s string, n int) string {
	if len(s) > n {
		return s[:n-1] + "…"
	}
	return s
}

func size(n int64) string {
	switch {
	case n < 1<<10:
		return fmt.Sprintf("%d B", n)
	case n < 1<<20:
		return fmt.Sprintf("%.1f KB", float64(n)/(1<<10))
	case n < 1<<30:
		return fmt.Sprintf("%.1f MB", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%.2f GB", float64(n)/(1<<30))
}

// recorder notes the status and body bytes of a response.
type recorder struct {
	http.ResponseWriter
	code        int
	n           int64
	wroteHeader bool
}

func (r *recorder) WriteHeader(code int) {
	if !r.wroteHeader && code >= 200 {
		r.code, r.wroteHeader = code, true
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	n, err := r.ResponseWriter.Write(b)
	atomic.AddInt64(&r.n, int64(n))
	return n, err
}

func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

func (r *recorder) Flush() { http.NewResponseController(r.ResponseWriter).Flush() }

// Hijack is an upgrade (the reverse proxy hijacks after the upstream's
// 101): the line says 101, and its bytes are those of the upgraded
// connection, counted both ways.
func (r *recorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, brw, err := http.NewResponseController(r.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	r.code, r.wroteHeader = http.StatusSwitchingProtocols, true
	cc := &countingConn{Conn: conn, n: &r.n}
	brw = bufio.NewReadWriter(brw.Reader, bufio.NewWriterSize(cc, 4<<10))
	return cc, brw, nil
}

// countingConn counts the bytes read and written on a hijacked connection.
type countingConn struct {
	net.Conn
	n *int64
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	atomic.AddInt64(c.n, int64(n))
	return n, err
}

func (c *countingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	atomic.AddInt64(c.n, int64(n))
	return n, err
}
