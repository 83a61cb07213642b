package benchmark

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluicehq/sluice/api"
	"github.com/sluicehq/sluice/edge"
	"github.com/sluicehq/sluice/tunnel"
)

// LimitsConfig configures the limits run: two of the visitor limits of
// "sluice edge" at the sizes of issue 11's checks. A scenario with a zero
// size is skipped; the zero Config runs neither (the command sets the
// sizes).
type LimitsConfig struct {
	SluiceBin string
	// Names is how many requests for random names the names scenario
	// sends to an edge with a store (the issue: 200,000).
	Names        int
	NamesWorkers int // concurrent clients; default 8
	// Uploads is how many slow uploads the uploads scenario starts from
	// one address (the issue: 1,030), each sending a byte per Interval
	// (default 5 s).
	Uploads  int
	Interval time.Duration
	// PerIP is the edge's --max-streams-per-ip in the uploads scenario;
	// 0 runs the edge with its default.
	PerIP int
	// OtherRequests is how many requests another address sends while the
	// uploads are held, in each of two rounds; default 20.
	OtherRequests int
	Progress      io.Writer
}

// LimitsReport is what the limits run measured.
type LimitsReport struct {
	Env     Env            `json:"env"`
	Names   *NamesReport   `json:"names,omitempty"`
	Uploads *UploadsReport `json:"uploads,omitempty"`
}

// NamesReport: requests for random names to an edge with a store, its live
// heap before and after, and its store queries for visitor rules.
type NamesReport struct {
	Requests int     `json:"requests"`
	Workers  int     `json:"workers"`
	Seconds  float64 `json:"seconds"`
	PerSec   float64 `json:"requests_per_sec"`
	NotFound int     `json:"not_found"` // answers 404, as every random name should get
	// The edge's heap after a forced GC (/debug/pprof/heap?gc=1, its
	// runtime.MemStats): HeapInuse, the measure of the suite's test.
	HeapInuseBeforeMiB float64 `json:"heap_inuse_before_mib"`
	HeapInuseAfterMiB  float64 `json:"heap_inuse_after_mib"`
	HeapGrowthMiB      float64 `json:"heap_growth_mib"`
	HeapAllocBeforeMiB float64 `json:"heap_alloc_before_mib"`
	HeapAllocAfterMiB  float64 `json:"heap_alloc_after_mib"`
	LimitMiB           float64 `json:"limit_mib"` // 5 MB, the bound
	// sluice_access_store_queries_total: per name (kind="tunnel") and for
	// the set of stored names (kind="list").
	TunnelQueries float64 `json:"tunnel_queries"`
	ListQueries   float64 `json:"list_queries"`
}

// UploadsReport: slow uploads from one address, and another address's
// requests meanwhile.
type UploadsReport struct {
	Uploads    int     `json:"uploads"`
	IntervalS  float64 `json:"interval_s"`
	PerIPLimit int     `json:"per_ip_limit"`
	Held       int     `json:"held"`    // uploads still open, unanswered, at the end
	Refused    int     `json:"refused"` // answered 429
	Other      int     `json:"other"`   // answered otherwise, or failed
	// How long the refused uploads waited for their 429, from the request
	// sent (its head and one body byte).
	RefusedP50Ms float64 `json:"refused_p50_ms"`
	RefusedMaxMs float64 `json:"refused_max_ms"`
	OpenStreams  float64 `json:"open_streams"` // sluice_open_streams while held
	Ticks        int     `json:"ticks"`        // bytes each held upload sent after its first
	// Another address's GET requests through the same tunnel while the
	// uploads are held: how many got 200, and their latency.
	OtherRequests int `json:"other_requests"`
	OtherOK       int `json:"other_ok"`
	// OtherStatuses counts their answers by status code ("error": failed).
	OtherStatuses map[string]int `json:"other_statuses"`
	OtherP50Ms    float64        `json:"other_p50_ms"`
	OtherMaxMs    float64        `json:"other_max_ms"`
}

// namesHeapLimit is the bound on the edge's live heap growth.
const namesHeapLimit = 5 << 20

