package tunnel

import (
	"encoding/binary"
	"fmt"
	"net"
	"sync"
)

// h2Window sits between the edge's HTTP/2 client (x/net) and the agent's
// WebSocket, and makes the agent's stream windows follow the edge's
// Budget. x/net has one receive window for every stream of a connection
// (Config.V2.Window) and buffers whatever the agent sends within it, so
// without this 1,000 clients that never read would hold 1,000 windows.
// Here the agent is told a small initial stream window (h2Floor, in the
// SETTINGS frame x/net sends), and each stream's window grows, by
// WINDOW_UPDATE frames, only as far as x/net allows and the budget has
// room (Budget.Grow): under pressure new streams keep h2Floor and the
// window of a stream whose consumer reads is given back in smaller steps.
// The agent therefore never may send more than x/net accepts, so x/net's
// own flow control stays intact.
//
// What a connection reserves is exact: the window its streams granted and
// did not receive yet, plus the bytes received and not yet consumed (x/net
// returns connection-level window for every byte its readers consume or
// drop, which releases them here). It is all released when the connection
// ends.
//
// Writes come from x/net under its write lock, reads from its read loop;
// mu guards the shared stream state.
type h2Window struct {
	net.Conn
	budget  *Budget
	window  int64 // x/net's stream window (what it accepts)
	onError func(kind string, err error)

	mu       sync.Mutex
	streams  map[uint32]*h2Stream
	lastID   uint32
	buffered int64 // received, not yet given back by x/net
	granted  int64 // window granted and not yet received, all streams
	connWin  bool  // x/net's first connection-level WINDOW_UPDATE went by
	closed   bool

	w   h2Parser // what x/net writes
	out []byte
	r   h2Parser // what the agent sends
}

// h2Floor is the stream window the agent is told in SETTINGS: what every
// stream may always have in flight, budget or not. It is HTTP/2's default
// frame size.
const h2Floor = 16 << 10

// h2Stream is a stream's window as the agent sees it (avail), the window
// x/net allows beyond that, not granted yet (owed), and the bytes it
// received that x/net's reader has not given back yet (unread).
type h2Stream struct {
	avail, owed, unread int64
	grant               bool // a WINDOW_UPDATE to send after the header block
}

// HTTP/2 frame types and flags (RFC 9113) used here.
const (
	h2Data         = 0x0
	h2Headers      = 0x1
	h2RSTStream    = 0x3
	h2Settings     = 0x4
	h2WindowUpdate = 0x8
	h2Continuation = 0x9

	h2FlagEndStream  = 0x1
	h2FlagAck        = 0x1
	h2FlagEndHeaders = 0x4

	h2SettingInitialWindowSize = 0x4
)

const h2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// h2Parser follows a byte stream frame by frame.
type h2Parser struct {
	hdr     [9]byte
	hn      int // bytes of hdr read
	left    int // payload bytes still to come
	typ     byte
	flags   byte
	id      uint32
	hold    bool // the payload is collected in payload
	payload []byte
}

func newH2Window(conn net.Conn, budget *Budget, window int, onError func(string, error)) *h2Window {
	c := &h2Window{Conn: conn, budget: budget, window: int64(window), onError: onError, streams: map[uint32]*h2Stream{}}
	c.w.left = -len(h2Preface) // the client preface passes first
	return c
}

