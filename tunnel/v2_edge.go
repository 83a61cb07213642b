package tunnel

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/sluicehq/sluice/wire"
)

// Protocol v2: after the JSON register/registered exchange, the WebSocket's
// binary messages carry one HTTP/2 connection (RFC 9113): the edge is its
// client (h2client.go), the agent its server (h2server.go), both our own
// over golang.org/x/net/http2's Framer and HPACK. Each request is an
// HTTP/2 stream with its own flow-control window, so chunked bodies,
// trailers, cancellation (RST_STREAM) and back-pressure come from the
// protocol, and a slow reader fills only its own stream's window.
// Upgrades (WebSocket), which HTTP/2 has no 101 for, are carried as a
// full-duplex stream (see upgradeH2). docs/protocol.md says why HTTP/2
// rather than yamux or smux: it was measured.

// v2 settings.
const (
	// h2MaxStreams is the agent's SETTINGS_MAX_CONCURRENT_STREAMS. The
	// edge enforces its own limit (Config.MaxStreams) and answers 503
	// past it; the agent's must not be lower (x/net's default of 250
	// fails the 251st request at once).
	h2MaxStreams = 1 << 20
	// h2ConnWindow is the connection-level window each way: large, so
	// that only the per-stream windows (Config.Window) limit a stream.
	h2ConnWindow = 1 << 30
	// h2FrameSize is the largest DATA frame the edge reads: its bytes
	// wait in the stream's pooled chunks (h2RecvBuf), the largest of which
	// holds such a frame.
	h2FrameSize = 64 << 10
	// h2AgentFrameSize is the largest DATA frame the agent reads, and so
	// the largest the edge sends: a request body being sent holds a
	// buffer of that size at most, outside any window, so a small one
	// keeps uploads that wait on a slow upstream cheap at the edge.
	h2AgentFrameSize = 64 << 10
)

// v2Edge is the edge's end of a protocol v2 connection: an HTTP/2 client
// connection over the WebSocket.
type v2Edge struct {
	lifecycle
	conn *WSConn
	cfg  Config
	mu   sync.Mutex // guards cc
	cc   *h2cConn
	// informational: the agent takes Expect: 100-continue through
	// (wire.FeatureInformational, see continue.go).
	informational bool
	// pipes, if the agent pipes (wire.FeaturePipe), carry simple
	// requests (pipes.go).
	pipes *pipes
}

// newV2Edge wraps an agent's WebSocket that negotiated the sluice.v2
// subprotocol, before registered is sent. It does no I/O: start does,
// after registered.
func newV2Edge(ws *websocket.Conn, cfg Config, features []string, pipe bool) *v2Edge {
	s := &v2Edge{conn: NewWSConn(ws, cfg.PongTimeout), cfg: cfg, informational: wire.HasFeature(features, wire.FeatureInformational)}
	if pipe {
		s.pipes = newPipes(s)
	}
	s.lifecycle = newLifecycle(func() {
		s.mu.Lock()
		cc := s.cc
		s.mu.Unlock()
		s.conn.Close()
		if cc != nil {
			cc.close()
		}
		if s.pipes != nil {
			s.pipes.close()
		}
	})
	// The agent's one control message in v2 is pipe_reset, when it pipes;
	// another is logged, counted and ignored, and the connection goes on.
	s.conn.OnText(func(msg []byte) {
		var f wire.Frame
		if s.pipes != nil && wire.Decode(msg, &f) == nil && f.Type == wire.TypePipeReset {
			s.pipes.reset()
			return
		}
		cfg.frameError("unexpected_text", fmt.Errorf("text message of %d bytes from a v2 agent ignored", len(msg)))
	})
	return s
}

// writeText sends a control frame (registered, error) as a text message.
func (s *v2Edge) writeText(f *wire.Frame, timeout time.Duration) error {
	return s.conn.WriteText(wire.AppendFrame(nil, f, wire.EncodeOptions{}), timeout)
}

// start begins the HTTP/2 connection (its preface and settings go out),
// after registered.
func (s *v2Edge) start() error {
	cfg := h2ClientConfig{
		Budget:         s.cfg.Budget,
		Window:         s.cfg.V2.Window,
		MaxHeaderBytes: s.cfg.MaxHeaderBytes,
		OnError:        s.cfg.frameError,
	}
	if s.informational {
		// A request that expects 100-continue sends its body after the
		// agent's 100 (or never, after a final response above 299).
		cfg.ContinueTimeout = continueTimeout
	}
	cc, err := newH2Client(s.conn, cfg)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.cc = cc
	s.mu.Unlock()
	return nil
}

