package benchmark

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluicehq/sluice/internal/stats"
	"github.com/sluicehq/sluice/sse"
)

// client sends requests to one target.
type client struct {
	base string // http://127.0.0.1:PORT
	host string // Host header, or "" for the URL's
}

func (c *client) request(ctx context.Context, method, path string, body io.Reader) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return nil, err
	}
	if c.host != "" {
		req.Host = c.host
	}
	return req, nil
}

// newTransport returns a client transport for conns concurrent
// connections to one host: keep-alive, no compression, no HTTP/2 (the
// targets speak HTTP/1.1 on loopback). bufSize sizes its buffers (0: the
// default 4 KiB); large ones help bulk transfers and cost memory per
// connection.
func newTransport(conns, bufSize int) *http.Transport {
	return &http.Transport{
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:          conns + 16,
		MaxIdleConnsPerHost:   conns + 16,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: 30 * time.Second,
		DisableCompression:    true,
		ReadBufferSize:        bufSize,
		WriteBufferSize:       bufSize,
	}
}

// transferTimeout bounds one bulk transfer: generous, but a stuck
// transfer fails rather than hanging the run.
func (b *bench) transferTimeout() time.Duration {
	return time.Minute + time.Duration(b.cfg.Size/(5<<20))*time.Second
}

// download GETs Size bytes with one client and discards them, checking
// the count.
func (b *bench) download(ctx context.Context, c *client) (*Transfer, error) {
	ctx, cancel := context.WithTimeout(ctx, b.transferTimeout())
	defer cancel()
	tr := newTransport(1, 64<<10)
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr}
	req, err := c.request(ctx, http.MethodGet, "/download?n="+strconv.FormatInt(b.cfg.Size, 10), nil)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, statusError(resp)
	}
	if resp.ContentLength != -1 && resp.ContentLength != b.cfg.Size {
		return nil, fmt.Errorf("Content-Length %d, want %d", resp.ContentLength, b.cfg.Size)
	}
	buf := make([]byte, 256<<10)
	var n int64
	for {
		m, err := resp.Body.Read(buf)
		n += int64(m)
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("after %d of %d bytes: %w", n, b.cfg.Size, err)
		}
	}
	elapsed := time.Since(start)
	if n != b.cfg.Size {
		return nil, fmt.Errorf("received %d bytes, want %d", n, b.cfg.Size)
	}
	return &Transfer{Bytes: n, Seconds: elapsed.Seconds(), MBps: float64(n) / 1e6 / elapsed.Seconds()}, nil
}

// upload POSTs Size bytes; the upstream answers the count it received.
func (b *bench) upload(ctx context.Context, c *client) (*Transfer, error) {
	ctx, cancel := context.WithTimeout(ctx, b.transferTimeout())
	defer cancel()
	tr := newTransport(1, 64<<10)
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr}
	body := &patternReader{data: b.up.data, left: b.cfg.Size}
	req, err := c.request(ctx, http.MethodPost, "/upload", body)
	if err != nil {
		return nil, err
	}
	req.ContentLength = b.cfg.Size
	req.Header.Set("Content-Type", "application/octet-stream")
	start := time.Now()
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("after sending %d of %d bytes: %w", b.cfg.Size-body.left, b.cfg.Size, err)
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	elapsed := time.Since(start)
	if err != nil {
		return nil, fmt.Errorf("reading the answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s", resp.Status, bytes.TrimSpace(answer))
	}
	got, err := strconv.ParseInt(string(answer), 10, 64)
	if err != nil || got != b.cfg.Size {
		return nil, fmt.Errorf("the upstream received %q bytes, want %d", answer, b.cfg.Size)
	}
	if body.left != 0 {
		return nil, fmt.Errorf("the client sent only %d of %d bytes", b.cfg.Size-body.left, b.cfg.Size)
	}
	return &Transfer{Bytes: got, Seconds: elapsed.Seconds(), MBps: float64(got) / 1e6 / elapsed.Seconds()}, nil
}

// patternReader yields left bytes, repeating data.
type patternReader struct {
	data []byte
	off  int
	left int64
}

func (r *patternReader) Read(p []byte) (int, error) {
	if r.left == 0 {
		return 0, io.EOF
	}
	n := 0
	for n < len(p) && r.left > 0 {
		m := copy(p[n:min(len(p), n+int(min(r.left, int64(len(r.data)-r.off))))], r.data[r.off:])
		n += m
		r.left -= int64(m)
		r.off = (r.off + m) % len(r.data)
	}
	return n, nil
}