// Limits runs the scenarios whose size is set.
func Limits(ctx context.Context, cfg LimitsConfig) (*LimitsReport, error) {
	if cfg.SluiceBin == "" {
		return nil, errors.New("benchmark: limits: no sluice binary")
	}
	if cfg.NamesWorkers == 0 {
		cfg.NamesWorkers = 8
	}
	if cfg.Interval == 0 {
		cfg.Interval = 5 * time.Second
	}
	if cfg.OtherRequests == 0 {
		cfg.OtherRequests = 20
	}
	rep := &LimitsReport{Env: Env{GoVersion: runtime.Version(), OS: runtime.GOOS, Arch: runtime.GOARCH, CPUs: runtime.NumCPU()}}
	var errs []error
	if cfg.Names > 0 {
		r, err := randomNames(ctx, cfg)
		rep.Names = r
		errs = append(errs, err)
	}
	if cfg.Uploads > 0 {
		r, err := slowUploads(ctx, cfg)
		rep.Uploads = r
		errs = append(errs, err)
	}
	return rep, errors.Join(errs...)
}

// randomNames sends cfg.Names requests for random names to "sluice edge"
// with a store (SQLite under a temporary directory, an admin token so
// that the API is on, one stored tunnel), and measures the edge's heap
// after a forced GC before and after.
func randomNames(ctx context.Context, cfg LimitsConfig) (*NamesReport, error) {
	dir, err := os.MkdirTemp("", "sluice-bench-names-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	pport, err := freePort()
	if err != nil {
		return nil, err
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	pprofURL := "http://127.0.0.1:" + strconv.Itoa(pport) + "/debug/pprof/heap?gc=1&debug=1"
	tok := make([]byte, 16)
	rand.Read(tok)
	admin := hex.EncodeToString(tok)
	ec, err := startChild("sluice edge", cfg.SluiceBin, "edge", "--listen", addr, "--domain", "localhost",
		"--data", dir, "--admin-token", admin, "--pprof", "127.0.0.1:"+strconv.Itoa(pport))
	if err != nil {
		return nil, err
	}
	t := &procTarget{base: "http://" + addr, children: []*child{ec}}
	defer t.stop()
	if err := waitReady(ctx, t, "/healthz", ""); err != nil {
		return nil, fmt.Errorf("the edge did not start: %w\n%s", err, t.output())
	}
	// A stored tunnel, so that the set of stored names is not empty.
	if err := storeTunnel(ctx, t.base, admin, "kept"); err != nil {
		return nil, fmt.Errorf("creating a stored tunnel: %w\n%s", err, t.output())
	}
	rep := &NamesReport{Requests: cfg.Names, Workers: cfg.NamesWorkers, LimitMiB: namesHeapLimit / (1 << 20)}
	tr := &http.Transport{MaxIdleConnsPerHost: cfg.NamesWorkers}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: time.Minute}
	host := ".localhost:" + strconv.Itoa(port)
	get := func(name string) (int, error) {
		req, err := http.NewRequestWithContext(ctx, "GET", t.base+"/", nil)
		if err != nil {
			return 0, err
		}
		req.Host = name + host
		resp, err := hc.Do(req)
		if err != nil {
			return 0, err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	// One request per client first, so that the connections exist.
	var wg sync.WaitGroup
	for w := range cfg.NamesWorkers {
		wg.Go(func() { get("warm-" + strconv.Itoa(w)) })
	}
	wg.Wait()
	before, err := heapStats(ctx, pprofURL)
	if err != nil {
		return nil, err
	}
	rep.HeapInuseBeforeMiB, rep.HeapAllocBeforeMiB = inMiB(before["HeapInuse"]), inMiB(before["HeapAlloc"])
	logf(cfg.Progress, "names: %d requests for random names from %d clients; edge heap in use %.1f MiB", cfg.Names, cfg.NamesWorkers, rep.HeapInuseBeforeMiB)
	var next, notFound atomic.Int64
	var firstErr error
	var errOnce sync.Once
	start := time.Now()
	for range cfg.NamesWorkers {
		wg.Go(func() {
			var b [8]byte
			for next.Add(1) <= int64(cfg.Names) {
				rand.Read(b[:])
				code, err := get("r" + hex.EncodeToString(b[:]))
				if err != nil {
					errOnce.Do(func() { firstErr = err })
					return
				}
				if code == http.StatusNotFound {
					notFound.Add(1)
				}
			}
		})
	}
	wg.Wait()
	rep.Seconds = time.Since(start).Seconds()
	rep.PerSec = float64(cfg.Names) / rep.Seconds
	rep.NotFound = int(notFound.Load())
	if firstErr != nil {
		return rep, fmt.Errorf("names: %w", firstErr)
	}
	tr.CloseIdleConnections()
	after, err := heapStats(ctx, pprofURL)
	if err != nil {
		return rep, err
	}
	rep.HeapInuseAfterMiB, rep.HeapAllocAfterMiB = inMiB(after["HeapInuse"]), inMiB(after["HeapAlloc"])
	rep.HeapGrowthMiB = rep.HeapInuseAfterMiB - rep.HeapInuseBeforeMiB
	page, err := httpGet(ctx, t.base+"/metrics")
	if err != nil {
		return rep, err
	}
	rep.TunnelQueries = metric(page, `sluice_access_store_queries_total{kind="tunnel"}`)
	rep.ListQueries = metric(page, `sluice_access_store_queries_total{kind="list"}`)
	logf(cfg.Progress, "names: %.0f requests/s; edge heap in use %.1f -> %.1f MiB (%+.2f); store queries: %.0f per name, %.0f lists",
		rep.PerSec, rep.HeapInuseBeforeMiB, rep.HeapInuseAfterMiB, rep.HeapGrowthMiB, rep.TunnelQueries, rep.ListQueries)
	if err := t.alive(); err != nil {
		return rep, err
	}
	var failed []string
	if !strings.Contains(page, `sluice_access_store_queries_total{kind="list"}`) {
		failed = append(failed, "the edge does not count its store queries (sluice_access_store_queries_total)")
	}
	if rep.NotFound != cfg.Names {
		failed = append(failed, fmt.Sprintf("%d of %d random names answered 404", rep.NotFound, cfg.Names))
	}
	if grew := after["HeapInuse"] - before["HeapInuse"]; grew > namesHeapLimit {
		failed = append(failed, fmt.Sprintf("the edge's heap grew by %.1f MiB, over 5 MiB", inMiB(grew)))
	}
	if rep.TunnelQueries != 0 {
		failed = append(failed, fmt.Sprintf("%.0f store queries for single names, want 0", rep.TunnelQueries))
	}
	// The set of stored names is read at most once per 5 s (the cache's
	// time to live), plus the first.
	if maxList := 2 + rep.Seconds/5; rep.ListQueries > maxList {
		failed = append(failed, fmt.Sprintf("%.0f store queries for the set of names in %.0f s", rep.ListQueries, rep.Seconds))
	}
	if len(failed) > 0 {
		return rep, fmt.Errorf("benchmark: names: %s", strings.Join(failed, "; "))
	}
	return rep, nil
}

func inMiB(b int64) float64 { return float64(b) / (1 << 20) }

// heapStats forces a GC in the edge and returns the runtime.MemStats
// fields that its heap profile (debug=1) ends with, such as HeapInuse.
func heapStats(ctx context.Context, url string) (map[string]int64, error) {
	page, err := httpGet(ctx, url)
	if err != nil {
		return nil, fmt.Errorf("the edge's heap profile: %w", err)
	}
	stats := map[string]int64{}
	for line := range strings.Lines(page) {
		k, v, ok := strings.Cut(strings.TrimSpace(strings.TrimPrefix(line, "#")), " = ")
		if !ok {
			continue
		}
		if n, err := strconv.ParseInt(v, 10, 64); err == nil {
			stats[k] = n
		}
	}
	if _, ok := stats["HeapInuse"]; !ok {
		return nil, fmt.Errorf("the edge's heap profile has no HeapInuse")
	}
	return stats, nil
}

// storeTunnel creates an agent token and a tunnel of it through the
// edge's admin API.
func storeTunnel(ctx context.Context, base, admin, name string) error {
	c, err := api.NewClient(base, admin, nil)
	if err != nil {
		return err
	}
	tok, err := c.CreateToken(ctx, api.CreateTokenRequest{Kind: api.KindAgent, Name: "bench"})
	if err != nil {
		return err
	}
	upstream := "http://127.0.0.1:3000" // never reached: no agent connects
	_, err = c.CreateTunnel(ctx, api.TunnelRequest{Name: &name, Upstream: &upstream, AgentTokenID: &tok.Token.ID})
	return err
}

// The uploads scenario's addresses: the slow uploader, and the other.
var (
	uploaderIP = net.IPv4(127, 0, 0, 2)
	otherIP    = net.IPv4(127, 0, 0, 3)
)

// slowUpload is one upload of the uploads scenario.
type slowUpload struct {
	conn   net.Conn
	sent   time.Time
	status atomic.Int32 // 0 while unanswered, -1 if the read failed
	after  atomic.Int64 // when answered, in ns after sent
}

// slowUploads starts cfg.Uploads uploads from one address through a tunnel
// of "sluice edge" with its default flags (--max-streams-per-ip as
// cfg.PerIP), each sending its head and one body byte, then one byte per
// cfg.Interval; waits until those past the per-address limit are refused;
// and sends requests from another address, twice: at once, and after the
// held uploads sent another byte.
func slowUploads(ctx context.Context, cfg LimitsConfig) (*UploadsReport, error) {
	limit := cfg.PerIP
	if limit == 0 {
		limit = edge.DefaultConfig().MaxStreamsPerIP
	}
	rep := &UploadsReport{Uploads: cfg.Uploads, IntervalS: cfg.Interval.Seconds(), PerIPLimit: limit, OtherStatuses: map[string]int{}}
	// This process holds every upload and, in the upstream, the held ones.
	if err := raiseFileLimit(cfg.Uploads + 2*limit + 256); err != nil {
		return nil, err
	}
	up, err := startUpstream()
	if err != nil {
		return nil, err
	}
	defer up.close()
	t, err := startSluice(ctx, cfg.SluiceBin, up.port, "auto", tunnel.DefaultMaxStreams, cfg.PerIP, "/small")
	if err != nil {
		return nil, err
	}
	defer t.stop()
	addr := strings.TrimPrefix(t.baseURL(), "http://")
	head := fmt.Sprintf("POST /upload HTTP/1.1\r\nHost: %s\r\nContent-Length: 1000000\r\n\r\nx", t.host())
	uploads := make([]*slowUpload, 0, cfg.Uploads)
	var readers sync.WaitGroup
	defer func() {
		for _, u := range uploads {
			u.conn.Close()
		}
		readers.Wait()
	}()
	answered := make(chan struct{}, cfg.Uploads)
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: uploaderIP}}
	for i := range cfg.Uploads {
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return rep, fmt.Errorf("upload %d: %w", i, err)
		}
		u := &slowUpload{conn: c, sent: time.Now()}
		uploads = append(uploads, u)
		if _, err := io.WriteString(c, head); err != nil {
			return rep, fmt.Errorf("upload %d: %w", i, err)
		}
		readers.Go(func() {
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			u.after.Store(int64(time.Since(u.sent)))
			if err != nil {
				u.status.Store(-1)
			} else {
				resp.Body.Close()
				u.status.Store(int32(resp.StatusCode))
			}
			answered <- struct{}{}
		})
	}
	logf(cfg.Progress, "uploads: %d uploads from %v, one byte sent each; waiting for %d refusals", cfg.Uploads, uploaderIP, max(cfg.Uploads-limit, 0))
	// The refusals come at once; the ceiling is for a stuck run (or an
	// edge without the limit, which is then measured as it is).
	want := max(cfg.Uploads-limit, 0)
	deadline := time.After(readyTimeout)
	late := false
	for n := 0; n < want && !late; n++ {
		select {
		case <-answered:
		case <-deadline:
			logf(cfg.Progress, "uploads: only %d of %d uploads past the limit answered within %v", n, want, readyTimeout)
			late = true
		case <-ctx.Done():
			return rep, ctx.Err()
		}
	}
	page, err := httpGet(ctx, t.baseURL()+"/metrics")
	if err != nil {
		return rep, err
	}
	rep.OpenStreams = metric(page, "sluice_open_streams")
	// The held uploads send a byte per interval until the end.
	tickDone := make(chan struct{}, 1)
	stopTicks := make(chan struct{})
	var ticker sync.WaitGroup
	defer func() { close(stopTicks); ticker.Wait() }()
	ticker.Go(func() {
		tk := time.NewTicker(cfg.Interval)
		defer tk.Stop()
		for {
			select {
			case <-stopTicks:
				return
			case <-tk.C:
			}
			for _, u := range uploads {
				if u.status.Load() == 0 {
					u.conn.Write([]byte("x"))
				}
			}
			select {
			case tickDone <- struct{}{}:
			default:
			}
		}
	})
	hc := &http.Client{Timeout: time.Minute, Transport: &http.Transport{DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: otherIP}}).DialContext}}
	defer hc.CloseIdleConnections()
	var lat []float64
	round := func() {
		for range cfg.OtherRequests {
			req, _ := http.NewRequestWithContext(ctx, "GET", t.baseURL()+"/small", nil)
			req.Host = t.host()
			start := time.Now()
			resp, err := hc.Do(req)
			if err != nil {
				rep.OtherStatuses["error"]++
				continue
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			lat = append(lat, float64(time.Since(start).Microseconds())/1000)
			rep.OtherStatuses[strconv.Itoa(resp.StatusCode)]++
			if resp.StatusCode == http.StatusOK {
				rep.OtherOK++
			}
		}
		rep.OtherRequests += cfg.OtherRequests
	}
	round()
	if !late {
		logf(cfg.Progress, "uploads: %d of %d requests from %v got 200; waiting for the held uploads to send another byte", rep.OtherOK, rep.OtherRequests, otherIP)
		select {
		case <-tickDone:
			rep.Ticks = 1
		case <-ctx.Done():
			return rep, ctx.Err()
		}
		round()
	}
	var refused []float64
	for _, u := range uploads {
		switch s := u.status.Load(); s {
		case 0:
			rep.Held++
		case http.StatusTooManyRequests:
			rep.Refused++
			refused = append(refused, float64(u.after.Load())/1e6)
		default:
			rep.Other++
		}
	}
	rep.RefusedP50Ms, rep.RefusedMaxMs = p50Max(refused)
	rep.OtherP50Ms, rep.OtherMaxMs = p50Max(lat)
	logf(cfg.Progress, "uploads: %d held, %d refused with 429 (p50 %.1f ms, max %.1f ms), %d otherwise; %d of %d requests from %v got 200 (p50 %.1f ms, max %.1f ms)",
		rep.Held, rep.Refused, rep.RefusedP50Ms, rep.RefusedMaxMs, rep.Other, rep.OtherOK, rep.OtherRequests, otherIP, rep.OtherP50Ms, rep.OtherMaxMs)
	if err := t.alive(); err != nil {
		return rep, err
	}
	var failed []string
	if held := min(cfg.Uploads, limit); rep.Held != held || rep.Refused != want || rep.Other != 0 {
		failed = append(failed, fmt.Sprintf("%d uploads held, %d refused, %d otherwise answered; want %d, %d, 0", rep.Held, rep.Refused, rep.Other, held, want))
	}
	if rep.OtherOK != rep.OtherRequests {
		failed = append(failed, fmt.Sprintf("%d of %d requests from another address got 200", rep.OtherOK, rep.OtherRequests))
	}
	if len(failed) > 0 {
		return rep, fmt.Errorf("benchmark: uploads: %s", strings.Join(failed, "; "))
	}
	return rep, nil
}

