package tunnel

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"

	"github.com/sluicehq/sluice/internal/reqctx"
)

// The agent's end of protocol v2 is an HTTP/2 server (RFC 9113) of our own
// rather than golang.org/x/net/http2.Server, which hands every frame from
// a reader goroutine to a serve loop over a channel, and every handler
// write (headers, data) to that loop and back: several goroutine hand-offs
// per request. Here:
//
//   - one goroutine per connection reads and handles the frames (the read
//     loop), and one per stream runs its handler: nothing else (a handler
//     goroutine is kept for the next stream once its own ended, so that
//     its stack does not grow again);
//   - a handler writes its own frames: the header block is encoded under
//     the encoder's lock (wmu) and queued on the connection at once, DATA
//     frames are queued without any lock of ours; the connection (WSConn)
//     coalesces what is queued into WebSocket messages;
//   - the read loop never waits for the peer to read: its own frames (SETTINGS
//     and PING acknowledgements, WINDOW_UPDATEs, RST_STREAM, GOAWAY) are
//     queued without waiting for room (h2Out.queue), so that both ends can
//     never wait on each other's full buffers;
//   - a request body's bytes wait in pooled buffers taken only while bytes
//     wait, bounded by the window the server advertised.
//
// The edge's client (h2client.go) is built the same way, and both take
// the rules of HTTP/2 that do not depend on the end from h2conn.go; x/net's
// client and server speak the same protocol to both.

// h2Out is where the server's frames go: WSConn, or wrapConnOut's adapter.
type h2Out interface {
	// WriteBuffers queues the buffers, in order and unbroken by any other
	// write; it may wait for room.
	WriteBuffers(v [][]byte) (int, error)
	// queue queues p at once, without waiting for room.
	queue(p []byte) error
}

// connOut is the h2Out of a plain net.Conn (tests): writes go to the
// connection under a lock, and so queue waits as long as the connection's
// Write does (memPipe's never does).
type connOut struct {
	mu sync.Mutex
	c  net.Conn
}

