package sseload

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
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

// connect opens one stream with open, retrying with exponential backoff
// (50 ms to 2 s, with jitter) until ctx ends or the error is permanent. It
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
		d := min(50*time.Millisecond<<min(attempt, 6), 2*time.Second)
		d = d/2 + rand.N(d/2+1)
		select {
		case <-time.After(d):
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
