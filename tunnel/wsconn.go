package tunnel

import (
	"errors"
	"io"
	"net"
	"runtime"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// WSConn is a net.Conn over a WebSocket's binary messages, for protocol v2:
// the bytes of a stream multiplexer cross it. Message boundaries carry no
// meaning. Writes are coalesced: Write copies its bytes into a pending
// buffer (up to maxPending, then it waits) and a writer goroutine sends
// whatever is pending as one message each time it runs, so that the many
// small frames of concurrent streams share messages and syscalls instead of
// costing one each. A write error is returned by the next Write and ends
// the connection. Text messages carry JSON control frames beside the
// multiplexer (such as the edge's "tunnel_replaced" error): they go to the
// OnText callback. Reads extend the read deadline by the pong timeout, and
// pings sent by Keepalive keep an idle connection's deadline moving.
type WSConn struct {
	ws     *websocket.Conn
	live   liveness
	onText func(msg []byte)

	rmu sync.Mutex
	r   io.Reader // the current message, nil between messages

	wsmu    sync.Mutex // one writer of messages at a time
	wmu     sync.Mutex // guards pending, spare, werr
	wcond   *sync.Cond // signalled when pending was taken or writing failed
	pending []byte     // bytes written, not yet sent
	spare   []byte     // the buffer last sent, for reuse
	werr    error
	wake    chan struct{} // cap 1: pending has bytes
	wdone   chan struct{} // closed when the writer goroutine returned

	closed chan struct{}
	once   sync.Once
	errMu  sync.Mutex
	err    error // the first read or write error
}

// fail records err as why the connection ended, and closes it.
func (c *WSConn) fail(err error) error {
	c.errMu.Lock()
	if c.err == nil {
		c.err = err
	}
	c.errMu.Unlock()
	c.Close()
	return err
}

// Dead is closed when the connection failed or was closed.
func (c *WSConn) Dead() <-chan struct{} { return c.closed }

// Err is the first read or write error, or net.ErrClosed after Close.
func (c *WSConn) Err() error {
	c.errMu.Lock()
	defer c.errMu.Unlock()
	if c.err == nil {
		return net.ErrClosed
	}
	return c.err
}

// maxControlMessage bounds a text (control) message in protocol v2.
const maxControlMessage = 64 << 10

// ErrTextMessage is returned by WSConn.Read when the peer sends a text
// message that is too large for a control frame, or when no OnText callback
// was given.
var ErrTextMessage = errors.New("tunnel: unexpected text message in protocol v2")

// NewWSConn adapts ws. pongTimeout is how long a read may wait for any
// message or pong before the connection counts as dead (zero means
// DefaultPongTimeout).
func NewWSConn(ws *websocket.Conn, pongTimeout time.Duration) *WSConn {
	if pongTimeout <= 0 {
		pongTimeout = DefaultPongTimeout
	}
	c := &WSConn{ws: ws, closed: make(chan struct{}),
		wake: make(chan struct{}, 1), wdone: make(chan struct{})}
	c.wcond = sync.NewCond(&c.wmu)
	go c.writer()
	ws.SetReadLimit(0) // the multiplexer frames the bytes; messages are unbounded
	c.live = newLiveness(ws, pongTimeout, func(err error) { c.fail(err) })
	return c
}

// Read reads the bytes of the binary messages in order.
func (c *WSConn) Read(p []byte) (int, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	for {
		if c.r == nil {
			if err := c.live.extend(); err != nil {
				return 0, c.fail(err)
			}
			typ, r, err := c.ws.NextReader()
			if err != nil {
				return 0, c.fail(err)
			}
			if typ != websocket.BinaryMessage {
				if err := c.control(r); err != nil {
					return 0, c.fail(err)
				}
				continue
			}
			c.r = r
		}
		n, err := c.r.Read(p)
		if err == io.EOF {
			c.r = nil
			if n == 0 {
				continue
			}
			err = nil
		}
		if err != nil {
			c.fail(err)
		}
		return n, err
	}
}

// OnText sets the callback that receives each text message; it is called
// from Read and must not block. Set it before the first Read.
func (c *WSConn) OnText(f func(msg []byte)) { c.onText = f }

// control reads a text message whole and hands it to onText.
func (c *WSConn) control(r io.Reader) error {
	if c.onText == nil {
		return ErrTextMessage
	}
	msg, err := io.ReadAll(io.LimitReader(r, maxControlMessage+1))
	if err != nil {
		return err
	}
	if len(msg) > maxControlMessage {
		return ErrTextMessage
	}
	c.onText(msg)
	return nil
}

// WriteText sends msg as one text message (a control frame).
func (c *WSConn) WriteText(msg []byte, timeout time.Duration) error {
	c.wsmu.Lock()
	defer c.wsmu.Unlock()
	c.ws.SetWriteDeadline(time.Now().Add(timeout))
	defer c.ws.SetWriteDeadline(time.Time{})
	return c.ws.WriteMessage(websocket.TextMessage, msg)
}

// maxPending is how many written bytes may wait for the writer goroutine
// before Write waits: the connection's send buffer.
const maxPending = 1 << 20

// Write queues p to be sent; it waits while maxPending bytes are queued.
func (c *WSConn) Write(p []byte) (int, error) {
	return c.WriteBuffers([][]byte{p})
}

// WriteBuffers queues the buffers to be sent, as Write does.
func (c *WSConn) WriteBuffers(v [][]byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	for len(c.pending) >= maxPending && c.werr == nil {
		c.wcond.Wait()
	}
	if c.werr != nil {
		return 0, c.werr
	}
	n := 0
	for _, b := range v {
		c.pending = append(c.pending, b...)
		n += len(b)
	}
	signal(c.wake)
	return n, nil
}

// maxBacklog is how far past maxPending queue may fill the pending bytes:
// the frames a reader answers with, which a peer that keeps asking while
// it does not read would pile up.
const maxBacklog = 1 << 20

// ErrBacklog is returned by queue when the peer let maxPending+maxBacklog
// bytes pile up.
var ErrBacklog = errors.New("tunnel: the peer does not read what it asks for")

// queue queues p without waiting for room: for the few small frames a
// connection's reader sends (acknowledgements, window updates), which must
// never wait for the peer to read, lest both ends wait for each other.
func (c *WSConn) queue(p []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.werr != nil {
		return c.werr
	}
	if len(c.pending) >= maxPending+maxBacklog {
		return ErrBacklog
	}
	c.pending = append(c.pending, p...)
	signal(c.wake)
	return nil
}

// writer sends the pending bytes, one message each time it wakes, until
// the connection closes or a write fails.
func (c *WSConn) writer() {
	defer close(c.wdone)
	for {
		select {
		case <-c.wake:
		case <-c.closed:
			c.setWriteErr(net.ErrClosed)
			return
		}
		// Let the goroutines that are ready to run (handlers about to
		// write their frames, under load) go first, so that more frames
		// share the message and its write: one yield per message, free
		// when nothing else waits. Measured under 50 clients of small
		// requests (interleaved A/B, 10 rounds): edge + agent CPU per
		// request 221 -> 198 us (10 %), the agent's writes per request
		// 1.8 -> 1.2 (its WebSocket messages 0.8 -> 0.2 per request).
		runtime.Gosched()
		c.wmu.Lock()
		if len(c.pending) == 0 {
			// A wake for bytes the last round took: nothing to swap
			// (swapping would drop a buffer and grow a new one from
			// nothing, copying it at every doubling).
			c.wmu.Unlock()
			continue
		}
		buf := c.pending
		c.pending = c.spare[:0]
		c.spare = nil
		c.wcond.Broadcast()
		c.wmu.Unlock()
		c.wsmu.Lock()
		err := c.ws.WriteMessage(websocket.BinaryMessage, buf)
		c.wsmu.Unlock()
		if err != nil {
			c.setWriteErr(err)
			c.errMu.Lock()
			if c.err == nil {
				c.err = err
			}
			c.errMu.Unlock()
			c.ws.Close() // the reader fails next, and closes c
			return
		}
		if cap(buf) <= 2*maxPending {
			c.wmu.Lock()
			c.spare = buf
			c.wmu.Unlock()
		}
	}
}

func (c *WSConn) setWriteErr(err error) {
	c.wmu.Lock()
	if c.werr == nil {
		c.werr = err
	}
	c.wcond.Broadcast()
	c.wmu.Unlock()
}

// Keepalive pings the peer every interval until the connection closes; a
// ping that cannot be written within the pong timeout ends the connection
// (Err says so).
func (c *WSConn) Keepalive(interval time.Duration) { c.live.ping(interval, c.closed) }

// Close closes the WebSocket's connection (without a close handshake: the
// multiplexer has its own goodbye).
func (c *WSConn) Close() error {
	err := net.ErrClosed
	c.once.Do(func() {
		close(c.closed)
		// A write blocked on a peer that stopped reading is cut after a
		// second, so that Close (called when reading failed) returns.
		cut := time.AfterFunc(time.Second, func() { c.ws.NetConn().SetWriteDeadline(time.Now()) })
		<-c.wdone
		cut.Stop()
		// What was written before Close still goes out (an HTTP/2
		// GOAWAY, the last frames), if the peer takes it within a second.
		c.wmu.Lock()
		rest := c.pending
		c.pending = nil
		c.wmu.Unlock()
		if len(rest) > 0 {
			c.wsmu.Lock()
			c.ws.SetWriteDeadline(time.Now().Add(time.Second))
			c.ws.WriteMessage(websocket.BinaryMessage, rest)
			c.wsmu.Unlock()
		}
		err = c.ws.Close()
	})
	<-c.wdone
	return err
}

// CloseWithMessage sends a close frame with code and text, then closes.
func (c *WSConn) CloseWithMessage(code int, text string) error {
	c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, text), time.Now().Add(time.Second))
	return c.Close()
}

func (c *WSConn) LocalAddr() net.Addr                { return c.ws.LocalAddr() }
func (c *WSConn) RemoteAddr() net.Addr               { return c.ws.RemoteAddr() }
func (c *WSConn) SetReadDeadline(t time.Time) error  { return c.ws.SetReadDeadline(t) }
func (c *WSConn) SetWriteDeadline(t time.Time) error { return c.ws.SetWriteDeadline(t) }
func (c *WSConn) SetDeadline(t time.Time) error {
	return errors.Join(c.ws.SetReadDeadline(t), c.ws.SetWriteDeadline(t))
}
