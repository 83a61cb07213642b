package edge

import (
	"context"
	"errors"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"strconv"
	"strings"

	"github.com/sluicehq/sluice/internal/errpage"
	"github.com/sluicehq/sluice/tunnel"
	"github.com/sluicehq/sluice/wire"
)

// proxy is one tunnel's public handler.
type proxy struct {
	s    *Server
	name string
	host string // NAME.DOMAIN
	rp   *tunnel.Proxy
}

func (s *Server) newProxy(name string, session tunnel.Session) *proxy {
	p := &proxy{s: s, name: name, host: name + "." + s.cfg.Domain}
	p.rp = tunnel.NewProxy(tunnel.Proxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			// Append to the client's X-Forwarded-For rather than replace
			// it, and say which host and scheme the client used, in one
			// spelling (see forwardHost). No Sluice-* field of the
			// visitor's goes on: the tunnel's are added after this.
			tunnel.RemoveInternal(pr.Out.Header)
			host := s.forwardHost(p.publicHost(pr.In.Context()), pr.In.Host)
			setForwarded(pr, host)
			pr.Out.URL.Scheme, pr.Out.URL.Host = "http", host
			pr.Out.Host = host
		},
		Transport:      session,
		Buffers:        &s.buffers,
		ModifyResponse: p.modifyResponse,
		ErrorHandler:   p.proxyError,
	}, log.New(slogWriter{s.cfg.Logger}, "", 0))
	return p
}

// setForwarded sets the forwarding fields of pr.Out as
// httputil.ProxyRequest.SetXForwarded does, but for the host, which is
// host, and the scheme, which is the visitor's at the edge that forwarded
// the request (forwardedTLS): X-Forwarded-For is the client's list with
// the client's address appended (none if RemoteAddr has no port), then
// X-Forwarded-Host and X-Forwarded-Proto; the three values share one
// array (every request passes here).
func setForwarded(pr *httputil.ProxyRequest, host string) {
	vals := make([]string, 3)
	h := pr.Out.Header
	if clientIP, _, err := net.SplitHostPort(pr.In.RemoteAddr); err == nil {
		if prior := pr.In.Header["X-Forwarded-For"]; len(prior) > 0 {
			clientIP = strings.Join(prior, ", ") + ", " + clientIP
		}
		vals[0] = clientIP
		h["X-Forwarded-For"] = vals[0:1:1]
	} else {
		delete(h, "X-Forwarded-For")
	}
	vals[1] = host
	h["X-Forwarded-Host"] = vals[1:2:2]
	vals[2] = "http"
	if pr.In.TLS != nil || forwardedTLS(pr.In) {
		vals[2] = "https"
	}
	h["X-Forwarded-Proto"] = vals[2:3:3]
}

// modifyResponse readies the agent's response for the visitor.
func (p *proxy) modifyResponse(resp *http.Response) error {
	cleanResponse(resp, p.publicHost(resp.Request.Context()))
	return markStreamed(resp)
}

// markStreamed adds X-Accel-Buffering: no to streamed responses (no
// Content-Length, or an event stream or NDJSON), so that an nginx in front
// of the edge does not buffer them.
func markStreamed(resp *http.Response) error {
	if resp.Header.Get("X-Accel-Buffering") != "" || resp.StatusCode < 200 || resp.StatusCode == http.StatusNoContent ||
		resp.StatusCode == http.StatusNotModified || resp.Request.Method == http.MethodHead {
		return nil
	}
	// The media type, compared as RFC 9110 says (case-insensitive, before
	// any parameter), without parsing the parameters: every response
	// passes here.
	mt, _, _ := strings.Cut(resp.Header.Get("Content-Type"), ";")
	mt = strings.TrimSpace(mt)
	if resp.ContentLength < 0 || strings.EqualFold(mt, "text/event-stream") || strings.EqualFold(mt, "application/x-ndjson") {
		resp.Header.Set("X-Accel-Buffering", "no")
	}
	return nil
}

