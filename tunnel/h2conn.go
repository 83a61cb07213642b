package tunnel

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"iter"
	"net"
	"net/http"
	"strings"
	"sync"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// What both ends of protocol v2 share. The agent's server (h2server.go)
// and the edge's client (h2client.go) embed h2Conn in their connections
// and h2Stream in their streams: the rules of HTTP/2 (RFC 9113) that do
// not depend on the end live here once, for both (the peer's settings,
// the send windows and their waits, the framer's errors, the header
// block's frames, a body's reads). What differs stays with each end: the
// server's handler dispatch, the client's budget accounting
// (v2_window.go).

// h2Conn is the part of an HTTP/2 connection both ends use, embedded in
// h2Server and h2cConn. The read loop alone touches the fields it
// documents as its own; mu guards the others, the connection's streams
// and every stream's shared state; wmu guards the header encoder. Lock
// order: wmu, then mu, then the h2Out's own.
type h2Conn struct {
	out     h2Out
	onError func(kind string, err error)

	// the read loop's own
	fr      *http2.Framer
	dec     *hpackDecoder
	listMax uint32 // our SETTINGS_MAX_HEADER_LIST_SIZE
	block   []byte // a header block in several frames, put together
	bounds  []int  // where in block each CONTINUATION's fragment began
	names   fieldNames
	maxID   uint32 // the highest stream the peer opened (the client's peer opens none)
	rctl    [32]byte

	wmu  sync.Mutex
	enc  *hpackEncoder
	hbuf bytes.Buffer // the encoder's output
	hfr  []byte       // header frames being written

	mu          sync.Mutex
	sendConn    int64     // connection-level send window
	sendInit    int64     // the peer's SETTINGS_INITIAL_WINDOW_SIZE
	maxFrame    int       // the peer's SETTINGS_MAX_FRAME_SIZE
	maxStreams  int       // the peer's SETTINGS_MAX_CONCURRENT_STREAMS (the client keeps to it)
	maxList     uint64    // the peer's SETTINGS_MAX_HEADER_LIST_SIZE, 0: none (the client keeps to it)
	tableSize   uint32    // the peer's SETTINGS_HEADER_TABLE_SIZE
	newTable    bool      // the peer changed SETTINGS_HEADER_TABLE_SIZE
	recvConn    int64     // connection-level receive window left
	connUnacked int64     // received bytes read or dropped, not yet granted again
	connCond    sync.Cond // a writer waits for connection-level window
	connWaiters int       // writers waiting on connCond
	err         error     // why the connection ended, once it did
	ctl         [64]byte  // scratch for control frames, under mu
}

// init readies c for conn: HTTP/2's initial values of the peer's
// settings, and a framer that reads header lists of up to maxList bytes
// and frames of up to maxRead.
func (c *h2Conn) init(conn net.Conn, maxList, maxRead uint32, onError func(kind string, err error)) {
	c.out = wrapConnOut(conn)
	c.onError = onError
	c.sendConn = h2DefaultWindow
	c.sendInit = h2DefaultWindow
	c.maxFrame = h2DefaultFrameSize
	c.maxStreams = h2MaxStreamID
	c.recvConn = h2DefaultWindow
	c.connCond.L = &c.mu
	c.enc = newHPACKEncoder(&c.hbuf)
	c.fr = http2.NewFramer(nil, bufio.NewReaderSize(conn, h2ReadBuffer))
	c.dec = newHPACKDecoder(hpackTableSize, int(maxList))
	c.listMax = maxList
	c.fr.SetMaxReadFrameSize(maxRead)
	c.fr.SetReuseFrames()
}

// appendSettings appends a SETTINGS frame of ss, then the WINDOW_UPDATE
// that grows the connection's receive window from HTTP/2's initial one to
// h2ConnWindow: what each end sends first (after the client's preface).
func appendSettings(b []byte, ss ...http2.Setting) []byte {
	b = appendFrameHeader(b, 6*len(ss), http2.FrameSettings, 0, 0)
	for _, s := range ss {
		b = binary.BigEndian.AppendUint16(b, uint16(s.ID))
		b = binary.BigEndian.AppendUint32(b, s.Val)
	}
	return appendWindowUpdate(b, 0, h2ConnWindow-h2DefaultWindow)
}