// Protocol returns "v2".
func (s *v2Edge) Protocol() string { return ProtocolV2 }

// Run serves until the connection fails, ctx ends or Close is called.
func (s *v2Edge) Run(ctx context.Context) error {
	s.running()
	defer close(s.runDone)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.conn.Keepalive(s.cfg.PingInterval)
	}()
	var err error
	select {
	case <-ctx.Done():
		err = ctx.Err()
	case <-s.done:
		err = ErrSessionClosed
	case <-s.conn.Dead():
		err = fmt.Errorf("tunnel: v2 connection lost: %w", s.conn.Err())
	}
	s.shutdown()
	wg.Wait()
	return err
}

// Retire sends the agent an error frame as a text message, waits for the
// requests in flight to finish or ctx to end, then closes.
func (s *v2Edge) Retire(ctx context.Context, code, message string) {
	s.retire(ctx, func() {
		s.writeText(&wire.Frame{Type: wire.TypeError, Code: code, Message: message}, 5*time.Second)
	})
}

// RoundTrip carries req on a stream of its own, or on a pipe (pipes.go)
// when the agent pipes and req is simple.
func (s *v2Edge) RoundTrip(req *http.Request) (*http.Response, error) {
	closeBody := func() {
		if req.Body != nil {
			req.Body.Close()
		}
	}
	if err := s.waitOpen(req.Context()); err != nil {
		closeBody()
		return nil, err
	}
	if s.pipes != nil && !s.pipes.off.Load() && pipeable(req) {
		resp, err := s.pipes.roundTrip(req)
		switch {
		case err == nil:
			return resp, nil
		case errors.Is(err, errPipeOff):
			// On a stream of its own, below.
		default:
			select {
			case <-s.done:
				return nil, ErrSessionClosed
			default:
			}
			return nil, err
		}
	}
	if err := s.acquireStream(); err != nil {
		closeBody()
		return nil, err
	}
	var resp *http.Response
	var err error
	if isUpgrade(req.Header) {
		resp, err = s.roundTripUpgrade(req)
	} else {
		resp, _, err = s.cc.roundTrip(s.expectation(req), false)
	}
	if err != nil {
		s.release()
		select {
		case <-s.done:
			return nil, ErrSessionClosed
		default:
		}
		return nil, err
	}
	resp.Body = countedBody(resp.Body, s.release)
	return resp, nil
}

// acquireStream counts a new stream in the session's limit; at the limit,
// idle pipes (counted too) are closed to make room.
func (s *v2Edge) acquireStream() error {
	err := s.acquire(s.cfg.MaxStreams)
	if errors.Is(err, ErrTooManyStreams) && s.pipes != nil && s.pipes.closeIdle() > 0 {
		err = s.acquire(s.cfg.MaxStreams)
	}
	return err
}

// expectation readies a request that expects 100-continue: an agent with
// the feature gets the expectation (its HTTP/2 server takes Expect out, so
// it also travels as headerExpect) and answers with one 100; to another,
// Expect is not sent (its 100 would come on top of the edge's own).
func (s *v2Edge) expectation(req *http.Request) *http.Request {
	if req.Body == nil || req.Body == http.NoBody || !expectsContinue(req.Header) {
		return req
	}
	r := *req
	r.Header = req.Header.Clone()
	if s.informational {
		r.Header.Set(headerExpect, "100-continue")
	} else {
		r.Header.Del("Expect")
	}
	return &r
}

// countedBody calls done once when body is closed, keeping the Write of an
// upgraded connection's body and the writeNext and Ready of a response
// body (chunkBody: the Proxy finds them through this wrapper).
func countedBody(body io.ReadCloser, done func()) io.ReadCloser {
	if rwc, ok := body.(io.ReadWriteCloser); ok {
		return &onCloseRW{onClose: &onClose{ReadCloser: body, done: done}, w: rwc}
	}
	if cb, ok := body.(chunkBody); ok {
		return &onCloseChunks{onClose: onClose{ReadCloser: body, done: done}, cb: cb}
	}
	return &onClose{ReadCloser: body, done: done}
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

type onCloseChunks struct {
	onClose
	cb chunkBody
}

func (b *onCloseChunks) writeNext(w io.Writer, bp *BufferPool) (int, error) {
	return b.cb.writeNext(w, bp)
}
func (b *onCloseChunks) Ready() bool { return b.cb.Ready() }

var _ Session = (*v2Edge)(nil)