func (o *connOut) WriteBuffers(v [][]byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	n := 0
	for _, b := range v {
		m, err := o.c.Write(b)
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

func (o *connOut) queue(p []byte) error {
	_, err := o.WriteBuffers([][]byte{p})
	return err
}

func wrapConnOut(c net.Conn) h2Out {
	if o, ok := c.(h2Out); ok {
		return o
	}
	return &connOut{c: c}
}

// Limits and sizes of the server.
const (
	// h2ResponseBuffer is how many body bytes a response holds before it
	// sends them (and, before the first, its headers): a small response
	// goes out as HEADERS and DATA together, as with x/net's server.
	h2ResponseBuffer = 4 << 10
	// h2MaxHeaderFrame is the largest header block fragment sent in one
	// frame (the smallest SETTINGS_MAX_FRAME_SIZE a peer may have).
	h2MaxHeaderFrame = 16 << 10
	// h2DefaultWindow and h2DefaultFrameSize are HTTP/2's initial values.
	h2DefaultWindow    = 65535
	h2DefaultFrameSize = 16 << 10
	h2MaxWindow        = 1<<31 - 1
	// h2ReadBuffer buffers the connection's reads (frame headers and
	// small frames in one read).
	h2ReadBuffer = 4 << 10
)

// h2Server serves one HTTP/2 connection. Its h2Conn says which fields the
// read loop alone touches and which mu and wmu guard (a stream's
// headersOut is wmu's too).
type h2Server struct {
	h2Conn
	conn    net.Conn
	handler http.Handler
	base    context.Context // the requests' values; never cancelled
	window  int32           // each stream's receive window, advertised
	remote  string
	logger  *slog.Logger

	// the read loop's own
	sawSettings bool
	goingAway   bool // the peer sent GOAWAY

	// under mu
	streams  map[uint32]*h2sStream
	handlers int // handler goroutines running
	wg       sync.WaitGroup

	poolMu     sync.Mutex
	idle       []chan h2Task // idle handler goroutines, the last one idle first
	poolClosed bool          // the connection ended: no goroutine goes idle
	quit       chan struct{} // closed when the connection ended
	workers    sync.WaitGroup
	idled      func()
}

// h2ServerConfig configures serveH2.
type h2ServerConfig struct {
	// Window is each stream's receive window (SETTINGS_INITIAL_WINDOW_SIZE):
	// the request body bytes a stream may hold. Zero means DefaultWindowV2.
	Window int
	// OnError is told of each protocol error of the peer; nil ignores.
	OnError func(kind string, err error)
	// Logger receives handler panics; nil discards.
	Logger *slog.Logger
	// idled, if set, is told each time a handler goroutine goes idle
	// (tests).
	idled func()
}

// serveH2 serves the HTTP/2 connection conn (the client's preface comes
// first) with handler until the connection ends or ctx does, then returns
// once every handler returned. Requests carry ctx's values; their contexts
// end with their streams. It returns why the connection ended.
func serveH2(ctx context.Context, conn net.Conn, handler http.Handler, cfg h2ServerConfig) error {
	window := cfg.Window
	if window <= 0 {
		window = DefaultWindowV2
	}
	window = min(window, h2MaxWindow)
	c := &h2Server{
		conn:    conn,
		handler: handler,
		base:    baseContext(ctx, conn),
		window:  int32(window),
		logger:  cfg.Logger,
		streams: map[uint32]*h2sStream{},
		quit:    make(chan struct{}),
		idled:   cfg.idled,
	}
	c.init(conn, MaxRequestHeaderBytes, h2AgentFrameSize, cfg.OnError)
	if c.logger == nil {
		c.logger = slog.New(slog.DiscardHandler)
	}
	if a := conn.RemoteAddr(); a != nil {
		c.remote = a.String()
	}

	stop := context.AfterFunc(ctx, func() { conn.Close() })
	err := c.readLoop()
	stop()
	conn.Close()
	c.closeAll(err)
	c.poolMu.Lock()
	c.poolClosed = true
	c.poolMu.Unlock()
	close(c.quit)
	c.wg.Wait()
	c.workers.Wait()
	return err
}

// baseContext is what every request's context derives from: ctx's values
// without its cancellation (each stream's context ends with the stream,
// and all of them with the connection), and those net/http's servers set.
// httputil.ReverseProxy aborts a response whose upstream failed mid-body
// (panic(http.ErrAbortHandler), streaming rule 6) only for a request
// whose context has http.ServerContextKey.
func baseContext(ctx context.Context, conn net.Conn) context.Context {
	ctx = context.WithValue(context.WithoutCancel(ctx), http.ServerContextKey, &http.Server{MaxHeaderBytes: MaxRequestHeaderBytes})
	return context.WithValue(ctx, http.LocalAddrContextKey, conn.LocalAddr())
}

// readLoop sends the server's preface, reads the client's, then reads and
// handles frames until the connection fails or the peer breaks the
// protocol (then GOAWAY goes out first).
func (c *h2Server) readLoop() error {
	b := appendSettings(nil,
		http2.Setting{ID: http2.SettingMaxFrameSize, Val: h2AgentFrameSize},
		http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: h2MaxStreams},
		http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: MaxRequestHeaderBytes},
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: uint32(c.window)})
	c.mu.Lock()
	c.recvConn = h2ConnWindow
	c.mu.Unlock()
	if err := c.out.queue(b); err != nil {
		return err
	}
	var preface [len(http2.ClientPreface)]byte
	if _, err := io.ReadFull(c.conn, preface[:]); err != nil {
		return err
	}
	if string(preface[:]) != http2.ClientPreface {
		return c.connError(http2.ErrCodeProtocol, "preface", fmt.Errorf("tunnel: v2: bad client preface %q", preface[:]))
	}
	return c.readFrames(c)
}

// streamError resets stream id after a stream error of the peer's.
func (c *h2Server) streamError(id uint32, code http2.ErrCode, err error) {
	if id%2 == 1 && id > c.maxID {
		c.maxID = id // a stream that failed to open is used
	}
	c.resetStream(id, code, err)
}

// frame handles one frame from the peer, the first of which must be
// SETTINGS (the client's preface).
func (c *h2Server) frame(f http2.Frame) error {
	if !c.sawSettings {
		if _, ok := f.(*http2.SettingsFrame); !ok {
			return http2.ConnectionError(http2.ErrCodeProtocol)
		}
		c.sawSettings = true
	}
	return c.handleFrame(c, f)
}

