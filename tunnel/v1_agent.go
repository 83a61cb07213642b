package tunnel

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/sluicehq/sluice/wire"
)

// agentServer is the placeholder put under http.ServerContextKey in the
// requests the agent serves: httputil.ReverseProxy (which Proxy uses for
// upgrades) then reports a broken upstream body by panicking with
// http.ErrAbortHandler, as it does under a real http.Server (Proxy always
// does), and the agent turns that into an http_response_end with
// an error instead of a clean end.
var agentServer = &http.Server{}

// serveV1 serves the requests that arrive on an agent's v1 WebSocket
// (after the register/registered exchange) with handler, each on its own
// goroutine, until the connection fails or ctx ends. It then cancels the
// requests in flight and returns once their handlers have returned.
func serveV1(ctx context.Context, ws *websocket.Conn, handler http.Handler, dial dialers, cfg v1Settings) error {
	parent := ctx
	a := &agentSession{
		conn:    newFrameConn(ws, cfg),
		cfg:     cfg,
		handler: handler,
		dialTCP: dial.tcp,
		dial:    dial,
		udp:     make(map[string]*agentUDP),
		streams: make(map[string]*agentStream),
		tcp:     make(map[string]*agentTCP),
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	a.ctx = ctx
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		a.conn.live.ping(cfg.PingInterval, ctx.Done())
	}()
	stop := context.AfterFunc(ctx, func() { ws.Close() })
	err := a.readLoop()
	stop()
	ws.Close()
	cancel()
	a.mu.Lock()
	for _, st := range a.streams {
		st.body.closeWrite(ErrSessionClosed)
	}
	conns := make([]*agentTCP, 0, len(a.tcp))
	for _, p := range a.tcp {
		conns = append(conns, p)
	}
	a.mu.Unlock()
	for _, p := range conns {
		p.end(ErrSessionClosed)
	}
	a.endUDP()
	a.wg.Wait()
	wg.Wait()
	if parent.Err() != nil {
		return nil // asked to stop
	}
	if a.peerErr != nil {
		return a.peerErr
	}
	return fmt.Errorf("tunnel: read: %w", err)
}

type agentSession struct {
	conn    *frameConn
	cfg     v1Settings
	handler http.Handler
	dialTCP dialTCP // nil: TCP connections are refused
	dial    dialers
	ctx     context.Context
	mu      sync.Mutex
	streams map[string]*agentStream
	tcp     map[string]*agentTCP // TCP connections (tcp_v1.go)
	udp     map[string]*agentUDP // UDP sessions (udp_v1.go)
	peerErr *PeerError           // an error frame from the edge, if any
	wg      sync.WaitGroup       // handlers
}

type agentStream struct {
	id     string
	a      *agentSession
	ctx    context.Context // the request's: cancelled by http_cancel
	cancel context.CancelFunc
	body   *pipe   // the request body
	credit *credit // response bytes the edge lets us send
	unread atomic.Int64
	done   chan struct{}
	// upgrade: an upgrade request on a session with the upgrade feature;
	// the handler may hijack the stream after a 101.
	upgrade bool
	// expect: a request that expects 100-continue, from an edge that
	// holds its body until our 100 (wire.FeatureInformational).
	expect bool
}

func (a *agentSession) readLoop() error {
	var f wire.Frame
	for {
		if err := a.conn.readFrame(&f); err != nil {
			return err
		}
		a.handle(&f)
	}
}

func (a *agentSession) lookup(id string) *agentStream {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.streams[id]
}

