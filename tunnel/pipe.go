package tunnel

import (
	"io"
	"sync"
)

// pipe is one stream's body buffer: the session's read loop writes what
// arrives, the consumer (a reverse proxy or a handler) reads it. It holds at
// most limit bytes, in blocks of blockSize taken from a pool as data arrives
// and given back as it is read, so an idle stream (a quiet SSE feed) holds
// none and a busy one allocates nothing in steady state.
//
// onRead, if set, is called outside the lock after the consumer read n
// bytes; the session uses it to grant window credit.
type pipe struct {
	mu       sync.Mutex
	blocks   []*block // unread data, oldest first
	size     int      // unread bytes
	limit    int
	err      error // set by closeWrite: io.EOF or why the body ended
	readGone bool  // the consumer closed its end
	readable chan struct{}
	writable chan struct{}
	onRead   func(n int)
	// budget, if set, gets back the bytes read or dropped; with reserve,
	// the bytes written are reserved from it too (a stream without flow
	// control), and a full budget holds the writer back while this pipe
	// holds anything.
	budget  *Budget
	reserve bool
}

const blockSize = 32 << 10

// block is a pooled buffer; b[off:n] is unread.
type block struct {
	b      [blockSize]byte
	off, n int
}

var blockPool = sync.Pool{New: func() any { return new(block) }}

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
		if p.size > 0 {
			n := 0
			for n < len(b) && len(p.blocks) > 0 {
				blk := p.blocks[0]
				m := copy(b[n:], blk.b[blk.off:blk.n])
				blk.off += m
				n += m
				if blk.off == blk.n {
					p.blocks[0] = nil
					p.blocks = p.blocks[1:]
					blockPool.Put(blk)
				}
			}
			p.size -= n
			if len(p.blocks) == 0 {
				p.blocks = nil
			}
			p.mu.Unlock()
			p.budget.Release(int64(n))
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
	p.release()
	p.mu.Unlock()
	signal(p.writable)
	signal(p.readable)
	return nil
}

// release gives the blocks back. The caller holds p.mu.
func (p *pipe) release() {
	p.budget.Release(int64(p.size))
	for _, blk := range p.blocks {
		blockPool.Put(blk)
	}
	p.blocks, p.size = nil, 0
}

// write appends data. With wait, it waits for room while the buffer is
// full (back-pressure on the caller) until stop is closed; without, a full
// buffer is an error (the peer broke its flow-control window). It returns
// false when the consumer is gone (the data is dropped).
func (p *pipe) write(data []byte, wait bool, stop <-chan struct{}) (ok bool, err error) {
	for {
		p.mu.Lock()
		if p.readGone || p.err != nil {
			p.mu.Unlock()
			return false, nil
		}
		if p.size == 0 || p.size+len(data) <= p.limit && !(p.reserve && p.budget.Pressed()) {
			if p.reserve {
				p.budget.Force(int64(len(data)))
			}
			p.append(data)
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

// append copies data into blocks. The caller holds p.mu.
func (p *pipe) append(data []byte) {
	p.size += len(data)
	if n := len(p.blocks); n > 0 {
		last := p.blocks[n-1]
		m := copy(last.b[last.n:], data)
		last.n += m
		data = data[m:]
	}
	for len(data) > 0 {
		blk := blockPool.Get().(*block)
		blk.off = 0
		blk.n = copy(blk.b[:], data)
		data = data[blk.n:]
		p.blocks = append(p.blocks, blk)
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
	return p.size
}
