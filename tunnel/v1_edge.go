package tunnel

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/sluicehq/sluice/wire"
	"golang.org/x/net/http/httpguts"
)

// v1Edge is the edge's end of a protocol v1 session: an http.RoundTripper
// that carries each request through the tunnel as one stream of JSON
// frames and returns a response whose Body streams.
type v1Edge struct {
	lifecycle
	conn *frameConn
	cfg  v1Settings

	mu      sync.Mutex // guards streams, tcp, udp and nextID
	streams map[string]*edgeStream
	tcp     map[string]*v1TCP // TCP connections (tcp_v1.go)
	udp     map[string]*v1UDP // UDP sessions (udp_v1.go)
	nextID  uint64

	wg sync.WaitGroup // request-body pumps
}

// newV1Edge wraps an agent's WebSocket after registered was sent.
func newV1Edge(ws *websocket.Conn, cfg v1Settings) *v1Edge {
	s := &v1Edge{
		conn:    newFrameConn(ws, cfg),
		cfg:     cfg,
		streams: make(map[string]*edgeStream),
		tcp:     make(map[string]*v1TCP),
		udp:     make(map[string]*v1UDP),
	}
	s.lifecycle = newLifecycle(func() { ws.Close() })
	return s
}

// Protocol returns "v1".
func (s *v1Edge) Protocol() string { return ProtocolV1 }

// Stream states: a stream's request head is written once (sent); it ends
// once, by the edge (ended: the client left, a reset) or by the agent
// (finished: its response ended). The agent gets an http_cancel only for a
// stream that was sent, then ended by the edge: never before its request,
// never twice.
const (
	streamNew int32 = iota
	streamSent
	streamEnded
	streamFinished
)

// edgeStream is one request in flight.
type edgeStream struct {
	id    string
	start chan *http.Response // cap 1: the response head
	recvWindow
	credit  *credit // request body bytes the agent lets us send
	done    chan struct{}
	once    sync.Once
	errMu   sync.Mutex
	err     error // why the stream was reset, before its response
	started bool  // a response head arrived (read loop only)
	// trailers are the response's trailers, set by the read loop before
	// the body ends with io.EOF; the body's reader copies them into
	// Response.Trailer when it reads that EOF.
	trailers http.Header
	state    atomic.Int32 // streamNew, streamSent, streamEnded
	unwatch  func() bool  // stops watching the request's context
	upgrade  bool         // an upgrade request: a 101 opens a two-way stream

	// With wire.FeatureInformational: the agent's 1xx, for RoundTrip to
	// pass on; and, for a request that expects 100-continue, proceed is
	// closed once its body may go (continued) or never will (a final
	// response came first).
	info      chan informational
	infos     int // 1xx received (read loop only)
	proceed   chan struct{}
	proceeded sync.Once
	continued atomic.Bool
}

// recvWindow is what a stream at the edge receives from the agent (a
// response body, a TCP connection's bytes): the pipe it is read from and,
// with the window feature, the agent's credit. That credit (avail) is
// reserved from the budget until it arrives (then the pipe holds it) or
// the stream ends; owed is the rest of the window: what was read and not
// credited back, or not granted yet (wire.FeatureInitialWindow).
type recvWindow struct {
	s      *v1Edge
	body   *pipe
	update wire.Frame // the window_update that credits this stream, without its bytes
	winMu  sync.Mutex // guards avail, owed, ended
	avail  int64
	owed   int64
	ended  bool
}

// init sets up the receiving side of a new stream of s, whose
// window_update frames are update with bytes set. The caller holds s.mu.
func (w *recvWindow) init(s *v1Edge, update wire.Frame) {
	w.s, w.update = s, update
	if s.cfg.has(wire.FeatureWindow) {
		// The agent may send its first window at once, before any
		// window_update: the protocol's (512 KiB), or the one registered
		// announced (wire.FeatureInitialWindow), so it is taken whatever
		// is left. The rest of the window is owed: granted as the budget
		// allows once the stream's first frame went out (grant), and as
		// the consumer reads (creditAgent).
		s.cfg.Budget.Force(s.cfg.window)
		w.avail = s.cfg.window
		w.owed = max(int64(s.cfg.V1.Window)-s.cfg.window, 0)
		w.body = newPipe(s.cfg.V1.Window, w.creditAgent)
	} else {
		// Without flow control, the read loop stops (back-pressure on
		// the whole connection) once a stream holds plainBuffer, or
		// holds anything while the budget is spent.
		w.body = newPipe(plainBuffer, nil)
		w.body.reserve = true
	}
	w.body.budget = s.cfg.Budget
}

