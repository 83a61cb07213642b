// Package h1client is a lean HTTP/1.1 client: the agent's for its local
// server (agent/upstream.go), and the edge's for the requests it carries
// as bytes through a pipe (tunnel/pipe.go, docs/protocol.md "Pipes").
package h1client

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/net/http/httpguts"

	"github.com/sluicehq/sluice/internal/reqctx"
)

// BodyMax is the largest request body the client takes (Lean): it
// writes the body before it reads the response, so the body must fit in
// the sockets' buffers whatever the server does (a server that answers
// without reading an upload would otherwise leave the write blocked).
const BodyMax = 64 << 10

// IdleTimeout is the idle timeout of connections to a local server (the
// agent's, and the edge's pipes, which end at one): shorter than the
// keep-alive of common local servers (Node.js and uvicorn close idle
// connections after 5 s), since reusing one that the server is closing
// fails a request that cannot be retried, such as a POST with a streamed
// body (502).
const IdleTimeout = 4 * time.Second

// ErrHeadTooLarge ends a connection whose response heads exceed the
// limit (net/http's MaxResponseHeaderBytes).
var ErrHeadTooLarge = errors.New("the server's response head is too large")

// Lean reports whether req takes the lean client: http://, a
// valid request (net/http's transport words the errors of the others),
// no upgrade, no Expect (100-continue waits for the server between head
// and body), and no body or a small one of known length. Everything
// else keeps net/http's transport, whose goroutines write a request while
// they read its response.
func Lean(req *http.Request) bool {
	if req.URL.Scheme != "http" || req.URL.Host == "" || req.Method == http.MethodConnect ||
		!validMethod(req.Method) || req.Trailer != nil || len(req.TransferEncoding) > 0 {
		return false
	}
	if req.Body == nil || req.Body == http.NoBody {
		if req.ContentLength != 0 {
			return false
		}
	} else if req.ContentLength <= 0 || req.ContentLength > BodyMax {
		return false
	}
	for k, vv := range req.Header {
		if !httpguts.ValidHeaderFieldName(k) {
			return false
		}
		for _, v := range vv {
			if !httpguts.ValidHeaderFieldValue(v) {
				return false
			}
		}
		switch k {
		case "Expect", "Upgrade":
			return false
		case "Connection":
			if httpguts.HeaderValuesContainsToken(vv, "Upgrade") {
				return false
			}
		}
	}
	return true
}

// validMethod is net/http's rule for a request method: a token.
func validMethod(m string) bool {
	if m == "" {
		return true // GET
	}
	for i := 0; i < len(m); i++ {
		if !httpguts.IsTokenRune(rune(m[i])) {
			return false
		}
	}
	return true
}

// Client is a lean HTTP/1.1 client for the agent's common case: it
// writes the request and reads the response head in the caller's
// goroutine, on a pooled keep-alive connection, and starts no goroutine
// of its own. An idle connection holds its net.Conn and a small read
// buffer; the write buffer is taken from a pool only while a request is
// written. net/http's transport, by contrast, hands each request to a
// connection's write goroutine and its response back from a read
// goroutine, and keeps both goroutines (and their buffers) per
// connection, idle or held by a stream.
//
// It keeps net/http's behaviour where the agent relies on it: response
// header timeout, idle timeout and idle limit per host, no added
// Accept-Encoding, 1xx responses given to httptrace's Got1xxResponse,
// Connection: close from either side, a connection closed when a body is
// closed before its end or the request's context ends, and one retry on
// a fresh connection when a reused one turns out closed by the server
// and the request can be sent again.
//
// The pool has one owner, mu; a connection out of the pool is owned by
// the request using it, then by its response body. Its methods are safe
// to call concurrently.
type Client struct {
	prefix        string // of its errors
	dial          func(ctx context.Context, network, addr string) (net.Conn, error)
	headerTimeout time.Duration // ResponseHeaderTimeout; 0: none
	idleTimeout   time.Duration // an idle connection older than this is closed, never reused
	maxIdle       int           // idle connections kept per host
	readBuffer    int
	maxHead       int64     // bytes of response heads (1xx and final) per request
	writers       sync.Pool // of *bufio.Writer

	mu     sync.Mutex
	idle   map[string][]*h1Conn // by host:port, the most recently used last
	closed bool                 // Close was called: connections are not kept
}

