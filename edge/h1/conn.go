package h1

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http/httpguts"

	"github.com/sluicehq/sluice/internal/reqctx"
)

// headBufferSize is the largest request head served here (a larger one
// goes to Fallback, which allows up to its MaxHeaderBytes), and the buffer
// a connection holds while it waits for a head.
const headBufferSize = 4 << 10

var headBuffers = sync.Pool{New: func() any { b := make([]byte, headBufferSize); return &b }}

// headReaders parse a head already read in full (http.ReadRequest wants a
// bufio.Reader).
var headReaders = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, headBufferSize) }}

// conn is one connection served here. Its goroutine reads a head, serves
// the request, and loops; bytes read past a head wait in buf.
type conn struct {
	s      *Server
	rwc    net.Conn
	since  time.Time            // accepted (read by Shutdown)
	remote string               // RemoteAddr, once asked
	tls    *tls.ConnectionState // a TLS connection's, after its handshake

	// Owned by the connection's goroutine, and by the request body's
	// reader while the handler runs.
	headFrom time.Time // the first head's ReadHeaderTimeout counts from it
	buf      *[]byte   // pooled; nil while no byte waits
	r, w     int       // buf[r:w] read, not yet used
	served   int       // requests served
	lastPOST bool      // the last one was a POST
	headRdr  bytes.Reader

	idle atomic.Bool // waiting for a request (Shutdown closes it)

	// The background read (while a request is served and its body was
	// read: a 1-byte read that sees the client leave), guarded by bgMu.
	bgMu    sync.Mutex
	bgCond  sync.Cond
	bgTimer *time.Timer // runs backgroundRead
	armed   bool        // bgTimer is set to begin it
	inRead  bool
	aborted bool
	hasByte bool // the read got the next request's first byte
	byteBuf [1]byte
	readErr error           // the connection's reading failed
	reqCtx  *reqctx.Context // the current request's context (Cancel ends it)
}

// serve runs the connection until it closes or goes to Fallback.
func (c *conn) serve() {
	defer c.s.forget(c)
	handed := false
	defer func() {
		if handed {
			return
		}
		if p := recover(); p != nil && p != http.ErrAbortHandler {
			buf := make([]byte, 64<<10)
			buf = buf[:runtime.Stack(buf, false)]
			c.logf("http: panic serving %v: %v\n%s", c.rwc.RemoteAddr(), p, buf)
		}
		c.rwc.Close()
		c.abortPendingRead() // after a panic: the background read's timer
		c.release()
	}()
	c.idle.Store(true) // (a new connection: for Shutdown, after newConnGrace)
	if tc, ok := c.rwc.(*tls.Conn); ok {
		if !c.handshake(tc) {
			return
		}
		if proto := c.tls.NegotiatedProtocol; proto != "" && proto != "http/1.1" && proto != "http/1.0" {
			// HTTP/2 (or another protocol ALPN chose) is net/http's.
			handed = true
			c.s.handoff.hand(tc)
			return
		}
	}
	ctx := context.WithValue(c.s.baseCtx, http.LocalAddrContextKey, c.rwc.LocalAddr())
	for {
		c.idle.Store(true)
		end, ok := c.readHead()
		if !ok {
			return
		}
		req, lean := c.parse(end)
		if !lean {
			handed = true
			c.handOff()
			return
		}
		c.idle.Store(false)
		c.lastPOST = req.Method == "POST"
		if !c.serveRequest(ctx, req, end) || c.s.isStopping() {
			return
		}
		c.served++
	}
}

// handshake runs a TLS connection's handshake as net/http's server does:
// within ReadHeaderTimeout, a plain HTTP request answered with a 400, a
// failure logged.
func (c *conn) handshake(tc *tls.Conn) bool {
	if d := c.s.ReadHeaderTimeout; d > 0 {
		dl := time.Now().Add(d)
		c.rwc.SetReadDeadline(dl)
		c.rwc.SetWriteDeadline(dl)
	}
	if err := tc.HandshakeContext(c.s.baseCtx); err != nil {
		reason := err.Error()
		var re tls.RecordHeaderError
		if errors.As(err, &re) && re.Conn != nil && looksLikeHTTP(re.RecordHeader) {
			io.WriteString(re.Conn, "HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n")
			re.Conn.Close()
			reason = "client sent an HTTP request to an HTTPS server"
		}
		c.logf("http: TLS handshake error from %s: %v", c.rwc.RemoteAddr(), reason)
		return false
	}
	if c.s.ReadHeaderTimeout > 0 {
		c.rwc.SetReadDeadline(time.Time{})
		c.rwc.SetWriteDeadline(time.Time{})
	}
	st := tc.ConnectionState()
	c.tls = &st
	c.headFrom = time.Now() // the first head's ReadHeaderTimeout counts from here
	return true
}

