package tunnel

import (
	"context"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicehq/sluice/wire"
)

// budgetSession is tunnelSession with cfg's budget and windows.
func budgetSession(t *testing.T, cfg Config, features []string, upstream http.Handler) Session {
	t.Helper()
	url, sessions := acceptor(t, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	dc := DialConfig{Config: Config{V1: cfg.V1, V2: cfg.V2}, URL: url, TunnelID: "t", Protocol: ProtocolV1, Features: []string{}}
	if wire.HasFeature(features, Subprotocol) {
		dc.Protocol = ProtocolV2
	} else if features != nil {
		dc.Features = features
	}
	as, err := Dial(ctx, dc)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		as.Serve(ctx, upstream)
	}()
	sess := <-sessions
	t.Cleanup(func() {
		cancel()
		sess.Close()
		wg.Wait()
	})
	return sess
}

// settled waits until f's value stopped changing for a while (the agent's
// writes are blocked on flow control), checking ok on every value. It
// fails the test when ok fails.
func settled(t *testing.T, f func() int64, ok func(int64) bool) int64 {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	last, since := f(), time.Now()
	for time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
		v := f()
		if !ok(v) {
			t.Fatalf("value %d out of bounds", v)
		}
		if v != last {
			last, since = v, time.Now()
		} else if time.Since(since) > 500*time.Millisecond {
			return v
		}
	}
	t.Fatal("value never settled")
	return 0
}

// Clients that never read a large download hold no more than the budget
// (plus each stream's floor), whatever the windows: the agent is not let
// to send more. Without the budget, each stream would fill its window.
// Then the budget comes back whole as the bodies are read or closed.
func TestBudgetBoundsUnreadDownloads(t *testing.T) {
	t.Parallel()
	const (
		streams = 24
		budget  = 4 << 20
		size    = 16 << 20
	)
	for name, tc := range map[string]struct {
		features []string
		floor    int64 // what a stream may hold whatever the budget
	}{
		"v2":         {v2Features, h2Floor},
		"extensions": {allFeatures, DefaultWindowV1}, // a v1 agent's first window is its own
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			var written atomic.Int64
			upstream := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				chunk := make([]byte, 16<<10)
				for n := 0; n < size; n += len(chunk) {
					if _, err := w.Write(chunk); err != nil {
						return
					}
					written.Add(int64(len(chunk)))
					w.(http.Flusher).Flush()
				}
			})
			b := NewBudget(budget)
			sess := budgetSession(t, Config{Budget: b}, tc.features, upstream)
			var bodies []io.ReadCloser
			for range streams {
				req, _ := http.NewRequest("GET", "http://t.example/big", nil)
				resp, err := sess.RoundTrip(req)
				if err != nil {
					t.Fatal(err)
				}
				bodies = append(bodies, resp.Body)
			}
			// The agent's side buffers a little per stream too (its
			// writer, a frame in flight).
			limit := int64(budget) + streams*(tc.floor+64<<10)
			got := settled(t, written.Load, func(v int64) bool { return v <= limit })
			t.Logf("%d streams never read: the upstream wrote %d KiB, the budget peaked at %d KiB (limit %d KiB)", streams, got>>10, b.Peak()>>10, limit>>10)
			if peak := b.Peak(); peak > budget+streams*tc.floor {
				t.Fatalf("budget peaked at %d, over %d + %d floors of %d", peak, budget, streams, tc.floor)
			}
			// One reader gets the whole body: windows still move.
			n, err := io.Copy(io.Discard, bodies[0])
			if err != nil || n != size {
				t.Fatalf("read %d bytes, %v; want %d", n, err, size)
			}
			for _, body := range bodies {
				body.Close()
			}
			// Everything comes back (x/net keeps less than 4 KiB of
			// connection window unsent).
			settled(t, b.Used, func(int64) bool { return true })
			if used := b.Used(); used > 4<<10 {
				t.Fatalf("%d bytes still reserved after every body was closed", used)
			}
		})
	}
}