// New returns a client with tr's settings: its dialer, response header
// timeout, idle timeout, idle connections per host, read and write buffer
// sizes and limit on response heads. Its errors begin with prefix, such
// as "agent: upstream".
func New(tr *http.Transport, prefix string) *Client {
	c := &Client{
		prefix:        prefix,
		dial:          tr.DialContext,
		headerTimeout: tr.ResponseHeaderTimeout,
		idleTimeout:   tr.IdleConnTimeout,
		maxIdle:       tr.MaxIdleConnsPerHost,
		readBuffer:    tr.ReadBufferSize,
		maxHead:       tr.MaxResponseHeaderBytes,
		idle:          make(map[string][]*h1Conn),
	}
	if c.dial == nil {
		c.dial = (&net.Dialer{}).DialContext
	}
	if c.maxIdle <= 0 {
		c.maxIdle = http.DefaultMaxIdleConnsPerHost
	}
	if c.readBuffer <= 0 {
		c.readBuffer = 4 << 10 // net/http's default
	}
	if c.maxHead <= 0 {
		c.maxHead = 10 << 20 // net/http's default
	}
	size := tr.WriteBufferSize
	if size <= 0 {
		size = 4 << 10
	}
	c.writers.New = func() any { return bufio.NewWriterSize(nil, size) }
	return c
}

// h1Conn is one connection to the local server.
type h1Conn struct {
	client *Client
	addr   string // host:port, the pool's key
	conn   net.Conn
	close  func()        // closes conn, for the request's context.AfterFunc (made once)
	br     *bufio.Reader // reads through the h1Conn (Read), so that heads are bounded
	reused bool          // it served a request before this one
	peek   *peeker       // asks the idle socket whether it is open (made on first reuse)

	// headLeft bounds what a response head may still take; -1 while no
	// head is read. Only the connection's owner touches it.
	headLeft int64

	// The pool's state, under client.mu.
	idle      bool
	idleSince time.Time
	idleTimer *time.Timer // closes the connection when it has been idle too long
}

// Read is the read buffer's source: the connection, bounded while a head
// is read.
func (c *h1Conn) Read(p []byte) (int, error) {
	if c.headLeft < 0 {
		return c.conn.Read(p)
	}
	if c.headLeft == 0 {
		return 0, ErrHeadTooLarge
	}
	if int64(len(p)) > c.headLeft {
		p = p[:c.headLeft]
	}
	n, err := c.conn.Read(p)
	c.headLeft -= int64(n)
	return n, err
}

func (cl *Client) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	if err := ctx.Err(); err != nil {
		closeRequestBody(req)
		return nil, context.Cause(ctx)
	}
	addr := req.URL.Host
	if req.URL.Port() == "" {
		addr = net.JoinHostPort(req.URL.Hostname(), "80")
	}
	for fresh := false; ; fresh = true {
		c, err := cl.get(ctx, addr, fresh)
		if err != nil {
			closeRequestBody(req)
			return nil, err
		}
		resp, err := c.roundTrip(req)
		if err == nil {
			return resp, nil
		}
		var re *retryError
		if !errors.As(err, &re) {
			return nil, err
		}
		// A reused connection the server had closed: once again, on a
		// new connection (which never asks for another retry).
	}
}

// retryError is the failure of a request on a reused connection that the
// server had closed before it read the request: sent again, on another
// connection.
type retryError struct{ err error }