// rstStream ends a stream the client reset.
func (c *h2Server) rstStream(f *http2.RSTStreamFrame) error {
	if f.StreamID > c.maxID {
		return http2.ConnectionError(http2.ErrCodeProtocol) // an idle stream
	}
	c.mu.Lock()
	if st := c.streams[f.StreamID]; st != nil {
		c.endLocked(st, fmt.Errorf("%w: %v", ErrStreamReset, f.ErrCode))
	}
	c.mu.Unlock()
	return nil
}

// goAwayFrame refuses the streams the client opens from now on.
func (c *h2Server) goAwayFrame(*http2.GoAwayFrame) { c.goingAway = true }

// sends visits the streams' send windows (h2Conn.settings). The caller
// holds mu.
func (c *h2Server) sends(yield func(*h2Stream) bool) {
	for _, st := range c.streams {
		if !yield(&st.h2Stream) {
			return
		}
	}
}

// sendStream returns stream id's send window (h2Conn.windowUpdate): nil
// for a closed stream, an error for an idle one. The caller holds mu.
func (c *h2Server) sendStream(id uint32) (*h2Stream, error) {
	if id > c.maxID {
		return nil, http2.ConnectionError(http2.ErrCodeProtocol) // an idle stream
	}
	if st := c.streams[id]; st != nil {
		return &st.h2Stream, nil
	}
	return nil, nil // a closed stream: allowed
}

// data handles a DATA frame: its bytes wait in the stream's body until
// the handler reads them, within the windows the server advertised.
func (c *h2Server) data(f *http2.DataFrame) error {
	id := f.StreamID
	if id > c.maxID {
		return http2.ConnectionError(http2.ErrCodeProtocol) // an idle stream
	}
	n := int64(f.Length) // with the padding
	c.mu.Lock()
	defer c.mu.Unlock()
	if n > c.recvConn {
		return http2.ConnectionError(http2.ErrCodeFlowControl)
	}
	c.recvConn -= n
	st := c.streams[id]
	if st == nil {
		// A stream that ended (or was reset) here: the bytes are
		// dropped, and given back to the connection.
		return c.consumedLocked(nil, n)
	}
	if st.remoteDone {
		c.consumedLocked(nil, n)
		return http2.StreamError{StreamID: id, Code: http2.ErrCodeStreamClosed}
	}
	if n > st.recvWin {
		c.consumedLocked(nil, n)
		return http2.StreamError{StreamID: id, Code: http2.ErrCodeFlowControl, Cause: ErrFlowControl}
	}
	st.recvWin -= n
	data := f.Data()
	if st.declLen >= 0 && st.gotLen+int64(len(data)) > st.declLen {
		c.consumedLocked(nil, n)
		return http2.StreamError{StreamID: id, Code: http2.ErrCodeProtocol,
			Cause: fmt.Errorf("tunnel: v2: a request body longer than its Content-Length of %d", st.declLen)}
	}
	st.gotLen += int64(len(data))
	if st.bodyClosed {
		// Nobody reads: the bytes go back to the connection, not to the
		// stream (its sender has nobody to send to).
		c.consumedLocked(nil, n)
	} else {
		if len(data) > 0 {
			st.recv.write(data)
			st.cond.Broadcast()
		}
		if pad := n - int64(len(data)); pad > 0 {
			c.consumedLocked(st, pad)
		}
	}
	if f.StreamEnded() {
		c.remoteEndLocked(st)
	}
	return nil
}

// remoteEndLocked ends the request body (END_STREAM). The caller holds
// mu.
func (c *h2Server) remoteEndLocked(st *h2sStream) {
	st.remoteDone = true
	if st.declLen >= 0 && st.gotLen != st.declLen {
		st.bodyErr = fmt.Errorf("tunnel: v2: a request body of %d bytes, with a Content-Length of %d", st.gotLen, st.declLen)
	} else {
		st.bodyErr = io.EOF
	}
	st.cond.Broadcast()
	if st.handlerDone {
		delete(c.streams, st.id)
	}
}