// h2End is what differs between the two ends for their read loops
// (h2Conn.readFrames): h2Server and h2cConn implement it. The read loop
// calls its methods; sends and sendStream under mu.
type h2End interface {
	// frame handles one frame of the peer (most go on to
	// h2Conn.handleFrame).
	frame(f http2.Frame) error
	headers(f *http2.MetaHeadersFrame) error
	data(f *http2.DataFrame) error
	rstStream(f *http2.RSTStreamFrame) error
	goAwayFrame(f *http2.GoAwayFrame)
	// streamError resets stream id after a stream error of the peer's.
	streamError(id uint32, code http2.ErrCode, err error)
	// sends visits the streams' send windows (h2Conn.settings).
	sends(yield func(*h2Stream) bool)
	// sendStream returns stream id's send window (h2Conn.windowUpdate):
	// nil for a closed stream, an error for one never opened.
	sendStream(id uint32) (*h2Stream, error)
}

// readFrames reads the peer's frames and hands each to end until the
// connection fails or the peer breaks the protocol: a stream error is
// reported and end resets the stream (and says so to the peer) with the
// error as ErrStreamReset; a connection error, or a frame past the size
// allowed, ends the loop with GOAWAY. Both ends' read loops run it.
func (c *h2Conn) readFrames(end h2End) error {
	for {
		f, err := c.fr.ReadFrame()
		if hf, ok := f.(*http2.HeadersFrame); ok && err == nil {
			f, err = c.readHead(hf)
		}
		if err == nil {
			err = end.frame(f)
		}
		if err == nil {
			continue
		}
		var se http2.StreamError
		var ce http2.ConnectionError
		switch {
		case errors.As(err, &se):
			c.report("stream_error", err)
			end.streamError(se.StreamID, se.Code, fmt.Errorf("%w: %w", ErrStreamReset, err))
		case errors.As(err, &ce):
			return c.connError(http2.ErrCode(ce), "connection_error", err)
		case errors.Is(err, http2.ErrFrameTooLarge):
			return c.connError(http2.ErrCodeFrameSize, "oversized", err)
		default:
			return err
		}
	}
}

// readHead reads the header block that HEADERS frame hf opens, with the
// CONTINUATION frames that carry the rest of it (the framer holds them in
// order), and decodes it (hpackDecoder): what x/net's framer does when
// ReadMetaHeaders is set, with the same errors. A breach of HPACK ends
// the connection (COMPRESSION_ERROR), and so does a block of more than
// four times the header list's size allowed (PROTOCOL_ERROR; x/net's
// framer measures each frame against twice what is left of the sizes for
// fields and for trailers, four times the list's at first); a field
// refused, or pseudo-headers that break their rules, reset the stream. A
// block in more CONTINUATION frames than h2MaxContinuations allows ends
// the connection too.
func (c *h2Conn) readHead(hf *http2.HeadersFrame) (http2.Frame, error) {
	block := hf.HeaderBlockFragment()
	limit := 4 * int64(c.listMax) // x/net's: twice the list's size for fields and for trailers
	if int64(len(block)) > limit {
		return nil, http2.ConnectionError(http2.ErrCodeProtocol)
	}
	bounds := c.bounds[:0] // where each CONTINUATION's fragment begins
	if !hf.HeadersEnded() {
		c.block = append(c.block[:0], block...)
		for {
			f, err := c.fr.ReadFrame()
			if err != nil {
				return nil, err
			}
			cf := f.(*http2.ContinuationFrame) // the framer checks the order
			frag := cf.HeaderBlockFragment()
			if int64(len(c.block))+int64(len(frag)) > limit || len(bounds) >= h2MaxContinuations(limit) {
				return nil, http2.ConnectionError(http2.ErrCodeProtocol)
			}
			bounds = append(bounds, len(c.block))
			c.block = append(c.block, frag...)
			if cf.HeadersEnded() {
				break
			}
		}
		block = c.block
	}
	c.bounds = bounds
	head, err := c.dec.decode(block, c.listMax, bounds)
	if cap(c.block) > 64<<10 { // one large block does not stay with the connection
		c.block, c.bounds = nil, nil
	}
	if err != nil {
		return nil, http2.ConnectionError(http2.ErrCodeCompression)
	}
	// x/net's framer decodes a block frame by frame and refuses a
	// CONTINUATION frame that comes after a field it refused, or whose
	// fragment is more than twice what is left of the sizes by then: the
	// same, from the state of the decoding where each began.
	for i, start := range bounds {
		end := len(block)
		if i+1 < len(bounds) {
			end = bounds[i+1]
		}
		if m := head.marks[i]; int64(end-start) > 2*int64(m.remain) || m.refused {
			return nil, http2.ConnectionError(http2.ErrCodeProtocol)
		}
	}
	if head.invalid != nil {
		return nil, http2.StreamError{StreamID: hf.StreamID, Code: http2.ErrCodeProtocol, Cause: head.invalid}
	}
	mh := &http2.MetaHeadersFrame{HeadersFrame: hf, Fields: head.fields, Truncated: head.truncated}
	if err := checkPseudos(mh.PseudoFields()); err != nil {
		return nil, http2.StreamError{StreamID: hf.StreamID, Code: http2.ErrCodeProtocol, Cause: err}
	}
	return mh, nil
}