// small runs Clients keep-alive clients doing GET /small back to back for
// Duration, after a short warm-up that opens the connections, and checks
// every answer.
func (b *bench) small(ctx context.Context, c *client) (*SmallResult, error) {
	return b.smallN(ctx, c, b.cfg.Clients)
}

// smallN is the small-request run with n clients.
func (b *bench) smallN(ctx context.Context, c *client, n int) (*SmallResult, error) {
	tr := newTransport(n, 0)
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr}
	var all atomic.Int64 // every request answered, the warm-up's too
	lat, secs, err := closedLoop(ctx, n, b.cfg.Duration, func() func(context.Context) error {
		buf := make([]byte, len(smallBody)+1)
		return func(ctx context.Context) error {
			req, err := c.request(ctx, http.MethodGet, "/small", nil)
			if err != nil {
				return err
			}
			resp, err := hc.Do(req)
			if err != nil {
				return err
			}
			m, err := io.ReadFull(resp.Body, buf)
			if err == io.ErrUnexpectedEOF {
				err = nil
			} else if err == nil {
				err = errors.New("the body is longer than expected")
			}
			resp.Body.Close()
			switch {
			case resp.StatusCode != http.StatusOK:
				err = fmt.Errorf("%s: %q", resp.Status, buf[:m])
			case err != nil:
			case !bytes.Equal(buf[:m], smallBody):
				err = fmt.Errorf("wrong body %q", buf[:m])
			}
			if err != nil {
				return fmt.Errorf("GET /small: %w", err)
			}
			all.Add(1)
			return nil
		}
	})
	if err != nil {
		return nil, err
	}
	sum := stats.Summarize(lat)
	return &SmallResult{
		Clients:     n,
		Requests:    int64(sum.N),
		AllRequests: all.Load(),
		Seconds:     secs,
		ReqPerSec:   float64(sum.N) / secs,
		P50Ms:       durMs(sum.P50),
		P99Ms:       durMs(sum.P99),
	}, nil
}

// closedLoop runs n workers, each making calls back to back (a worker's
// call comes from newCall, once per worker) through a warm-up of a fifth
// of d (at most 500 ms), then for d; a worker none of whose calls started
// after the warm-up makes one more, so that a target slower than d yields
// a figure rather than none. It returns the latencies of the calls that
// started after the warm-up, and the seconds from the warm-up's end to the
// last of them ending. The first call that fails ends the run with its
// error.
func closedLoop(ctx context.Context, n int, d time.Duration, newCall func() func(context.Context) error) (lat []time.Duration, secs float64, err error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	warm := min(d/5, 500*time.Millisecond)
	measureFrom := time.Now().Add(warm)
	end := measureFrom.Add(d)
	lats := make([][]time.Duration, n)
	var lastDone atomic.Int64
	var wg sync.WaitGroup
	for i := range n {
		call := newCall()
		wg.Go(func() {
			for {
				t0 := time.Now()
				if (!t0.Before(end) && len(lats[i]) > 0) || ctx.Err() != nil {
					return
				}
				if err := call(ctx); err != nil {
					cancel(err)
					return
				}
				t1 := time.Now()
				if !t0.Before(measureFrom) {
					lats[i] = append(lats[i], t1.Sub(t0))
					for {
						old := lastDone.Load()
						if t1.UnixNano() <= old || lastDone.CompareAndSwap(old, t1.UnixNano()) {
							break
						}
					}
				}
			}
		})
	}
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		return nil, 0, err
	}
	lat = slices.Concat(lats...)
	if len(lat) == 0 {
		return nil, 0, errors.New("no call completed")
	}
	return lat, time.Unix(0, lastDone.Load()).Sub(measureFrom).Seconds(), nil
}

// openStream GETs an event stream and reads its first event, which must
// be the upstream's "hello".
func openStream(ctx context.Context, hc *http.Client, c *client, path string) (*http.Response, *sse.Parser, error) {
	req, err := c.request(ctx, http.MethodGet, path, nil)
	if err != nil {
		return nil, nil, err
	}
	req.Header.Set("Accept", "text/event-stream")
	resp, err := hc.Do(req)
	if err != nil {
		return nil, nil, err
	}
	if resp.StatusCode != http.StatusOK {
		err := statusError(resp)
		resp.Body.Close()
		return nil, nil, err
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		resp.Body.Close()
		return nil, nil, fmt.Errorf("Content-Type %q, want text/event-stream", ct)
	}
	p := sse.NewParser(resp.Body, sse.ParserConfig{})
	ev, err := p.Next()
	if err != nil {
		resp.Body.Close()
		return nil, nil, fmt.Errorf("waiting for the first event: %w", err)
	}
	if ev.Type != "hello" {
		resp.Body.Close()
		return nil, nil, fmt.Errorf("first event %q, want hello", ev.Type)
	}
	return resp, p, nil
}

