package tunnel

import "sync"

// copyBufferSize is the reverse proxies' copy buffer. Measured with v2
// downloads through separate edge and agent processes: 32 KiB ran at about
// 385 MB/s, 64 KiB at 450 and 128 KiB no faster; each read is one write
// (and flush) on the other side, so larger buffers mean fewer syscalls. A
// held stream that never received much touches only the first page of a
// fresh buffer.
const copyBufferSize = 64 << 10

// BufferPool is an httputil.BufferPool of copy buffers, shared by the
// edge's and the agent's reverse proxies: without one, every response
// allocates its own buffer, which dominated the allocations of small
// requests through the tunnel.
//
// With a Budget, each buffer is reserved from it while in use (a copy to a
// client that does not read holds its buffer); when the budget has no
// room, Get returns a small buffer (smallCopyBufferSize) instead.
type BufferPool struct {
	p      sync.Pool
	Budget *Budget
}

// smallCopyBufferSize is the copy buffer of a spent budget.
const smallCopyBufferSize = 4 << 10

// Get returns a buffer of copyBufferSize bytes, or a small one when the
// budget is spent.
func (b *BufferPool) Get() []byte {
	if !b.Budget.Take(copyBufferSize) {
		return make([]byte, smallCopyBufferSize)
	}
	if v := b.p.Get(); v != nil {
		return *v.(*[]byte)
	}
	return make([]byte, copyBufferSize)
}

// Put returns a buffer to the pool.
func (b *BufferPool) Put(buf []byte) {
	if len(buf) != copyBufferSize {
		return
	}
	b.Budget.Release(copyBufferSize)
	b.p.Put(&buf)
}
