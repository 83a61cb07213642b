package sse

import (
	"math"
	"math/rand/v2"
	"time"
)

// Defaults for Backoff's zero values.
const (
	DefaultBackoffInitial    = 250 * time.Millisecond
	DefaultBackoffResetAfter = 30 * time.Second
	// DefaultMaxBackoff (30 s) is Backoff's default Max, and the client's.
)

// Backoff is a reconnect policy: exponential growth with full jitter and a
// cap, starting over after a healthy connection. The sse Client uses it
// between connections; any other reconnecting loop can use it too.
//
// The caller counts its attempts and starts over after a connection that
// stayed up for ResetAfter:
//
//	b := sse.Backoff{Max: time.Minute}
//	attempt := 0
//	for ctx.Err() == nil {
//		start := time.Now()
//		err := connect(ctx)
//		if b.Healthy(time.Since(start)) {
//			attempt = 0 // it lasted: the next wait is short again
//		}
//		attempt++
//		wait(ctx, b.Delay(attempt))
//	}
//
// A caller with its own idea of a healthy connection (the Client counts one
// that dispatched an event) sets attempt to 0 itself.
//
// The zero value means the defaults. A Backoff is a plain value: safe to copy
// and to use from several goroutines.
type Backoff struct {
	// Initial is the ceiling of the first attempt's random delay; it
	// doubles with each further attempt. Zero means DefaultBackoffInitial
	// (250 ms).
	Initial time.Duration

	// Max caps the random part of a delay. Zero means DefaultMaxBackoff
	// (30 s).
	Max time.Duration

	// Min is added to every delay: a floor, such as the reconnection time
	// an event stream asked for. Zero means none.
	Min time.Duration

	// ResetAfter is how long a connection must stay up for Healthy to
	// report true. Zero means DefaultBackoffResetAfter (30 s).
	ResetAfter time.Duration
}

// Delay returns the wait before attempt n, counted from 1 after the last
// healthy connection: Min plus a uniformly random duration in
// [0, min(Max, Initial·2^(n-1))] ("full jitter", so that many clients that
// lost the same server spread their reconnects over the whole interval
// instead of arriving in waves). n < 1 returns Min.
func (b Backoff) Delay(n int) time.Duration {
	if n < 1 {
		return b.Min
	}
	c := b.Ceiling(n)
	if c < math.MaxInt64 {
		c++ // rand.N's range is [0, c)
	}
	d := rand.N(c)
	if d > math.MaxInt64-b.Min {
		return math.MaxInt64
	}
	return b.Min + d
}

// Ceiling returns the largest random part of Delay(n):
// min(Max, Initial·2^(n-1)), or 0 for n < 1.
func (b Backoff) Ceiling(n int) time.Duration {
	if n < 1 {
		return 0
	}
	initial, limit := b.Initial, b.Max
	if initial <= 0 {
		initial = DefaultBackoffInitial
	}
	if limit <= 0 {
		limit = DefaultMaxBackoff
	}
	d := min(initial, limit)
	for i := 1; i < n && d < limit; i++ {
		if d > limit/2 {
			return limit
		}
		d *= 2
	}
	return min(d, limit)
}

// Healthy reports whether a connection that stayed up for up deserves a
// fresh start: up is at least ResetAfter.
func (b Backoff) Healthy(up time.Duration) bool {
	reset := b.ResetAfter
	if reset <= 0 {
		reset = DefaultBackoffResetAfter
	}
	return up >= reset
}