// consumedLocked gives back n received bytes that were read or dropped:
// to the connection, and to st's stream unless st is nil or its body
// ended. WINDOW_UPDATEs go out in batches (half a window). The caller
// holds mu.
func (c *h2Server) consumedLocked(st *h2sStream, n int64) error {
	b := c.ackConnLocked(c.ctl[:0], n)
	if st != nil && !st.remoteDone && st.reset == nil {
		st.unacked += n
		if st.unacked >= int64(c.window)/2 {
			b = appendWindowUpdate(b, st.id, uint32(st.unacked))
			st.recvWin += st.unacked
			st.unacked = 0
		}
	}
	if len(b) == 0 {
		return nil
	}
	return c.out.queue(b)
}

// resetStream sends RST_STREAM with code for stream id and ends the
// stream, if it is open, with err.
func (c *h2Server) resetStream(id uint32, code http2.ErrCode, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if st := c.streams[id]; st != nil {
		c.endLocked(st, err)
	}
	c.out.queue(appendRST(c.ctl[:0], id, code))
}

// endLocked ends stream st for both sides with err (a reset): its handler's
// writes fail, its body's reads fail once the bytes received are read,
// its context ends. The caller holds mu.
func (c *h2Server) endLocked(st *h2sStream, err error) {
	if st.reset == nil {
		st.reset = err
	}
	if !st.remoteDone {
		st.remoteDone = true
		st.bodyErr = err
	}
	delete(c.streams, st.id)
	c.wakeLocked(&st.h2Stream)
	st.ctx.Cancel()
}

// closeAll ends every stream once the connection ended.
func (c *h2Server) closeAll(err error) {
	c.closeStreams(err, func(err error) {
		for _, st := range c.streams {
			c.endLocked(st, err)
		}
	})
}

// headers handles a HEADERS frame: a new stream, or a request's trailers.
func (c *h2Server) headers(f *http2.MetaHeadersFrame) error {
	id := f.StreamID
	if id%2 != 1 {
		return http2.ConnectionError(http2.ErrCodeProtocol)
	}
	if id <= c.maxID {
		c.mu.Lock()
		defer c.mu.Unlock()
		st := c.streams[id]
		if st == nil {
			return nil // a stream that ended here (its block was decoded)
		}
		return c.trailersLocked(st, f)
	}
	c.maxID = id
	if c.goingAway {
		return http2.StreamError{StreamID: id, Code: http2.ErrCodeRefusedStream}
	}
	req, st, handler, err := c.newRequest(f)
	if err != nil {
		return err
	}
	c.mu.Lock()
	if c.handlers >= h2MaxStreams || c.err != nil {
		c.mu.Unlock()
		st.ctx.Cancel()
		return http2.StreamError{StreamID: id, Code: http2.ErrCodeRefusedStream}
	}
	c.handlers++
	c.streams[id] = st
	st.sendWin = c.sendInit
	c.mu.Unlock()
	c.wg.Add(1)
	c.dispatch(h2Task{st, req, handler})
	return nil
}

// Handler goroutines are kept for the next stream (up to h2IdleWorkers
// idle per connection, until the connection ends) rather than started per
// stream: a new goroutine's stack grows, copied at each doubling, through
// the handler's deep calls (the proxy, the HTTP/1.1 client, net/http's
// request writer): 15-20 % of the agent's CPU per small request when every
// stream had its own.
const h2IdleWorkers = 128

// h2Task is a stream for a handler goroutine.
type h2Task struct {
	st      *h2sStream
	req     *http.Request
	handler http.Handler
}

// dispatch runs t on an idle handler goroutine, or a new one.
func (c *h2Server) dispatch(t h2Task) {
	c.poolMu.Lock()
	if n := len(c.idle); n > 0 {
		ch := c.idle[n-1]
		c.idle = c.idle[:n-1]
		c.poolMu.Unlock()
		ch <- t // buffered: never waits
		return
	}
	c.poolMu.Unlock()
	c.workers.Add(1)
	go c.worker(t)
}

