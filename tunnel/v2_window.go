package tunnel

import (
	"fmt"

	"golang.org/x/net/http2"
)

// The edge's receive windows in v2 follow its Budget. A stream may hold
// up to Config.V2.Window bytes (its window), but without more than that
// 1,000 clients that never read would hold 1,000 windows. So the agent is
// told a small initial stream window (h2Floor, in the client's SETTINGS),
// and each stream's window grows, by WINDOW_UPDATE frames, only as far as
// Config.V2.Window and the budget allow (Budget.Grow): under pressure new
// streams keep h2Floor, and the window of a stream whose reader reads is
// given back in smaller steps.
//
// What a connection reserves is exact (reserved): the window its streams
// were granted and did not receive yet (granted), plus the bytes received
// and not yet read or dropped (buffered). A stream's unused window is
// released when its response ends, its unread bytes when its body is
// closed, and everything when the connection ends.
//
// The connection-level window is large (h2ConnWindow), so that only the
// stream windows limit a stream, and given back as the bytes are read or
// dropped.
//
// Everything here runs under the client's mu.

// growLocked grows st's window, as the budget allows, up to the client's
// window, once the room to grow reached a quarter of it (fewer
// WINDOW_UPDATEs), and returns by how much (the WINDOW_UPDATE to send).
// Whatever the budget, a stream keeps h2Floor bytes in flight or unread:
// the floor is forced only for what the stream holds below it, so that
// beyond the budget each stream holds at most h2Floor, however fast its
// agent fills what it is granted.
func (c *h2cConn) growLocked(st *h2cStream) int64 {
	if c.released || st.remoteDone {
		return 0
	}
	held := st.recvWin + st.unread
	room := c.window - held
	if room <= 0 || room < c.window/4 && held >= h2Floor {
		return 0
	}
	f := c.budget.Grow(room)
	if short := h2Floor - (held + f); short > 0 {
		force := min(short, room-f)
		c.budget.Force(force)
		f += force
	}
	if f <= 0 {
		return 0
	}
	st.recvWin += f
	c.granted += f
	return f
}

// receivedLocked accounts n bytes of a DATA frame for st, within its
// window (the caller checked): kept is how many of them st's body keeps,
// the rest (padding, bytes nobody reads) are dropped at once.
func (c *h2cConn) receivedLocked(st *h2cStream, n, kept int64) {
	st.recvWin -= n
	c.granted -= n
	st.unread += kept
	c.buffered += kept
	if drop := n - kept; drop > 0 {
		if !c.released {
			c.budget.Release(drop)
		}
		c.connConsumedLocked(drop)
	}
}

// consumedLocked releases n bytes of st's body that were read (grow: st's
// window may grow again) or dropped.
func (c *h2cConn) consumedLocked(st *h2cStream, n int64, grow bool) {
	st.unread -= n
	c.buffered -= n
	if !c.released {
		c.budget.Release(n)
	}
	c.connConsumedLocked(n)
	if grow && c.err == nil {
		if f := c.growLocked(st); f > 0 {
			c.out.queue(appendWindowUpdate(c.ctl[:0], st.id, uint32(f)))
		}
	}
}

// connConsumedLocked gives n received bytes back to the connection's
// window, in batches of half of it, while the connection lasts.
func (c *h2cConn) connConsumedLocked(n int64) {
	if c.err != nil {
		return
	}
	if b := c.ackConnLocked(c.ctl[:0], n); len(b) > 0 {
		c.out.queue(b)
	}
}

// ungrantLocked releases the window st was granted and will not use: its
// response ended.
func (c *h2cConn) ungrantLocked(st *h2cStream) {
	c.granted -= st.recvWin
	if !c.released {
		c.budget.Release(st.recvWin)
	}
	st.recvWin = 0
}

// releaseLocked gives the connection's reservation back to the budget,
// once, when the connection ended.
func (c *h2cConn) releaseLocked() {
	if c.released {
		return
	}
	c.released = true
	c.budget.Release(c.granted + c.buffered)
}

// reserved returns what the connection holds of the budget.
func (c *h2cConn) reserved() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.released {
		return 0
	}
	return c.granted + c.buffered
}

// openWindowLocked starts the accounting of a new stream: the agent may
// send h2Floor at once (the client's SETTINGS said so), forced from the
// budget, and the window grows from there: it returns by how much (the
// WINDOW_UPDATE goes out with the stream's HEADERS).
func (c *h2cConn) openWindowLocked(st *h2cStream) int64 {
	if c.released {
		return 0
	}
	c.budget.Force(h2Floor)
	c.granted += h2Floor
	st.recvWin = h2Floor
	return c.growLocked(st)
}

// overWindowLocked checks a DATA frame of n bytes against st's window:
// past it, the agent broke flow control, and the connection ends.
func (c *h2cConn) overWindowLocked(st *h2cStream, n int64) error {
	if n <= st.recvWin {
		return nil
	}
	return c.flowControlError(fmt.Errorf("tunnel: v2 agent sent %d bytes past the window of stream %d", n-st.recvWin, st.id))
}

// flowControlError counts err and returns the connection error it is.
func (c *h2cConn) flowControlError(err error) error {
	c.report("flow_control", err)
	return fmt.Errorf("%w: %w: %w", err, ErrFlowControl, http2.ConnectionError(http2.ErrCodeFlowControl))
}
