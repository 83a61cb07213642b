package tunnel

import (
	"errors"
	"io"
	"net"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// WSConn is a net.Conn over a WebSocket's binary messages, for protocol v2:
// the bytes of a stream multiplexer cross it. Message boundaries carry no
// meaning; each Write (or WriteBuffers) is one message. Text messages carry
// JSON control frames beside the multiplexer (such as the edge's
// "tunnel_replaced" error): they go to the OnText callback. Reads extend the read deadline by the pong timeout, and
// pings sent by Keepalive keep an idle connection's deadline moving.
type WSConn struct {
	ws          *websocket.Conn
	pongTimeout time.Duration
	onText      func(msg []byte)

	rmu sync.Mutex
	r   io.Reader // the current message, nil between messages

	wmu    sync.Mutex
	closed chan struct{}
	once   sync.Once
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
	c := &WSConn{ws: ws, pongTimeout: pongTimeout, closed: make(chan struct{})}
	ws.SetReadLimit(0) // the multiplexer frames the bytes; messages are unbounded
	ws.SetPongHandler(func(string) error { return c.extend() })
	return c
}

func (c *WSConn) extend() error { return c.ws.SetReadDeadline(time.Now().Add(c.pongTimeout)) }

// Read reads the bytes of the binary messages in order.
func (c *WSConn) Read(p []byte) (int, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	for {
		if c.r == nil {
			if err := c.extend(); err != nil {
				return 0, err
			}
			typ, r, err := c.ws.NextReader()
			if err != nil {
				return 0, err
			}
			if typ != websocket.BinaryMessage {
				if err := c.control(r); err != nil {
					return 0, err
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
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.ws.SetWriteDeadline(time.Now().Add(timeout))
	defer c.ws.SetWriteDeadline(time.Time{})
	return c.ws.WriteMessage(websocket.TextMessage, msg)
}

// Write sends p as one binary message.
func (c *WSConn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := c.ws.WriteMessage(websocket.BinaryMessage, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// WriteBuffers sends the buffers as one binary message (xtaci/smux writes
// a frame's header and payload this way).
func (c *WSConn) WriteBuffers(v [][]byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	w, err := c.ws.NextWriter(websocket.BinaryMessage)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, b := range v {
		m, err := w.Write(b)
		n += m
		if err != nil {
			w.Close()
			return n, err
		}
	}
	return n, w.Close()
}

// Keepalive pings the peer every interval until the connection closes.
func (c *WSConn) Keepalive(interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-c.closed:
			return
		case <-t.C:
			if err := c.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(c.pongTimeout)); err != nil {
				return
			}
		}
	}
}

// Close closes the WebSocket's connection (without a close handshake: the
// multiplexer has its own goodbye).
func (c *WSConn) Close() error {
	err := net.ErrClosed
	c.once.Do(func() {
		close(c.closed)
		err = c.ws.Close()
	})
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