// looksLikeHTTP is net/http's guess that a TLS record header is a plain
// HTTP request.
func looksLikeHTTP(hdr [5]byte) bool {
	switch string(hdr[:]) {
	case "GET /", "HEAD ", "POST ", "PUT /", "OPTIO":
		return true
	}
	return false
}

// readHead reads until buf holds a whole request head; it returns the
// head's end. false: the connection is done (the client closed it or
// timed out; or a head too large to be served here, handed to Fallback).
func (c *conn) readHead() (end int, ok bool) {
	if c.buf == nil {
		c.buf = headBuffers.Get().(*[]byte)
	}
	b := *c.buf
	if c.r > 0 {
		c.w = copy(b, b[c.r:c.w])
		c.r = 0
	}
	c.bgMu.Lock()
	if c.hasByte && c.w < len(b) {
		// The background read's byte came after those buffered.
		b[c.w] = c.byteBuf[0]
		c.w++
		c.hasByte = false
	}
	rerr := c.readErr
	c.bgMu.Unlock()
	const (
		none = iota
		idle
		head
	)
	deadline := none
	// On a kept-alive connection net/http's server waits for 4 bytes
	// before it reads a head (and closes without a word if they do not
	// come); after a POST it drops the CR and LF bytes among them (RFC
	// 9112 2.2: old clients end a body with one).
	peeked := c.served == 0
	for {
		if !peeked && c.w >= 4 {
			peeked = true
			if c.lastPOST {
				k := 0
				for k < 4 && (b[k] == '\r' || b[k] == '\n') {
					k++
				}
				c.w = copy(b, b[k:c.w])
			}
		}
		if !peeked {
			// Not yet 4 bytes: no head to look for.
		} else if end := headEnd(b[:c.w]); end >= 0 {
			if deadline != none {
				c.rwc.SetReadDeadline(time.Time{})
			}
			return end, true
		}
		if c.w == len(b) {
			// Too large a head for here: Fallback answers it.
			return -1, true
		}
		if rerr == io.EOF && peeked && c.w > 0 {
			// A head cut short: net/http's answer (400), from the bytes.
			return -1, true
		}
		if rerr != nil {
			return 0, false
		}
		// ReadHeaderTimeout counts from a new connection's accept, or
		// from a kept-alive one's first byte of the head; before that
		// byte, IdleTimeout. Each is set once: a slow head gains nothing.
		switch {
		case deadline == head:
		case c.served == 0:
			c.setReadDeadline(c.headFrom, c.s.ReadHeaderTimeout)
			deadline = head
		case c.w > 0:
			c.setReadDeadline(time.Now(), c.s.ReadHeaderTimeout)
			deadline = head
		case deadline == none:
			d := c.s.IdleTimeout
			if d <= 0 {
				d = c.s.ReadHeaderTimeout
			}
			c.setReadDeadline(time.Now(), d)
			deadline = idle
		}
		n, err := c.rwc.Read(b[c.w:])
		c.w += n
		rerr = err
	}
}

// setReadDeadline sets the read deadline from+d, or none for d <= 0.
func (c *conn) setReadDeadline(from time.Time, d time.Duration) {
	if d > 0 {
		c.rwc.SetReadDeadline(from.Add(d))
	} else {
		c.rwc.SetReadDeadline(time.Time{})
	}
}