func (a *agentSession) handle(f *wire.Frame) {
	switch f.Type {
	case wire.TypeHTTPRequest, wire.TypeHTTPRequestStart:
		a.start(f)
		return
	case wire.TypeTCPConnect:
		a.startTCP(f)
		return
	case wire.TypeUDPData:
		a.handleUDP(f)
		return
	case wire.TypeTCPData, wire.TypeTCPClose:
		if a.closeUDP(f) {
			return
		}
		a.handleTCP(f)
		return
	case wire.TypeWindowUpdate:
		if f.ConnectionID != "" {
			a.handleTCP(f)
			return
		}
	case wire.TypeHTTPRequestChunk, wire.TypeHTTPRequestEnd, wire.TypeHTTPCancel:
	case wire.TypeRegistered:
		return
	case wire.TypeError:
		// The edge says why it is about to end the session; requests in
		// flight go on until it does.
		a.cfg.Logger.Warn("edge error", "code", f.Code, "message", f.Message)
		a.mu.Lock()
		a.peerErr = &PeerError{Code: f.Code, Message: f.Message}
		a.mu.Unlock()
		return
	default:
		a.conn.frameError("unknown_type", fmt.Errorf("frame type %q", f.Type))
		return
	}
	st := a.lookup(f.RequestID)
	if st == nil {
		// The request already finished here: a cancel racing its end, or
		// body bytes the handler did not read.
		return
	}
	switch f.Type {
	case wire.TypeHTTPRequestChunk:
		window := a.cfg.has(wire.FeatureWindow)
		if _, err := st.body.write(f.Data, !window, st.done); errors.Is(err, ErrFlowControl) {
			a.conn.frameError("flow_control", fmt.Errorf("request %q: edge sent past its window", f.RequestID))
			st.body.closeWrite(ErrFlowControl)
			st.cancel()
		}
	case wire.TypeHTTPRequestEnd:
		st.body.closeWrite(io.EOF)
	case wire.TypeHTTPCancel:
		st.body.closeWrite(ErrStreamReset)
		st.cancel()
	case wire.TypeWindowUpdate:
		if f.Bytes > 0 {
			st.credit.add(f.Bytes)
		}
	}
}

// start builds the request of an http_request(_start) frame and runs the
// handler for it.
func (a *agentSession) start(f *wire.Frame) {
	if a.lookup(f.RequestID) != nil {
		a.conn.frameError("duplicate_start", fmt.Errorf("second request head for %q", f.RequestID))
		return
	}
	uri := f.Path
	if uri == "" || uri[0] != '/' {
		uri = "/" + uri
	}
	if f.Query != "" {
		uri += "?" + f.Query
	}
	u, err := url.ParseRequestURI(uri)
	if err != nil {
		a.conn.frameError("invalid", fmt.Errorf("request %q: bad path %q: %v", f.RequestID, uri, err))
		a.conn.writeFrame(&wire.Frame{Type: wire.TypeHTTPResponse, RequestID: f.RequestID, Status: http.StatusBadRequest,
			Headers: http.Header{"Content-Type": {"text/plain; charset=utf-8"}}, Body: []byte("sluice agent: bad request path\n")})
		return
	}
	ctx, cancel := context.WithCancel(context.WithValue(a.ctx, http.ServerContextKey, agentServer))
	st := &agentStream{
		id:     f.RequestID,
		a:      a,
		ctx:    ctx,
		cancel: cancel,
		credit: newCredit(a.cfg.window),
		done:   make(chan struct{}),
	}
	h := f.Headers
	if h == nil {
		h = http.Header{}
	}
	st.upgrade = f.Type == wire.TypeHTTPRequestStart && a.cfg.has(wire.FeatureUpgrade) && isUpgrade(h)
	req := &http.Request{
		Method:     f.Method,
		URL:        u,
		Proto:      "HTTP/1.1",
		ProtoMajor: 1,
		ProtoMinor: 1,
		Header:     h,
		Host:       h.Get("Host"),
		RequestURI: uri,
		RemoteAddr: "127.0.0.1:0",
	}
	h.Del("Host")
	if ff := h.Get("X-Forwarded-For"); ff != "" {
		// The public client's address, as the edge saw it.
		last := strings.TrimSpace(ff[strings.LastIndexByte(ff, ',')+1:])
		req.RemoteAddr = net.JoinHostPort(last, "0")
	}
	if f.Type == wire.TypeHTTPRequest {
		req.Body = io.NopCloser(bytes.NewReader(f.Body))
		req.ContentLength = int64(len(f.Body))
		st.body = newPipe(0, nil)
		st.body.closeWrite(io.EOF)
		if len(f.Body) == 0 {
			req.Body = http.NoBody
		}
	} else {
		limit := plainBuffer
		onRead := func(int) {}
		if a.cfg.has(wire.FeatureWindow) {
			limit = a.cfg.V1.Window
			onRead = st.creditEdge
		}
		st.body = newPipe(limit, onRead)
		switch {
		case strings.EqualFold(h.Get("Transfer-Encoding"), "chunked"):
			req.ContentLength = -1
			req.TransferEncoding = []string{"chunked"}
			req.Body = st.body
		case h.Get("Content-Length") != "":
			n, err := strconv.ParseInt(h.Get("Content-Length"), 10, 64)
			if err != nil || n < 0 {
				n = 0
			}
			req.ContentLength = n
			req.Body = st.body
		default:
			req.Body = http.NoBody
		}
		h.Del("Transfer-Encoding")
		if req.ContentLength == 0 {
			req.Body = http.NoBody
		}
		st.expect = req.Body != http.NoBody && a.cfg.has(wire.FeatureInformational) && expectsContinue(h)
	}
	req = req.WithContext(ctx)
	a.mu.Lock()
	a.streams[st.id] = st
	a.mu.Unlock()
	a.wg.Add(1)
	go st.serve(req)
}

