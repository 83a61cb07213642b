package tunnel

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/sluicehq/sluice/wire"
)

// v1 framing constants.
const (
	// chunkSize is the largest body chunk put in one frame.
	chunkSize = 32 << 10
	// plainBuffer bounds a stream's buffer when the peer has no window.
	plainBuffer = 1 << 20
	// initialWindowV1 is the first response window the edge announces
	// with wire.FeatureInitialWindow: one chunk, the floor every stream
	// keeps (budgetFloor). The rest of Config.V1.Window follows the
	// budget, granted after the request's head.
	initialWindowV1 = budgetFloor
)

// v1Settings is a v1 session's configuration, with the features both ends
// agreed on in the register/registered exchange.
type v1Settings struct {
	Config
	features []string
	// window is each stream's first response window (agent to edge), in
	// bytes, with wire.FeatureWindow: the one registered announced with
	// wire.FeatureInitialWindow, else Config.V1.Window (the protocol's).
	window int64
}

// v1Session returns the settings of a v1 session with the features both
// ends agreed on and the window registered announced (used only with
// wire.FeatureInitialWindow).
func v1Session(cfg Config, features []string, announced int64) v1Settings {
	s := v1Settings{Config: cfg, features: features, window: int64(cfg.V1.Window)}
	if s.has(wire.FeatureWindow) && s.has(wire.FeatureInitialWindow) {
		s.window = announced
	}
	return s
}

func (c v1Settings) has(feature string) bool { return wire.HasFeature(c.features, feature) }

// frameConn reads and writes v1 frames on a WebSocket. writeFrame is safe
// for concurrent use; readFrame is for the read loop only.
type frameConn struct {
	ws   *websocket.Conn
	cfg  v1Settings
	wmu  sync.Mutex
	wbuf []byte
	rbuf []byte
	opt  wire.EncodeOptions
	live liveness
}

func newFrameConn(ws *websocket.Conn, cfg v1Settings) *frameConn {
	c := &frameConn{ws: ws, cfg: cfg, opt: wire.EncodeOptions{MultiValueHeaders: cfg.has(wire.FeatureMultiValueHeaders)}}
	ws.SetReadLimit(0) // frameConn applies its own limit, skipping instead of failing
	c.live = newLiveness(ws, cfg.PongTimeout, func(err error) {
		cfg.Logger.Info("peer dropped", "err", err)
		ws.Close()
	})
	return c
}

// writeFrame encodes and sends one frame.
func (c *frameConn) writeFrame(f *wire.Frame) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.wbuf = wire.AppendFrame(c.wbuf[:0], f, c.opt)
	err := c.ws.WriteMessage(websocket.TextMessage, c.wbuf)
	if cap(c.wbuf) > 4*chunkSize {
		c.wbuf = nil // a whole-body frame's buffer is not kept
	}
	return err
}

// writeFrameWithin is writeFrame with a deadline, for a frame that must not
// block on a peer that stopped reading.
func (c *frameConn) writeFrameWithin(f *wire.Frame, d time.Duration) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.ws.SetWriteDeadline(time.Now().Add(d))
	defer c.ws.SetWriteDeadline(time.Time{})
	c.wbuf = wire.AppendFrame(c.wbuf[:0], f, c.opt)
	return c.ws.WriteMessage(websocket.TextMessage, c.wbuf)
}

