package tunnel

import (
	"io"
	"sync"
)

// pipe is one stream's body buffer: the session's read loop writes what
// arrives, the consumer (a reverse proxy or a handler) reads it. It holds at
// most limit bytes; the buffer is allocated as data arrives and released
// when it empties, so an idle stream (a quiet SSE feed) holds none.
//
// onRead, if set, is called outside the lock after the consumer read n
// bytes; the session uses it to grant window credit.
type pipe struct {
	mu       sync.Mutex
	buf      []byte // buf[off:] is unread
	off      int
	limit    int
	err      error // set by closeWrite: io.EOF or why the body ended
	readGone bool  // the consumer closed its end
	readable chan struct{}
	writable chan struct{}
	onRead   func(n int)
}

func newPipe(limit int, onRead func(int)) *pipe {
	return &pipe{
		limit:    limit,
		readable: make(chan struct{}, 1),
		writable: make(chan struct{}, 1),
		onRead:   onRead,
	}
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// Read reads buffered bytes, waiting for some.
func (p *pipe) Read(b []byte) (int, error) {
	for {
		p.mu.Lock()
		if n := len(p.buf) - p.off; n > 0 {
			n = copy(b, p.buf[p.off:])
			p.off += n
			if p.off == len(p.buf) {
				if cap(p.buf) > 64<<10 {
					p.buf = nil // let a burst's memory go
				} else {
					p.buf = p.buf[:0]
				}
				p.off = 0
			}
			p.mu.Unlock()
			signal(p.writable)
			if p.onRead != nil {
				p.onRead(n)
			}
			return n, nil
		}
		if p.err != nil {
			err := p.err
			p.mu.Unlock()
			return 0, err
		}
		if p.readGone {
			p.mu.Unlock()
			return 0, io.ErrClosedPipe
		}
		p.mu.Unlock()
		<-p.readable
	}
}

// Close closes the consumer's end: buffered and future bytes are dropped,
// and a writer waiting for room is released.
func (p *pipe) Close() error {
	p.mu.Lock()
	p.readGone = true
	p.buf, p.off = nil, 0
	p.mu.Unlock()
	signal(p.writable)
	signal(p.readable)
	return nil
}

// write appends data. With wait, it waits for room while the buffer is
// full (back-pressure on the caller) until stop is closed; without, a full
// buffer is an error (the peer broke its flow-control window). It returns
// false when the consumer is gone (the data is dropped).
func (p *pipe) write(data []byte, wait bool, stop <-chan struct{}) (ok bool, err error) {
	for {
		p.mu.Lock()
		if p.readGone {
			p.mu.Unlock()
			return false, nil
		}
		if p.err != nil {
			p.mu.Unlock()
			return false, nil
		}
		if len(p.buf)-p.off+len(data) <= p.limit || len(p.buf) == p.off {
			if p.off > 0 && len(p.buf)+len(data) > cap(p.buf) {
				p.buf = append(p.buf[:0], p.buf[p.off:]...)
				p.off = 0
			}
			p.buf = append(p.buf, data...)
			p.mu.Unlock()
			signal(p.readable)
			return true, nil
		}
		p.mu.Unlock()
		if !wait {
			return false, ErrFlowControl
		}
		select {
		case <-p.writable:
		case <-stop:
			return false, ErrSessionClosed
		}
	}
}

// closeWrite ends the body: io.EOF for a clean end, or the error readers
// get after the buffered bytes. Only the first call counts.
func (p *pipe) closeWrite(err error) {
	p.mu.Lock()
	if p.err == nil {
		p.err = err
	}
	p.mu.Unlock()
	signal(p.readable)
}

// buffered returns the bytes waiting to be read.
func (p *pipe) buffered() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.buf) - p.off
}
