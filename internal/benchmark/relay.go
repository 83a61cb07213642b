package benchmark

import (
	"context"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"sync"
)

// relayBuffer is each direction's copy buffer in a relay: the proxies'
// buffer (tunnel.copyBufferSize).
const relayBuffer = 64 << 10

// Relay forwards every TCP connection accepted on listen to target, bytes
// as they are, until ctx ends: no HTTP, no framing, one read and one write
// per chunk in user space (the copy is not spliced, as no proxy that reads
// what it forwards can splice). Two relays in a chain are what any tunnel
// with an edge process and an agent process costs at least on one machine:
// the "relays" target of the benchmark.
func Relay(ctx context.Context, listen, target string) error {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		wg.Go(func() { relayConn(ctx, c, target) })
	}
}

func relayConn(ctx context.Context, c net.Conn, target string) {
	defer c.Close()
	var d net.Dialer
	u, err := d.DialContext(ctx, "tcp", target)
	if err != nil {
		return
	}
	defer u.Close()
	stop := context.AfterFunc(ctx, func() { c.Close(); u.Close() })
	defer stop()
	done := make(chan struct{})
	go func() {
		relayCopy(u, c)
		close(done)
	}()
	relayCopy(c, u)
	<-done
}

// relayCopy copies src to dst through a buffer of its own (hiding the
// connections' ReaderFrom and WriterTo, which would splice), then passes
// the end of the stream on.
func relayCopy(dst, src net.Conn) {
	io.CopyBuffer(struct{ io.Writer }{dst}, struct{ io.Reader }{src}, make([]byte, relayBuffer))
	if tc, ok := dst.(*net.TCPConn); ok {
		tc.CloseWrite()
	} else {
		dst.Close()
	}
}

// startRelays starts two relays (cfg.RelayCmd) in a chain to the upstream: the client connects to the first, which connects to the
// second, which connects to the upstream.
func startRelays(ctx context.Context, cfg Config, upPort int) (target, error) {
	p1, err := freePort()
	if err != nil {
		return nil, err
	}
	p2, err := freePort()
	if err != nil {
		return nil, err
	}
	addr := func(p int) string { return "127.0.0.1:" + strconv.Itoa(p) }
	t := &procTarget{base: "http://" + addr(p1)}
	// Relay 1, which the clients reach, stands for an edge; relay 2, which
	// connects to the upstream, for an agent.
	for _, hop := range []struct {
		name, role   string
		listen, dest int
	}{{"relay 2", roleAgent, p2, upPort}, {"relay 1", roleEdge, p1, p2}} {
		args := append(slices.Clone(cfg.RelayCmd[1:]), addr(hop.listen), addr(hop.dest))
		c, err := startChild(hop.name, cfg.RelayCmd[0], args...)
		if err != nil {
			t.stop()
			return nil, err
		}
		c.role = hop.role
		t.children = append(t.children, c)
	}
	if err := waitReady(ctx, t, "/small", ""); err != nil {
		t.stop()
		return nil, fmt.Errorf("the relays did not come up: %w\n%s", err, t.output())
	}
	return t, nil
}