// h2MaxContinuations bounds the CONTINUATION frames of one header block of
// at most limit bytes: one per KiB of it, and 16 more. x/net's framer
// takes any number (each is decoded as it comes); ours keeps where each
// began until the block is whole, which a flood of tiny or empty frames
// would grow without this bound. A peer that splits a block sends frames
// of its SETTINGS_MAX_FRAME_SIZE, 16 KiB or more.
func h2MaxContinuations(limit int64) int {
	return int(limit>>10) + 16
}

// checkPseudos is x/net's check of a head's pseudo-headers: each known,
// none twice, not a request's and a response's together.
func checkPseudos(pf []hpack.HeaderField) error {
	var isRequest, isResponse bool
	for i, hf := range pf {
		switch hf.Name {
		case ":method", ":path", ":scheme", ":authority", ":protocol":
			isRequest = true
		case ":status":
			isResponse = true
		default:
			return fmt.Errorf("invalid pseudo-header %q", hf.Name)
		}
		for _, hf2 := range pf[:i] {
			if hf.Name == hf2.Name {
				return fmt.Errorf("duplicate pseudo-header %q", hf.Name)
			}
		}
	}
	if isRequest && isResponse {
		return errors.New("mix of request and response pseudo headers")
	}
	return nil
}

// report tells OnError of a protocol error of the peer.
func (c *h2Conn) report(kind string, err error) {
	if c.onError != nil {
		c.onError(kind, err)
	}
}

// connError sends GOAWAY with code (and the highest stream the peer
// opened) and returns the error that ends the connection. A flow-control
// error was reported where it was found. Both ends use it.
func (c *h2Conn) connError(code http2.ErrCode, kind string, err error) error {
	if !errors.Is(err, ErrFlowControl) {
		c.report(kind, err)
	}
	b := appendFrameHeader(nil, 8, http2.FrameGoAway, 0, 0)
	b = binary.BigEndian.AppendUint32(b, c.maxID)
	b = binary.BigEndian.AppendUint32(b, uint32(code))
	c.out.queue(b)
	return fmt.Errorf("tunnel: v2: %w", err)
}

// handleFrame hands a frame of the peer to the rule of its type: those
// of the connection here, those of the streams to end. Both ends' read
// loops call it.
func (c *h2Conn) handleFrame(end h2End, f http2.Frame) error {
	switch f := f.(type) {
	case *http2.MetaHeadersFrame:
		return end.headers(f)
	case *http2.DataFrame:
		return end.data(f)
	case *http2.WindowUpdateFrame:
		return c.windowUpdate(f, end.sendStream)
	case *http2.SettingsFrame:
		return c.settings(f, end.sends)
	case *http2.PingFrame:
		return c.ping(f)
	case *http2.RSTStreamFrame:
		return end.rstStream(f)
	case *http2.GoAwayFrame:
		end.goAwayFrame(f)
		return nil
	case *http2.PushPromiseFrame:
		// The client turned push off; a client cannot push.
		return http2.ConnectionError(http2.ErrCodeProtocol)
	default: // PRIORITY, PRIORITY_UPDATE, unknown types
		return nil
	}
}

// ping acknowledges the peer's PING. The read loop calls it.
func (c *h2Conn) ping(f *http2.PingFrame) error {
	if f.IsAck() {
		return nil
	}
	b := appendFrameHeader(c.rctl[:0], 8, http2.FramePing, http2.FlagPingAck, 0)
	return c.out.queue(append(b, f.Data[:]...))
}

