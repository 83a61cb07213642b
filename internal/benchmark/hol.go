package benchmark

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluicehq/sluice/internal/stats"
)

// HOLConfig says what the head-of-line run measures.
type HOLConfig struct {
	// Protocols are the protocols to run, in order (nil: v1 and v2).
	Protocols []string
	// SluiceBin is the sluice binary run as the edge and the agent.
	SluiceBin string
	// Phase is the length of each measured phase, unloaded and loaded
	// (0: 3 s).
	Phase time.Duration
	// Progress, if set, receives one line per step.
	Progress io.Writer
}

const (
	holSlowSize   = 1 << 30               // the slow download's length
	holSlowPiece  = 1 << 10               // the slow client reads this much...
	holSlowEvery  = 10 * time.Millisecond // ...this often: about 100 KB/s
	holSSEEvery   = 20 * time.Millisecond // the event stream's period
	holSmallEvery = 10 * time.Millisecond // the small requests' period
	holCeiling    = 2 * time.Minute       // bounds every wait of a stuck run
)

// HOLReport is the outcome of a head-of-line run. Its JSON form is
// "bench hol --json".
type HOLReport struct {
	Env       Env         `json:"env"`
	PhaseS    float64     `json:"phase_s"`
	Protocols []HOLResult `json:"protocols"`
}

// HOLResult is one protocol's figures: a client's small requests and
// event stream without, then beside, a stalled download on the same
// tunnel, and how the download was held.
type HOLResult struct {
	Protocol string   `json:"protocol"`
	Unloaded HOLPhase `json:"unloaded"`
	Loaded   HOLPhase `json:"loaded"`
	// StallS is the time the slow download took to stall.
	StallS float64 `json:"stall_s"`
	// WrittenKB and ReadKB are the slow download's bytes the upstream
	// wrote and the slow client read during the loaded phase; BufferedKB
	// what lay between them at its end.
	WrittenKB  int64  `json:"written_kb"`
	ReadKB     int64  `json:"read_kb"`
	BufferedKB int64  `json:"buffered_kb"`
	Error      string `json:"error,omitempty"`
}

// HOLPhase is one phase's figures.
type HOLPhase struct {
	Requests   int     `json:"requests"`
	SmallP50Ms float64 `json:"small_p50_ms"`
	SmallP99Ms float64 `json:"small_p99_ms"`
	SmallMaxMs float64 `json:"small_max_ms"`
	Events     int64   `json:"events"`
	SSEP50Ms   float64 `json:"sse_p50_ms"`
	SSEP99Ms   float64 `json:"sse_p99_ms"`
	SSEMaxMs   float64 `json:"sse_max_ms"`
}

// HeadOfLine measures head-of-line blocking on one tunnel, for each
// protocol in turn: a client sends a small request every 10 ms and reads
// an event stream (an event every 20 ms) for one phase; then another
// client starts a 1 GiB download and reads it at about 100 KB/s, so that
// its stream fills its flow-control window and the upstream's writes
// block, and the first client is measured again. A stalled stream must
// not hold up the others: the report gives both phases' percentiles. The
// download must be held by flow control (the upstream writing about what
// the client reads, at most 64 MiB between them), or the protocol fails.
func HeadOfLine(ctx context.Context, cfg HOLConfig) (*HOLReport, error) {
	if cfg.Protocols == nil {
		cfg.Protocols = []string{"v1", "v2"}
	}
	if cfg.Phase == 0 {
		cfg.Phase = 3 * time.Second
	}
	if cfg.SluiceBin == "" || cfg.Phase < 0 {
		return nil, errors.New("benchmark: hol: no sluice binary, or a negative phase")
	}
	up, err := startUpstream()
	if err != nil {
		return nil, err
	}
	defer up.close()
	rep := &HOLReport{
		Env:    Env{GoVersion: runtime.Version(), OS: runtime.GOOS, Arch: runtime.GOARCH, CPUs: runtime.NumCPU()},
		PhaseS: cfg.Phase.Seconds(),
	}
	var failed []string
	for _, proto := range cfg.Protocols {
		if ctx.Err() != nil {
			break
		}
		res, err := holOne(ctx, cfg, up, proto)
		if err != nil {
			res.Error = err.Error()
			first, _, _ := strings.Cut(res.Error, "\n")
			failed = append(failed, proto+": "+first)
			logf(cfg.Progress, "%s: FAILED: %v", proto, err)
		}
		rep.Protocols = append(rep.Protocols, res)
	}
	if ctx.Err() != nil {
		return rep, fmt.Errorf("benchmark: hol: interrupted: %w", ctx.Err())
	}
	if len(failed) > 0 {
		return rep, fmt.Errorf("benchmark: hol failed: %s", strings.Join(failed, "; "))
	}
	return rep, nil
}

