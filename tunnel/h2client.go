package tunnel

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// The edge's end of protocol v2 is an HTTP/2 client (RFC 9113) of our own
// rather than golang.org/x/net/http2's ClientConn, which runs a goroutine
// per request for the request's whole life and hands every response head
// from its read loop to RoundTrip, and whose receive windows had to be
// bent to the edge's Budget by rewriting its frames (the former
// v2_window.go). Here, as in the agent's server (h2server.go):
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

// h2cConn is the edge's HTTP/2 client connection. The read loop alone touches
// the fields it documents as its own; mu guards the streams, the windows,
// the budget's accounting and every stream's shared state; wmu guards the
// header encoder and the allocation of stream IDs (so that HEADERS go out
// in the order of their IDs). Lock order: wmu, then mu, then the h2Out's
// own.
type h2cConn struct {
	conn            net.Conn
	out             h2Out
	budget          *Budget
	window          int64 // the most a stream's window grows to (Config.V2.Window)
	maxHeaderBytes  int   // a response head's limit (SETTINGS_MAX_HEADER_LIST_SIZE)
	continueTimeout time.Duration
	onError         func(kind string, err error)
	readDone        chan struct{} // closed when the read loop returned

	// the read loop's own
	fr    *http2.Framer
	names fieldNames
	rctl  [32]byte

	wmu    sync.Mutex
	enc    *hpack.Encoder
	hbuf   bytes.Buffer // the encoder's output
	hfr    []byte       // header frames being written
	nextID uint32

	mu          sync.Mutex
	streams     map[uint32]*h2cStream
	lastID      uint32 // the highest stream opened
	sendConn    int64  // connection-level send window
	sendInit    int64  // the agent's SETTINGS_INITIAL_WINDOW_SIZE
	maxFrame    int    // the agent's SETTINGS_MAX_FRAME_SIZE
	maxStreams  int    // the agent's SETTINGS_MAX_CONCURRENT_STREAMS
	peerMaxList uint64 // the agent's SETTINGS_MAX_HEADER_LIST_SIZE (0: none)
	tableSize   uint32
	newTable    bool      // the agent changed SETTINGS_HEADER_TABLE_SIZE
	recvConn    int64     // connection-level receive window left
	connUnacked int64     // received bytes read or dropped, not yet granted again
	connCond    sync.Cond // a writer waits for connection-level window
	connWaiters int       // writers waiting on connCond
	goAway      bool      // the agent sent GOAWAY: no new streams
	exhausted   bool      // the stream IDs ran out: no new streams
	err         error     // why the connection ended, once it did
	granted     int64     // budget: window granted to the streams, not yet received
	buffered    int64     // budget: bytes received, not yet read or dropped
	released    bool      // the budget's share was given back (the connection ended)
	ctl         [64]byte  // scratch for control frames, under mu
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
		out:             wrapConnOut(conn),
		budget:          cfg.Budget,
		window:          int64(max(min(window, h2MaxWindow), h2Floor)),
		maxHeaderBytes:  maxHeader,
		continueTimeout: cfg.ContinueTimeout,
		onError:         cfg.OnError,
		readDone:        make(chan struct{}),
		nextID:          1,
		streams:         map[uint32]*h2cStream{},
		sendConn:        h2DefaultWindow,
		sendInit:        h2DefaultWindow,
		maxFrame:        h2DefaultFrameSize,
		maxStreams:      h2MaxStreamID,
		recvConn:        h2ConnWindow,
	}
	c.connCond.L = &c.mu
	c.enc = hpack.NewEncoder(&c.hbuf)
	c.fr = http2.NewFramer(nil, bufio.NewReaderSize(conn, h2ReadBuffer))
	c.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	c.fr.MaxHeaderListSize = uint32(maxHeader)
	c.fr.SetMaxReadFrameSize(h2FrameSize)
	c.fr.SetReuseFrames()

	b := append([]byte{}, http2.ClientPreface...)
	b = appendFrameHeader(b, 4*6, http2.FrameSettings, 0, 0)
	for _, s := range [...]struct {
		id  http2.SettingID
		val uint32
	}{
		{http2.SettingEnablePush, 0},
		{http2.SettingInitialWindowSize, h2Floor},
		{http2.SettingMaxFrameSize, h2FrameSize},
		{http2.SettingMaxHeaderListSize, uint32(maxHeader)},
	} {
		b = binary.BigEndian.AppendUint16(b, uint16(s.id))
		b = binary.BigEndian.AppendUint32(b, s.val)
	}
	b = appendWindowUpdate(b, 0, h2ConnWindow-h2DefaultWindow)
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
	err := c.readFrames()
	c.conn.Close()
	c.closeAll(err)
}

func (c *h2cConn) readFrames() error {
	for {
		f, err := c.fr.ReadFrame()
		if err == nil {
			err = c.frame(f)
		}
		if err == nil {
			continue
		}
		var se http2.StreamError
		var ce http2.ConnectionError
		switch {
		case errors.As(err, &se):
			c.report("stream_error", err)
			c.mu.Lock()
			if st := c.streams[se.StreamID]; st != nil {
				c.resetLocked(st, se.Code, fmt.Errorf("%w: %w", ErrStreamReset, err))
			} else if se.StreamID != 0 {
				c.out.queue(appendRST(c.ctl[:0], se.StreamID, se.Code))
			}
			c.mu.Unlock()
		case errors.As(err, &ce):
			return c.connError(http2.ErrCode(ce), "connection_error", err)
		case errors.Is(err, http2.ErrFrameTooLarge):
			return c.connError(http2.ErrCodeFrameSize, "oversized", err)
		default:
			return err
		}
	}
}

