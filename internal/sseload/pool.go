package sseload

import (
	"context"
	"errors"
	"github.com/sluicehq/sluice/sse"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// pool is what the clients and push modes share: bounded connection
// attempts with backoff, the counters, the first error, and the open
// connections, closed together at the end.
type pool struct {
	sem chan struct{} // bounds the attempts in progress

	connected, failed, dropped, retries atomic.Int64
	closing                             atomic.Bool

	mu       sync.Mutex // guards the fields below, and those of the mode
	conns    []net.Conn
	firstErr error
}

func newPool(concurrency int) pool { return pool{sem: make(chan struct{}, concurrency)} }

func (p *pool) noteErr(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.firstErr == nil {
		p.firstErr = err
	}
}

// retryBackoff spaces a stream's connection attempts: 50 ms to 2 s.
var retryBackoff = sse.Backoff{Initial: 50 * time.Millisecond, Max: 2 * time.Second}

// connect opens one stream with open, retrying with exponential backoff
// (retryBackoff) until ctx ends or the error is permanent. It
// marks settled done either way and reports the stream's body, or false.
func (p *pool) connect(ctx context.Context, settled *sync.WaitGroup, open func(context.Context) (net.Conn, io.Reader, error)) (io.Reader, bool) {
	defer settled.Done()
	for attempt := 0; ; attempt++ {
		var (
			conn net.Conn
			body io.Reader
			err  error
		)
		select {
		case p.sem <- struct{}{}:
			conn, body, err = open(ctx)
			<-p.sem
		case <-ctx.Done():
			err = ctx.Err()
		}
		if err == nil {
			p.mu.Lock()
			p.conns = append(p.conns, conn)
			p.mu.Unlock()
			p.connected.Add(1)
			return body, true
		}
		p.noteErr(err)
		var perm *permanentError
		if ctx.Err() != nil || errors.As(err, &perm) {
			p.failed.Add(1)
			return nil, false
		}
		p.retries.Add(1)
		select {
		case <-time.After(retryBackoff.Delay(attempt + 1)):
		case <-ctx.Done():
		}
	}
}

// closeAll lets go of every stream; reads that then fail are not drops.
func (p *pool) closeAll() {
	p.closing.Store(true)
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, conn := range p.conns {
		conn.Close()
	}
}
