package agent

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/sluicehq/sluice/internal/inspect"
	"github.com/sluicehq/sluice/tunnel"
	"github.com/sluicehq/sluice/wire"
)

// Pipes (tunnel.DialConfig.Pipe; docs/protocol.md, "Pipes"): the edge
// sends simple requests as HTTP/1.1 bytes on streams the agent pumps to
// connections of its own to the local server. The agent offers them for
// HTTP tunnels, and pipes while its upstream is reached as it is
// (pipeable). What the handler does for such a request that the pipe must
// still do, it does here: the response header timeout, the error pages of
// upstreamError when the local server cannot be reached or does not
// answer, the console's line, and the inspector's record (the request's
// head parsed once it is whole, the response followed by its framing: its
// head, its body's bytes de-chunked, its trailers).

// pipeable reports whether requests to tg can be piped: an http://
// upstream without a path or query to join to the request's, and the
// public Host kept.
func (tg *upstreamTarget) pipeable() bool {
	u := tg.url
	return u.Scheme == "http" && (u.Path == "" || u.Path == "/") && u.RawQuery == "" && u.User == nil &&
		(tg.hostHeader == "" || tg.hostHeader == "preserve")
}

// offersPipes reports whether the agent offers the edge pipes.
func (a *Agent) offersPipes() bool {
	return a.cfg.Type == wire.TunnelHTTP
}

// dialPipe opens the local connection of a pipe: tunnel.ErrNoPipe while
// the upstream cannot be piped. A failed dial is not an error: the pipe
// answers the edge's request with upstreamError's page.
func (a *Agent) dialPipe(ctx context.Context) (net.Conn, error) {
	tg := a.target.Load()
	if !tg.pipeable() {
		return nil, tunnel.ErrNoPipe
	}
	addr := tg.url.Host
	if tg.url.Port() == "" {
		addr = net.JoinHostPort(tg.url.Hostname(), "80")
	}
	conn, err := upstreamDialer.DialContext(ctx, "tcp", addr)
	if err != nil && ctx.Err() != nil {
		return nil, context.Cause(ctx)
	}
	p := &pipeConn{conn: conn, dialErr: err, up: tg.url, timeout: a.cfg.ResponseHeaderTimeout, log: a.cfg.Logger,
		console: a.console, insp: a.cfg.Inspector, headMax: pipeHeadMax, asked: make(chan struct{}), closed: make(chan struct{})}
	if p.insp != nil {
		p.headMax = followHeadMax
	}
	return p, nil
}

// pipeHeadMax is how much of a request's head a pipe keeps while it waits
// for the answer, for an error page's request (its Accept field); with
// the inspector, followHeadMax, for its record.
const pipeHeadMax = 8 << 10

// errResent ends the record of a request on a reused pipe whose local
// connection closed without an answer: the edge's client sends it again on
// a new pipe, which records it again.
var errResent = errors.New("the local server closed its kept-alive connection without an answer: the request was sent again on a new one")

// pipeConn is a pipe's local connection as the tunnel pumps it: the edge's
// bytes are written to it, the local server's read from it. A request
// went out when the edge's bytes came while no answer was awaited; the
// local server's bytes after it are its response, informational heads
// (103 Early Hints) first, if any (headScan). Until the final head starts
// the response header timeout runs; if it passes, or the server ends the
// connection first (on a pipe's first request: on a later one the edge's
// client sends the request again on a new pipe, as the agent's does on
// a new connection), what the pipe reads is the error page for that
// request, then its end. A dial that failed reads as its error page.
type pipeConn struct {
	conn    net.Conn // nil when the dial failed
	dialErr error
	up      *url.URL
	timeout time.Duration
	log     *slog.Logger
	asked   chan struct{} // closed at the first request (a failed dial's page waits for it)
	closed  chan struct{}

	mu        sync.Mutex
	armed     bool               // a request went out, its final answer did not start yet
	scan      headScan           // the answer's informational heads, while armed
	console   *console           // prints a line per request, if set
	insp      *inspect.Inspector // records each request, if set
	rec       *inspect.Recorder  // the armed or followed request's record
	headLine  byte               // where the armed request's head is: midLine, lineStart or crAtStart
	start     time.Time          // when the armed request went out
	follow    respFollow         // the response being followed for its line and record
	following bool
	served    bool   // an answer came: the edge's client reuses the pipe
	head      []byte // the armed request's first headMax bytes
	headMax   int
	timer     *time.Timer
	timedOut  bool
	page      *bytes.Reader // the error response being read, then io.EOF
	once      sync.Once     // closes asked
	shut      sync.Once     // closes closed
}