// endWindow stops crediting the agent and gives the credit it did not
// use back to the budget.
func (w *recvWindow) endWindow() {
	w.winMu.Lock()
	w.ended = true
	avail := w.avail
	w.avail = 0
	w.winMu.Unlock()
	w.s.cfg.Budget.Release(avail)
}

// informational is a 1xx response (not 101) from the agent.
type informational struct {
	status int
	header http.Header
}

// maxInformational bounds the 1xx responses of one request: more are
// counted as frame errors and dropped.
const maxInformational = 8

// Retire sends the agent an error frame with code and message (the agent
// then knows not to reconnect), waits until the requests in flight have
// finished or ctx ends, then closes the session.
func (s *v1Edge) Retire(ctx context.Context, code, message string) {
	s.retire(ctx, func() {
		s.conn.writeFrameWithin(&wire.Frame{Type: wire.TypeError, Code: code, Message: message}, 5*time.Second)
	})
}

// Run reads frames until the connection fails or Close is called, then
// fails the streams in flight. It returns why the session ended.
func (s *v1Edge) Run(ctx context.Context) error {
	s.running()
	defer close(s.runDone)
	ctx, cancel := context.WithCancel(ctx)
	var kwg sync.WaitGroup
	kwg.Add(1)
	go func() {
		defer kwg.Done()
		s.conn.live.ping(s.cfg.PingInterval, ctx.Done())
	}()
	stop := context.AfterFunc(ctx, s.shutdown)
	err := s.readLoop()
	stop()
	s.shutdown()
	cancel()
	kwg.Wait()
	s.mu.Lock()
	streams := s.streams
	s.streams = map[string]*edgeStream{}
	conns := s.tcp
	s.tcp = map[string]*v1TCP{}
	udp := s.udp
	s.udp = map[string]*v1UDP{}
	s.mu.Unlock()
	for _, d := range udp {
		d.fail(fmt.Errorf("%w: %w", ErrStreamReset, ErrSessionClosed))
	}
	for _, st := range streams {
		st.reset(ErrSessionClosed)
	}
	for _, st := range conns {
		st.fail(fmt.Errorf("%w: %w", ErrStreamReset, ErrSessionClosed))
	}
	s.wg.Wait()
	return err
}

func (s *v1Edge) readLoop() error {
	var f wire.Frame
	for {
		if err := s.conn.readFrame(&f); err != nil {
			select {
			case <-s.done:
				return ErrSessionClosed
			default:
				return fmt.Errorf("tunnel: read: %w", err)
			}
		}
		s.handle(&f)
	}
}

// issued reports whether id is one this session gave out.
func (s *v1Edge) issued(id string) bool {
	n, err := strconv.ParseUint(id, 10, 64)
	s.mu.Lock()
	defer s.mu.Unlock()
	return err == nil && n >= 1 && n <= s.nextID && strconv.FormatUint(n, 10) == id
}

func (s *v1Edge) lookup(id string) *edgeStream {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.streams[id]
}