// creditEdge gives request-body credit back once half a window was read.
func (st *agentStream) creditEdge(n int) {
	if v := st.unread.Add(int64(n)); v >= int64(st.a.cfg.V1.Window/2) {
		st.unread.Add(-v)
		st.a.conn.writeFrame(&wire.Frame{Type: wire.TypeWindowUpdate, RequestID: st.id, Bytes: v})
	}
}

// serve runs the handler and ends the response: cleanly, or with an error
// when the handler aborted (a broken upstream body) or panicked.
func (st *agentStream) serve(req *http.Request) {
	a := st.a
	defer a.wg.Done()
	w := &responseWriter{st: st, header: http.Header{}}
	if st.expect {
		req.Body = &continueBody{ReadCloser: req.Body, send: w.sendContinue}
	}
	endErr := func() (msg string) {
		defer func() {
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler {
					msg = "upstream response aborted"
				} else {
					msg = fmt.Sprint("handler panic: ", p)
					a.cfg.Logger.Error("handler panic", "request_id", st.id, "panic", p)
				}
			}
		}()
		a.handler.ServeHTTP(w, req)
		return ""
	}()
	w.finish(endErr)
	st.cancel()
	st.body.Close()
	a.mu.Lock()
	delete(a.streams, st.id)
	a.mu.Unlock()
	close(st.done)
}

// responseWriter turns a handler's response into frames: the head as soon
// as the handler writes it (so headers reach the public client before any
// body byte), each Write as chunks within the edge's window.
//
// A small response of known length (up to holdMax bytes, or none, as for
// 204 and 304) is held back instead and sent whole, as one http_response,
// when the handler ends: one frame instead of three. The hold lasts at most
// holdTime, after which the head goes out anyway.
//
// As with net/http, the head is what the header map holds when the header
// is written; trailers are the values, when the handler returns, of the
// names the head announced in Trailer, and of the keys with
// http.TrailerPrefix. They go in http_response_end to an edge that agreed
// to the trailers feature; to others, neither they nor Trailer are sent.
type responseWriter struct {
	st     *agentStream
	header http.Header

	mu          sync.Mutex // the hold timer runs on a goroutine of its own
	wroteHeader bool
	status      int
	head        http.Header // the header as written, to be sent
	declared    []string    // trailer names the head announced
	held        bool        // the head is held back, with buf
	buf         []byte      // body bytes held with the head
	sent        bool        // the head went out
	timer       *time.Timer
	err         error
	hijacked    *headConn // the handler took the stream over (an upgrade)
	continued   bool      // a 100 went out
}

const (
	holdMax  = 32 << 10
	holdTime = 5 * time.Millisecond
)