// Write rewrites what x/net sends: SETTINGS_INITIAL_WINDOW_SIZE becomes
// h2Floor, and stream WINDOW_UPDATEs carry what the budget allows.
func (c *h2Window) Write(p []byte) (int, error) {
	c.mu.Lock()
	out := c.out[:0]
	for q := p; len(q) > 0; {
		w := &c.w
		if w.left < 0 { // the preface
			n := min(len(q), -w.left)
			out = append(out, q[:n]...)
			q, w.left = q[n:], w.left+n
			continue
		}
		if w.hn < len(w.hdr) {
			n := copy(w.hdr[w.hn:], q)
			w.hn += n
			q = q[n:]
			if w.hn < len(w.hdr) {
				break
			}
			w.parse()
			w.hold = w.typ == h2WindowUpdate || w.typ == h2Settings && w.flags&h2FlagAck == 0
			w.payload = w.payload[:0]
			if !w.hold {
				out = append(out, w.hdr[:]...)
			}
			if w.typ == h2Headers && w.id > c.lastID {
				c.open(w.id)
			}
		} else {
			n := min(len(q), w.left)
			if w.hold {
				w.payload = append(w.payload, q[:n]...)
			} else {
				out = append(out, q[:n]...)
			}
			q, w.left = q[n:], w.left-n
		}
		if w.left == 0 {
			out = c.sent(out)
			w.hn = 0
		}
	}
	c.out = out[:0]
	c.mu.Unlock()
	if len(out) > 0 {
		if _, err := c.Conn.Write(out); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

// parse reads the frame header in hdr.
func (w *h2Parser) parse() {
	w.left = int(w.hdr[0])<<16 | int(w.hdr[1])<<8 | int(w.hdr[2])
	w.typ, w.flags = w.hdr[3], w.hdr[4]
	w.id = binary.BigEndian.Uint32(w.hdr[5:]) & (1<<31 - 1)
}

// open starts the accounting of a stream x/net opened: the agent may send
// h2Floor at once, and x/net accepts window bytes.
func (c *h2Window) open(id uint32) {
	c.lastID = id
	if c.closed {
		return
	}
	c.budget.Force(h2Floor)
	c.granted += h2Floor
	c.streams[id] = &h2Stream{avail: h2Floor, owed: c.window - h2Floor, grant: true}
}

// sent handles the end of a frame x/net wrote, appending what goes out.
// The caller holds mu.
func (c *h2Window) sent(out []byte) []byte {
	w := &c.w
	switch w.typ {
	case h2Settings:
		if w.hold {
			for i := 0; i+6 <= len(w.payload); i += 6 {
				if binary.BigEndian.Uint16(w.payload[i:]) == h2SettingInitialWindowSize {
					binary.BigEndian.PutUint32(w.payload[i+2:], h2Floor)
				}
			}
			out = append(append(out, w.hdr[:]...), w.payload...)
		}
	case h2WindowUpdate:
		if len(w.payload) != 4 {
			return append(append(out, w.hdr[:]...), w.payload...) // malformed: x/net never does this
		}
		k := int64(binary.BigEndian.Uint32(w.payload) & (1<<31 - 1))
		if w.id == 0 {
			if c.connWin {
				c.consumed(k)
			}
			c.connWin = true
			return append(append(out, w.hdr[:]...), w.payload...)
		}
		st := c.streams[w.id]
		if st == nil {
			return append(append(out, w.hdr[:]...), w.payload...) // the agent ended it: nothing to grant
		}
		st.owed += k
		st.unread -= min(k, st.unread)
		if st.grant {
			return out // sent with the header block's grant
		}
		out = c.grant(out, w.id, st)
	case h2Headers, h2Continuation:
		if w.flags&h2FlagEndHeaders != 0 {
			if st := c.streams[w.id]; st != nil && st.grant {
				st.grant = false
				out = c.grant(out, w.id, st)
			}
		}
	case h2RSTStream:
		c.end(w.id)
	}
	return out
}

// grant grows a stream's window as the budget allows, and appends the
// WINDOW_UPDATE. Whatever the budget, a stream keeps h2Floor bytes in
// flight or unread: the floor is forced only for what the stream holds
// below it, so that beyond the budget each stream holds at most h2Floor,
// however fast its agent fills what it is granted. The caller holds mu.
func (c *h2Window) grant(out []byte, id uint32, st *h2Stream) []byte {
	if c.closed {
		return out
	}
	f := c.budget.Grow(st.owed)
	if short := h2Floor - (st.avail + st.unread + f); short > 0 {
		force := min(short, st.owed-f)
		c.budget.Force(force)
		f += force
	}
	if f <= 0 {
		return out
	}
	st.owed -= f
	st.avail += f
	c.granted += f
	var b [13]byte
	b[2] = 4
	b[3] = h2WindowUpdate
	binary.BigEndian.PutUint32(b[5:], id)
	binary.BigEndian.PutUint32(b[9:], uint32(f))
	return append(out, b[:]...)
}

// consumed releases k bytes that x/net's readers consumed or dropped. The
// caller holds mu.
func (c *h2Window) consumed(k int64) {
	k = min(k, c.buffered)
	c.buffered -= k
	if !c.closed {
		c.budget.Release(k)
	}
}

// end forgets a stream: the window it was granted and will not use is
// released. The caller holds mu.
func (c *h2Window) end(id uint32) {
	st := c.streams[id]
	if st == nil {
		return
	}
	delete(c.streams, id)
	c.granted -= st.avail
	if !c.closed {
		c.budget.Release(st.avail)
	}
}

// Read follows what the agent sends: DATA moves a stream's granted window
// to the buffered bytes; END_STREAM and RST_STREAM end the stream.
func (c *h2Window) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		if ferr := c.received(p[:n]); ferr != nil {
			c.Conn.Close()
			return 0, ferr
		}
	}
	return n, err
}

func (c *h2Window) received(q []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := &c.r
	for len(q) > 0 {
		if r.hn < len(r.hdr) {
			n := copy(r.hdr[r.hn:], q)
			r.hn += n
			q = q[n:]
			if r.hn < len(r.hdr) {
				break
			}
			r.parse()
			if err := c.frame(r); err != nil {
				return err
			}
		} else {
			n := min(len(q), r.left)
			q, r.left = q[n:], r.left-n
		}
		if r.left == 0 {
			r.hn = 0
		}
	}
	return nil
}

// frame accounts a frame from the agent by its header. The caller holds
// mu.
func (c *h2Window) frame(r *h2Parser) error {
	switch r.typ {
	case h2Data:
		l := int64(r.left)
		c.buffered += l
		st := c.streams[r.id]
		if st == nil {
			// A stream x/net reset: it gives the bytes back at once.
			if !c.closed {
				c.budget.Force(l)
			}
		} else {
			use := min(l, st.avail)
			over := l - use
			st.avail -= use
			st.unread += use
			c.granted -= use
			if over > 0 {
				if !c.closed {
					c.budget.Force(over)
				}
				err := fmt.Errorf("tunnel: v2 agent sent %d bytes past the window of stream %d", over, r.id)
				c.onError("flow_control", err)
				return err
			}
		}
		if r.flags&h2FlagEndStream != 0 {
			c.end(r.id)
		}
	case h2Headers:
		if r.flags&h2FlagEndStream != 0 {
			c.end(r.id)
		}
	case h2RSTStream:
		c.end(r.id)
	}
	return nil
}

// Close closes the connection and releases what it reserved.
func (c *h2Window) Close() error {
	c.release()
	return c.Conn.Close()
}

// release gives the connection's reservation back to the budget, once.
func (c *h2Window) release() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	c.closed = true
	c.budget.Release(c.granted + c.buffered)
}

// reserved returns what the connection holds of the budget.
func (c *h2Window) reserved() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.granted + c.buffered
}
