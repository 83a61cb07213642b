package tunnel

import "sync"

// Budget bounds the body bytes an edge holds for all its sessions
// together: what its streams have buffered and what they allowed their
// agents to send (window granted, not yet received), since that may
// arrive at any time. One Budget is shared by the sessions of an edge
// (Config.Budget); its methods are safe for concurrent use.
//
// A stream reserves bytes from the budget when it grants window to the
// agent (or, without flow control, when it buffers them) and releases
// them when its consumer read them and the window was not granted again,
// or when the stream ends. Windows are sized from what is left: a stream
// grows its window only while the budget has room (Grow), so under
// pressure new streams get smaller windows and the edge never holds more
// than the budget, except for a floor per stream (Floor) that keeps every
// stream moving and that the protocol may impose (a v1 agent's first
// window: 32 KiB with wire.FeatureInitialWindow, 512 KiB without); Force
// takes those.
type Budget struct {
	mu   sync.Mutex
	max  int64
	used int64
	peak int64
}

// DefaultMaxBuffer is the default budget of an edge: 256 MiB.
const DefaultMaxBuffer = 256 << 20

// budgetFloor is the window a stream always has, budget or not: one
// v1 chunk, so a stream whose consumer reads always moves.
const budgetFloor = 32 << 10

// budgetShare is the largest part of what is left that one grant takes:
// a stream grows by at most 1/budgetShare of the free bytes at a time, so
// that the last free bytes are shared among the streams that ask.
const budgetShare = 8

// NewBudget returns a budget of max bytes; max <= 0 means DefaultMaxBuffer.
func NewBudget(max int64) *Budget {
	if max <= 0 {
		max = DefaultMaxBuffer
	}
	return &Budget{max: max}
}

// Max returns the budget's size.
func (b *Budget) Max() int64 { return b.max }

// Used returns the bytes reserved now, which may exceed Max by the floors
// of the streams (Force).
func (b *Budget) Used() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used
}

// Peak returns the most bytes reserved at once so far.
func (b *Budget) Peak() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.peak
}

// Grow reserves up to want bytes, as the budget allows: all of them while
// at most one eighth of the free bytes is asked, less under pressure, none
// when the budget is spent. It returns the bytes reserved.
func (b *Budget) Grow(want int64) int64 {
	if b == nil {
		return want
	}
	if want <= 0 {
		return 0
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	free := b.max - b.used
	if free <= 0 {
		return 0
	}
	n := min(want, max(free/budgetShare, min(free, budgetFloor)))
	b.take(n)
	return n
}

// Take reserves n bytes if all of them fit in the budget, and reports
// whether it did.
func (b *Budget) Take(n int64) bool {
	if b == nil || n <= 0 {
		return true
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.used+n > b.max {
		return false
	}
	b.take(n)
	return true
}

// Force reserves n bytes whatever is left: a stream's floor.
func (b *Budget) Force(n int64) {
	if b == nil || n <= 0 {
		return
	}
	b.mu.Lock()
	b.take(n)
	b.mu.Unlock()
}

func (b *Budget) take(n int64) {
	b.used += n
	if b.used > b.peak {
		b.peak = b.used
	}
}

// Release gives back n reserved bytes.
func (b *Budget) Release(n int64) {
	if b == nil || n <= 0 {
		return
	}
	b.mu.Lock()
	b.used -= n
	if b.used < 0 {
		panic("tunnel: budget released more than was reserved")
	}
	b.mu.Unlock()
}

// Pressed reports whether the budget is spent: streams then keep only
// their floor.
func (b *Budget) Pressed() bool {
	if b == nil {
		return false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used >= b.max
}
