package sse

import (
	"context"
	"io"
	"math"
	"net/http"
	"testing"
	"testing/synctest"
	"time"
)

func TestBackoffDelay(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		b       Backoff
		n       int
		ceiling time.Duration
	}{
		{"defaults, first attempt", Backoff{}, 1, DefaultBackoffInitial},
		{"defaults, third attempt", Backoff{}, 3, 4 * DefaultBackoffInitial},
		{"defaults, capped", Backoff{}, 20, DefaultMaxBackoff},
		{"doubles", Backoff{Initial: time.Second, Max: time.Hour}, 4, 8 * time.Second},
		{"capped", Backoff{Initial: time.Second, Max: 10 * time.Second}, 5, 10 * time.Second},
		{"initial above max", Backoff{Initial: time.Minute, Max: time.Second}, 1, time.Second},
		{"no overflow", Backoff{Initial: time.Second, Max: math.MaxInt64}, 200, math.MaxInt64},
		{"attempt 0", Backoff{Initial: time.Second}, 0, 0},
		{"floor", Backoff{Initial: time.Second, Min: 3 * time.Second}, 2, 2 * time.Second},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := c.b.Ceiling(c.n); got != c.ceiling {
				t.Fatalf("Ceiling(%d) = %v, want %v", c.n, got, c.ceiling)
			}
			// Full jitter: every delay lies in [Min, Min+ceiling], and
			// the delays cover the range rather than bunching at its top.
			low, high := false, false
			for range 1000 {
				d := c.b.Delay(c.n)
				if d < c.b.Min || d-c.b.Min > c.ceiling {
					t.Fatalf("Delay(%d) = %v, want within [%v, %v]", c.n, d, c.b.Min, c.b.Min+c.ceiling)
				}
				low = low || d-c.b.Min <= c.ceiling/4
				high = high || d-c.b.Min >= c.ceiling/4*3
			}
			if !low || !high {
				t.Fatalf("1000 delays of attempt %d: some in the lowest quarter %v, some in the highest %v; want both", c.n, low, high)
			}
		})
	}
}

func TestBackoffHealthy(t *testing.T) {
	t.Parallel()
	if (Backoff{}).Healthy(DefaultBackoffResetAfter - time.Millisecond) {
		t.Error("healthy before DefaultBackoffResetAfter")
	}
	if !(Backoff{}).Healthy(DefaultBackoffResetAfter) {
		t.Error("not healthy after DefaultBackoffResetAfter")
	}
	b := Backoff{ResetAfter: time.Second}
	if b.Healthy(999*time.Millisecond) || !b.Healthy(time.Second) {
		t.Error("ResetAfter not honoured")
	}
}

// The client's waits, on a fake clock: the reconnection time plus jitter
// that grows with failures in a row up to MaxBackoff, and starts over after
// a connection that dispatched an event.
func TestClientBackoffSequence(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		// Connections 0 and 5 dispatch an event; 1–4 end with none.
		pt := &pipeTransport{handle: func(n int, r *http.Request, w io.Writer) {
			switch n {
			case 0:
				io.WriteString(w, "retry: 1000\ndata: first\n\n")
			case 5:
				io.WriteString(w, "data: back\n\n")
			}
		}}
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		c, err := NewClient("http://sse.test/", ClientConfig{HTTPClient: pt.client(), MaxBackoff: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		var delays []time.Duration
		c.cfg.OnRetry = func(_ error, d time.Duration) { delays = append(delays, d) }
		evs, err := collect(t, c, ctx, 2)
		if err != nil || len(evs) != 2 {
			t.Fatalf("%v %v", evs, err)
		}
		cancel()
		pt.wg.Wait()
		// The waits before connections 1..5, and what bounds them:
		// 1 s plus up to 1 s after a healthy connection, then up to 2,
		// 4, then 5 s (MaxBackoff) after failures in a row.
		ceilings := []time.Duration{1, 2, 4, 5, 5}
		gaps := pt.gaps()
		if len(gaps) != 5 || len(delays) != 5 {
			t.Fatalf("gaps %v, delays %v; want 5 each", gaps, delays)
		}
		for i, g := range gaps {
			if g != delays[i] {
				t.Errorf("wait %d: %v, OnRetry said %v", i, g, delays[i])
			}
			hi := time.Second + ceilings[i]*time.Second
			if g < time.Second || g > hi {
				t.Errorf("wait %d = %v, want within [1s, %v]", i, g, hi)
			}
		}
	})
}

// After "retry: 0" a healthy stream reconnects soon, but failures in a row
// still back off.
func TestClientBackoffRetryZero(t *testing.T) {
	t.Parallel()
	c, err := NewClient("http://sse.test/", ClientConfig{Retry: time.Second, MaxBackoff: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if b := c.backoff(); b.Min != time.Second || b.Initial != time.Second || b.Max != 10*time.Second {
		t.Fatalf("backoff = %+v", b)
	}
	c.retry, c.retrySet = 0, true
	b := c.backoff()
	if b.Min != 0 || b.Ceiling(1) != minBackoffBase || b.Ceiling(5) != 16*minBackoffBase {
		t.Fatalf("retry 0: %+v, ceilings %v %v", b, b.Ceiling(1), b.Ceiling(5))
	}
	// A server retry above the cap is still waited.
	c.retry = time.Minute
	if d := c.backoff().Delay(5); d < time.Minute {
		t.Fatalf("long retry: %v", d)
	}
}
