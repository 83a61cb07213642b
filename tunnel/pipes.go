package tunnel

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluicehq/sluice/internal/h1client"
	"github.com/sluicehq/sluice/wire"
)

// Pipes (protocol v2, wire.FeaturePipe; docs/protocol.md, "Pipes"): an
// agent that has nothing of its own to do per request (no console line,
// no inspector, an http:// upstream reached as it is) offers to pipe
// streams to its local server, and the edge then sends a simple request
// (GET or HEAD, no body, no upgrade) as HTTP/1.1 bytes on such a stream,
// with the lean HTTP/1.1 client the agent uses for its own requests
// (internal/h1client), and reads the local server's response from it. A
// pipe is opened like a TCP connection (openDuplex, with Sluice-Pipe
// instead of Sluice-Tcp), carries one request after another, and is
// pooled at the edge between them: one stream for many requests, where
// each request is otherwise a stream of its own, made, dispatched and
// ended at both ends, with its request and response built as maps at
// both. The edge still parses and checks everything: the visitor's
// request (its HTTP/1.1 or HTTP/2 server, its proxy's rules), and the
// local server's response (http.ReadResponse, within MaxHeaderBytes); the
// head the local server gets is written from the parsed request, never
// the visitor's bytes.
const (
	// pipeHeader marks a stream the agent pipes to its local server.
	pipeHeader = "Sluice-Pipe"
	// pipeOffReason is the agent's refusal of a pipe while its upstream
	// cannot be piped (SetUpstream to an https:// one, say): requests go
	// as streams of their own until the agent's pipe_reset.
	pipeOffReason = "pipe_off"
	// pipeBuffer is the size of the pipe client's read buffer per pipe
	// (response heads and chunk lines go through it; bodies bypass it, the
	// proxy reading more at once) and of its pooled write buffer (for the
	// heads appendRequestHead does not write).
	pipeBuffer = 1 << 10
)

// ErrNoPipe is what DialConfig.Pipe returns to refuse a pipe: the edge
// then sends requests as streams of their own until the agent says its
// upstream changed (AgentSession.ResetPipes).
var ErrNoPipe = errors.New("tunnel: the upstream cannot be piped now")

// errPipeOff is the edge's side of ErrNoPipe.
var errPipeOff = errors.New("tunnel: the agent does not pipe now")

// pipes is the edge's pool of pipes to one agent.
type pipes struct {
	s      *v2Edge
	off    atomic.Bool                     // the agent refused a pipe: until pipe_reset
	client atomic.Pointer[h1client.Client] // replaced, the old one closed, at pipe_reset
	mu     sync.Mutex                      // orders reset and close
	closed bool                            // guarded by mu
}

func newPipes(s *v2Edge) *pipes {
	p := &pipes{s: s}
	p.client.Store(p.newClient())
	return p
}

// newClient returns a client whose connections are pipes: idle ones
// bounded (a quarter of the session's streams, at most 256; each counts
// as a stream, and they are closed when a new stream finds the limit
// reached: acquireStream) and closed after h1client.IdleTimeout (the
// agent's own for its local connections, each pipe being one), response
// heads bounded as the agent's HTTP/2 responses are. No response header
// timeout: the agent keeps it, with its own value (agent/pipe.go).
func (p *pipes) newClient() *h1client.Client {
	return h1client.New(&http.Transport{
		DialContext:            p.dial,
		MaxIdleConnsPerHost:    max(1, min(256, p.s.cfg.MaxStreams/4)),
		IdleConnTimeout:        h1client.IdleTimeout,
		ReadBufferSize:         pipeBuffer,
		WriteBufferSize:        pipeBuffer,
		MaxResponseHeaderBytes: int64(p.s.cfg.MaxHeaderBytes),
	}, "tunnel: pipe")
}

// pipeable reports whether req may take a pipe: GET or HEAD without a
// body, a request the lean client takes (valid fields, no upgrade, no
// Expect), and at most one Cookie field (the HTTP/2 path joins them into
// one, as an HTTP/1.1 server expects).
func pipeable(req *http.Request) bool {
	if req.Method != http.MethodGet && req.Method != http.MethodHead {
		return false
	}
	if req.Body != nil && req.Body != http.NoBody || req.ContentLength != 0 || len(req.Header["Cookie"]) > 1 {
		return false
	}
	return h1client.Lean(req)
}

// roundTrip carries req on a pipe; errPipeOff when the agent refused one
// (req is then untouched, for its own stream).
func (p *pipes) roundTrip(req *http.Request) (*http.Response, error) {
	resp, err := p.client.Load().RoundTrip(req)
	if err != nil {
		if errors.Is(err, errPipeOff) {
			p.off.Store(true)
			return nil, errPipeOff
		}
		return nil, err
	}
	if cb, ok := resp.Body.(pendingBody); ok {
		resp.Body = &pipeBody{pendingBody: cb}
	}
	return resp, nil
}

// reset drops the pipes open until now, at the agent's pipe_reset: the
// idle ones are closed, those in use are closed when their response ends,
// and new ones go where the agent's upstream now is.
func (p *pipes) reset() {
	p.mu.Lock()
	old := p.client.Load()
	if !p.closed {
		p.client.Store(p.newClient())
	}
	p.mu.Unlock()
	old.Close()
	p.off.Store(false)
}