// headEnd returns the length of the request head at the start of b (up
// to and including its empty line, as net/textproto reads lines: ending in
// "\n", an "\r" before it dropped), or -1 if b holds no empty line yet.
func headEnd(b []byte) int {
	i := bytes.IndexByte(b, '\n')
	for i >= 0 {
		rest := b[i+1:]
		switch {
		case len(rest) > 0 && rest[0] == '\n':
			return i + 2
		case len(rest) > 1 && rest[0] == '\r' && rest[1] == '\n':
			return i + 3
		}
		j := bytes.IndexByte(rest, '\n')
		if j < 0 {
			return -1
		}
		i += 1 + j
	}
	return -1
}

// parse parses the head b[r:r+end] as net/http's server does and reports
// whether the request is served here: HTTP/1.1, well-formed by every
// check of net/http's server, with no body or a Content-Length one, no
// Expect, no upgrade, and Lean's yes. Anything else is Fallback's,
// including every error page for a malformed request.
func (c *conn) parse(end int) (*http.Request, bool) {
	if end < 0 {
		return nil, false
	}
	c.headRdr.Reset((*c.buf)[c.r : c.r+end])
	br := headReaders.Get().(*bufio.Reader)
	br.Reset(&c.headRdr)
	req, err := http.ReadRequest(br)
	whole := br.Buffered() == 0 && c.headRdr.Len() == 0 // the parser took the head to its end
	br.Reset(nil)
	headReaders.Put(br)
	if err != nil || !whole || !servedHere(req) || !c.s.Lean(req) {
		return nil, false
	}
	return req, true
}

// servedHere reports whether req, as http.ReadRequest parsed it, is one
// this server serves as net/http's would: everything net/http's server
// checks beyond ReadRequest holds, and nothing needs what only it does.
func servedHere(req *http.Request) bool {
	if req.ProtoMajor != 1 || req.ProtoMinor != 1 || req.Method == "CONNECT" || req.Method == "PRI" || req.RequestURI == "*" {
		return false
	}
	if len(req.TransferEncoding) > 0 || req.ContentLength < 0 {
		return false
	}
	// Origin form only ("/path"): then req.Host is the Host field's (in
	// absolute form it is the URL's, and whether a Host field came, which
	// net/http's server requires, no longer shows).
	if !strings.HasPrefix(req.RequestURI, "/") || req.URL.Host != "" {
		return false
	}
	if !httpguts.ValidHostHeader(req.Host) || req.Host == "" {
		return false
	}
	for k, vv := range req.Header {
		switch k {
		case "Host", "Expect", "Upgrade", "Http2-Settings", "Transfer-Encoding":
			// Host: ReadRequest moved a single one to req.Host; one left
			// here was a second.
			return false
		}
		if !httpguts.ValidHeaderFieldName(k) {
			return false
		}
		for _, v := range vv {
			if !httpguts.ValidHeaderFieldValue(v) {
				return false
			}
		}
	}
	return true
}

// handOff gives the connection, with every byte read and not used, to
// Fallback.
func (c *conn) handOff() {
	var rest []byte
	if c.buf != nil {
		rest = slices.Clone((*c.buf)[c.r:c.w])
	}
	c.bgMu.Lock()
	if c.hasByte {
		rest = append(rest, c.byteBuf[0])
		c.hasByte = false
	}
	c.bgMu.Unlock()
	c.release()
	pc := prefixConn{Conn: c.rwc, prefix: rest}
	if c.tls != nil {
		c.s.handoff.hand(&tlsPrefixConn{prefixConn: pc, state: c.tls})
		return
	}
	c.s.handoff.hand(&pc)
}

// release gives buf back to the pool.
func (c *conn) release() {
	if c.buf != nil {
		headBuffers.Put(c.buf)
		c.buf, c.r, c.w = nil, 0, 0
	}
}

// idleFor reports whether c waits for a request (a new connection: for
// longer than grace).
func (c *conn) idleFor(grace time.Duration) bool {
	if !c.idle.Load() {
		return false
	}
	return c.served > 0 || time.Since(c.since) > grace
}

func (c *conn) logf(format string, args ...any) {
	if l := c.s.Fallback.ErrorLog; l != nil {
		l.Printf(format, args...)
	}
}