func (w *responseWriter) Header() http.Header { return w.header }

func (w *responseWriter) WriteHeader(code int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.writeHeaderLocked(code)
}

func (w *responseWriter) writeHeaderLocked(code int) {
	if w.wroteHeader {
		return
	}
	if code >= 100 && code < 200 {
		// Informational responses cross only with the feature; a 100
		// goes when the request body is first read (sendContinue), and
		// a 101 is an upgrade's (Hijack).
		if code != http.StatusContinue && code != http.StatusSwitchingProtocols && w.st.a.cfg.has(wire.FeatureInformational) {
			w.sendInfoLocked(code, w.infoHead())
		}
		return
	}
	w.wroteHeader, w.status = true, code
	w.snapshotHead()
	small := code == http.StatusNoContent || code == http.StatusNotModified
	if cl := w.head.Get("Content-Length"); cl != "" {
		n, err := strconv.Atoi(cl)
		small = small || err == nil && n >= 0 && n <= holdMax
	}
	if small && len(w.declared) == 0 { // a whole response has no trailers
		w.held = true
		w.timer = time.AfterFunc(holdTime, w.release)
		return
	}
	w.sendHeadLocked()
}

// snapshotHead takes the head from the header map, as the header is
// written: the TrailerPrefix keys are left out, and Trailer becomes the
// list of valid trailer names it announces (or is left out for an edge
// without the trailers feature). The head shares the value slices of the
// handler's map: a handler may set, add or delete headers after writing
// (which has no effect but on trailers), without changing what the head
// holds.
func (w *responseWriter) snapshotHead() {
	h := make(http.Header, len(w.header))
	trailers := w.st.a.cfg.has(wire.FeatureTrailers)
	for k, vv := range w.header {
		switch {
		case strings.HasPrefix(k, http.TrailerPrefix):
		case k == "Trailer":
			if trailers {
				w.declared = trailerNames(vv, nil)
			}
		default:
			h[k] = vv[:len(vv):len(vv)]
		}
	}
	if len(w.declared) > 0 {
		h["Trailer"] = []string{strings.Join(w.declared, ", ")}
	}
	w.head = h
}

// infoHead is the header of an informational response: the header map as
// it is, without body framing fields (RFC 9110 section 15.2) or trailers.
func (w *responseWriter) infoHead() http.Header {
	h := make(http.Header, len(w.header))
	for k, vv := range w.header {
		if k != "Content-Length" && k != "Transfer-Encoding" && k != "Trailer" && !strings.HasPrefix(k, http.TrailerPrefix) {
			h[k] = slices.Clone(vv)
		}
	}
	return h
}

// sendInfoLocked sends an informational response, before the head.
func (w *responseWriter) sendInfoLocked(code int, h http.Header) {
	if w.err == nil {
		w.err = w.st.a.conn.writeFrame(&wire.Frame{Type: wire.TypeHTTPResponseInfo, RequestID: w.st.id, Status: code, Headers: h})
	}
}

// sendContinue tells the edge that the request body may come: the local
// server asked for it (its 100), or the wait for that ended. Once, and only
// before the head.
func (w *responseWriter) sendContinue() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.wroteHeader && !w.continued {
		w.continued = true
		w.sendInfoLocked(http.StatusContinue, http.Header{})
	}
}

// sentHead drops the head once its frame was written.
func (w *responseWriter) sentHead() { w.head = nil }

// trailers returns the trailer values to send, or nil: the announced names'
// values in the header map, and those of the TrailerPrefix keys.
func (w *responseWriter) trailers() http.Header {
	if !w.st.a.cfg.has(wire.FeatureTrailers) {
		return nil
	}
	var t http.Header
	add := func(name string, vv []string) {
		if len(vv) == 0 || !validTrailer(name) {
			return
		}
		if t == nil {
			t = http.Header{}
		}
		t[name] = append(t[name], vv...)
	}
	for k, vv := range w.header {
		if name, ok := strings.CutPrefix(k, http.TrailerPrefix); ok {
			add(http.CanonicalHeaderKey(name), vv)
		}
	}
	for _, name := range w.declared {
		add(name, w.header[name])
	}
	return t
}

