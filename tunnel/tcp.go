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
// from conn of at most size bytes (at most copyBufferSize) is one Write to
// p. The copy buffers are taken only while bytes flow (copyFlowing).
func pumpTCP(conn net.Conn, p tcpPeer, size int) error {
	defer conn.Close()
	var wg sync.WaitGroup
	var inErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		_, inErr = copyFlowing(conn, p, copyBufferSize)
		if inErr == nil {
			closeWrite(conn)
		} else {
			abortConn(conn)
		}
	}()
	_, outErr := copyFlowing(p, conn, size)
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

// tcpBuffers are the copy buffers of TCP connections while their bytes
// flow (copyFlowing).
var tcpBuffers BufferPool

// idleReadSize is the read of a TCP connection's copy while no bytes flow:
// the only buffer a held connection keeps, each way.
const idleReadSize = 512

// copyFlowing copies src to dst, each read one Write, until src ends (nil
// at io.EOF) or a read or write fails. A copy waiting for bytes holds no
// copy buffer: it reads into a small one of its own (idleReadSize); a read
// that fills it says more are coming, and the copy then reads through a
// buffer of tcpBuffers (size bytes of it) until a read leaves that part
// empty (src had no more for now) and the buffer goes back. (One that
// stops exactly on a full read waits with its buffer until the next
// bytes.) A held connection of many, idle, so costs 1 KiB of buffers
// rather than two of 32 or 64 KiB.
func copyFlowing(dst io.Writer, src io.Reader, size int) (written int64, err error) {
	small := make([]byte, idleReadSize)
	var full []byte // from tcpBuffers, while bytes flow
	defer func() {
		if full != nil {
			tcpBuffers.Put(full)
		}
	}()
	for {
		buf := small
		if full != nil {
			buf = full[:min(size, len(full))]
		}
		n, rerr := src.Read(buf)
		if n > 0 {
			w, werr := dst.Write(buf[:n])
			written += int64(w)
			if werr == nil && w != n {
				werr = io.ErrShortWrite
			}
			if werr != nil {
				return written, werr
			}
		}
		if rerr != nil {
			if rerr == io.EOF {
				return written, nil
			}
			return written, rerr
		}
		switch {
		case full == nil && n == len(small):
			full = tcpBuffers.Get()
		case full != nil && n < len(buf):
			tcpBuffers.Put(full)
			full = nil
		}
	}
}

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