func (e *retryError) Error() string { return e.err.Error() }
func (e *retryError) Unwrap() error { return e.err }

// roundTrip sends req on c and reads its response head. It owns c: on an
// error it closes c; on success c goes to the response body, or back to
// the pool when the response has none.
func (c *h1Conn) roundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	stop := reqctx.AfterFunc(ctx, c.close)
	fail := func(op string, err error, retry bool) (*http.Response, error) {
		c.conn.Close()
		if !stop.Stop() {
			return nil, fmt.Errorf("%s: %w", c.client.prefix, context.Cause(ctx))
		}
		err = fmt.Errorf("%s: %s: %w", c.client.prefix, op, err)
		if retry {
			return nil, &retryError{err}
		}
		return nil, err
	}
	bodyless := req.Body == nil || req.Body == http.NoBody

	var err error
	h := heads.Get().(*requestHead)
	var ok bool
	if h.b, h.keys, ok = appendRequestHead(h.b[:0], req, h.keys); ok {
		_, err = c.conn.Write(h.b)
	} else {
		bw := c.client.writers.Get().(*bufio.Writer)
		bw.Reset(c.conn)
		err = req.Write(bw)
		if err == nil {
			err = bw.Flush()
		}
		bw.Reset(nil)
		c.client.writers.Put(bw)
	}
	if cap(h.b) <= 8<<10 {
		clear(h.keys)
		heads.Put(h)
	}
	if err != nil {
		// A request without a body is written in full or not at all as
		// far as the server goes (its head ends with its last byte).
		return fail("write request", err, c.reused && bodyless)
	}

	if t := c.client.headerTimeout; t > 0 {
		c.conn.SetReadDeadline(time.Now().Add(t))
	}
	c.headLeft = c.client.maxHead
	if _, err := c.br.Peek(1); err != nil {
		// Nothing came back: on a reused connection the server may have
		// closed it as the request went out (its idle timeout).
		var ne net.Error
		retry := c.reused && bodyless && replayable(req) && !(errors.As(err, &ne) && ne.Timeout())
		return fail("read response", err, retry)
	}
	trace := httptrace.ContextClientTrace(ctx)
	var resp *http.Response
	for {
		if resp, err = http.ReadResponse(c.br, req); err != nil {
			return fail("read response", err, false)
		}
		if resp.StatusCode < 100 || resp.StatusCode > 199 || resp.StatusCode == http.StatusSwitchingProtocols {
			break
		}
		// An informational response (103 Early Hints; a 100 nobody
		// asked for): to the caller's trace, then the next one. A caller
		// who sees them bounds their number; otherwise all heads
		// together are bounded, as in net/http.
		if trace != nil && trace.Got1xxResponse != nil {
			if err := trace.Got1xxResponse(resp.StatusCode, textproto.MIMEHeader(resp.Header)); err != nil {
				return fail("1xx response", err, false)
			}
			c.headLeft = c.client.maxHead
		}
	}
	c.headLeft = -1
	if c.client.headerTimeout > 0 {
		c.conn.SetReadDeadline(time.Time{})
	}

	keep := !resp.Close && !req.Close && resp.StatusCode != http.StatusSwitchingProtocols &&
		!httpguts.HeaderValuesContainsToken(req.Header["Connection"], "close")
	if resp.Body == http.NoBody {
		if !stop.Stop() {
			keep = false // the context ended: the connection is closed
		}
		c.release(keep)
		return resp, nil
	}
	resp.Body = &h1Body{c: c, body: resp.Body, ctx: ctx, stop: stop, keep: keep, sized: resp.ContentLength >= 0}
	return resp, nil
}

// requestHead is appendRequestHead's scratch space.
type requestHead struct {
	b    []byte
	keys []string
}

var heads = sync.Pool{New: func() any { return &requestHead{b: make([]byte, 0, 1<<10)} }}

