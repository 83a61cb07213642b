package tunnel

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
)

// TCP tunnels: each public connection is a stream of its own, opened by
// the edge (Session.OpenTCP); at the agent, the tunnel dials the local
// address (DialConfig.DialTCP) and copies bytes both ways, passing
// half-closes and resets on. v1 carries a connection as tcp_* frames
// (tcp_v1.go), v2 as a full-duplex HTTP/2 stream (tcp_v2.go).

// errNoDialTCP refuses a TCP connection at an agent without DialTCP.
var errNoDialTCP = errors.New("this agent does not serve TCP connections")

// tcpPeer is the tunnel's side of one TCP connection at the agent, for
// pumpTCP. Read gets the edge's bytes: io.EOF at its half-close, another
// error at a reset. Write sends to the edge; CloseWrite half-closes
// toward it; reset ends the connection toward the edge with a reason and
// makes a blocked Read return.
type tcpPeer interface {
	io.Reader
	io.Writer
	CloseWrite() error
	reset(reason string)
}

// pumpTCP copies between the local connection and the edge until both
// directions ended, then closes conn. It returns nil when both ended
// cleanly (half-closes), else why the connection was reset. Each read
// from conn of at most size bytes is one Write to p.
func pumpTCP(conn net.Conn, p tcpPeer, size int) error {
	defer conn.Close()
	var wg sync.WaitGroup
	var inErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		_, inErr = io.Copy(conn, p)
		if inErr == nil {
			closeWrite(conn)
		} else {
			abortConn(conn)
		}
	}()
	_, outErr := io.CopyBuffer(onlyWriter{p}, onlyReader{conn}, make([]byte, size))
	if outErr == nil {
		outErr = p.CloseWrite()
	}
	if outErr != nil {
		p.reset(outErr.Error())
		abortConn(conn)
	}
	wg.Wait()
	if outErr != nil {
		return outErr
	}
	return inErr
}

// onlyReader and onlyWriter hide ReadFrom and WriteTo, so that io.Copy
// uses its buffer (one frame or DATA write for each read).
type onlyReader struct{ io.Reader }
type onlyWriter struct{ io.Writer }

// closeWrite half-closes c if it can (a *net.TCPConn, a *net.UnixConn);
// otherwise the local side learns of the end only when the connection
// closes.
func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
}

// abortConn closes c so that its peer sees a reset, not an end: with no
// linger on TCP.
func abortConn(c net.Conn) {
	// An interface, not *net.TCPConn: the agent's console wraps the
	// connection (embedding it), and a wrapped one must reset too.
	if tc, ok := c.(interface{ SetLinger(int) error }); ok {
		tc.SetLinger(0)
	}
	c.Close()
}

// tcpReason is a dial error's text as a reason to send: one line.
func tcpReason(err error) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, err.Error())
}

// dialError is the error a stream reads when the agent could not connect
// (or reset the connection with a reason): it wraps ErrStreamReset and
// carries the agent's reason.
func dialError(reason string) error {
	return fmt.Errorf("%w: the agent closed the connection: %s", ErrStreamReset, reason)
}

// dialTCP is DialConfig.DialTCP's type.
type dialTCP = func(ctx context.Context, remoteAddr string) (net.Conn, error)
