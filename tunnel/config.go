package tunnel

import (
	"log/slog"
	"net/http"
	"time"

	"github.com/sluicehq/sluice/internal/ratelog"
)

// Defaults for the zero values of Config.
const (
	DefaultMaxStreams       = 1024
	DefaultPingInterval     = 10 * time.Second
	DefaultPongTimeout      = 30 * time.Second
	DefaultHandshakeTimeout = 15 * time.Second

	// DefaultWindowV1 is a v1 stream's flow-control window (with the
	// window feature).
	DefaultWindowV1 = 512 << 10
	// DefaultMaxBody bounds a request body sent whole to a plain Jetty
	// agent.
	DefaultMaxBody = 32 << 20
	// DefaultMaxFrameSize bounds a received v1 frame.
	DefaultMaxFrameSize = 32 << 20

	// DefaultWindowV2 is a v2 stream's flow-control window: measured
	// here, v2 downloads ran at about 500 MB/s with 1 MiB, 570 with 4 MiB
	// and 590 with 16 MiB (and v1's 512 KiB cost a fifth). It bounds what
	// one slow reader's stream buffers, at each end.
	DefaultWindowV2 = 4 << 20

	// DefaultMaxHeaderBytes bounds an agent's response head, as net/http
	// bounds a request head (http.DefaultMaxHeaderBytes, 1 MiB).
	DefaultMaxHeaderBytes = http.DefaultMaxHeaderBytes

	// MaxRequestHeaderBytes is the largest request head an edge may be
	// set to take from visitors (edge.Config.MaxHeaderBytes), and what an
	// agent's v2 server takes from its edge, which bounds heads already.
	MaxRequestHeaderBytes = 4 << 20
)

// Config configures either end of a session, whatever its protocol. The
// zero value means the defaults; V1 and V2 hold what only one protocol
// uses.
type Config struct {
	// MaxStreams bounds the concurrent streams of a session (edge).
	// Zero means DefaultMaxStreams (1024).
	MaxStreams int
	// PingInterval is how often a WebSocket ping is sent. Zero means
	// DefaultPingInterval (10 s).
	PingInterval time.Duration
	// PongTimeout drops a peer from which nothing (no frame, no pong) came
	// for this long. Zero means DefaultPongTimeout (30 s).
	PongTimeout time.Duration
	// HandshakeTimeout bounds the register/registered exchange: reading
	// the agent's register (edge), the WebSocket handshake and the
	// answer (agent). Zero means DefaultHandshakeTimeout (15 s).
	HandshakeTimeout time.Duration
	// Logger receives frame errors and stream resets. Nil discards.
	Logger *slog.Logger
	// OnFrameError, if set, is called for each bad frame with its kind:
	// "invalid", "oversized", "unknown_type", "unknown_request_id",
	// "chunk_before_start", "duplicate_start", "binary", "flow_control",
	// "unexpected_text" (a text message from a v2 agent), and
	// "late" (a frame for a stream that already ended, such as a duplicate
	// end or data in flight when the client left; logged at debug level).
	OnFrameError func(kind string)
	// Budget bounds the body bytes the edge's sessions buffer or let
	// their agents send, all together: share one among the sessions of
	// an edge. Nil means a budget of DefaultMaxBuffer (256 MiB) for each
	// Config that WithDefaults fills in.
	Budget *Budget

	// Limits on what a peer may make this end hold or log (issue 11).
	//
	// MaxHeaderBytes bounds a response head from the agent (edge), counted
	// as HTTP/2 counts a header list: name, value and 32 bytes per field. A
	// larger head fails its request (502) and is counted as
	// "oversized_head". Zero means DefaultMaxHeaderBytes (1 MiB).
	MaxHeaderBytes int
	// LogLimiter rate-limits the log lines of bad frames (OnFrameError
	// still sees every one). Nil means one limiter per Config.WithDefaults
	// call; the edge shares one among its sessions.
	LogLimiter *ratelog.Limiter

	V1 V1Config
	V2 V2Config

	// tcp: the agent registered a TCP tunnel (set by Accept), so the
	// edge's session may open TCP streams.
	tcp bool
	// udp: the agent registered a UDP tunnel (set by Accept).
	udp bool
}

// V1Config is what only protocol v1 (JSON frames) uses.
type V1Config struct {
	// Window is each stream's flow-control window in bytes (with the
	// window feature). Zero means DefaultWindowV1 (512 KiB).
	Window int
	// MaxBody bounds a request body sent whole to a plain Jetty agent
	// (edge). Zero means DefaultMaxBody (32 MiB).
	MaxBody int64
	// MaxFrameSize bounds a received frame; a larger one is skipped,
	// logged and counted, and the session goes on. Zero means
	// DefaultMaxFrameSize (32 MiB).
	MaxFrameSize int
}

// V2Config is what only protocol v2 (HTTP/2 over the WebSocket) uses.
type V2Config struct {
	// Window is each stream's flow-control window in bytes, each way.
	// Zero means DefaultWindowV2 (4 MiB).
	Window int
}

// WithDefaults returns c with its zero values replaced by the defaults.
func (c Config) WithDefaults() Config {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&c.MaxStreams, DefaultMaxStreams)
	def(&c.V1.Window, DefaultWindowV1)
	def(&c.V1.MaxFrameSize, DefaultMaxFrameSize)
	def(&c.V2.Window, DefaultWindowV2)
	def(&c.MaxHeaderBytes, DefaultMaxHeaderBytes)
	if c.LogLimiter == nil {
		c.LogLimiter = &ratelog.Limiter{}
	}
	if c.V1.MaxBody <= 0 {
		c.V1.MaxBody = DefaultMaxBody
	}
	if c.PingInterval <= 0 {
		c.PingInterval = DefaultPingInterval
	}
	if c.PongTimeout <= 0 {
		c.PongTimeout = DefaultPongTimeout
	}
	if c.HandshakeTimeout <= 0 {
		c.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Budget == nil {
		c.Budget = NewBudget(0)
	}
	return c
}

// frameError counts one bad frame or message from the peer, and logs it
// within the rate of c.LogLimiter (per kind).
func (c Config) frameError(kind string, err error) {
	c.LogLimiter.Log(c.Logger, slog.LevelWarn, "frame:"+kind, "bad frame from peer", "kind", kind, "err", err)
	if c.OnFrameError != nil {
		c.OnFrameError(kind)
	}
}