// replayable is net/http's rule for sending a request again after its
// connection failed: a method without side effects, or a request that
// says it is idempotent.
func replayable(req *http.Request) bool {
	switch req.Method {
	case "", http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	return req.Header["Idempotency-Key"] != nil || req.Header["X-Idempotency-Key"] != nil
}

func closeRequestBody(req *http.Request) {
	if req.Body != nil {
		req.Body.Close()
	}
}

// h1Body is a response body on an h1Conn. At its end the connection goes
// back to the pool (unless either side said close); closed before its
// end, or when the request's context ends, the connection is closed.
type h1Body struct {
	c      *h1Conn
	body   io.ReadCloser // http.ReadResponse's, which reads the trailers at the end
	ctx    context.Context
	stop   reqctx.Stop // stops the context's AfterFunc
	keep   bool
	sized  bool        // the body has a Content-Length
	done   atomic.Bool // the connection was released or closed
	closed atomic.Bool
}

// Ready reports whether a read returns at once (tunnel.ReadyBody): the
// body was closed or ended, or it has a length and bytes of it are read
// already (a chunked body's buffered bytes may be half a chunk's size
// line, on which a read waits).
func (b *h1Body) Ready() bool {
	return b.closed.Load() || b.done.Load() || (b.sized && b.c.br.Buffered() > 0)
}

// Pending reports whether a read can go on without the connection's
// next bytes: some are read already (a head's worth at most), or the
// body was closed or ended.
func (b *h1Body) Pending() bool {
	return b.closed.Load() || b.done.Load() || b.c.br.Buffered() > 0
}

// Conn is the connection the body is read from.
func (b *h1Body) Conn() net.Conn { return b.c.conn }

func (b *h1Body) Read(p []byte) (int, error) {
	if b.closed.Load() {
		return 0, http.ErrBodyReadAfterClose
	}
	n, err := b.body.Read(p)
	switch {
	case err == nil:
	case err == io.EOF:
		b.finish(true)
	default:
		if b.ctx.Err() != nil {
			err = context.Cause(b.ctx)
		}
		b.finish(false)
	}
	return n, err
}

func (b *h1Body) Close() error {
	b.closed.Store(true)
	b.finish(false)
	return nil
}

// finish releases the connection once: to the pool if the body ended and
// the connection may be reused, closed otherwise.
func (b *h1Body) finish(eof bool) {
	if b.done.Swap(true) {
		return
	}
	if !b.stop.Stop() {
		eof = false // the context ended: the connection is closed
	}
	b.c.release(eof && b.keep)
}

// release hands c back to the pool, or closes it.
func (c *h1Conn) release(keep bool) {
	if !keep {
		c.conn.Close()
		return
	}
	cl := c.client
	cl.mu.Lock()
	list := cl.idle[c.addr]
	if len(list) >= cl.maxIdle || cl.closed {
		cl.mu.Unlock()
		c.conn.Close()
		return
	}
	cl.idle[c.addr] = append(list, c)
	c.idle, c.idleSince = true, time.Now()
	if cl.idleTimeout > 0 {
		if c.idleTimer == nil {
			c.idleTimer = time.AfterFunc(cl.idleTimeout, c.expire)
		} else {
			c.idleTimer.Reset(cl.idleTimeout)
		}
	}
	cl.mu.Unlock()
}

// expire closes c if it is still idle and has been for the idle timeout
// (a timer that fires late, after c was taken and put back, finds it
// idle for less and leaves it to the timer set then).
func (c *h1Conn) expire() {
	cl := c.client
	cl.mu.Lock()
	if !c.idle || time.Since(c.idleSince) < cl.idleTimeout {
		cl.mu.Unlock()
		return
	}
	cl.removeIdleLocked(c)
	cl.mu.Unlock()
	c.conn.Close()
}

func (cl *Client) removeIdleLocked(c *h1Conn) {
	c.idle = false
	list := cl.idle[c.addr]
	for i, x := range list {
		if x == c {
			copy(list[i:], list[i+1:])
			list[len(list)-1] = nil
			list = list[:len(list)-1]
			break
		}
	}
	if len(list) == 0 {
		delete(cl.idle, c.addr)
	} else {
		cl.idle[c.addr] = list
	}
}

// get returns an idle connection to addr that is still open, or a new
// one (always a new one when fresh).
func (cl *Client) get(ctx context.Context, addr string, fresh bool) (*h1Conn, error) {
	for !fresh {
		cl.mu.Lock()
		list := cl.idle[addr]
		if len(list) == 0 {
			cl.mu.Unlock()
			break
		}
		c := list[len(list)-1]
		cl.removeIdleLocked(c)
		stale := cl.idleTimeout > 0 && time.Since(c.idleSince) >= cl.idleTimeout
		cl.mu.Unlock()
		if c.idleTimer != nil {
			c.idleTimer.Stop()
		}
		if stale || !c.open() {
			c.conn.Close()
			continue
		}
		c.reused = true
		return c, nil
	}
	conn, err := cl.dial(ctx, "tcp", addr)
	if err != nil {
		if ctx.Err() != nil {
			err = context.Cause(ctx)
		}
		return nil, fmt.Errorf("%s: %w", cl.prefix, err)
	}
	c := &h1Conn{client: cl, addr: addr, conn: conn, headLeft: -1}
	c.close = func() { conn.Close() }
	c.br = bufio.NewReaderSize(c, cl.readBuffer)
	return c, nil
}

// Opener is a connection that is not a socket (a pipe of the tunnel) and
// can tell whether its peer closed it or sent something since it went
// idle: Open reports it, without waiting and without taking a byte.
type Opener interface {
	Open() bool
}

// open reports whether an idle connection can take a request: the server
// has neither closed it nor sent anything (net/http's transport learns
// the same from the read it keeps pending on every idle connection).
// A connection that is an Opener is asked; where the socket cannot be
// asked, it is taken as open, and a request that fails on it is retried
// when it can be.
func (c *h1Conn) open() bool {
	if c.br.Buffered() > 0 {
		return false
	}
	if o, ok := c.conn.(Opener); ok {
		return o.Open()
	}
	if c.peek == nil {
		sc, ok := c.conn.(syscall.Conn)
		if !ok {
			return true
		}
		rc, err := sc.SyscallConn()
		if err != nil {
			return false
		}
		c.peek = newPeeker(rc)
	}
	return c.peek.Open()
}

// Idle returns the idle connections to addr, the most recently used
// last, as Openers: asking one is what the client does before it reuses
// it (for tests).
func (cl *Client) Idle(addr string) []Opener {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	list := make([]Opener, len(cl.idle[addr]))
	for i, c := range cl.idle[addr] {
		list[i] = idleConn{c}
	}
	return list
}

// idleConn is an idle connection as Idle shows it.
type idleConn struct{ c *h1Conn }

func (i idleConn) Open() bool { return i.c.open() }

// Close closes every idle connection, and each connection in use once its
// request is done: the client is not to be used again.
func (cl *Client) Close() {
	cl.mu.Lock()
	cl.closed = true
	cl.mu.Unlock()
	cl.CloseIdleConnections()
}

// CloseIdleConnections closes every idle connection.
func (cl *Client) CloseIdleConnections() { cl.CloseIdle() }

// CloseIdle closes every idle connection, and returns how many there were.
func (cl *Client) CloseIdle() int {
	cl.mu.Lock()
	var conns []*h1Conn
	for _, list := range cl.idle {
		for _, c := range list {
			c.idle = false
			if c.idleTimer != nil {
				c.idleTimer.Stop()
			}
			conns = append(conns, c)
		}
	}
	clear(cl.idle)
	cl.mu.Unlock()
	for _, c := range conns {
		c.conn.Close()
	}
	return len(conns)
}
