package tunnel

import (
	"context"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/sluicehq/sluice/wire"
	"github.com/xtaci/smux"
)

// Protocol v2: after the JSON register/registered exchange, the WebSocket's
// binary messages carry an xtaci/smux session (version 2, with per-stream
// flow control). Each request is HTTP/1.1 on a stream of its own: the edge's
// Transport dials streams, the agent runs http.Serve on the streams it
// accepts. Chunked bodies, trailers, Expect: 100-continue and upgrades
// (WebSocket) are then net/http's. docs/protocol.md says why smux.

// v2 multiplexer settings.
const (
	// muxFrameSize is smux's largest frame (its limit is 64 KiB - 1).
	muxFrameSize = 32 << 10
	// muxSessionBuffer bounds the bytes buffered for all the streams of a
	// session; each stream is bounded by Config.Window, so a few slow
	// readers cannot fill it and stall the others.
	muxSessionBuffer = 256 << 20
	// muxIdleStreams is how many idle streams the edge keeps for reuse.
	muxIdleStreams = 64
)

func muxConfig(cfg Config) *smux.Config {
	c := smux.DefaultConfig()
	c.Version = 2
	c.KeepAliveDisabled = true // WebSocket pings detect dead peers, as in v1
	c.MaxFrameSize = muxFrameSize
	c.MaxStreamBuffer = cfg.Window
	c.MaxReceiveBuffer = max(muxSessionBuffer, cfg.Window)
	return c
}

// MuxSession is the edge's end of a protocol v2 connection.
type MuxSession struct {
	conn *WSConn
	cfg  Config
	tr   *http.Transport

	mu      sync.Mutex // guards mux
	mux     *smux.Session
	streams atomic.Int64

	ready     chan struct{} // closed by Open
	done      chan struct{} // closed when the session is over
	closeOnce sync.Once
	runDone   chan struct{}
	started   atomic.Bool
}

// NewMuxSession wraps an agent's WebSocket that negotiated the sluice.v2
// subprotocol, before the registered answer. It does no I/O.
func NewMuxSession(ws *websocket.Conn, cfg Config) *MuxSession {
	cfg = cfg.withDefaults()
	s := &MuxSession{
		conn:    NewWSConn(ws, cfg.PongTimeout),
		cfg:     cfg,
		ready:   make(chan struct{}),
		done:    make(chan struct{}),
		runDone: make(chan struct{}),
	}
	s.tr = &http.Transport{
		DialContext:         s.dial,
		DisableCompression:  true, // bodies pass through as the client asked
		MaxIdleConnsPerHost: muxIdleStreams,
		IdleConnTimeout:     30 * time.Second,
		ForceAttemptHTTP2:   false,
		// 32 KiB buffers: the stream's bytes are copied in and out of
		// them, and large reads cut the per-call overhead.
		ReadBufferSize:  32 << 10,
		WriteBufferSize: 32 << 10,
	}
	return s
}

// Protocol returns "v2".
func (s *MuxSession) Protocol() string { return "v2" }

// Open sends registered (a text message), starts the multiplexer and lets
// requests through.
func (s *MuxSession) Open(registered *wire.Frame, timeout time.Duration) error {
	if err := s.conn.WriteText(wire.AppendFrame(nil, registered, wire.EncodeOptions{}), timeout); err != nil {
		return err
	}
	m, err := smux.Client(s.conn, muxConfig(s.cfg))
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.mux = m
	s.mu.Unlock()
	close(s.ready)
	return nil
}

func (s *MuxSession) dial(ctx context.Context, _, _ string) (net.Conn, error) {
	s.mu.Lock()
	m := s.mux
	s.mu.Unlock()
	if m == nil {
		return nil, ErrSessionClosed
	}
	st, err := m.OpenStream()
	if err != nil {
		return nil, ErrSessionClosed
	}
	return st, nil
}

// Done is closed when the session is over.
func (s *MuxSession) Done() <-chan struct{} { return s.done }

// Streams returns the number of requests in flight.
func (s *MuxSession) Streams() int { return int(s.streams.Load()) }

// Run serves until the connection fails, ctx ends or Close is called.
func (s *MuxSession) Run(ctx context.Context) error {
	s.started.Store(true)
	defer close(s.runDone)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.conn.Keepalive(s.cfg.PingInterval)
	}()
	s.mu.Lock()
	m := s.mux
	s.mu.Unlock()
	var err error
	select {
	case <-ctx.Done():
		err = ctx.Err()
	case <-s.done:
		err = ErrSessionClosed
	case <-m.CloseChan():
		err = errors.New("tunnel: v2 connection lost")
	}
	s.shutdown()
	wg.Wait()
	return err
}

func (s *MuxSession) shutdown() {
	s.closeOnce.Do(func() {
		close(s.done)
		s.mu.Lock()
		m := s.mux
		s.mu.Unlock()
		if m != nil {
			m.Close()
		}
		s.conn.Close()
		s.tr.CloseIdleConnections()
	})
}

// Close ends the session at once; streams in flight fail.
func (s *MuxSession) Close() error {
	s.shutdown()
	if s.started.Load() {
		<-s.runDone
	}
	return nil
}

// Retire sends the agent an error frame as a text message, waits for the
// requests in flight to finish or ctx to end, then closes.
func (s *MuxSession) Retire(ctx context.Context, code, message string) {
	s.conn.WriteText(wire.AppendFrame(nil, &wire.Frame{Type: wire.TypeError, Code: code, Message: message}, wire.EncodeOptions{}), 5*time.Second)
	waitIdle(ctx, s)
	s.Close()
}

