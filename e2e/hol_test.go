package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/stats"
)

// TestHeadOfLine: on one tunnel, a public client reads a 1 GiB download at
// about 100 KB/s, so that its stream fills its flow-control window and the
// upstream's writes block, while another client reads an event stream (an
// event every 20 ms) and sends small requests. The second client's p99
// event delay and request latency are measured without the slow download,
// then with it: a stalled stream must not hold up the others (no
// head-of-line blocking in the tunnel).
func TestHeadOfLine(t *testing.T) { forProtocols(t, testHeadOfLine) }

// latencies collects durations from several goroutines.
type latencies struct {
	mu sync.Mutex
	d  []time.Duration
}

func (l *latencies) add(d time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.d = append(l.d, d)
}

// take returns the durations collected so far and starts again.
func (l *latencies) take() []time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	d := l.d
	l.d = nil
	return d
}

func testHeadOfLine(t *testing.T, proto string) {
	const (
		token     = "hol-token"
		slowSize  = 1 << 30
		sseEvery  = 20 * time.Millisecond
		getEvery  = 10 * time.Millisecond
		phase     = 3 * time.Second
		slowPiece = 1 << 10 // the slow client reads this much every 10 ms
	)
	// Times are offsets from base, on the monotonic clock.
	base := time.Now()
	up := newTestUpstream(t)
	var written atomic.Int64 // bytes of /slow the upstream got through Write
	up.mux.HandleFunc("GET /slow", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.Itoa(slowSize))
		buf := make([]byte, 32<<10)
		src := &pattern{}
		for left := slowSize; left > 0 && r.Context().Err() == nil; {
			m := min(left, len(buf))
			src.Read(buf[:m])
			n, err := w.Write(buf[:m])
			written.Add(int64(n))
			if err != nil {
				return
			}
			left -= n
		}
	})
	up.mux.HandleFunc("GET /sse", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(200)
		rc := http.NewResponseController(w)
		rc.Flush()
		tick := time.NewTicker(sseEvery)
		defer tick.Stop()
		for {
			select {
			case <-tick.C:
			case <-r.Context().Done():
				return
			case <-up.stop:
				return
			}
			fmt.Fprintf(w, "data: %d\n\n", time.Since(base))
			if rc.Flush() != nil {
				return
			}
		}
	})
	up.mux.HandleFunc("GET /small", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	})
	e := startEdge(t, token)
	startAgent(t, e, proto, "hol", token, up.port)
	url := e.publicURL("hol")
	c := tunnelClient(t, e.addr) // the second client: events and small requests

	// The event stream, read for the whole test; delays go to sseDelays.
	var sseDelays latencies
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", url+"/sse", nil)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		resp.Body.Close()
		t.Fatalf("/sse: status %d", resp.StatusCode)
	}
	sseDone := make(chan error, 1)
	go func() {
		defer resp.Body.Close()
		br := bufio.NewReader(resp.Body)
		for {
			ev, err := readEvent(br)
			if err != nil {
				sseDone <- err
				return
			}
			recv := time.Since(base)
			sent, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimPrefix(ev, "data: "), "\n\n"), 10, 64)
			if err != nil {
				sseDone <- fmt.Errorf("event %q: %w", ev, err)
				return
			}
			sseDelays.add(recv - time.Duration(sent))
		}
	}()
	defer func() {
		cancel()
		if err := <-sseDone; ctx.Err() == nil {
			t.Errorf("the event stream ended: %v", err)
		}
	}()

	// measure sends small requests for one phase and returns the p99s of
	// their latency and of the delay of the events received meanwhile.
	measure := func(what string) (getP99, sseP99 time.Duration) {
		sseDelays.take()
		var gets []time.Duration
		next := time.Now()
		for end := next.Add(phase); time.Now().Before(end); {
			t0 := time.Now()
			resp, body, err := tryDo(c, "GET", url+"/small", nil, nil, 5*time.Second)
			if err != nil {
				t.Fatalf("%s: small request: %v (is the tunnel blocked?)", what, err)
			}
			if resp.StatusCode != 200 || string(body) != "ok" {
				t.Fatalf("%s: small request: status %d, body %q", what, resp.StatusCode, body)
			}
			gets = append(gets, time.Since(t0))
			next = next.Add(getEvery)
			time.Sleep(time.Until(next))
		}
		events := sseDelays.take()
		if len(events) == 0 {
			t.Fatalf("%s: no event in %v", what, phase)
		}
		g, ev := stats.Summarize(gets), stats.Summarize(events)
		getP99, sseP99 = g.P99, ev.P99
		t.Logf("%s %s: small requests p99 %v (max %v, %d requests); events p99 delay %v (max %v, %d events)",
			proto, what, g.P99.Round(time.Microsecond), g.Max.Round(time.Microsecond), g.N,
			ev.P99.Round(time.Microsecond), ev.Max.Round(time.Microsecond), ev.N)
		if want := int(phase / sseEvery / 2); len(events) < want {
			t.Errorf("%s: %d events in %v, want at least %d (one every %v was sent)", what, len(events), phase, want, sseEvery)
		}
		return getP99, sseP99
	}

	// Warm up (connections, first requests), then measure unloaded.
	for range 20 {
		do(t, c, "GET", url+"/small", nil, nil)
	}
	getUnloaded, sseUnloaded := measure("unloaded")

	// The slow download, on a client of its own.
	var read atomic.Int64
	slowCtx, slowCancel := context.WithCancel(context.Background())
	defer slowCancel()
	slowClient := tunnelClient(t, e.addr)
	slowDone := make(chan error, 1)
	go func() {
		slowDone <- func() error {
			req, _ := http.NewRequestWithContext(slowCtx, "GET", url+"/slow", nil)
			resp, err := slowClient.Do(req)
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			if resp.StatusCode != 200 {
				return fmt.Errorf("status %d", resp.StatusCode)
			}
			buf := make([]byte, slowPiece)
			for {
				n, err := resp.Body.Read(buf)
				read.Add(int64(n))
				if err != nil {
					return err
				}
				time.Sleep(10 * time.Millisecond)
			}
		}()
	}()
	defer func() {
		slowCancel()
		if err := <-slowDone; slowCtx.Err() == nil {
			t.Errorf("the slow download ended: %v", err)
		}
	}()

	// Wait until the download stalls: the windows and socket buffers
	// between the upstream and the slow client are full, and the upstream
	// writes only as fast as the client reads.
	// Stalled: two quarter seconds in a row in which the upstream wrote
	// less than 512 KiB (it writes hundreds of MB/s while it can).
	started := time.Now()
	last, quiet := written.Load(), 0
	for quiet < 2 {
		time.Sleep(250 * time.Millisecond)
		w := written.Load()
		if w > 1<<20 && w-last < 512<<10 {
			quiet++
		} else {
			quiet = 0
		}
		if time.Since(started) > 10*time.Second || w >= slowSize {
			t.Fatalf("the slow download did not stall: the upstream wrote %d MiB in %v, the client read %d KiB",
				w>>20, time.Since(started).Round(time.Millisecond), read.Load()>>10)
		}
		last = w
	}
	w0, r0 := written.Load(), read.Load()
	t.Logf("%s: slow download stalled after %v: the upstream wrote %d KiB, the client read %d KiB",
		proto, time.Since(started).Round(time.Millisecond), w0>>10, r0>>10)

	getLoaded, sseLoaded := measure("loaded")
	w1, r1 := written.Load(), read.Load()
	t.Logf("%s: during the loaded phase the upstream wrote %d KiB and the slow client read %d KiB (%d KiB in all, %d KiB of it buffered in between)",
		proto, (w1-w0)>>10, (r1-r0)>>10, r1>>10, (w1-r1)>>10)

	// Generous bounds: this runs beside other tests on small machines.
	bound := func(unloaded time.Duration) time.Duration { return max(10*unloaded, 50*time.Millisecond) }
	if getLoaded > bound(getUnloaded) {
		t.Errorf("small requests p99 %v beside the stalled download, %v without it", getLoaded, getUnloaded)
	}
	if sseLoaded > bound(sseUnloaded) {
		t.Errorf("event delay p99 %v beside the stalled download, %v without it", sseLoaded, sseUnloaded)
	}
	// The download was held by flow control: the upstream wrote about what
	// the client read, and the bytes in between stayed bounded.
	if w1-w0 > r1-r0+4<<20 {
		t.Errorf("while stalled, the upstream wrote %d KiB but the client read %d KiB: not held by flow control", (w1-w0)>>10, (r1-r0)>>10)
	}
	if w1-r1 > 64<<20 {
		t.Errorf("%d MiB of the slow download are buffered between the upstream and the client, want ≤ 64 MiB", (w1-r1)>>20)
	}
}