// settings applies the peer's SETTINGS and acknowledges them. sends
// visits the send windows of the connection's streams (under mu), which a
// new SETTINGS_INITIAL_WINDOW_SIZE moves. The read loop of both ends
// calls it.
func (c *h2Conn) settings(f *http2.SettingsFrame, sends iter.Seq[*h2Stream]) error {
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
			for st := range sends {
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
			c.maxList = uint64(s.Val)
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

// windowUpdate applies the peer's WINDOW_UPDATE to the connection's send
// window, or to that of the stream stream returns (under mu): nil for a
// closed stream (allowed), an error for one that was never opened. Both
// ends' read loops call it.
func (c *h2Conn) windowUpdate(f *http2.WindowUpdateFrame, stream func(id uint32) (*h2Stream, error)) error {
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
	st, err := stream(f.StreamID)
	if st == nil {
		return err
	}
	st.sendWin += int64(f.Increment)
	if st.sendWin > h2MaxWindow {
		return http2.StreamError{StreamID: f.StreamID, Code: http2.ErrCodeFlowControl}
	}
	st.cond.Broadcast()
	return nil
}

// reserveLocked takes up to want bytes (and at most a frame) of st's and
// the connection's send windows. While there is none it waits, on st's
// cond while st's window is empty and on connCond while the connection's
// is, or with wait false returns 0. stop, checked before each try, says
// why st may no longer send. The caller holds mu. Both ends' writers use
// it.
func (c *h2Conn) reserveLocked(st *h2Stream, want int, wait bool, stop func() error) (int, error) {
	for {
		if err := stop(); err != nil {
			return 0, err
		}
		// An empty frame (END_STREAM) takes none, even from a window the
		// peer's new SETTINGS_INITIAL_WINDOW_SIZE took below zero.
		n := max(min(int64(want), st.sendWin, c.sendConn, int64(c.maxFrame)), 0)
		if n > 0 || want == 0 {
			st.sendWin -= n
			c.sendConn -= n
			return int(n), nil
		}
		if !wait {
			return 0, nil
		}
		if st.sendWin <= 0 {
			st.cond.Wait()
		} else {
			c.connWaiters++
			c.connCond.Wait()
			c.connWaiters--
		}
	}
}

// wakeLocked wakes the writers waiting for st's window and those waiting
// for the connection's: st ended. The caller holds mu.
func (c *h2Conn) wakeLocked(st *h2Stream) {
	st.cond.Broadcast()
	if c.connWaiters > 0 {
		c.connCond.Broadcast()
	}
}

// ackConnLocked counts n received bytes that were read or dropped and,
// once they reach half the connection's receive window, appends to b the
// WINDOW_UPDATE that grants them again. The caller holds mu. Both ends
// use it.
func (c *h2Conn) ackConnLocked(b []byte, n int64) []byte {
	c.connUnacked += n
	if c.connUnacked < h2ConnWindow/2 {
		return b
	}
	b = appendWindowUpdate(b, 0, uint32(c.connUnacked))
	c.recvConn += c.connUnacked
	c.connUnacked = 0
	return b
}

// closeStreams ends the connection's streams once the connection ended with
// err: end ends each of them (under mu) with the error, as
// ErrSessionClosed, and the writers waiting for window wake.
func (c *h2Conn) closeStreams(err error, end func(err error)) {
	if err == nil {
		err = net.ErrClosed
	}
	err = fmt.Errorf("%w: %w", ErrSessionClosed, err)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err == nil {
		c.err = err
	}
	end(err)
	c.connCond.Broadcast()
}

// headerBlockLocked starts a header block: the encoder takes the peer's
// new SETTINGS_HEADER_TABLE_SIZE, if any, and its output is reset. The
// caller holds wmu and mu.
func (c *h2Conn) headerBlockLocked() {
	if c.newTable {
		c.newTable = false
		c.enc.SetMaxDynamicTableSizeLimit(c.tableSize)
	}
	c.hbuf.Reset()
}

// appendHeaderFrames appends the header block as frames of stream id:
// HEADERS, then CONTINUATIONs, with END_STREAM when end. Both ends use it.
func appendHeaderFrames(out, block []byte, id uint32, end bool) []byte {
	typ := http2.FrameHeaders
	var flags http2.Flags
	if end {
		flags = http2.FlagHeadersEndStream
	}
	for {
		frag := block[:min(len(block), h2MaxHeaderFrame)]
		block = block[len(frag):]
		if len(block) == 0 {
			flags |= http2.FlagHeadersEndHeaders
		}
		out = appendFrameHeader(out, len(frag), typ, flags, id)
		out = append(out, frag...)
		if len(block) == 0 {
			return out
		}
		typ, flags = http2.FrameContinuation, 0
	}
}

// header makes a header from a head's fields, the values of a name in
// one array (as net/textproto does: a field's first value takes a
// one-element slice of it, capacity one, so that a repeated field's
// append copies out); with trailer, the keys a Trailer field declares go
// there (with no values) instead of in the header, as net/http's clients
// do. The read loop of both ends calls it.
func (c *h2Conn) header(fields []hpack.HeaderField, trailer *http.Header) http.Header {
	h := make(http.Header, len(fields))
	vals := make([]string, len(fields))
	for i, hf := range fields {
		k := c.names.canonical(hf.Name)
		if k == "Trailer" && trailer != nil {
			for _, v := range strings.Split(hf.Value, ",") {
				if v = strings.TrimSpace(v); v != "" {
					if *trailer == nil {
						*trailer = http.Header{}
					}
					(*trailer)[http.CanonicalHeaderKey(v)] = nil
				}
			}
			continue
		}
		if vv, ok := h[k]; ok {
			h[k] = append(vv, hf.Value)
			continue
		}
		vals[i] = hf.Value
		h[k] = vals[i : i+1 : i+1]
	}
	return h
}

// h2Stream is the part of a stream both ends use, embedded in h2sStream
// and h2cStream and guarded by the connection's mu: its send window, the
// cond its writers and its body's reader wait on, and the body it
// receives.
type h2Stream struct {
	id      uint32
	cond    sync.Cond // on the connection's mu: bytes or window came, the stream ended
	sendWin int64

	// receiving (the request body at the server, the response body at
	// the client)
	recv       h2RecvBuf
	declLen    int64 // the body's Content-Length, or -1
	gotLen     int64
	remoteDone bool        // END_STREAM came, or the stream was reset
	bodyErr    error       // what reads return once recv is empty (with remoteDone)
	bodyClosed bool        // the body's reader closed it: what comes is dropped
	trailer    http.Header // received, handed over at the body's end
}

// readLocked reads the body for its reader into p, waiting for bytes,
// the body's end or its Close (then it returns closed). consumed is told
// how many bytes were read (an error it returns is the read's); at the
// end of a body that had trailers, trailers is given them to hand over.
// The caller holds mu. Both ends' bodies use it.
func (st *h2Stream) readLocked(p []byte, closed error, consumed func(n int64) error, trailers func(http.Header)) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if !st.awaitLocked() {
		return 0, closed
	}
	n := st.recv.read(p)
	if n > 0 {
		if err := consumed(int64(n)); err != nil {
			return n, err
		}
	}
	return n, st.bodyEndLocked(trailers)
}

// writeLocked is readLocked without a buffer of the reader's: it waits
// the same way, then writes the bytes held to w straight from their
// chunks, with mu unlocked while it writes (the read loop goes on
// receiving into new chunks, and a Close meanwhile drops only those).
// Only once the writes returned are the chunks given back and consumed
// told of the bytes (written: they were, and the window may grow; else
// they were dropped). A write's error is returned as it is. The caller
// holds mu. The edge's response body uses it (h2cBody.writeNext).
func (st *h2Stream) writeLocked(w io.Writer, closed error, consumed func(n int64, written bool), trailers func(http.Header)) (int, error) {
	if !st.awaitLocked() {
		return 0, closed
	}
	n := 0
	if st.recv.n > 0 {
		held := st.recv
		st.recv = h2RecvBuf{}
		st.cond.L.Unlock()
		var err error
		n, err = held.writeTo(w)
		st.cond.L.Lock()
		consumed(int64(held.release()), err == nil)
		if err != nil {
			return n, err
		}
	}
	return n, st.bodyEndLocked(trailers)
}

// awaitLocked waits until the body holds bytes, ended, or was closed:
// false then. The caller holds mu.
func (st *h2Stream) awaitLocked() bool {
	for st.recv.n == 0 && st.bodyErr == nil && !st.bodyClosed {
		st.cond.Wait()
	}
	return !st.bodyClosed
}

// bodyEndLocked returns what a read that emptied the body returns: nil
// while the body goes on, else its end (trailers, if it had them, are
// given to trailers to hand over first). The caller holds mu.
func (st *h2Stream) bodyEndLocked(trailers func(http.Header)) error {
	if st.recv.n > 0 || st.bodyErr == nil {
		return nil
	}
	if st.bodyErr == io.EOF && st.trailer != nil {
		trailers(st.trailer)
		st.trailer = nil
	}
	return st.bodyErr
}

// writeTo writes the bytes held to w, chunk by chunk, keeping them (the
// caller releases them once written). It returns how many were written.
func (b *h2RecvBuf) writeTo(w io.Writer) (int, error) {
	n, r := 0, b.r
	for _, ch := range b.chunks {
		m, err := w.Write(ch.b[r:])
		n += m
		if err != nil {
			return n, err
		}
		r = 0
	}
	return n, nil
}

// closeBodyLocked closes the body for its reader: what it holds is
// dropped (how many bytes is returned, to give back to the windows) and
// what comes will be. It reports false if the body was closed already.
// The caller holds mu. Both ends' bodies use it.
func (st *h2Stream) closeBodyLocked() (int64, bool) {
	if st.bodyClosed {
		return 0, false
	}
	st.bodyClosed = true
	st.cond.Broadcast()
	return int64(st.recv.release()), true
}