// waitIdle waits until s has no stream in flight, ends, or ctx ends.
func waitIdle(ctx context.Context, s Session) {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for s.Streams() > 0 {
		select {
		case <-ctx.Done():
			return
		case <-s.Done():
			return
		case <-t.C:
		}
	}
}

// RoundTrip carries req on a stream of its own (or an idle one reused).
func (s *MuxSession) RoundTrip(req *http.Request) (*http.Response, error) {
	select {
	case <-s.ready:
	case <-s.done:
	case <-req.Context().Done():
	}
	closeBody := func() {
		if req.Body != nil {
			req.Body.Close()
		}
	}
	select {
	case <-s.done:
		closeBody()
		return nil, ErrSessionClosed
	default:
	}
	if err := req.Context().Err(); err != nil {
		closeBody()
		return nil, err
	}
	if s.streams.Add(1) > int64(s.cfg.MaxStreams) {
		s.streams.Add(-1)
		closeBody()
		return nil, ErrTooManyStreams
	}
	resp, err := s.tr.RoundTrip(req)
	if err != nil {
		s.streams.Add(-1)
		select {
		case <-s.done:
			return nil, ErrSessionClosed
		default:
		}
		return nil, err
	}
	resp.Body = countedBody(resp.Body, func() { s.streams.Add(-1) })
	return resp, nil
}

// countedBody calls done once when body is closed, keeping the Write of an
// upgraded connection's body.
func countedBody(body io.ReadCloser, done func()) io.ReadCloser {
	b := &onClose{ReadCloser: body, done: done}
	if rwc, ok := body.(io.ReadWriteCloser); ok {
		return &onCloseRW{onClose: b, w: rwc}
	}
	return b
}

type onClose struct {
	io.ReadCloser
	once sync.Once
	done func()
}

func (b *onClose) Close() error {
	err := b.ReadCloser.Close()
	b.once.Do(b.done)
	return err
}

type onCloseRW struct {
	*onClose
	w io.Writer
}

func (b *onCloseRW) Write(p []byte) (int, error) { return b.w.Write(p) }

var _ Session = (*MuxSession)(nil)

// ServeMux serves the requests of a protocol v2 connection (after the
// register/registered exchange) with handler until the connection fails or
// ctx ends, then returns once the handlers have returned. An error frame
// the edge sent as a text message is returned as a *PeerError.
func ServeMux(ctx context.Context, ws *websocket.Conn, handler http.Handler, cfg Config) error {
	cfg = cfg.withDefaults()
	parent := ctx
	conn := NewWSConn(ws, cfg.PongTimeout)
	var peerMu sync.Mutex
	var peerErr *PeerError
	conn.OnText(func(msg []byte) {
		var f wire.Frame
		if err := wire.Decode(msg, &f); err != nil || f.Type != wire.TypeError {
			cfg.Logger.Warn("unexpected control message from the edge", "msg", string(msg))
			return
		}
		cfg.Logger.Warn("edge error", "code", f.Code, "message", f.Message)
		peerMu.Lock()
		peerErr = &PeerError{Code: f.Code, Message: f.Message}
		peerMu.Unlock()
	})
	m, err := smux.Server(conn, muxConfig(cfg))
	if err != nil {
		conn.Close()
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		conn.Keepalive(cfg.PingInterval)
	}()
	stop := context.AfterFunc(ctx, func() { m.Close() })
	hs := &handlerSet{idle: make(chan struct{})}
	srv := &http.Server{
		Handler:     hs.wrap(handler),
		ErrorLog:    log.New(io.Discard, "", 0),
		BaseContext: func(net.Listener) context.Context { return ctx },
	}
	err = srv.Serve(muxListener{m})
	stop()
	m.Close()
	conn.Close()
	cancel() // the handlers' requests are cancelled
	srv.Close()
	hs.wait()
	wg.Wait()
	if parent.Err() != nil {
		return nil
	}
	peerMu.Lock()
	defer peerMu.Unlock()
	if peerErr != nil {
		return peerErr
	}
	return errors.Join(errors.New("tunnel: v2 connection lost"), err)
}

// handlerSet counts the handlers running, so that ServeMux returns only
// after they did.
type handlerSet struct {
	mu      sync.Mutex
	n       int
	closing bool
	idle    chan struct{}
}

func (h *handlerSet) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.mu.Lock()
		if h.closing {
			h.mu.Unlock()
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		h.n++
		h.mu.Unlock()
		defer func() {
			h.mu.Lock()
			h.n--
			if h.closing && h.n == 0 {
				close(h.idle)
			}
			h.mu.Unlock()
		}()
		next.ServeHTTP(w, r)
	})
}

func (h *handlerSet) wait() {
	h.mu.Lock()
	h.closing = true
	if h.n == 0 {
		close(h.idle)
	}
	h.mu.Unlock()
	<-h.idle
}

// muxListener is the agent's listener: each stream the edge opens is a
// connection.
type muxListener struct{ m *smux.Session }

func (l muxListener) Accept() (net.Conn, error) {
	st, err := l.m.AcceptStream()
	if err != nil {
		return nil, err
	}
	return st, nil
}
func (l muxListener) Close() error   { return l.m.Close() }
func (l muxListener) Addr() net.Addr { return agentAddr }
