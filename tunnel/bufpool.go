package tunnel

import "sync"

// BufferPool is an httputil.BufferPool of 32 KiB copy buffers, shared by
// the edge's and the agent's reverse proxies: without one, every response
// allocates its own buffer, which dominated the allocations of small
// requests through the tunnel.
type BufferPool struct{ p sync.Pool }

// Get returns a 32 KiB buffer.
func (b *BufferPool) Get() []byte {
	if v := b.p.Get(); v != nil {
		return *v.(*[]byte)
	}
	return make([]byte, 32<<10)
}

// Put returns a buffer to the pool.
func (b *BufferPool) Put(buf []byte) { b.p.Put(&buf) }