// Write takes the edge's bytes to the local server.
func (p *pipeConn) Write(b []byte) (int, error) {
	p.mu.Lock()
	if !p.armed && p.page == nil {
		if p.following {
			p.ended(nil) // a response whose end could not be followed
		}
		p.armed, p.head, p.headLine = true, p.head[:0], midLine
		p.scan.reset()
		if p.console != nil {
			p.start = time.Now()
		}
		if p.timeout > 0 && p.conn != nil {
			if p.timer == nil {
				p.timer = time.AfterFunc(p.timeout, p.expire)
			} else {
				p.timer.Reset(p.timeout)
			}
		}
	}
	if p.armed && len(p.head) < p.headMax {
		kept := b[:min(len(b), p.headMax-len(p.head))]
		p.head = append(p.head, kept...)
		if p.insp != nil && p.rec == nil {
			for _, c := range kept {
				if emptyLine(&p.headLine, c) {
					p.record()
					break
				}
			}
		}
	}
	p.mu.Unlock()
	if p.conn == nil {
		p.once.Do(func() { close(p.asked) })
		return len(b), nil
	}
	return p.conn.Write(b)
}

// expire ends a request the local server did not answer in time.
func (p *pipeConn) expire() {
	p.mu.Lock()
	fire := p.armed
	if fire {
		p.armed, p.timedOut = false, true
	}
	p.mu.Unlock()
	if fire {
		p.conn.Close() // the read returns, and reads as the page
	}
}

// Read takes the local server's bytes to the edge.
func (p *pipeConn) Read(b []byte) (int, error) {
	if p.page != nil {
		return p.page.Read(b)
	}
	if p.conn == nil {
		select {
		case <-p.asked:
		case <-p.closed:
			return 0, net.ErrClosed
		}
		p.mu.Lock()
		p.armed = false
		p.fail(p.dialErr)
		p.mu.Unlock()
		return p.page.Read(b)
	}
	n, err := p.conn.Read(b)
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case n > 0 && (p.armed || p.timedOut):
		// Informational heads (103 Early Hints) pass and the timeout
		// runs on; the final head stops it. One that came as the timer
		// fired passes too: no page after it (the closed connection then
		// ends the pipe).
		at, final := p.scan.final(b[:n])
		if !final {
			break
		}
		if p.armed && p.timer != nil {
			p.timer.Stop()
		}
		p.armed, p.served, p.timedOut = false, true, false
		if p.console != nil || p.insp != nil {
			if p.insp != nil && p.rec == nil {
				p.record() // a head not seen whole: the server answered first
			}
			method, _ := requestLine(p.head)
			p.follow.reset(method == http.MethodHead, p.scan.status(), p.rec)
			p.following = true
			if at < 0 {
				p.follow.feed(p.scan.pre[:-at])
				at = 0
			}
			if p.follow.feed(b[at:n]) {
				p.ended(nil)
			} else if err != nil {
				p.ended(p.follow.cut(err))
			}
		}
	case p.following:
		// The body, to its end: by its framing, or the connection's
		// (one that ends with it, or one cut).
		if p.follow.feed(b[:n]) {
			p.ended(nil)
		} else if err != nil {
			p.ended(p.follow.cut(err))
		}
	case n == 0 && err != nil && p.timedOut:
		p.fail(os.ErrDeadlineExceeded)
		return p.page.Read(b)
	case n == 0 && err != nil && p.armed && p.served && p.rec != nil:
		p.rec.End(nil, errResent)
		p.rec = nil
	case n == 0 && err != nil && p.armed && !p.served:
		p.armed = false
		if p.timer != nil {
			p.timer.Stop()
		}
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		p.fail(err)
		return p.page.Read(b)
	}
	return n, err
}