// bgReadDelay is how long a request runs before the background read
// begins: most requests end sooner, and pay for no goroutine and no read
// for it. A client that leaves is seen this much later at most. 100 ms
// rather than 5: under load a small request's answer takes longer than
// 5 ms (10-12 ms with 50 clients on two cores), and the background read
// that then began for nearly every request (its goroutine, its read, the
// deadline that ends it) was 6-8 % of the edge's CPU per request.
const bgReadDelay = 100 * time.Millisecond

// startBackgroundRead arms the read that sees the client leave while the
// handler runs (its context is then cancelled), once the request's body
// was read.
func (c *conn) startBackgroundRead() {
	c.bgMu.Lock()
	defer c.bgMu.Unlock()
	if c.armed || c.inRead || c.readErr != nil || c.hasByte {
		return
	}
	c.armed = true
	if c.bgTimer == nil {
		c.bgTimer = time.AfterFunc(bgReadDelay, c.backgroundRead)
	} else {
		c.bgTimer.Reset(bgReadDelay)
	}
}

// backgroundRead is the background read, on the timer's goroutine.
func (c *conn) backgroundRead() {
	c.bgMu.Lock()
	if !c.armed {
		c.bgMu.Unlock()
		return // aborted before it began
	}
	c.armed = false
	c.inRead = true
	c.bgMu.Unlock()
	n, err := c.rwc.Read(c.byteBuf[:])
	c.bgMu.Lock()
	if n == 1 {
		c.hasByte = true // the next request's; it stays for readHead
	}
	if ne, ok := err.(net.Error); ok && c.aborted && ne.Timeout() {
		// abortPendingRead's own deadline.
	} else if err != nil {
		c.readErr = err
		if c.reqCtx != nil {
			c.reqCtx.Cancel()
		}
	}
	c.aborted = false
	c.inRead = false
	c.bgMu.Unlock()
	c.bgCond.Broadcast()
}

// aLongTimeAgo is a deadline in the past, which ends a blocked read.
var aLongTimeAgo = time.Unix(1, 0)

// abortPendingRead ends the background read and waits for it.
func (c *conn) abortPendingRead() {
	c.bgMu.Lock()
	defer c.bgMu.Unlock()
	if c.armed {
		c.armed = false
		c.bgTimer.Stop()
	}
	if !c.inRead {
		return
	}
	c.aborted = true
	c.rwc.SetReadDeadline(aLongTimeAgo)
	for c.inRead {
		c.bgCond.Wait()
	}
	c.rwc.SetReadDeadline(time.Time{})
}

// body is a request body of known length, read from the connection (the
// bytes after the head first).
type body struct {
	c         *conn
	mu        sync.Mutex
	remaining int64
	sawEOF    bool // read to its end, or to the client's early end
	closed    bool
}

func (b *body) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return 0, http.ErrBodyReadAfterClose
	}
	if b.sawEOF {
		return 0, io.EOF
	}
	if int64(len(p)) > b.remaining {
		p = p[:b.remaining]
	}
	c := b.c
	var n int
	var err error
	if c.buf != nil && c.r < c.w {
		n = copy(p, (*c.buf)[c.r:c.w])
		c.r += n
		if c.r == c.w {
			c.release()
		}
	} else {
		n, err = c.rwc.Read(p)
	}
	b.remaining -= int64(n)
	if b.remaining == 0 {
		b.sawEOF = true
		c.startBackgroundRead()
		return n, io.EOF
	}
	if err == io.EOF {
		// The client ended its side early; later reads see EOF, and the
		// connection's next read ends it (net/http's body does the same).
		b.sawEOF = true
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

// Close ends the body for its readers: reads after it fail.
func (b *body) Close() error {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	return nil
}

// finish ends the body when the handler returned, and reports whether it
// was read to its end (else the connection cannot serve another request).
// A read still blocked on the connection is ended first.
func (b *body) finish() bool {
	if !b.mu.TryLock() {
		b.c.rwc.SetReadDeadline(aLongTimeAgo)
		b.mu.Lock()
		// That read may have ended the body: the connection then serves
		// on, and its next reads must not meet this deadline.
		b.c.rwc.SetReadDeadline(time.Time{})
	}
	defer b.mu.Unlock()
	b.closed = true
	return b.sawEOF
}
