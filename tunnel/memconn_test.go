package tunnel

import (
	"io"
	"net"
	"os"
	"sync"
	"time"
)

// memPipe returns the two ends of an in-memory connection with unbounded
// buffers: unlike net.Pipe, a write never waits for the reader, as on TCP
// with its kernel buffers (over net.Pipe, two readers that each answer a
// ping with a pong wait for each other). Deadlines work on the fake clock
// of a synctest bubble.
func memPipe() (net.Conn, net.Conn) { return memPipeLimit(0) }

// memPipeLimit is memPipe with at most about limit bytes buffered each way
// (0: unbounded): a write then waits for the reader, or for its write
// deadline, as on TCP with full kernel buffers.
func memPipeLimit(limit int) (net.Conn, net.Conn) {
	a, b := newMemBuf(), newMemBuf()
	a.limit, b.limit = limit, limit
	var once sync.Once
	closeAll := func() {
		once.Do(func() {
			a.close()
			b.close()
		})
	}
	return &memConn{in: a, out: b, closeAll: closeAll, dl: newDeadlines()},
		&memConn{in: b, out: a, closeAll: closeAll, dl: newDeadlines()}
}

// memBuf is one direction's bytes.
type memBuf struct {
	mu     sync.Mutex
	buf    []byte
	closed bool
	wake   chan struct{} // cap 1: bytes came or the buffer closed
	limit  int           // 0, or the bytes buffered past which a write waits
	space  chan struct{} // cap 1: bytes were read or the buffer closed
}

func newMemBuf() *memBuf {
	return &memBuf{wake: make(chan struct{}, 1), space: make(chan struct{}, 1)}
}

func (m *memBuf) signal() {
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

func (m *memBuf) close() {
	m.mu.Lock()
	m.closed = true
	m.mu.Unlock()
	m.signal()
	select {
	case m.space <- struct{}{}:
	default:
	}
}

// deadlines holds a connection's read deadline; changing it wakes a
// blocked read.
type deadlines struct {
	mu      sync.Mutex
	read    time.Time
	write   time.Time
	changed chan struct{} // closed and replaced on each change
}

func newDeadlines() *deadlines { return &deadlines{changed: make(chan struct{})} }

func (d *deadlines) setRead(t time.Time) {
	d.mu.Lock()
	d.read = t
	close(d.changed)
	d.changed = make(chan struct{})
	d.mu.Unlock()
}

func (d *deadlines) setWrite(t time.Time) {
	d.mu.Lock()
	d.write = t
	close(d.changed)
	d.changed = make(chan struct{})
	d.mu.Unlock()
}

// wait waits for wake, a change of the deadlines, or the deadline of
// which (read or write); it returns os.ErrDeadlineExceeded for the last.
func (d *deadlines) wait(wake <-chan struct{}, write bool) error {
	d.mu.Lock()
	deadline, changed := d.read, d.changed
	if write {
		deadline = d.write
	}
	d.mu.Unlock()
	var expired <-chan time.Time
	if !deadline.IsZero() {
		wait := time.Until(deadline)
		if wait <= 0 {
			return os.ErrDeadlineExceeded
		}
		timer := time.NewTimer(wait)
		defer timer.Stop()
		expired = timer.C
	}
	select {
	case <-wake:
	case <-changed:
	case <-expired:
		return os.ErrDeadlineExceeded
	}
	return nil
}

type memConn struct {
	in, out  *memBuf
	closeAll func()
	dl       *deadlines
}

func (c *memConn) Read(p []byte) (int, error) {
	for {
		c.in.mu.Lock()
		if len(c.in.buf) > 0 {
			n := copy(p, c.in.buf)
			c.in.buf = c.in.buf[n:]
			c.in.mu.Unlock()
			select {
			case c.in.space <- struct{}{}:
			default:
			}
			return n, nil
		}
		closed := c.in.closed
		c.in.mu.Unlock()
		if closed {
			return 0, io.EOF
		}
		if err := c.dl.wait(c.in.wake, false); err != nil {
			return 0, err
		}
	}
}

func (c *memConn) Write(p []byte) (int, error) {
	for {
		c.out.mu.Lock()
		if c.out.closed {
			c.out.mu.Unlock()
			return 0, net.ErrClosed
		}
		if c.out.limit == 0 || len(c.out.buf) < c.out.limit {
			c.out.buf = append(c.out.buf, p...)
			c.out.mu.Unlock()
			c.out.signal()
			return len(p), nil
		}
		c.out.mu.Unlock()
		if err := c.dl.wait(c.out.space, true); err != nil {
			return 0, err
		}
	}
}

func (c *memConn) Close() error {
	c.closeAll()
	return nil
}

func (c *memConn) LocalAddr() net.Addr  { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1} }
func (c *memConn) RemoteAddr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 2} }

func (c *memConn) SetDeadline(t time.Time) error {
	c.dl.setRead(t)
	c.dl.setWrite(t)
	return nil
}

func (c *memConn) SetReadDeadline(t time.Time) error {
	c.dl.setRead(t)
	return nil
}

func (c *memConn) SetWriteDeadline(t time.Time) error {
	c.dl.setWrite(t)
	return nil
}