// fail makes the pipe read as upstreamError's page for the request
// armed, answered once with Connection: close. The caller holds mu.
func (p *pipeConn) fail(err error) {
	req, rerr := http.ReadRequest(bufio.NewReader(bytes.NewReader(p.head)))
	if rerr != nil {
		req, _ = http.NewRequest(http.MethodGet, "/", nil) // a head cut at pipeHeadMax: a plain page
	}
	w := &pageWriter{h: make(http.Header)}
	upstreamError(w, req, p.up, err, p.log)
	if p.insp != nil {
		// As the handler's record of its page.
		if p.rec == nil {
			p.record()
		}
		p.rec.Response(w.code, w.h.Clone())
		if req.Method != http.MethodHead {
			p.rec.Body(w.body.Bytes())
		}
		p.rec.End(nil, nil)
		p.rec = nil
	}
	resp := &http.Response{StatusCode: w.code, ProtoMajor: 1, ProtoMinor: 1, Header: w.h, Close: true,
		ContentLength: int64(w.body.Len()), Body: io.NopCloser(&w.body)}
	resp.Header.Set("Content-Length", strconv.Itoa(w.body.Len()))
	if req.Method == http.MethodHead {
		resp.Body = nil
	}
	var out bytes.Buffer
	resp.Write(&out)
	p.page = bytes.NewReader(out.Bytes())
	if p.console != nil {
		p.console.line(p.start, req.Method, req.URL.RequestURI(), w.code, resp.ContentLength)
	}
}

// record starts the inspector's record of the armed request, from its
// head as kept (whole, or not when it is larger than headMax or the
// answer came first: the record then says its fields could not be read).
// The caller holds mu.
func (p *pipeConn) record() {
	method, target := requestLine(p.head)
	p.rec = p.insp.RecordHead(method, target, p.head)
}

// ended prints the console line and ends the record of the response
// followed, once it ended (or the pipe did: err says how it was cut). The
// caller holds mu.
func (p *pipeConn) ended(err error) {
	p.following = false
	if p.console != nil {
		method, uri := requestLine(p.head)
		p.console.line(p.start, method, uri, p.follow.status, p.follow.body)
	}
	if p.rec != nil {
		p.rec.End(p.follow.trailers(), err)
		p.rec = nil
	}
}

// requestLine returns the method and request target of a request head.
func requestLine(head []byte) (method, target string) {
	line, _, _ := bytes.Cut(head, []byte("\n"))
	m, rest, _ := bytes.Cut(bytes.TrimSuffix(line, []byte("\r")), []byte(" "))
	t, _, _ := bytes.Cut(rest, []byte(" "))
	return string(m), string(t)
}

// pageWriter keeps an error page, for fail to send as a response.
type pageWriter struct {
	h    http.Header
	code int
	body bytes.Buffer
}

func (w *pageWriter) Header() http.Header { return w.h }
func (w *pageWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
}
func (w *pageWriter) Write(b []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	return w.body.Write(b)
}

func (p *pipeConn) Close() error {
	p.shut.Do(func() { close(p.closed) })
	p.mu.Lock()
	if p.timer != nil {
		p.timer.Stop()
	}
	if p.following {
		p.ended(inspect.ErrAborted) // the edge ended the pipe first: the visitor left
	}
	if p.rec != nil {
		// A request out and no answer yet: its record reads as the
		// handler's, whose client left first.
		p.rec.Response(statusClientLeft, http.Header{})
		p.rec.End(nil, nil)
		p.rec = nil
	}
	p.mu.Unlock()
	if p.conn == nil {
		return nil
	}
	return p.conn.Close()
}

// CloseWrite and SetLinger pass the tunnel's half-close and reset on.
func (p *pipeConn) CloseWrite() error {
	if cw, ok := p.conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

func (p *pipeConn) SetLinger(sec int) error {
	if l, ok := p.conn.(interface{ SetLinger(int) error }); ok {
		return l.SetLinger(sec)
	}
	return nil
}

type localAddr struct{}

func (localAddr) Network() string { return "tcp" }
func (localAddr) String() string  { return "local" }

func (p *pipeConn) LocalAddr() net.Addr {
	if p.conn == nil {
		return localAddr{}
	}
	return p.conn.LocalAddr()
}

func (p *pipeConn) RemoteAddr() net.Addr {
	if p.conn == nil {
		return localAddr{}
	}
	return p.conn.RemoteAddr()
}

func (p *pipeConn) SetDeadline(t time.Time) error {
	if p.conn == nil {
		return nil
	}
	return p.conn.SetDeadline(t)
}

func (p *pipeConn) SetReadDeadline(t time.Time) error {
	if p.conn == nil {
		return nil
	}
	return p.conn.SetReadDeadline(t)
}

func (p *pipeConn) SetWriteDeadline(t time.Time) error {
	if p.conn == nil {
		return nil
	}
	return p.conn.SetWriteDeadline(t)
}