// closeIdle closes the idle pipes, and returns how many there were.
func (p *pipes) closeIdle() int {
	return p.client.Load().CloseIdle()
}

// close closes every pipe, with the session.
func (p *pipes) close() {
	p.mu.Lock()
	p.closed = true
	c := p.client.Load()
	p.mu.Unlock()
	c.Close()
}

// dial opens a pipe: a stream the agent pipes to its local server.
func (p *pipes) dial(ctx context.Context, _, _ string) (net.Conn, error) {
	resp, pw, cancel, err := p.s.openDuplex(ctx, "pipe", pipeHeader, "1")
	if err != nil {
		return nil, err
	}
	st := &v2Stream{body: resp.Body, r: tcpChunkReader{r: resp.Body}, w: pw, cancel: cancel, release: p.s.release}
	if resp.StatusCode != http.StatusOK {
		reason := resp.Header.Get(tcpErrorHeader)
		st.Close()
		if reason == pipeOffReason {
			return nil, errPipeOff
		}
		return nil, dialError(reason)
	}
	rb, _ := resp.Body.(waitBody)
	return &pipeConn{v2Stream: st, wb: rb}, nil
}

// waitBody is a response body that can wait for its next bytes without
// taking them (h2cBody).
type waitBody interface {
	ReadyBody
	wait()
}

// pipeConn is a pipe at the edge, as the lean client's connection.
type pipeConn struct {
	*v2Stream
	wb waitBody // the stream's body, nil if it cannot wait (not the edge's HTTP/2 client's)
}

// Open reports whether an idle pipe can take a request (h1client.Opener):
// the agent has sent nothing since its last response, and not its end.
func (c *pipeConn) Open() bool {
	return c.wb != nil && c.r.left == 0 && !c.r.eof && !c.wb.Ready()
}

// wait waits for the agent's next bytes, holding no buffer (not after its
// end: the chunk reader has that without them).
func (c *pipeConn) wait() {
	if c.wb != nil && !c.r.eof {
		c.wb.wait()
	}
}

type pipeAddr struct{}

func (pipeAddr) Network() string { return "sluice-pipe" }
func (pipeAddr) String() string  { return "agent" }

func (*pipeConn) LocalAddr() net.Addr  { return pipeAddr{} }
func (*pipeConn) RemoteAddr() net.Addr { return pipeAddr{} }

// Deadlines are not kept: the pipe client sets none (the agent keeps the
// response header timeout), and the request's context ends a pipe.
func (*pipeConn) SetDeadline(time.Time) error      { return nil }
func (*pipeConn) SetReadDeadline(time.Time) error  { return nil }
func (*pipeConn) SetWriteDeadline(time.Time) error { return nil }

// pendingBody is the lean client's response body (h1client): Pending
// reports whether a read can go on without the connection's next bytes,
// and Conn is the connection it reads.
type pendingBody interface {
	io.ReadCloser
	ReadyBody
	Pending() bool
	Conn() net.Conn
}

// pipeBody hands a pipe's response body to the Proxy as a chunkBody: it
// waits for the agent's next bytes holding no buffer (the stream's own
// chunks hold them), then reads them through a small pooled buffer, or a
// large one of the proxy's while they flow (the last read filled its
// buffer), given back after each write: a held stream holds no copy
// buffer at the edge.
type pipeBody struct {
	pendingBody
	flowing bool
}

func (b *pipeBody) writeNext(w io.Writer, buffers *BufferPool) (int, error) {
	if !b.Pending() {
		if c, ok := b.Conn().(*pipeConn); ok {
			c.wait()
		}
	}
	var buf []byte
	if b.flowing && buffers != nil {
		if buf = buffers.Get(); len(buf) <= smallBufferSize {
			buffers.Put(buf)
			buf = nil
		} else {
			defer buffers.Put(buf)
		}
	}
	if buf == nil {
		small := smallBuffers.Get().(*[]byte)
		defer smallBuffers.Put(small)
		buf = *small
	}
	n, err := b.Read(buf)
	b.flowing = n == len(buf)
	if n > 0 {
		if _, werr := w.Write(buf[:n]); werr != nil {
			return n, werr
		}
	}
	return n, err
}

var _ chunkBody = (*pipeBody)(nil)

// servePipe serves a pipe at the agent: dial (DialConfig.Pipe) reaches
// the local server, and the stream is pumped to it as a TCP connection's.
// ErrNoPipe refuses it with pipeOffReason.
func servePipe(w http.ResponseWriter, r *http.Request, dial func(context.Context) (net.Conn, error)) {
	err := errNoPipe
	var conn net.Conn
	if dial != nil {
		conn, err = dial(r.Context())
	}
	if err != nil {
		reason := tcpReason(err)
		if errors.Is(err, ErrNoPipe) {
			reason = pipeOffReason
		}
		w.Header().Set(tcpErrorHeader, reason)
		w.WriteHeader(http.StatusBadGateway)
		return
	}
	pumpStream(w, r, conn)
}

// errNoPipe refuses a pipe at an agent that did not offer them.
var errNoPipe = errors.New("this agent does not pipe")

// writePipeReset sends the agent's pipe_reset.
func writePipeReset(conn *WSConn, timeout time.Duration) error {
	return conn.WriteText(wire.AppendFrame(nil, &wire.Frame{Type: wire.TypePipeReset}, wire.EncodeOptions{}), timeout)
}