// report tells OnError of a protocol error of the agent.
func (c *h2cConn) report(kind string, err error) {
	if c.onError != nil {
		c.onError(kind, err)
	}
}

// connError sends GOAWAY with code and returns the error that ends the
// connection. A flow-control error was reported where it was found.
func (c *h2cConn) connError(code http2.ErrCode, kind string, err error) error {
	if !errors.Is(err, ErrFlowControl) {
		c.report(kind, err)
	}
	b := appendFrameHeader(nil, 8, http2.FrameGoAway, 0, 0)
	b = binary.BigEndian.AppendUint32(b, 0) // no stream of the agent's was processed
	b = binary.BigEndian.AppendUint32(b, uint32(code))
	c.out.queue(b)
	return fmt.Errorf("tunnel: v2: %w", err)
}

// frame handles one frame from the agent.
func (c *h2cConn) frame(f http2.Frame) error {
	switch f := f.(type) {
	case *http2.MetaHeadersFrame:
		return c.headers(f)
	case *http2.DataFrame:
		return c.data(f)
	case *http2.WindowUpdateFrame:
		return c.windowUpdate(f)
	case *http2.SettingsFrame:
		return c.settings(f)
	case *http2.PingFrame:
		if f.IsAck() {
			return nil
		}
		b := appendFrameHeader(c.rctl[:0], 8, http2.FramePing, http2.FlagPingAck, 0)
		return c.out.queue(append(b, f.Data[:]...))
	case *http2.RSTStreamFrame:
		return c.rstStream(f)
	case *http2.GoAwayFrame:
		c.goAwayFrame(f)
		return nil
	case *http2.PushPromiseFrame:
		return http2.ConnectionError(http2.ErrCodeProtocol) // push is off
	default: // PRIORITY, PRIORITY_UPDATE, unknown types
		return nil
	}
}

// opened reports whether stream id was opened by the client (an idle
// stream's frames are a connection error). The caller holds mu.
func (c *h2cConn) opened(id uint32) bool { return id%2 == 1 && id <= c.lastID }

func (c *h2cConn) settings(f *http2.SettingsFrame) error {
	if f.IsAck() {
		return nil
	}
	if f.NumSettings() > 100 || f.HasDuplicates() {
		return http2.ConnectionError(http2.ErrCodeProtocol)
	}
	c.mu.Lock()
	err := f.ForeachSetting(func(s http2.Setting) error {
		if err := s.Valid(); err != nil {
			return err
		}
		switch s.ID {
		case http2.SettingInitialWindowSize:
			delta := int64(s.Val) - c.sendInit
			c.sendInit = int64(s.Val)
			for _, st := range c.streams {
				st.sendWin += delta
				if st.sendWin > h2MaxWindow {
					return http2.ConnectionError(http2.ErrCodeFlowControl)
				}
				if delta > 0 {
					st.cond.Broadcast()
				}
			}
		case http2.SettingMaxFrameSize:
			c.maxFrame = int(s.Val)
		case http2.SettingMaxConcurrentStreams:
			c.maxStreams = int(min(s.Val, h2MaxStreamID))
		case http2.SettingMaxHeaderListSize:
			c.peerMaxList = uint64(s.Val)
		case http2.SettingHeaderTableSize:
			c.tableSize, c.newTable = s.Val, true
		}
		return nil
	})
	c.mu.Unlock()
	if err != nil {
		return err
	}
	return c.out.queue(appendFrameHeader(c.rctl[:0], 0, http2.FrameSettings, http2.FlagSettingsAck, 0))
}

func (c *h2cConn) windowUpdate(f *http2.WindowUpdateFrame) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if f.StreamID == 0 {
		c.sendConn += int64(f.Increment)
		if c.sendConn > h2MaxWindow {
			return http2.ConnectionError(http2.ErrCodeFlowControl)
		}
		if c.connWaiters > 0 {
			c.connCond.Broadcast()
		}
		return nil
	}
	if !c.opened(f.StreamID) {
		return http2.ConnectionError(http2.ErrCodeProtocol)
	}
	st := c.streams[f.StreamID]
	if st == nil {
		return nil // a closed stream: allowed
	}
	st.sendWin += int64(f.Increment)
	if st.sendWin > h2MaxWindow {
		return http2.StreamError{StreamID: f.StreamID, Code: http2.ErrCodeFlowControl}
	}
	st.cond.Broadcast()
	return nil
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
	if err == nil {
		err = net.ErrClosed
	}
	err = fmt.Errorf("%w: %w", ErrSessionClosed, err)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err == nil {
		c.err = err
	}
	for _, st := range c.streams {
		st.localDone = true
		c.endLocked(st, err)
	}
	c.connCond.Broadcast()
	c.releaseLocked()
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
	st.cond.Broadcast()
	if c.connWaiters > 0 {
		c.connCond.Broadcast()
	}
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
	if st.stop != nil {
		st.stop()
	}
	c.closeIfIdleLocked()
}