// handle applies one frame from the agent.
func (s *v1Edge) handle(f *wire.Frame) {
	switch f.Type {
	case wire.TypeUDPData:
		s.handleUDP(f)
		return
	case wire.TypeTCPData, wire.TypeTCPClose:
		if s.closeUDP(f) {
			return
		}
		s.handleTCP(f)
		return
	case wire.TypeWindowUpdate:
		if f.ConnectionID != "" {
			s.handleTCP(f)
			return
		}
	case wire.TypeHTTPResponse, wire.TypeHTTPResponseStart, wire.TypeHTTPResponseChunk,
		wire.TypeHTTPResponseEnd:
	case wire.TypeHTTPResponseInfo:
		if !s.cfg.has(wire.FeatureInformational) {
			s.conn.frameError("unknown_type", fmt.Errorf("frame type %q from an agent without the informational feature", f.Type))
			return
		}
	case wire.TypeRegister:
		return // a repeated register: nothing to do
	default:
		s.conn.frameError("unknown_type", fmt.Errorf("frame type %q", f.Type))
		return
	}
	st := s.lookup(f.RequestID)
	if st == nil {
		// A frame for a stream that already ended (its client left, or
		// a duplicate end) is "late"; one never issued is an error.
		s.unknownStream(f, f.RequestID, "unknown_request_id")
		return
	}
	switch f.Type {
	case wire.TypeHTTPResponseInfo:
		switch {
		case st.started || f.Status < 100 || f.Status > 199 || f.Status == http.StatusSwitchingProtocols:
			s.conn.frameError("invalid", fmt.Errorf("informational response %d for request %q (after its head, or not a 1xx)", f.Status, f.RequestID))
		case st.infos >= maxInformational:
			s.conn.frameError("too_many_informational", fmt.Errorf("more than %d informational responses for request %q", maxInformational, f.RequestID))
		default:
			st.infos++
			st.info <- informational{status: f.Status, header: f.Headers} // room for maxInformational
		}
	case wire.TypeHTTPResponse:
		if !st.head(f) {
			return
		}
		st.arrived(f.Body, true)
		st.finish(io.EOF)
	case wire.TypeHTTPResponseStart:
		st.head(f)
	case wire.TypeHTTPResponseChunk:
		if !st.started {
			s.conn.frameError("chunk_before_start", fmt.Errorf("chunk for request %q before its start", f.RequestID))
			st.reset(fmt.Errorf("%w: body before response head", ErrStreamReset))
			return
		}
		// With the window feature the agent keeps within our buffer, so
		// the read loop never waits; without it, a full buffer stops the
		// read loop until the client reads (back-pressure).
		if err := st.arrived(f.Data, !s.cfg.has(wire.FeatureWindow)); errors.Is(err, ErrFlowControl) {
			s.conn.frameError("flow_control", fmt.Errorf("request %q: agent sent past its window", f.RequestID))
			st.reset(ErrFlowControl)
		}
	case wire.TypeHTTPResponseEnd:
		if !st.started {
			st.reset(fmt.Errorf("%w: response ended before its head: %s", ErrStreamReset, f.Error))
			return
		}
		if f.Error != "" {
			st.finish(&UpstreamError{Msg: f.Error})
		} else {
			st.trailers = receivedTrailers(f.Trailers)
			st.finish(io.EOF)
		}
	case wire.TypeWindowUpdate:
		if f.Bytes > 0 {
			st.credit.add(f.Bytes)
		}
	}
}

// arrived puts response bytes in the stream's pipe. With the window
// feature they were reserved as credit; what the pipe does not take (its
// consumer left) goes back to the budget.
func (st *recvWindow) arrived(data []byte, wait bool) error {
	n := int64(len(data))
	if st.body.reserve {
		_, err := st.body.write(data, wait, st.s.done)
		return err
	}
	st.winMu.Lock()
	use := min(n, st.avail)
	st.avail -= use
	st.winMu.Unlock()
	st.s.cfg.Budget.Force(n - use) // past the credit: a whole response
	ok, err := st.body.write(data, wait, st.s.done)
	if !ok {
		st.s.cfg.Budget.Release(n)
	}
	return err
}

