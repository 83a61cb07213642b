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
func memPipe() (net.Conn, net.Conn) {
	a, b := newMemBuf(), newMemBuf()
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
}

func newMemBuf() *memBuf { return &memBuf{wake: make(chan struct{}, 1)} }

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
}

// deadlines holds a connection's read deadline; changing it wakes a
// blocked read.
type deadlines struct {
	mu      sync.Mutex
	read    time.Time
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
			return n, nil
		}
		closed := c.in.closed
		c.in.mu.Unlock()
		if closed {
			return 0, io.EOF
		}
		c.dl.mu.Lock()
		deadline, changed := c.dl.read, c.dl.changed
		c.dl.mu.Unlock()
		var timer *time.Timer
		var expired <-chan time.Time
		if !deadline.IsZero() {
			wait := time.Until(deadline)
			if wait <= 0 {
				return 0, os.ErrDeadlineExceeded
			}
			timer = time.NewTimer(wait)
			expired = timer.C
		}
		select {
		case <-c.in.wake:
		case <-changed:
		case <-expired:
			return 0, os.ErrDeadlineExceeded
		}
		if timer != nil {
			timer.Stop()
		}
	}
}

func (c *memConn) Write(p []byte) (int, error) {
	c.out.mu.Lock()
	if c.out.closed {
		c.out.mu.Unlock()
		return 0, net.ErrClosed
	}
	c.out.buf = append(c.out.buf, p...)
	c.out.mu.Unlock()
	c.out.signal()
	return len(p), nil
}

func (c *memConn) Close() error {
	c.closeAll()
	return nil
}

func (c *memConn) LocalAddr() net.Addr  { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1} }
func (c *memConn) RemoteAddr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 2} }

func (c *memConn) SetDeadline(t time.Time) error {
	c.dl.setRead(t)
	return nil
}

func (c *memConn) SetReadDeadline(t time.Time) error {
	c.dl.setRead(t)
	return nil
}

// SetWriteDeadline is a no-op: writes never wait.
func (c *memConn) SetWriteDeadline(time.Time) error { return nil }
