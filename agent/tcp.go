package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// DialTimeout bounds the connection to a TCP tunnel's local address.
const DialTimeout = 10 * time.Second

// dialTCP connects a public connection of a TCP tunnel (from remoteAddr)
// to the local address; the tunnel copies both ways. With a console, the
// connection's line is printed when it ends (or its dial failed).
func (a *Agent) dialTCP(ctx context.Context, remoteAddr string) (net.Conn, error) {
	start := time.Now()
	d := net.Dialer{Timeout: DialTimeout}
	c, err := d.DialContext(ctx, "tcp", a.cfg.LocalAddr)
	if err != nil {
		err = fmt.Errorf("agent: connect to %s: %w", a.cfg.LocalAddr, err)
		a.tcpLine(remoteAddr, start, 0, 0, err)
		return nil, err
	}
	if a.cfg.Console == nil {
		return c, nil
	}
	return &consoleConn{TCPConn: c.(*net.TCPConn), a: a, remote: remoteAddr, start: start}, nil
}

// tcpLine prints a TCP connection's console line: when it started, the
// visitor's address, how long it lasted, its bytes each way, and why it
// failed (err, nil when it ended well).
func (a *Agent) tcpLine(remote string, start time.Time, in, out int64, err error) {
	if a.cfg.Console == nil {
		return
	}
	why := ""
	if err != nil {
		why = "  failed: " + err.Error()
	}
	a.consoleMu.Lock()
	defer a.consoleMu.Unlock()
	fmt.Fprintf(a.cfg.Console, "%s  TCP     %-40s %8s  in %s  out %s%s\n", start.Format("15:04:05"), trim(remote, 40),
		time.Since(start).Round(time.Millisecond), size(in), size(out), why)
}

// consoleConn counts a local connection's bytes (in: from the visitor,
// written to the local server; out: read from it) and prints its line
// once, when it is closed, with its first error if it failed.
type consoleConn struct {
	*net.TCPConn
	a       *Agent
	remote  string
	start   time.Time
	in, out atomic.Int64
	mu      sync.Mutex
	err     error // the first failure of a read or write
	once    sync.Once
}

func (c *consoleConn) fail(err error) {
	if err == nil || errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
		return
	}
	c.mu.Lock()
	if c.err == nil {
		c.err = err
	}
	c.mu.Unlock()
}

func (c *consoleConn) Read(p []byte) (int, error) {
	n, err := c.TCPConn.Read(p)
	c.out.Add(int64(n))
	c.fail(err)
	return n, err
}

func (c *consoleConn) Write(p []byte) (int, error) {
	n, err := c.TCPConn.Write(p)
	c.in.Add(int64(n))
	c.fail(err)
	return n, err
}

// ReadFrom and WriteTo count too (an io.Copy takes them over Write and
// Read; the tunnel's copies use Read and Write); their errors may be the
// other side's: why the connection broke.
func (c *consoleConn) ReadFrom(r io.Reader) (int64, error) {
	n, err := c.TCPConn.ReadFrom(r)
	c.in.Add(n)
	c.fail(err)
	return n, err
}

func (c *consoleConn) WriteTo(w io.Writer) (int64, error) {
	n, err := c.TCPConn.WriteTo(w)
	c.out.Add(n)
	c.fail(err)
	return n, err
}

func (c *consoleConn) Close() error {
	err := c.TCPConn.Close()
	c.once.Do(func() {
		c.mu.Lock()
		ferr := c.err
		c.mu.Unlock()
		c.a.tcpLine(c.remote, c.start, c.in.Load(), c.out.Load(), ferr)
	})
	return err
}