// worker runs t, then waits idle for the next stream while the pool has
// room and the connection lasts.
func (c *h2Server) worker(t h2Task) {
	defer c.workers.Done()
	var ch chan h2Task
	for {
		c.run(t.st, t.req, t.handler)
		t = h2Task{}
		if ch == nil {
			ch = make(chan h2Task, 1)
		}
		c.poolMu.Lock()
		if c.poolClosed || len(c.idle) >= h2IdleWorkers {
			c.poolMu.Unlock()
			return
		}
		c.idle = append(c.idle, ch)
		c.poolMu.Unlock()
		if c.idled != nil {
			c.idled()
		}
		select {
		case t = <-ch:
		case <-c.quit:
			// dispatch may have handed a stream over just before.
			select {
			case t = <-ch:
			default:
				return
			}
		}
	}
}

// trailersLocked takes a request's trailers. The caller holds mu.
func (c *h2Server) trailersLocked(st *h2sStream, f *http2.MetaHeadersFrame) error {
	if st.remoteDone {
		return http2.StreamError{StreamID: st.id, Code: http2.ErrCodeStreamClosed}
	}
	if !f.StreamEnded() || len(f.PseudoFields()) > 0 {
		return http2.StreamError{StreamID: st.id, Code: http2.ErrCodeProtocol}
	}
	for _, hf := range f.RegularFields() {
		k := c.canonical(hf.Name)
		if !httpguts.ValidTrailerHeader(k) {
			return http2.StreamError{StreamID: st.id, Code: http2.ErrCodeProtocol}
		}
		if _, ok := st.reqTrailer[k]; ok {
			if st.trailer == nil {
				st.trailer = http.Header{}
			}
			st.trailer[k] = append(st.trailer[k], hf.Value)
		}
	}
	c.remoteEndLocked(st)
	return nil
}

// h2ConnHeaders are the connection-specific fields an HTTP/2 request may
// not have (RFC 9113, section 8.2.2).
var h2ConnHeaders = []string{"Connection", "Keep-Alive", "Proxy-Connection", "Transfer-Encoding", "Upgrade"}

// newRequest makes a stream's request from its HEADERS, as x/net's server
// does, and picks its handler: c.handler, or one that answers 431 (a
// header list past MaxRequestHeaderBytes) or 400 (fields HTTP/2 forbids).
func (c *h2Server) newRequest(f *http2.MetaHeadersFrame) (*http.Request, *h2sStream, http.Handler, error) {
	id := f.StreamID
	bad := http2.StreamError{StreamID: id, Code: http2.ErrCodeProtocol}
	var method, scheme, authority, path string
	for _, hf := range f.PseudoFields() {
		switch hf.Name {
		case ":method":
			method = hf.Value
		case ":scheme":
			scheme = hf.Value
		case ":authority":
			authority = hf.Value
		case ":path":
			path = hf.Value
		default: // :protocol (extended CONNECT is not offered)
			return nil, nil, nil, bad
		}
	}
	connect := method == http.MethodConnect
	if connect {
		if path != "" || scheme != "" || authority == "" {
			return nil, nil, nil, bad
		}
	} else if method == "" || path == "" || (scheme != "http" && scheme != "https") {
		return nil, nil, nil, bad
	}
	header := c.header(f.RegularFields(), nil)
	needsContinue := httpguts.HeaderValuesContainsToken(header["Expect"], "100-continue")
	if needsContinue {
		delete(header, "Expect")
	}
	if cookies := header["Cookie"]; len(cookies) > 1 {
		header["Cookie"] = []string{strings.Join(cookies, "; ")}
	}
	var trailer http.Header
	for _, v := range header["Trailer"] {
		for key := range strings.SplitSeq(v, ",") {
			key = http.CanonicalHeaderKey(strings.TrimSpace(key))
			switch key {
			case "Transfer-Encoding", "Trailer", "Content-Length":
			default:
				if trailer == nil {
					trailer = http.Header{}
				}
				trailer[key] = nil
			}
		}
	}
	delete(header, "Trailer")
	if host := header["Host"]; len(host) == 1 {
		if authority == "" {
			authority = host[0]
		} else if host[0] != authority {
			return nil, nil, nil, bad
		}
		delete(header, "Host")
	} else if len(host) > 1 {
		return nil, nil, nil, bad
	}
	if authority != "" && (!httpguts.ValidHostHeader(authority) || strings.IndexByte(authority, '@') >= 0) {
		return nil, nil, nil, bad
	}
	var u *url.URL
	requestURI := path
	if connect {
		u, requestURI = &url.URL{Host: authority}, authority
	} else {
		if path[0] != '/' && path != "*" {
			return nil, nil, nil, bad
		}
		var err error
		if u, err = url.ParseRequestURI(path); err != nil {
			return nil, nil, nil, bad
		}
	}

	st := &h2sStream{h2Stream: h2Stream{id: id, declLen: -1}, c: c, recvWin: int64(c.window), reqTrailer: trailer}
	st.cond.L = &c.mu
	st.ctx = reqctx.New(c.base) // watched by the agent's clients without a context.AfterFunc each
	st.w.st = st
	st.w.head = method == http.MethodHead
	st.body.st = st
	req := &http.Request{
		Method:     method,
		URL:        u,
		Proto:      "HTTP/2.0",
		ProtoMajor: 2,
		Header:     header,
		Host:       authority,
		RemoteAddr: c.remote,
		RequestURI: requestURI,
		Trailer:    trailer,
	}
	if f.StreamEnded() {
		req.Body = http.NoBody
		st.remoteDone, st.bodyErr = true, io.EOF
	} else {
		req.Body = &st.body
		req.ContentLength = -1
		if vv, ok := header["Content-Length"]; ok {
			if cl, err := strconv.ParseUint(vv[0], 10, 63); err == nil {
				req.ContentLength = int64(cl)
			} else {
				req.ContentLength = 0
			}
			st.declLen = req.ContentLength
		}
		st.needContinue = needsContinue
	}
	req = req.WithContext(st.ctx)
	handler := c.handler
	if f.Truncated {
		handler = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(http.StatusRequestHeaderFieldsTooLarge)
			io.WriteString(w, "<h1>HTTP Error 431</h1><p>Request Header Field(s) Too Large</p>")
		})
	} else {
		for _, k := range h2ConnHeaders {
			if _, ok := header[k]; ok {
				handler = badRequest(fmt.Sprintf("request header %q is not valid in HTTP/2", k))
			}
		}
		if te := header["Te"]; len(te) > 1 || len(te) == 1 && te[0] != "trailers" && te[0] != "" {
			handler = badRequest(`request header "TE" may only be "trailers" in HTTP/2`)
		}
	}
	return req, st, handler, nil
}