func (p *proxy) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	host := r.Host
	switch {
	case errors.Is(err, context.Canceled):
		// The client left; nobody reads this answer.
		w.WriteHeader(499)
	case errors.Is(err, tunnel.ErrSessionClosed):
		errpage.Write(w, r, http.StatusBadGateway, wire.CodeAgentOffline, "agent offline",
			"the agent for "+host+" disconnected; the tunnel serves again when it reconnects.")
	case errors.Is(err, tunnel.ErrTooManyStreams):
		w.Header().Set("Retry-After", "1")
		errpage.Write(w, r, http.StatusServiceUnavailable, wire.CodeTooManyStreams, "Tunnel busy",
			"the tunnel "+host+" is carrying its maximum of concurrent requests ("+strconv.Itoa(p.s.cfg.Session.MaxStreams)+"); try again.")
	case errors.Is(err, tunnel.ErrUpgradeUnsupported):
		errpage.Write(w, r, http.StatusNotImplemented, wire.CodeUpgradeUnsupported, "Upgrade not supported by this agent",
			"the agent of "+host+" cannot carry WebSocket or other upgraded connections; a sluice agent (protocol v2, or v1 with the upgrade feature) can.")
	case errors.Is(err, tunnel.ErrGRPCUnsupported):
		// A gRPC status, which gRPC clients show (a trailers-only answer).
		w.Header().Set("Content-Type", "application/grpc")
		w.Header().Set("Grpc-Status", "12") // UNIMPLEMENTED
		w.Header().Set("Grpc-Message", "the agent of "+host+" cannot carry gRPC (a plain v1 agent, without the request_stream and trailers extensions); a sluice agent can")
		w.WriteHeader(http.StatusOK)
	case errors.Is(err, tunnel.ErrBusy):
		w.Header().Set("Retry-After", "1")
		errpage.Write(w, r, http.StatusServiceUnavailable, wire.CodeTooManyStreams, "Edge busy",
			"the edge holds as much buffered data as it may; try again.")
	case errors.Is(err, tunnel.ErrBodyTooLarge):
		errpage.Write(w, r, http.StatusRequestEntityTooLarge, wire.CodeBodyTooLarge, "Request body too large",
			"the agent of "+host+" takes whole request bodies only, up to "+strconv.FormatInt(p.s.cfg.Session.V1.MaxBody, 10)+" bytes.")
	default:
		// The detail is for the operator: the visitor gets the request id
		// to quote.
		id := errpage.Write(w, r, http.StatusBadGateway, wire.CodeTunnelError, "Tunnel error",
			"the request to "+host+" could not be carried through the tunnel.")
		p.s.cfg.Logger.Warn("tunnel error", "tunnel", p.name, "request_id", id, "err", err)
	}
}

// ServeHTTP serves one public request through the tunnel, counting it.
func (p *proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	done, ok := p.s.admitStream(w, r)
	if !ok {
		return
	}
	defer done()
	m := p.s.metrics
	m.openStreams.Inc()
	defer m.openStreams.Dec()
	cw := &countingWriter{ResponseWriter: w, code: http.StatusOK}
	if r.Body != nil && r.Body != http.NoBody {
		r.Body = &countingBody{ReadCloser: r.Body, m: m}
	}
	defer func() { m.bytesOut.Add(float64(cw.n)) }() // the status is counted by Server.ServeHTTP

	p.rp.ServeHTTP(cw, r)
}

// countingWriter records the status and body bytes of a response.
type countingWriter struct {
	http.ResponseWriter
	code int
	n    int64
}

func (c *countingWriter) WriteHeader(code int) {
	if code >= 200 {
		c.code = code
	}
	c.ResponseWriter.WriteHeader(code)
}

func (c *countingWriter) Write(b []byte) (int, error) {
	n, err := c.ResponseWriter.Write(b)
	c.n += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController reach the connection (flushes,
// deadlines, hijacking for upgrades).
func (c *countingWriter) Unwrap() http.ResponseWriter { return c.ResponseWriter }

// Flush is found by ReverseProxy without a ResponseController.
func (c *countingWriter) Flush() { http.NewResponseController(c.ResponseWriter).Flush() }

type countingBody struct {
	io.ReadCloser
	m *metrics
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.m.bytesIn.Add(float64(n))
	return n, err
}

// slogWriter routes the standard library proxy's log lines to slog at debug
// level: they are mostly clients that went away.
type slogWriter struct{ l *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	w.l.Debug(string(p))
	return len(p), nil
}