// release sends a held head when the hold time is over.
func (w *responseWriter) release() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.held {
		w.sendHeadLocked()
	}
}

// sendHeadLocked sends the head and any held body bytes.
func (w *responseWriter) sendHeadLocked() {
	w.held, w.sent = false, true
	if w.timer != nil {
		w.timer.Stop()
	}
	w.err = w.st.a.conn.writeFrame(&wire.Frame{Type: wire.TypeHTTPResponseStart, RequestID: w.st.id, Status: w.status, Headers: w.head})
	w.sentHead()
	if buf := w.buf; len(buf) > 0 && w.err == nil {
		w.buf = nil
		_, w.err = w.sendChunks(buf)
	}
}

func (w *responseWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	w.writeHeaderLocked(http.StatusOK)
	if w.held {
		if len(w.buf)+len(p) <= holdMax {
			w.buf = append(w.buf, p...)
			w.mu.Unlock()
			return len(p), nil
		}
		w.sendHeadLocked()
	}
	err := w.err
	w.mu.Unlock()
	if err != nil {
		return 0, err
	}
	// Only the handler's goroutine writes chunks once the head is out.
	n, err := w.sendChunks(p)
	if err != nil {
		w.mu.Lock()
		w.err = err
		w.mu.Unlock()
	}
	return n, err
}

// sendChunks sends p as chunk frames within the edge's window.
func (w *responseWriter) sendChunks(p []byte) (int, error) {
	a := w.st.a
	return a.conn.sendChunks(p, a.cfg.has(wire.FeatureWindow), w.st.credit, w.st.ctx.Done(), nil, func(data []byte) *wire.Frame {
		return &wire.Frame{Type: wire.TypeHTTPResponseChunk, RequestID: w.st.id, Data: data}
	})
}

// Flush sends the head if it was not sent yet, unless it is held: a held
// response is small and goes out whole within holdTime.
func (w *responseWriter) Flush() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.wroteHeader {
		w.writeHeaderLocked(http.StatusOK)
	}
}

// FlushError is Flush for http.ResponseController.
func (w *responseWriter) FlushError() error {
	w.Flush()
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// finish ends the response when the handler has returned; endErr says the
// handler aborted (a broken upstream body) or panicked.
func (w *responseWriter) finish(endErr string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.timer != nil {
		w.timer.Stop()
	}
	conn, id := w.st.a.conn, w.st.id
	if hj := w.hijacked; hj != nil {
		// The hijacked connection ends the stream when it closes; a
		// handler that returned without closing it is done with it too.
		w.mu.Unlock()
		hj.Close()
		w.mu.Lock()
		return
	}
	if !w.wroteHeader {
		if endErr != "" {
			// Nothing was sent: the edge gets an error response.
			conn.writeFrame(&wire.Frame{Type: wire.TypeHTTPResponse, RequestID: id, Status: http.StatusBadGateway,
				Headers: http.Header{"Content-Type": {"text/plain; charset=utf-8"}}, Body: []byte("sluice agent: " + endErr + "\n")})
			return
		}
		// The handler wrote nothing: an empty 200, held until now.
		w.wroteHeader, w.status, w.held = true, http.StatusOK, true
		w.snapshotHead()
	}
	var trailers http.Header
	if endErr == "" {
		trailers = w.trailers()
	}
	if w.held && endErr == "" && trailers == nil {
		w.held = false
		conn.writeFrame(&wire.Frame{Type: wire.TypeHTTPResponse, RequestID: id, Status: w.status, Headers: w.head, Body: w.buf})
		w.sentHead()
		return
	}
	if !w.sent {
		w.sendHeadLocked()
	}
	if w.err == nil {
		conn.writeFrame(&wire.Frame{Type: wire.TypeHTTPResponseEnd, RequestID: id, Error: endErr, Trailers: trailers})
	}
}