// head delivers the response head; it reports false for a duplicate.
func (st *edgeStream) head(f *wire.Frame) bool {
	if st.started {
		st.s.conn.frameError("duplicate_start", fmt.Errorf("second response head for request %q", f.RequestID))
		return false
	}
	st.started = true
	h := f.Headers
	if h == nil {
		h = http.Header{}
	}
	var trailer http.Header
	if vv, ok := h["Trailer"]; ok && f.Type == wire.TypeHTTPResponseStart && st.s.cfg.has(wire.FeatureTrailers) {
		// The announced trailers, as http.Transport gives them: names
		// with nil values, filled in when the body reaches EOF.
		delete(h, "Trailer")
		for _, name := range trailerNames(vv, nil) {
			if trailer == nil {
				trailer = http.Header{}
			}
			trailer[name] = nil
		}
	}
	body := &edgeBody{st: st}
	var rbody io.ReadCloser = body
	upgraded := f.Status == http.StatusSwitchingProtocols && st.upgrade && f.Type == wire.TypeHTTPResponseStart
	if upgraded {
		rbody = &upgradedConn{body}
	}
	resp := &http.Response{
		Status:        fmt.Sprintf("%d %s", f.Status, http.StatusText(f.Status)),
		StatusCode:    f.Status,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        h,
		Trailer:       trailer,
		ContentLength: -1,
		Body:          rbody,
	}
	body.resp = resp
	if upgraded {
		// No body length: the connection is the body. (-1 would make
		// the 101 go out with "Connection: close".)
		resp.ContentLength = 0
	}
	if cl := h.Get("Content-Length"); cl != "" {
		if n, err := strconv.ParseInt(cl, 10, 64); err == nil && n >= 0 {
			resp.ContentLength = n
		}
	}
	if f.Type == wire.TypeHTTPResponse && resp.ContentLength < 0 && bodyAllowed(f.Status) {
		// A whole body has a known length: say so, rather than let the
		// response go out chunked.
		resp.ContentLength = int64(len(f.Body))
		h.Set("Content-Length", strconv.Itoa(len(f.Body)))
	}
	st.start <- resp
	return true
}

// bodyAllowed reports whether a response with this status may have a body.
func bodyAllowed(status int) bool {
	return status >= 200 && status != http.StatusNoContent && status != http.StatusNotModified
}

// finish ends the response body (io.EOF or an error), as the agent ended
// it, and forgets the stream.
func (st *edgeStream) finish(err error) {
	for {
		old := st.state.Load()
		if old >= streamEnded || st.state.CompareAndSwap(old, streamFinished) {
			break
		}
	}
	st.body.closeWrite(err)
	st.forget()
}

// reset fails the stream: before its head, RoundTrip returns err; after,
// the body ends with err.
func (st *edgeStream) reset(err error) {
	st.s.cfg.Logger.Debug("stream reset", "request_id", st.id, "err", err)
	st.errMu.Lock()
	if st.err == nil {
		st.err = err
	}
	st.errMu.Unlock()
	st.end()
	st.body.closeWrite(err)
	st.forget()
}

// forget removes the stream from the session and releases its waiters.
func (st *edgeStream) forget() {
	st.once.Do(func() {
		st.s.mu.Lock()
		delete(st.s.streams, st.id)
		unwatch := st.unwatch
		st.s.mu.Unlock()
		st.endWindow()
		st.s.release()
		close(st.done)
		unwatch()
	})
}

// end marks the stream ended by the edge, and tells the agent to stop the
// request if its head went out; a reset before that leaves the cancel to
// sent. The state's swap makes it once.
func (st *edgeStream) end() {
	for {
		old := st.state.Load()
		if old >= streamEnded {
			return
		}
		if st.state.CompareAndSwap(old, streamEnded) {
			if old == streamSent {
				st.cancelAgent()
			}
			return
		}
	}
}

// over reports whether the stream ended, either way.
func (st *edgeStream) over() bool { return st.state.Load() >= streamEnded }

// sent marks the request head written; it reports false, after telling
// the agent to stop, if the edge ended the stream meanwhile.
func (st *edgeStream) sent() bool {
	if st.state.CompareAndSwap(streamNew, streamSent) || st.state.Load() == streamFinished {
		return true
	}
	st.cancelAgent()
	return false
}

// cancelAgent tells the agent to stop the request, if it understands.
func (st *edgeStream) cancelAgent() {
	if st.s.cfg.has(wire.FeatureCancel) {
		st.s.conn.writeFrame(&wire.Frame{Type: wire.TypeHTTPCancel, RequestID: st.id})
	}
}

// edgeBody is a response body; closing it before the end cancels the
// request at the agent. At EOF it fills in its response's Trailer.
type edgeBody struct {
	st      *edgeStream
	resp    *http.Response
	trailed bool // Trailer was filled in
}

