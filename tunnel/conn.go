package tunnel

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/sluicehq/sluice/wire"
)

// Defaults for the zero values of Config.
const (
	DefaultWindow       = 512 << 10
	DefaultMaxStreams   = 1024
	DefaultMaxBody      = 32 << 20
	DefaultMaxFrameSize = 32 << 20
	DefaultPingInterval = 10 * time.Second
	DefaultPongTimeout  = 30 * time.Second
	// chunkSize is the largest body chunk put in one frame.
	chunkSize = 32 << 10
	// plainBuffer bounds a stream's buffer when the peer has no window.
	plainBuffer = 1 << 20
)

// Config configures either end of a v1 session. The zero value means the
// defaults.
type Config struct {
	// Features are the extensions both ends agreed on (the agent announced
	// them and the edge confirmed them in registered).
	Features []string
	// Window is each stream's flow-control window in bytes (v1 with the
	// window feature, and v2). Zero means DefaultWindow (512 KiB) for v1
	// and DefaultWindowV2 (4 MiB) for v2.
	Window int
	// MaxStreams bounds the concurrent streams of the session (edge).
	// Zero means DefaultMaxStreams (1024).
	MaxStreams int
	// MaxBody bounds a request body sent whole to a plain Jetty agent
	// (edge). Zero means DefaultMaxBody (32 MiB).
	MaxBody int64
	// MaxFrameSize bounds a received frame; a larger one is skipped,
	// logged and counted, and the session goes on. Zero means
	// DefaultMaxFrameSize (32 MiB).
	MaxFrameSize int
	// PingInterval is how often a WebSocket ping is sent. Zero means
	// DefaultPingInterval (10 s).
	PingInterval time.Duration
	// PongTimeout drops a peer from which nothing (no frame, no pong) came
	// for this long. Zero means DefaultPongTimeout (30 s).
	PongTimeout time.Duration
	// Logger receives frame errors and stream resets. Nil discards.
	Logger *slog.Logger
	// OnFrameError, if set, is called for each bad frame with its kind:
	// "invalid", "oversized", "unknown_type", "unknown_request_id",
	// "chunk_before_start", "duplicate_start", "binary", "flow_control",
	// "unexpected_text" (a text message from a v2 agent), and
	// "late" (a frame for a stream that already ended, such as a duplicate
	// end or data in flight when the client left; logged at debug level).
	OnFrameError func(kind string)
}

// WithDefaults returns c with its zero values replaced by the defaults.
func (c Config) WithDefaults() Config { return c.withDefaults() }

// withDefaults fills in the defaults, except Window, whose default depends
// on the protocol (see v1Window and v2Window).
func (c Config) withDefaults() Config {
	if c.MaxStreams <= 0 {
		c.MaxStreams = DefaultMaxStreams
	}
	if c.MaxBody <= 0 {
		c.MaxBody = DefaultMaxBody
	}
	if c.MaxFrameSize <= 0 {
		c.MaxFrameSize = DefaultMaxFrameSize
	}
	if c.PingInterval <= 0 {
		c.PingInterval = DefaultPingInterval
	}
	if c.PongTimeout <= 0 {
		c.PongTimeout = DefaultPongTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// v1Window is the window of a v1 stream.
func v1Window(cfg Config) int {
	if cfg.Window > 0 {
		return cfg.Window
	}
	return DefaultWindow
}

func (c Config) has(feature string) bool { return wire.HasFeature(c.Features, feature) }

// frameConn reads and writes v1 frames on a WebSocket. writeFrame is safe
// for concurrent use; readFrame is for the read loop only.
type frameConn struct {
	ws   *websocket.Conn
	cfg  Config
	wmu  sync.Mutex
	wbuf []byte
	rbuf []byte
	opt  wire.EncodeOptions
}

func newFrameConn(ws *websocket.Conn, cfg Config) *frameConn {
	c := &frameConn{ws: ws, cfg: cfg, opt: wire.EncodeOptions{MultiValueHeaders: cfg.has(wire.FeatureMultiValueHeaders)}}
	ws.SetReadLimit(0) // frameConn applies its own limit, skipping instead of failing
	ws.SetPongHandler(func(string) error { return c.extendDeadline() })
	return c
}

func (c *frameConn) extendDeadline() error {
	return c.ws.SetReadDeadline(time.Now().Add(c.cfg.PongTimeout))
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
// counted and skipped; only connection errors are returned.
func (c *frameConn) readFrame(f *wire.Frame) error {
	for {
		if err := c.extendDeadline(); err != nil {
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
		n, err := readUpTo(r, &c.rbuf, c.cfg.MaxFrameSize)
		if err != nil {
			return err
		}
		if n > c.cfg.MaxFrameSize {
			skipped, err := io.Copy(io.Discard, r)
			if err != nil {
				return err
			}
			c.frameError("oversized", fmt.Errorf("frame of %d bytes over the %d-byte limit, skipped", int64(n)+skipped, c.cfg.MaxFrameSize))
			continue
		}
		if err := wire.Decode(c.rbuf, f); err != nil {
			c.frameError("invalid", err)
			continue
		}
		if cap(c.rbuf) > 4*chunkSize {
			c.rbuf = nil
		}
		return nil
	}
}

// readUpTo reads r into *buf until EOF or until more than max bytes were
// read, and returns how many it read.
func readUpTo(r io.Reader, buf *[]byte, max int) (int, error) {
	b := *buf
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
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

func (c *frameConn) frameError(kind string, err error) {
	c.cfg.Logger.Warn("bad frame from peer", "kind", kind, "err", err)
	if c.cfg.OnFrameError != nil {
		c.cfg.OnFrameError(kind)
	}
}

// keepalive pings the peer until ctx ends.
func (c *frameConn) keepalive(ctx context.Context) {
	t := time.NewTicker(c.cfg.PingInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := c.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(c.cfg.PongTimeout)); err != nil {
				return
			}
		}
	}
}

// credit is a stream's send window: bytes it may still send.
type credit struct {
	mu    sync.Mutex
	n     int64
	added chan struct{} // cap 1
}

func newCredit(n int) *credit { return &credit{n: int64(n), added: make(chan struct{}, 1)} }

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