// readFrame reads the next valid frame into f. Bad frames are logged,
// counted and skipped; only connection errors are returned. A frame over
// MaxFrameSize is read into memory up to the limit only, and the rest is
// discarded in chunks. A response head over MaxHeaderBytes reaches the
// session as the end of its response with an error (the request fails;
// the session goes on).
func (c *frameConn) readFrame(f *wire.Frame) error {
	for {
		if err := c.live.extend(); err != nil {
			return err
		}
		typ, r, err := c.ws.NextReader()
		if err != nil {
			return err
		}
		if typ != websocket.TextMessage {
			if _, err := io.Copy(io.Discard, r); err != nil {
				return err
			}
			c.frameError("binary", errors.New("binary message in protocol v1"))
			continue
		}
		c.rbuf = c.rbuf[:0]
		n, err := readUpTo(r, &c.rbuf, c.cfg.V1.MaxFrameSize)
		if err != nil {
			return err
		}
		if n > c.cfg.V1.MaxFrameSize {
			c.rbuf = nil // a buffer of MaxFrameSize is not kept
			skipped, err := io.Copy(io.Discard, r)
			if err != nil {
				return err
			}
			c.frameError("oversized", fmt.Errorf("frame of %d bytes over the %d-byte limit, skipped", int64(n)+skipped, c.cfg.V1.MaxFrameSize))
			continue
		}
		err = wire.Decode(c.rbuf, f)
		if cap(c.rbuf) > 4*chunkSize {
			c.rbuf = nil
		}
		if err != nil {
			c.frameError("invalid", err)
			continue
		}
		if f.Type == wire.TypeHTTPResponseInfo && headerBytes(f.Headers) > c.cfg.MaxHeaderBytes {
			c.frameError("oversized_head", fmt.Errorf("informational response of request %q over the %d-byte limit, skipped", f.RequestID, c.cfg.MaxHeaderBytes))
			continue
		}
		if (f.Type == wire.TypeHTTPResponse || f.Type == wire.TypeHTTPResponseStart) && headerBytes(f.Headers) > c.cfg.MaxHeaderBytes {
			c.frameError("oversized_head", fmt.Errorf("response head of request %q over the %d-byte limit", f.RequestID, c.cfg.MaxHeaderBytes))
			*f = wire.Frame{Type: wire.TypeHTTPResponseEnd, RequestID: f.RequestID, Error: "response head too large"}
		}
		return nil
	}
}

// headerBytes is the size of h as HTTP/2 counts a header list (RFC 9113,
// SETTINGS_MAX_HEADER_LIST_SIZE): name, value and 32 bytes per field.
func headerBytes(h http.Header) int {
	n := 0
	for name, vv := range h {
		for _, v := range vv {
			n += len(name) + len(v) + 32
		}
	}
	return n
}

// readUpTo reads r into *buf until EOF or until more than max bytes were
// read, and returns how many it read. *buf never grows past max+1 bytes:
// what is left of a longer r stays unread.
func readUpTo(r io.Reader, buf *[]byte, max int) (int, error) {
	b := *buf
	for {
		if len(b) == cap(b) {
			// Grow by doubling, as append would, but never past the
			// one byte that tells a frame over the limit.
			nb := make([]byte, len(b), min(2*cap(b)+512, max+1))
			copy(nb, b)
			b = nb
		}
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		*buf = b
		if err == io.EOF {
			return len(b), nil
		}
		if err != nil {
			return len(b), err
		}
		if len(b) > max {
			return len(b), nil
		}
	}
}

func (c *frameConn) frameError(kind string, err error) { c.cfg.frameError(kind, err) }

// credit is a stream's send window: bytes it may still send.
type credit struct {
	mu    sync.Mutex
	n     int64
	added chan struct{} // cap 1
}

func newCredit(n int64) *credit { return &credit{n: n, added: make(chan struct{}, 1)} }

func (c *credit) add(n int64) {
	c.mu.Lock()
	c.n += n
	c.mu.Unlock()
	signal(c.added)
}

// take waits until some credit exists and takes up to max of it; it
// returns 0 when stop is closed first.
func (c *credit) take(max int, stop <-chan struct{}) int {
	for {
		c.mu.Lock()
		if c.n > 0 {
			n := min(int64(max), c.n)
			c.n -= n
			c.mu.Unlock()
			return int(n)
		}
		c.mu.Unlock()
		select {
		case <-c.added:
		case <-stop:
			return 0
		}
	}
}

// sendChunks sends p as frames of at most chunkSize bytes (frame makes one
// for its data), each within cr's credit when window is on: the body
// chunks of both ends and the bytes of TCP connections. It stops with
// ErrStreamReset when stop closes while it waits for credit, or when ended
// (if set) says the stream is over before a frame goes out.
func (c *frameConn) sendChunks(p []byte, window bool, cr *credit, stop <-chan struct{}, ended func() bool, frame func(data []byte) *wire.Frame) (int, error) {
	written := 0
	for len(p) > 0 {
		n := min(len(p), chunkSize)
		if window {
			if n = cr.take(n, stop); n == 0 {
				return written, ErrStreamReset
			}
		}
		if ended != nil && ended() {
			return written, ErrStreamReset
		}
		if err := c.writeFrame(frame(p[:n])); err != nil {
			return written, err
		}
		written += n
		p = p[n:]
	}
	return written, nil
}