func (b *edgeBody) Read(p []byte) (int, error) {
	n, err := b.st.body.Read(p)
	if err == io.EOF && !b.trailed {
		// The pipe's lock orders this after the read loop set trailers.
		b.trailed = true
		for name, vv := range b.st.trailers {
			if b.resp.Trailer == nil {
				b.resp.Trailer = http.Header{}
			}
			b.resp.Trailer[name] = vv
		}
	}
	return n, err
}

func (b *edgeBody) Close() error {
	st := b.st
	st.end()
	st.body.Close()
	st.forget()
	return nil
}

// RoundTrip carries req through the tunnel. The returned response's Body
// streams as the agent sends it; an upstream failure mid-body ends it with
// an *UpstreamError. Cancelling req's context cancels the request at the
// agent.
func (s *v1Edge) RoundTrip(req *http.Request) (*http.Response, error) {
	upgrade := isUpgrade(req.Header)
	if upgrade && !s.cfg.has(wire.FeatureUpgrade) {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, ErrUpgradeUnsupported
	}
	if isGRPC(req.Header) && (!s.cfg.has(wire.FeatureRequestStream) || !s.cfg.has(wire.FeatureTrailers)) {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, ErrGRPCUnsupported
	}
	err := s.waitOpen(req.Context())
	var st *edgeStream
	if err == nil {
		st, err = s.open(req.Context(), upgrade)
	}
	if err != nil {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, err
	}
	if err := s.send(st, req); err != nil {
		// The first reason the stream ended is the true one: a session
		// that closed while the head went out makes send see only a
		// stream already ended.
		st.reset(err)
		st.errMu.Lock()
		defer st.errMu.Unlock()
		return nil, st.err
	}
	got1xx := got1xxFunc(req.Context())
	for {
		select {
		case in := <-st.info:
			st.inform(in, got1xx)
			continue
		case resp := <-st.start:
			st.informAll(got1xx) // the 1xx that came before it
			st.proceedWith(false)
			resp.Request = req
			if req.Method == http.MethodHead {
				resp.Body.Close()
				resp.Body, resp.Trailer = http.NoBody, nil
			}
			return resp, nil
		case <-req.Context().Done():
			st.reset(req.Context().Err())
			select {
			case resp := <-st.start: // nobody reads it: its buffer goes back
				resp.Body.Close()
			default:
			}
			return nil, req.Context().Err()
		case <-st.done:
			select {
			case resp := <-st.start: // a whole response arrived and ended at once
				st.informAll(got1xx)
				resp.Request = req
				return resp, nil
			default:
			}
			st.errMu.Lock()
			defer st.errMu.Unlock()
			return nil, st.err
		}
	}
}

// got1xxFunc returns the Got1xxResponse hook of ctx's client trace (that
// of the edge's Proxy, which writes the 1xx to the client), or nil.
func got1xxFunc(ctx context.Context) func(int, textproto.MIMEHeader) error {
	if t := httptrace.ContextClientTrace(ctx); t != nil {
		return t.Got1xxResponse
	}
	return nil
}

// inform passes an informational response on to the client, on
// RoundTrip's goroutine (a slow client holds only its own request); a 100
// then lets the request body go.
func (st *edgeStream) inform(in informational, got1xx func(int, textproto.MIMEHeader) error) {
	if got1xx != nil {
		if in.header == nil {
			in.header = http.Header{}
		}
		got1xx(in.status, textproto.MIMEHeader(in.header))
	}
	if in.status == http.StatusContinue {
		st.proceedWith(true)
	}
}

// informAll passes on the informational responses received so far.
func (st *edgeStream) informAll(got1xx func(int, textproto.MIMEHeader) error) {
	for {
		select {
		case in := <-st.info:
			st.inform(in, got1xx)
		default:
			return
		}
	}
}

// proceedWith ends the hold on a body that waits for 100 Continue: the
// body goes (cont), or never will (a final response came first).
func (st *edgeStream) proceedWith(cont bool) {
	if st.proceed == nil {
		return
	}
	st.proceeded.Do(func() {
		st.continued.Store(cont)
		close(st.proceed)
	})
}