func badRequest(msg string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, msg, http.StatusBadRequest)
	})
}

// maxCanonCache bounds the bytes of a fieldNames.
const maxCanonCache = 32 << 10

// canonical is the read loop's names.canonical.
func (c *h2Server) canonical(name string) string { return c.names.canonical(name) }

// fieldNames gives the canonical forms of a connection's lower-case field
// names, the common ones without allocating and the others once each (up
// to maxCanonCache bytes). It is for one goroutine (a read loop).
type fieldNames struct {
	canon map[string]string // lower-case name to canonical, beyond the common ones
	size  int
}

// canonical returns the canonical form of a lower-case field name.
func (n *fieldNames) canonical(name string) string {
	if k, ok := commonCanonical[name]; ok {
		return k
	}
	if k, ok := n.canon[name]; ok {
		return k
	}
	k := http.CanonicalHeaderKey(name)
	if size := 2*len(name) + 64; n.size+size <= maxCanonCache {
		if n.canon == nil {
			n.canon = map[string]string{}
		}
		n.canon[name] = k
		n.size += size
	}
	return k
}

// commonFields are the field names looked up without allocating, each
// way.
var commonFields = []string{
	"Accept", "Accept-Charset", "Accept-Encoding", "Accept-Language", "Accept-Ranges", "Access-Control-Allow-Origin",
	"Age", "Allow", "Authorization", "Cache-Control", "Connection", "Content-Disposition", "Content-Encoding",
	"Content-Language", "Content-Length", "Content-Location", "Content-Range", "Content-Type", "Cookie", "Date",
	"Etag", "Expect", "Expires", "From", "Host", "If-Match", "If-Modified-Since", "If-None-Match",
	"If-Range", "If-Unmodified-Since", "Last-Modified", "Link", "Location", "Max-Forwards", "Origin",
	"Proxy-Authenticate", "Proxy-Authorization", "Range", "Referer", "Refresh", "Retry-After", "Server",
	"Set-Cookie", "Strict-Transport-Security", "Te", "Trailer", "Transfer-Encoding", "User-Agent", "Vary", "Via",
	"Www-Authenticate", "X-Accel-Buffering", "X-Content-Type-Options", "X-Forwarded-For", "X-Forwarded-Host",
	"X-Forwarded-Proto", "X-Frame-Options", "X-Request-Id", "Grpc-Encoding", "Grpc-Accept-Encoding",
	"Grpc-Timeout", "Grpc-Status", "Grpc-Message", upgradeHeader, upgradedHeader, tcpHeader, tcpErrorHeader,
	udpHeader, headerExpect, pipeHeader,
}