// p50Max returns the median and the largest of xs, or zeros.
func p50Max(xs []float64) (p50, top float64) {
	if len(xs) == 0 {
		return 0, 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2], s[len(s)-1]
}

// WriteTable prints the report.
func (r *LimitsReport) WriteTable(w io.Writer) error {
	if n := r.Names; n != nil {
		if _, err := fmt.Fprintf(w, `random names: %d requests from %d clients to an edge with a store
  requests/s                   %10.0f
  answered 404                 %10d
  edge heap in use before      %10.2f MiB (after a forced GC)
  edge heap in use after       %10.2f MiB
  growth                       %+10.2f MiB (limit %.0f MiB)
  store queries, single names  %10.0f
  store queries, set of names  %10.0f
`, n.Requests, n.Workers, n.PerSec, n.NotFound, n.HeapInuseBeforeMiB, n.HeapInuseAfterMiB, n.HeapGrowthMiB, n.LimitMiB, n.TunnelQueries, n.ListQueries); err != nil {
			return err
		}
	}
	if u := r.Uploads; u != nil {
		if r.Names != nil {
			fmt.Fprintln(w)
		}
		if _, err := fmt.Fprintf(w, `slow uploads: %d from %v, a byte each per %.0f s (--max-streams-per-ip %d)
  held open                    %10d (sluice_open_streams %.0f)
  refused with 429             %10d (p50 %.1f ms, max %.1f ms)
  answered otherwise           %10d
  another address: 200         %10d of %d (p50 %.1f ms, max %.1f ms; answers %v)
`, u.Uploads, uploaderIP, u.IntervalS, u.PerIPLimit, u.Held, u.OpenStreams, u.Refused, u.RefusedP50Ms, u.RefusedMaxMs, u.Other, u.OtherOK, u.OtherRequests, u.OtherP50Ms, u.OtherMaxMs, u.OtherStatuses); err != nil {
			return err
		}
	}
	return nil
}