// open registers a new stream for a request with context ctx. As with
// http.Transport, ctx governs the whole exchange: when it ends (the public
// client left), the stream is reset, which ends a body read in progress and
// cancels the request at the agent.
func (s *v1Edge) open(ctx context.Context, upgrade bool) (*edgeStream, error) {
	if err := ctx.Err(); err != nil {
		return nil, err // the client left already: nothing goes out
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.acquire(s.cfg.MaxStreams); err != nil {
		return nil, err
	}
	s.nextID++
	st := &edgeStream{
		id:      strconv.FormatUint(s.nextID, 10),
		start:   make(chan *http.Response, 1),
		credit:  newCredit(int64(s.cfg.V1.Window)),
		done:    make(chan struct{}),
		upgrade: upgrade,
	}
	if s.cfg.has(wire.FeatureInformational) {
		st.info = make(chan informational, maxInformational)
	}
	st.init(s, wire.Frame{Type: wire.TypeWindowUpdate, RequestID: st.id})
	st.unwatch = context.AfterFunc(ctx, func() { st.reset(context.Cause(ctx)) })
	s.streams[st.id] = st
	return st, nil
}

// creditAgent gives credit back once half a window is owed (read, or not
// granted yet), as far as the budget allows (grant).
func (st *recvWindow) creditAgent(n int) {
	st.winMu.Lock()
	st.owed += int64(n)
	due := st.owed >= int64(st.s.cfg.V1.Window/2)
	st.winMu.Unlock()
	if due {
		st.grant()
	}
}

// grant gives the agent the credit owed, as far as the budget allows:
// under pressure the credit shrinks, down to one chunk in flight
// (budgetFloor), so every stream still moves. It must not run before the
// stream's first frame (a request's head, tcp_connect) went out: the agent
// does not know the stream before.
func (st *recvWindow) grant() {
	b := st.s.cfg.Budget
	st.winMu.Lock()
	if st.ended || st.owed == 0 {
		st.winMu.Unlock()
		return
	}
	c := b.Grow(st.owed)
	if short := budgetFloor - (st.avail + c); short > 0 {
		force := min(short, st.owed-c)
		b.Force(force)
		c += force
	}
	st.owed -= c
	st.avail += c
	st.winMu.Unlock()
	if c > 0 {
		f := st.update
		f.Bytes = c
		st.s.conn.writeFrame(&f)
	}
}

// send writes the request head, and the body: whole for a plain Jetty
// agent, streamed by a pump goroutine otherwise.
func (s *v1Edge) send(st *edgeStream, req *http.Request) error {
	h := req.Header.Clone()
	if h == nil {
		h = http.Header{}
	}
	h.Set("Host", req.Host)
	hasBody := req.Body != nil && req.Body != http.NoBody
	switch {
	case req.ContentLength > 0:
		h.Set("Content-Length", strconv.FormatInt(req.ContentLength, 10))
	case req.ContentLength < 0 && hasBody:
		h.Set("Transfer-Encoding", "chunked")
	}
	f := wire.Frame{
		RequestID: st.id,
		Method:    req.Method,
		Path:      req.URL.EscapedPath(),
		Query:     req.URL.RawQuery,
		Headers:   h,
	}
	if !s.cfg.has(wire.FeatureRequestStream) || !hasBody && !st.upgrade {
		// Whole: what a plain Jetty agent takes, and one frame instead of
		// a start and an end for a request without a body.
		f.Type = wire.TypeHTTPRequest
		if hasBody {
			// The body and its encoding in the frame are held whole:
			// both are reserved from the budget, or the request fails
			// with ErrBusy.
			body, err := readWhole(req.Body, s.cfg.V1.MaxBody, s.cfg.Budget)
			req.Body.Close()
			held := int64(cap(body))
			defer func() { s.cfg.Budget.Release(held) }()
			if err != nil {
				return err
			}
			if enc := int64(len(body))*4/3 + 4; s.cfg.Budget.Take(enc) {
				held += enc
			} else {
				return ErrBusy
			}
			f.Body = body
			h.Set("Content-Length", strconv.Itoa(len(body)))
			h.Del("Transfer-Encoding")
		}
		return s.writeHead(st, &f)
	}
	f.Type = wire.TypeHTTPRequestStart
	if err := s.writeHead(st, &f); err != nil {
		return err
	}
	if !hasBody {
		if st.upgrade {
			return nil // the stream stays open for the upgraded connection
		}
		return s.conn.writeFrame(&wire.Frame{Type: wire.TypeHTTPRequestEnd, RequestID: st.id})
	}
	if s.cfg.has(wire.FeatureInformational) && expectsContinue(h) {
		// The body waits for the agent's 100 (see continue.go).
		st.proceed = make(chan struct{})
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		st.pump(req.Body)
	}()
	return nil
}

// readWhole reads a body of at most limit bytes, reserving its buffer from
// b as it grows: ErrBodyTooLarge past limit, ErrBusy when b has no room. The
// caller releases cap of what it returns, whatever the error.
func readWhole(r io.Reader, limit int64, b *Budget) ([]byte, error) {
	var buf []byte
	for {
		if len(buf) == cap(buf) {
			size := int64(cap(buf) + max(cap(buf), chunkSize))
			if !b.Take(size) { // the new buffer, while the old is copied
				return buf, ErrBusy
			}
			nb := make([]byte, len(buf), size)
			copy(nb, buf)
			b.Release(int64(cap(buf)))
			buf = nb
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if int64(len(buf)) > limit {
			return buf, ErrBodyTooLarge
		}
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, fmt.Errorf("tunnel: read request body: %w", err)
		}
	}
}

// writeHead writes the request's first frame, unless the stream ended
// already (the client left).
func (s *v1Edge) writeHead(st *edgeStream, f *wire.Frame) error {
	if st.over() {
		return ErrStreamReset
	}
	if err := s.conn.writeFrame(f); err != nil {
		return err
	}
	if !st.sent() {
		return ErrStreamReset
	}
	if s.cfg.has(wire.FeatureWindow) {
		st.grant() // the window past the first, now that the agent knows the stream
	}
	return nil
}

// pump streams the request body to the agent within its window.
func (st *edgeStream) pump(body io.ReadCloser) {
	defer body.Close()
	s := st.s
	if st.proceed != nil {
		t := time.NewTimer(continueTimeout)
		select {
		case <-st.proceed:
			if !st.continued.Load() {
				t.Stop()
				return // a final response came first: the client sends no body
			}
		case <-t.C: // a broken agent: the body goes anyway
		case <-st.done:
			t.Stop()
			return
		}
		t.Stop()
	}
	window := s.cfg.has(wire.FeatureWindow)
	buf := make([]byte, chunkSize)
	stop := st.done
	for {
		n := chunkSize
		if window {
			if n = st.credit.take(chunkSize, stop); n == 0 {
				return
			}
		}
		m, err := body.Read(buf[:n])
		if window && m < n {
			st.credit.add(int64(n - m)) // give back what was not used
		}
		if m > 0 {
			if werr := s.conn.writeFrame(&wire.Frame{Type: wire.TypeHTTPRequestChunk, RequestID: st.id, Data: buf[:m]}); werr != nil {
				return
			}
		}
		if err == io.EOF {
			s.conn.writeFrame(&wire.Frame{Type: wire.TypeHTTPRequestEnd, RequestID: st.id})
			return
		}
		if err != nil {
			// The public client's upload broke: the request cannot
			// complete.
			st.reset(fmt.Errorf("%w: request body: %v", ErrStreamReset, err))
			return
		}
		select {
		case <-stop:
			return
		default:
		}
	}
}

// upgradedConn is the body of a 101 response: the upgraded connection.
// Reads get the agent's bytes; writes go to the agent as request chunks
// within its window. ReverseProxy copies between it and the hijacked public
// connection.
type upgradedConn struct{ *edgeBody }

func (c *upgradedConn) Write(p []byte) (int, error) {
	st := c.st
	s := st.s
	return s.conn.sendChunks(p, s.cfg.has(wire.FeatureWindow), st.credit, st.done, st.over, func(data []byte) *wire.Frame {
		return &wire.Frame{Type: wire.TypeHTTPRequestChunk, RequestID: st.id, Data: data}
	})
}

// isUpgrade reports whether h asks for a protocol upgrade (Connection:
// upgrade with an Upgrade header).
func isUpgrade(h http.Header) bool {
	return h.Get("Upgrade") != "" && httpguts.HeaderValuesContainsToken(h["Connection"], "upgrade")
}

var _ Session = (*v1Edge)(nil)