// commonCanonical and commonLower map the common names' two forms.
var commonCanonical, commonLower = func() (map[string]string, map[string]string) {
	canon, lower := make(map[string]string, len(commonFields)), make(map[string]string, len(commonFields))
	for _, k := range commonFields {
		canon[strings.ToLower(k)] = k
		lower[k] = strings.ToLower(k)
	}
	return canon, lower
}()

// lowerField returns the wire form of a field name, or false if it has no
// valid one.
func lowerField(k string) (string, bool) {
	if l, ok := commonLower[k]; ok {
		return l, true
	}
	upper := false
	for i := 0; i < len(k); i++ {
		b := k[i]
		if b >= 0x80 {
			return "", false
		}
		upper = upper || 'A' <= b && b <= 'Z'
	}
	if upper {
		k = strings.ToLower(k)
	}
	return k, httpguts.ValidHeaderFieldName(k)
}

// run runs a stream's handler, then ends its response: completed when
// the handler returned, reset (INTERNAL_ERROR) when it panicked, as with
// http.ErrAbortHandler (the client sees an abort, never a clean end).
func (c *h2Server) run(st *h2sStream, req *http.Request, handler http.Handler) {
	defer c.wg.Done()
	defer func() {
		p := recover()
		if p != nil && p != http.ErrAbortHandler {
			c.logger.Error("tunnel: v2: handler panic", "method", req.Method, "path", req.URL.Path, "panic", fmt.Sprint(p))
		}
		if p == nil {
			st.w.finish()
		}
		st.body.Close()
		c.mu.Lock()
		c.handlers--
		st.handlerDone = true
		switch {
		case p != nil && st.reset == nil:
			c.endLocked(st, errHandlerPanicked)
			c.out.queue(appendRST(c.ctl[:0], st.id, http2.ErrCodeInternal))
		case st.reset == nil && !st.remoteDone:
			// A complete response to a request whose body goes on:
			// the client may stop sending it (RFC 9113, section 8.1).
			c.endLocked(st, errHandlerComplete)
			c.out.queue(appendRST(c.ctl[:0], st.id, http2.ErrCodeNo))
		default:
			delete(c.streams, st.id)
		}
		c.mu.Unlock()
		st.ctx.Cancel()
		st.w.release()
	}()
	handler.ServeHTTP(&st.w, req)
}

var (
	errHandlerPanicked = errors.New("tunnel: v2: handler panicked")
	errHandlerComplete = errors.New("tunnel: v2: response complete")
	errBodyClosed      = errors.New("tunnel: v2: request body closed by the handler")
	errTooLong         = errors.New("tunnel: v2: the handler wrote more than its Content-Length")
)

// Frame encoding (RFC 9113, section 4.1).

func appendFrameHeader(b []byte, length int, typ http2.FrameType, flags http2.Flags, id uint32) []byte {
	return append(b, byte(length>>16), byte(length>>8), byte(length), byte(typ), byte(flags),
		byte(id>>24)&0x7f, byte(id>>16), byte(id>>8), byte(id))
}

func appendWindowUpdate(b []byte, id, n uint32) []byte {
	b = appendFrameHeader(b, 4, http2.FrameWindowUpdate, 0, id)
	return binary.BigEndian.AppendUint32(b, n&h2MaxWindow)
}

func appendRST(b []byte, id uint32, code http2.ErrCode) []byte {
	b = appendFrameHeader(b, 4, http2.FrameRSTStream, 0, id)
	return binary.BigEndian.AppendUint32(b, uint32(code))
}