func holOne(ctx context.Context, cfg HOLConfig, up *upstream, proto string) (res HOLResult, err error) {
	res.Protocol = proto
	if proto != "v1" && proto != "v2" {
		return res, fmt.Errorf("unknown protocol %q (want v1 or v2)", proto)
	}
	t, err := startSluice(ctx, cfg.SluiceBin, up.port, proto, 1024, 1024, "/small")
	if err != nil {
		return res, err
	}
	defer func() {
		if stopErr := t.stop(); stopErr != nil && err == nil {
			err = stopErr
		}
	}()
	b := &bench{
		cfg: Config{SSEDuration: cfg.Phase, SSEInterval: holSSEEvery, Progress: cfg.Progress},
		up:  up,
		rep: &Report{},
	}
	c := &client{base: t.baseURL(), host: t.host()}
	tr := newTransport(1, 0)
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr}
	for range 20 { // warm up: the connection, the first requests
		if _, err := holSmall(ctx, hc, c); err != nil {
			return res, fmt.Errorf("warming up: %w", err)
		}
	}
	if res.Unloaded, err = holPhase(ctx, b, hc, c); err != nil {
		return res, fmt.Errorf("unloaded: %w", err)
	}
	logPhase(cfg.Progress, proto, "unloaded", res.Unloaded)

	// The slow download, on a client of its own.
	var read atomic.Int64
	slowCtx, slowCancel := context.WithCancel(ctx)
	slowDone := make(chan error, 1)
	slowTr := newTransport(1, 0)
	defer slowTr.CloseIdleConnections()
	go func() { slowDone <- holSlowRead(slowCtx, &http.Client{Transport: slowTr}, c, &read) }()
	defer func() {
		select {
		case slowErr := <-slowDone: // it ended by itself
			if err == nil {
				err = fmt.Errorf("the slow download ended: %v", slowErr)
			}
			slowCancel()
		default:
			slowCancel()
			<-slowDone
		}
	}()

	// Wait until the download stalls: the windows and socket buffers
	// between the upstream and the slow client are full, and the upstream
	// writes only as fast as the client reads. Stalled: two quarter
	// seconds in a row in which the upstream wrote less than 512 KiB (it
	// writes hundreds of MB/s while it can).
	base := up.written.Load()
	started := time.Now()
	last, quiet := base, 0
	for quiet < 2 {
		select {
		case <-time.After(250 * time.Millisecond):
		case err := <-slowDone:
			slowDone <- err
			return res, fmt.Errorf("the slow download ended before it stalled: %v", err)
		case <-ctx.Done():
			return res, ctx.Err()
		}
		w := up.written.Load()
		if w-base > 1<<20 && w-last < 512<<10 {
			quiet++
		} else {
			quiet = 0
		}
		if time.Since(started) > holCeiling || w-base >= holSlowSize {
			return res, fmt.Errorf("the slow download did not stall: the upstream wrote %d MiB in %v, the client read %d KiB",
				(w-base)>>20, time.Since(started).Round(time.Millisecond), read.Load()>>10)
		}
		last = w
	}
	res.StallS = time.Since(started).Seconds()
	w0, r0 := up.written.Load()-base, read.Load()
	logf(cfg.Progress, "%s: slow download stalled after %.2f s: the upstream wrote %d KiB, the client read %d KiB", proto, res.StallS, w0>>10, r0>>10)

	if res.Loaded, err = holPhase(ctx, b, hc, c); err != nil {
		return res, fmt.Errorf("beside the stalled download: %w", err)
	}
	logPhase(cfg.Progress, proto, "loaded", res.Loaded)
	w1, r1 := up.written.Load()-base, read.Load()
	res.WrittenKB, res.ReadKB, res.BufferedKB = (w1-w0)>>10, (r1-r0)>>10, (w1-r1)>>10
	logf(cfg.Progress, "%s: during the loaded phase the upstream wrote %d KiB and the slow client read %d KiB (%d KiB buffered in between)",
		proto, res.WrittenKB, res.ReadKB, res.BufferedKB)
	if w1-w0 > r1-r0+4<<20 {
		return res, fmt.Errorf("while stalled, the upstream wrote %d KiB but the client read %d KiB: not held by flow control", res.WrittenKB, res.ReadKB)
	}
	if w1-r1 > 64<<20 {
		return res, fmt.Errorf("%d MiB of the slow download are buffered between the upstream and the client, want at most 64 MiB", (w1-r1)>>20)
	}
	return res, nil
}

