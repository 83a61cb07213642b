package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// dialUDP opens a UDP session's local socket (for remoteAddr's
// datagrams), connected to the local address. With a console, the
// session's line is printed when it ends (or its socket failed).
func (a *Agent) dialUDP(ctx context.Context, remoteAddr string) (net.Conn, error) {
	start := time.Now()
	var d net.Dialer
	c, err := d.DialContext(ctx, "udp", a.cfg.LocalAddr)
	if err != nil {
		err = fmt.Errorf("agent: open a socket to %s: %w", a.cfg.LocalAddr, err)
		a.udpLine(remoteAddr, start, &udpCounts{}, err)
		return nil, err
	}
	if a.cfg.Console == nil {
		return c, nil
	}
	return &consoleUDP{Conn: c, a: a, remote: remoteAddr, start: start}, nil
}

// udpCounts are a UDP session's datagrams and bytes each way (in: from
// the visitor, written to the local server; out: read from it).
type udpCounts struct {
	inN, inB, outN, outB atomic.Int64
}

// udpLine prints a UDP session's console line: when it started, the
// visitor's address, how long it lasted, datagrams and bytes each way, and
// why it failed (err, nil when it ended well, as at its idle timeout).
func (a *Agent) udpLine(remote string, start time.Time, c *udpCounts, err error) {
	if a.cfg.Console == nil {
		return
	}
	why := ""
	if err != nil {
		why = "  failed: " + err.Error()
	}
	a.consoleMu.Lock()
	defer a.consoleMu.Unlock()
	fmt.Fprintf(a.cfg.Console, "%s  UDP     %-40s %8s  in %d datagrams %s  out %d datagrams %s%s\n", start.Format("15:04:05"), trim(remote, 40),
		time.Since(start).Round(time.Millisecond), c.inN.Load(), size(c.inB.Load()), c.outN.Load(), size(c.outB.Load()), why)
}

// consoleUDP counts a local socket's datagrams and prints the session's
// line once, when it is closed, with its first error if it failed.
type consoleUDP struct {
	net.Conn
	a      *Agent
	remote string
	start  time.Time
	n      udpCounts
	mu     sync.Mutex
	err    error
	once   sync.Once
}

func (c *consoleUDP) fail(err error) {
	if err == nil || errors.Is(err, net.ErrClosed) {
		return
	}
	c.mu.Lock()
	if c.err == nil {
		c.err = err
	}
	c.mu.Unlock()
}

func (c *consoleUDP) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if err == nil {
		c.n.outN.Add(1)
		c.n.outB.Add(int64(n))
	}
	c.fail(err)
	return n, err
}

func (c *consoleUDP) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if err == nil {
		c.n.inN.Add(1)
		c.n.inB.Add(int64(n))
	}
	c.fail(err)
	return n, err
}

func (c *consoleUDP) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.mu.Lock()
		ferr := c.err
		c.mu.Unlock()
		c.a.udpLine(c.remote, c.start, &c.n, ferr)
	})
	return err
}
