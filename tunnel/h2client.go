package tunnel

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"time"

	"golang.org/x/net/http2"
)

// The edge's end of protocol v2 is an HTTP/2 client (RFC 9113) of our own
// rather than golang.org/x/net/http2's ClientConn, which runs a goroutine
// per request for the request's whole life and hands every response head
// from its read loop to RoundTrip, and whose receive windows had to be
// bent to the edge's Budget by rewriting its frames (the former
// v2_window.go). Here, as in the agent's server (h2server.go), whose
// rules of HTTP/2 it shares (h2conn.go):
//
//   - one goroutine per connection reads and handles the frames (the read
//     loop); RoundTrip's goroutine encodes the request's header block
//     under the encoder's lock (wmu) and queues it itself (END_STREAM on it
//     when there is no body), then waits for the response head, which the
//     read loop hands over once. A request body is written by a goroutine
//     started for it, which ends when the body was sent; the body of a
//     full-duplex stream (upgrades, TCP, UDP) by its caller's Writes;
//   - the response body waits in pooled chunks (h2RecvBuf) taken only while
//     bytes wait, and is read by the caller: a held stream holds no
//     goroutine and no buffer here;
//   - the read loop never waits for the peer to read: its own frames
//     (acknowledgements, WINDOW_UPDATEs, RST_STREAM, GOAWAY) are queued
//     without waiting for room (h2Out.queue);
//   - the receive windows follow the edge's Budget natively (v2_window.go):
//     the agent is told a small initial stream window (h2Floor) and each
//     stream's window grows only as far as Config.V2.Window and the budget
//     allow.
//
// The wire is unchanged: agents running x/net's server (older releases)
// and the agent's own server both serve it.

// h2cConn is the edge's HTTP/2 client connection. Its h2Conn says which
// fields the read loop alone touches and which mu and wmu guard; mu
// guards the budget's accounting too, and wmu the allocation of stream
// IDs (so that HEADERS go out in the order of their IDs).
type h2cConn struct {
	h2Conn
	conn            net.Conn
	budget          *Budget
	window          int64 // the most a stream's window grows to (Config.V2.Window)
	maxHeaderBytes  int   // a response head's limit (SETTINGS_MAX_HEADER_LIST_SIZE)
	continueTimeout time.Duration
	readDone        chan struct{} // closed when the read loop returned

	nextID uint32 // under wmu

	// under mu
	streams   map[uint32]*h2cStream
	lastID    uint32 // the highest stream opened
	goAway    bool   // the agent sent GOAWAY: no new streams
	exhausted bool   // the stream IDs ran out: no new streams
	granted   int64  // budget: window granted to the streams, not yet received
	buffered  int64  // budget: bytes received, not yet read or dropped
	released  bool   // the budget's share was given back (the connection ended)
}

// h2ClientConfig configures newH2Client.
type h2ClientConfig struct {
	Budget *Budget // nil: no budget
	// Window is the most a stream's receive window grows to; zero means
	// DefaultWindowV2.
	Window int
	// MaxHeaderBytes bounds a response head; zero means
	// DefaultMaxHeaderBytes.
	MaxHeaderBytes int
	// ContinueTimeout, if not zero, makes a request that expects
	// 100-continue hold its body back until the agent's 100, a final
	// response above 299 (then it is never sent) or this timeout.
	ContinueTimeout time.Duration
	// OnError is told of each protocol error of the agent; nil ignores.
	OnError func(kind string, err error)
}

// Sizes and limits of the client.
const (
	// h2Floor is the stream window the agent is told in SETTINGS: what
	// every stream may always have in flight, budget or not. It is
	// HTTP/2's default frame size.
	h2Floor = 16 << 10
	// h2MaxStreamID is the last stream ID a client may use.
	h2MaxStreamID = 1<<31 - 1
)

// newH2Client starts an HTTP/2 client connection on conn: its preface and
// settings are queued, and its read loop runs until the connection ends.
// close ends it.
func newH2Client(conn net.Conn, cfg h2ClientConfig) (*h2cConn, error) {
	window := cfg.Window
	if window <= 0 {
		window = DefaultWindowV2
	}
	maxHeader := cfg.MaxHeaderBytes
	if maxHeader <= 0 {
		maxHeader = DefaultMaxHeaderBytes
	}
	c := &h2cConn{
		conn:            conn,
		budget:          cfg.Budget,
		window:          int64(max(min(window, h2MaxWindow), h2Floor)),
		maxHeaderBytes:  maxHeader,
		continueTimeout: cfg.ContinueTimeout,
		readDone:        make(chan struct{}),
		nextID:          1,
		streams:         map[uint32]*h2cStream{},
	}
	c.init(conn, uint32(maxHeader), h2FrameSize, cfg.OnError)
	c.recvConn = h2ConnWindow

	b := appendSettings([]byte(http2.ClientPreface),
		http2.Setting{ID: http2.SettingEnablePush, Val: 0},
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: h2Floor},
		http2.Setting{ID: http2.SettingMaxFrameSize, Val: h2FrameSize},
		http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: uint32(maxHeader)})
	if err := c.out.queue(b); err != nil {
		return nil, fmt.Errorf("tunnel: v2: %w", err)
	}
	go c.readLoop()
	return c, nil
}

// close ends the connection and returns once the read loop did: every
// stream has failed, and what the connection reserved of the budget is
// released.
func (c *h2cConn) close() {
	c.conn.Close()
	<-c.readDone
}

// readLoop reads and handles frames until the connection fails or the
// agent breaks the protocol (then GOAWAY goes out first), then ends every
// stream and closes the connection.
func (c *h2cConn) readLoop() {
	defer close(c.readDone)
	err := c.readFrames(c)
	c.conn.Close()
	c.closeAll(err)
}