// holPhase reads one event stream for one phase (b.sse with one stream)
// and meanwhile sends a small request every holSmallEvery.
func holPhase(ctx context.Context, b *bench, hc *http.Client, c *client) (HOLPhase, error) {
	var (
		ph      HOLPhase
		sseRes  *SSEResult
		sseErr  error
		wg      sync.WaitGroup
		sseDone = make(chan struct{})
	)
	wg.Go(func() {
		defer close(sseDone)
		sseRes, sseErr = b.sse(ctx, c, 1, b.cfg.SSEInterval, b.cfg.SSEDuration)
	})
	var gets []time.Duration
	var getErr error
	for next := time.Now(); getErr == nil; {
		select {
		case <-sseDone:
		case <-time.After(time.Until(next)):
			var d time.Duration
			d, getErr = holSmall(ctx, hc, c)
			gets = append(gets, d)
			next = next.Add(holSmallEvery)
			continue
		}
		break
	}
	wg.Wait()
	if getErr != nil {
		return ph, fmt.Errorf("small request: %w", getErr)
	}
	if sseErr != nil {
		return ph, fmt.Errorf("event stream: %w", sseErr)
	}
	g := stats.Summarize(gets)
	ph.Requests, ph.SmallP50Ms, ph.SmallP99Ms, ph.SmallMaxMs = g.N, durMs(g.P50), durMs(g.P99), durMs(g.Max)
	ph.Events, ph.SSEP50Ms, ph.SSEP99Ms, ph.SSEMaxMs = sseRes.Events, sseRes.P50Ms, sseRes.P99Ms, sseRes.MaxMs
	return ph, nil
}

// holSmall sends one GET /small and checks the answer; it returns the
// request's latency.
func holSmall(ctx context.Context, hc *http.Client, c *client) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, holCeiling)
	defer cancel()
	req, err := c.request(ctx, http.MethodGet, "/small", nil)
	if err != nil {
		return 0, err
	}
	t0 := time.Now()
	resp, err := hc.Do(req)
	if err != nil {
		return 0, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	d := time.Since(t0)
	if err != nil {
		return 0, err
	}
	if resp.StatusCode != http.StatusOK || !bytes.Equal(body, smallBody) {
		return 0, fmt.Errorf("%s: %q", resp.Status, body)
	}
	return d, nil
}

// holSlowRead downloads holSlowSize bytes, reading holSlowPiece every
// holSlowEvery, until ctx ends; read counts the bytes read.
func holSlowRead(ctx context.Context, hc *http.Client, c *client, read *atomic.Int64) error {
	req, err := c.request(ctx, http.MethodGet, "/download?n="+strconv.Itoa(holSlowSize), nil)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return statusError(resp)
	}
	buf := make([]byte, holSlowPiece)
	for {
		n, err := resp.Body.Read(buf)
		read.Add(int64(n))
		if err != nil {
			return err
		}
		select {
		case <-time.After(holSlowEvery):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func logPhase(w io.Writer, proto, what string, p HOLPhase) {
	logf(w, "%s %s: small requests p50 %s ms, p99 %s ms, max %s ms (%d requests); event delay p50 %s ms, p99 %s ms, max %s ms (%d events)",
		proto, what, ms(p.SmallP50Ms), ms(p.SmallP99Ms), ms(p.SmallMaxMs), p.Requests, ms(p.SSEP50Ms), ms(p.SSEP99Ms), ms(p.SSEMaxMs), p.Events)
}

// WriteTable prints the report as a table with a column per protocol.
func (r *HOLReport) WriteTable(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "sluice head of line: one tunnel, a client's requests and events without and beside a stalled 1 GiB download; %.0f s phases; loopback, %d CPUs, %s %s/%s\n\n",
		r.PhaseS, r.Env.CPUs, r.Env.GoVersion, r.Env.OS, r.Env.Arch)
	pair := func(a, b float64) string { return ms(a) + " / " + ms(b) }
	rows := []protocolRow[HOLResult]{
		{"small request p99 ms, unloaded / loaded", func(p *HOLResult) string { return pair(p.Unloaded.SmallP99Ms, p.Loaded.SmallP99Ms) }},
		{"small request p50 ms, unloaded / loaded", func(p *HOLResult) string { return pair(p.Unloaded.SmallP50Ms, p.Loaded.SmallP50Ms) }},
		{"SSE delay p99 ms, unloaded / loaded", func(p *HOLResult) string { return pair(p.Unloaded.SSEP99Ms, p.Loaded.SSEP99Ms) }},
		{"SSE delay p50 ms, unloaded / loaded", func(p *HOLResult) string { return pair(p.Unloaded.SSEP50Ms, p.Loaded.SSEP50Ms) }},
		{"slow download buffered KiB", func(p *HOLResult) string { return strconv.FormatInt(p.BufferedKB, 10) }},
	}
	writeProtocolTable(&b, r.Protocols, func(p *HOLResult) (string, string) { return p.Protocol, p.Error }, rows, 20)
	_, err := io.WriteString(w, b.String())
	return err
}