// openConcurrency bounds the streams being opened at once, so that the
// listen backlogs do not overflow into SYN retries.
const openConcurrency = 64

// openTimeout bounds the opening of all the streams of one run.
const openTimeout = time.Minute

// sse measures the delay of timestamped events on n concurrent streams:
// all n streams are opened, then the publisher sends one event to each
// every interval for dur, then an "end" event with the count. Every
// stream must receive every event, in order.
func (b *bench) sse(ctx context.Context, c *client, n int, interval, dur time.Duration) (*SSEResult, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel(nil)
	tr := newTransport(n, 0)
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr}

	type result struct {
		delays []int64 // ns
		ticks  int64
		lastAt int64 // Unix ns when the last tick arrived
		err    error
	}
	results := make([]result, n)
	var finished atomic.Int64 // streams that read their end event
	ready := make(chan error, n)
	sem := make(chan struct{}, openConcurrency)
	for i := range n {
		wg.Go(func() {
			r := &results[i]
			sem <- struct{}{}
			resp, p, err := openStream(ctx, hc, c, "/sse")
			<-sem
			ready <- err
			if err != nil {
				r.err = err
				return
			}
			defer resp.Body.Close()
			r.delays = make([]int64, 0, int(dur/interval)+8)
			for {
				ev, err := p.Next()
				now := time.Now().UnixNano()
				if err != nil {
					r.err = fmt.Errorf("after %d events: %w", r.ticks, err)
					return
				}
				switch ev.Type {
				case "tick":
					if ev.ID != strconv.FormatInt(r.ticks+1, 10) {
						r.err = fmt.Errorf("event id %q after %d events: lost or reordered", ev.ID, r.ticks)
						return
					}
					stamp, err := strconv.ParseInt(ev.Data, 10, 64)
					if err != nil {
						r.err = fmt.Errorf("event %s: bad stamp %q", ev.ID, ev.Data)
						return
					}
					r.ticks++
					r.delays = append(r.delays, now-stamp)
					r.lastAt = now
				case "end":
					if ev.Data != strconv.FormatInt(r.ticks, 10) {
						r.err = fmt.Errorf("received %d events, the publisher sent %s", r.ticks, ev.Data)
					}
					finished.Add(1)
					return
				default:
					r.err = fmt.Errorf("unexpected event %q", ev.Type)
					return
				}
			}
		})
	}
	openDeadline := time.After(openTimeout)
	for i := range n {
		select {
		case err := <-ready:
			if err != nil {
				return nil, fmt.Errorf("opening stream %d of %d: %w", i+1, n, err)
			}
		case <-openDeadline:
			return nil, fmt.Errorf("only %d of %d streams open after %v", i, n, openTimeout)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if err := waitCount(&b.up.sseOpen, int64(n), 10*time.Second); err != nil {
		return nil, err
	}

	start := time.Now()
	rounds, lastSend, err := b.up.pub.run(ctx, interval, dur)
	if err != nil {
		return nil, err
	}
	published := time.Since(start)
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	drainTimeout := time.Minute + dur
	select {
	case <-done:
	case <-time.After(drainTimeout):
		missing := int64(n) - finished.Load()
		cancel(errors.New("drain timeout"))
		<-done
		return nil, fmt.Errorf("%d of %d streams had not received all %d events %v after the last send", missing, n, rounds, drainTimeout)
	}
	var all []int64
	var events, lastAt int64
	for i, r := range results {
		if r.err != nil {
			return nil, fmt.Errorf("stream %d of %d: %w", i+1, n, r.err)
		}
		if r.ticks != rounds {
			return nil, fmt.Errorf("stream %d of %d: %d events, the publisher ran %d rounds", i+1, n, r.ticks, rounds)
		}
		events += r.ticks
		lastAt = max(lastAt, r.lastAt)
		all = append(all, r.delays...)
	}
	if events == 0 {
		return nil, errors.New("no event was sent")
	}
	sum := stats.Summarize(all)
	if err := waitCount(&b.up.sseOpen, 0, 10*time.Second); err != nil {
		b.note("after the SSE run with %d streams through %s, the clients had closed their streams but %v", n, c.base, err)
	}
	return &SSEResult{
		Streams:    n,
		IntervalMs: durMs(interval),
		Events:     events,
		Rounds:     rounds,
		Seconds:    published.Seconds(),
		P50Ms:      nsMs(sum.P50),
		P99Ms:      nsMs(sum.P99),
		MaxMs:      nsMs(sum.Max),
		DrainMs:    max(0, nsMs(lastAt-lastSend.UnixNano())),
	}, nil
}

// measureMemory reads the resident memory of the target's processes,
// opens MemStreams idle event streams, holds them for MemSettle, reads it
// again and closes them.
func (b *bench) measureMemory(ctx context.Context, c *client, t target) (*MemoryResult, error) {
	k := b.cfg.MemStreams
	procs, err := t.procs()
	if err != nil {
		return nil, err
	}
	eachBefore, _, err := rssKB(procs)
	if err != nil {
		return nil, err
	}

	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	tr := newTransport(k, 0)
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr}
	ready := make(chan error, k)
	var (
		mu     sync.Mutex
		ended  int   // idle streams that ended before they were closed
		endErr error // the first one's error
	)
	sem := make(chan struct{}, openConcurrency)
	for range k {
		wg.Go(func() {
			sem <- struct{}{}
			resp, p, err := openStream(ctx, hc, c, "/sse?idle=1")
			<-sem
			ready <- err
			if err != nil {
				return
			}
			defer resp.Body.Close()
			ev, err := p.Next() // nothing should come
			if ctx.Err() == nil {
				if err == nil {
					err = fmt.Errorf("an idle stream got an event %q", ev.Type)
				}
				mu.Lock()
				ended++
				if endErr == nil {
					endErr = err
				}
				mu.Unlock()
			}
		})
	}
	openDeadline := time.After(openTimeout)
	for i := range k {
		select {
		case err := <-ready:
			if err != nil {
				return nil, fmt.Errorf("opening idle stream %d of %d: %w", i+1, k, err)
			}
		case <-openDeadline:
			return nil, fmt.Errorf("only %d of %d idle streams open after %v", i, k, openTimeout)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if err := waitCount(&b.up.idleOpen, int64(k), 10*time.Second); err != nil {
		return nil, err
	}
	select {
	case <-time.After(b.cfg.MemSettle):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	procsAfter, err := t.procs()
	if err != nil {
		return nil, err
	}
	eachAfter, _, err := rssKB(procsAfter)
	if err != nil {
		return nil, err
	}
	mu.Lock()
	n, firstErr := ended, endErr
	mu.Unlock()
	if n > 0 {
		return nil, fmt.Errorf("%d of %d idle streams ended while held: %v", n, k, firstErr)
	}
	if got := b.up.idleOpen.Load(); got != int64(k) {
		return nil, fmt.Errorf("the upstream holds %d idle streams after the settle time, want %d", got, k)
	}
	if !slices.Equal(procs, procsAfter) {
		return nil, fmt.Errorf("the processes changed while the streams were held: %v before, %v after", procs, procsAfter)
	}
	cancel()
	wg.Wait()
	if err := waitCount(&b.up.idleOpen, 0, 10*time.Second); err != nil {
		b.note("after closing %d idle streams through %s: %v", k, c.base, err)
	}
	return newMemoryResult(procs, eachBefore, eachAfter, k), nil
}

// newMemoryResult is the memory of procs before (VmRSS in KB, each
// process's) and after holding k streams or connections: the total, and
// per stream the total and the edge's and the agent's shares.
func newMemoryResult(procs []proc, before, after []int64, k int) *MemoryResult {
	m := &MemoryResult{Streams: k, Processes: len(procs)}
	grown := make([]float64, len(procs))
	for i, p := range procs {
		m.BeforeKB += before[i]
		m.AfterKB += after[i]
		grown[i] = float64(after[i] - before[i])
		m.ByProcess = append(m.ByProcess, ProcessMemory{
			Name: p.name, Role: p.role, PID: p.pid, BeforeKB: before[i], AfterKB: after[i],
			PerStreamKB: grown[i] / float64(k),
		})
	}
	m.ByRole = splitByRole(procs, grown, float64(k))
	m.PerStreamKB = m.ByRole.Total
	return m
}

func statusError(resp *http.Response) error {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<10))
	return fmt.Errorf("%s: %s", resp.Status, bytes.TrimSpace(body))
}

func durMs(d time.Duration) float64 { return float64(d) / 1e6 }
func nsMs(ns int64) float64         { return float64(ns) / 1e6 }