// streamError resets stream id after a stream error of the agent's.
func (c *h2cConn) streamError(id uint32, code http2.ErrCode, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if st := c.streams[id]; st != nil {
		c.resetLocked(st, code, err)
	} else if id != 0 {
		c.out.queue(appendRST(c.ctl[:0], id, code))
	}
}

// frame handles one frame from the agent.
func (c *h2cConn) frame(f http2.Frame) error {
	return c.handleFrame(c, f)
}

// opened reports whether stream id was opened by the client (an idle
// stream's frames are a connection error). The caller holds mu.
func (c *h2cConn) opened(id uint32) bool { return id%2 == 1 && id <= c.lastID }

// sends visits the streams' send windows (h2Conn.settings). The caller
// holds mu.
func (c *h2cConn) sends(yield func(*h2Stream) bool) {
	for _, st := range c.streams {
		if !yield(&st.h2Stream) {
			return
		}
	}
}

// sendStream returns stream id's send window (h2Conn.windowUpdate): nil
// for a closed stream, an error for one never opened. The caller holds
// mu.
func (c *h2cConn) sendStream(id uint32) (*h2Stream, error) {
	if !c.opened(id) {
		return nil, http2.ConnectionError(http2.ErrCodeProtocol)
	}
	if st := c.streams[id]; st != nil {
		return &st.h2Stream, nil
	}
	return nil, nil // a closed stream: allowed
}

// rstStream ends a stream the agent reset: its request fails, or its
// body does once the bytes received are read; a stream whose response
// was complete keeps it (RFC 9113, section 8.1: a server may reset with
// NO_ERROR a request whose body it does not need).
func (c *h2cConn) rstStream(f *http2.RSTStreamFrame) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.opened(f.StreamID) {
		return http2.ConnectionError(http2.ErrCodeProtocol)
	}
	if st := c.streams[f.StreamID]; st != nil {
		st.localDone = true // nothing more may be sent
		c.endLocked(st, fmt.Errorf("%w: %v", ErrStreamReset, f.ErrCode))
	}
	return nil
}

// goAwayFrame refuses new streams and fails those the agent will not
// process; the connection closes once the others ended.
func (c *h2cConn) goAwayFrame(f *http2.GoAwayFrame) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.goAway = true
	err := fmt.Errorf("%w: the agent sent GOAWAY (%v)", ErrSessionClosed, f.ErrCode)
	for id, st := range c.streams {
		if id > f.LastStreamID {
			st.localDone = true
			c.endLocked(st, err)
		}
	}
	c.closeIfIdleLocked()
}

// closeIfIdleLocked closes the connection once no new stream may open
// (GOAWAY, or the stream IDs ran out) and none is left: the session ends
// cleanly, and the agent reconnects. The caller holds mu.
func (c *h2cConn) closeIfIdleLocked() {
	if (c.goAway || c.exhausted) && len(c.streams) == 0 && c.err == nil {
		b := appendFrameHeader(c.ctl[:0], 8, http2.FrameGoAway, 0, 0)
		b = binary.BigEndian.AppendUint32(b, 0)
		b = binary.BigEndian.AppendUint32(b, uint32(http2.ErrCodeNo))
		c.out.queue(b)
		c.conn.Close()
	}
}

// closeAll ends every stream once the connection ended, and releases the
// connection's share of the budget.
func (c *h2cConn) closeAll(err error) {
	c.closeStreams(err, func(err error) {
		for _, st := range c.streams {
			st.localDone = true
			c.endLocked(st, err)
		}
		c.releaseLocked()
	})
}

// resetLocked sends RST_STREAM with code for st, unless it ended, and ends
// it with err. The caller holds mu.
func (c *h2cConn) resetLocked(st *h2cStream, code http2.ErrCode, err error) {
	if !st.localDone || !st.remoteDone {
		if c.err == nil {
			c.out.queue(appendRST(c.ctl[:0], st.id, code))
		}
		st.localDone = true
	}
	c.endLocked(st, err)
}

// endLocked ends what is left of st with err: its response (the head, or
// the body once the bytes received are read) unless it was complete, its
// request body's writes. The caller holds mu.
func (c *h2cConn) endLocked(st *h2cStream, err error) {
	if st.err == nil {
		st.err = err
	}
	if !st.remoteDone {
		c.remoteEndLocked(st, err)
	}
	c.wakeLocked(&st.h2Stream)
	c.forgetLocked(st)
}

// remoteEndLocked ends st's response (END_STREAM with io.EOF, else an
// error): the window it was granted and will not use is released. The
// caller holds mu.
func (c *h2cConn) remoteEndLocked(st *h2cStream, err error) {
	st.remoteDone = true
	if err == io.EOF && st.declLen >= 0 && st.gotLen != st.declLen && !st.noBody {
		err = io.ErrUnexpectedEOF
	}
	st.bodyErr = err
	c.ungrantLocked(st)
	st.cond.Broadcast()
	if st.writerGone && !st.localDone {
		// The body was not all sent, and will not be: the stream ends.
		c.resetLocked(st, http2.ErrCodeCancel, errStreamDone)
		return
	}
	c.forgetLocked(st)
}

// forgetLocked drops st once both of its sides ended. The caller holds mu.
func (c *h2cConn) forgetLocked(st *h2cStream) {
	if !st.localDone || !st.remoteDone || st.forgotten {
		return
	}
	st.forgotten = true
	delete(c.streams, st.id)
	st.stop.Stop()
	c.closeIfIdleLocked()
}
