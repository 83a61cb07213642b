package benchmark

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// BudgetConfig configures the buffer-budget run: Clients public clients
// (from several loopback addresses, within the edge's default
// --max-streams-per-ip) each start a Size-byte download through a v2
// tunnel and never read it.
type BudgetConfig struct {
	SluiceBin string
	Clients   int           // default 1,000
	Size      int64         // default 50 MB
	Settle    time.Duration // how long the upstream must stop writing; default 3 s
	Progress  io.Writer
}

// BudgetReport is what the budget run measured: the edge's resident
// memory before and after the clients, and the budget in /metrics.
type BudgetReport struct {
	Env            Env     `json:"env"`
	Clients        int     `json:"clients"`
	SizeMB         float64 `json:"size_mb"`
	BudgetMiB      float64 `json:"budget_mib"`
	BufferedMiB    float64 `json:"buffered_mib"` // sluice_buffered_bytes once settled
	UpstreamMiB    float64 `json:"upstream_mib"` // what the upstream wrote (kernel socket buffers included)
	EdgeRSSBefore  float64 `json:"edge_rss_before_mib"`
	EdgeRSSAfter   float64 `json:"edge_rss_after_mib"`
	EdgeRSSGrowth  float64 `json:"edge_rss_growth_mib"`
	LimitMiB       float64 `json:"limit_mib"` // budget + 64 MiB, the bound
	ReaderServedMB float64 `json:"reader_served_mb"`
}

// budgetAddrs are the client addresses: 250 clients each stay under the
// edge's default 256 streams per address.
const budgetPerAddr = 250

// Budget runs the buffer-budget scenario against "sluice edge" with its
// default flags (256 MiB budget) and a v2 agent.
func Budget(ctx context.Context, cfg BudgetConfig) (*BudgetReport, error) {
	if cfg.Clients == 0 {
		cfg.Clients = 1000
	}
	if cfg.Size == 0 {
		cfg.Size = 50e6
	}
	if cfg.Settle == 0 {
		cfg.Settle = 3 * time.Second
	}
	if cfg.SluiceBin == "" {
		return nil, errors.New("benchmark: budget: no sluice binary")
	}
	up, err := startUpstream()
	if err != nil {
		return nil, err
	}
	defer up.close()
	t, err := startSluice(ctx, cfg.SluiceBin, up.port, "v2", 1024, 0, "/small") // default per-address limit: the clients use 4 addresses
	if err != nil {
		return nil, err
	}
	defer t.stop()
	procs, err := t.procs()
	if err != nil {
		return nil, err
	}
	edgeProc := procs[:1] // the edge is the first child
	rep := &BudgetReport{
		Env:     Env{GoVersion: runtime.Version(), OS: runtime.GOOS, Arch: runtime.GOARCH, CPUs: runtime.NumCPU()},
		Clients: cfg.Clients, SizeMB: float64(cfg.Size) / 1e6,
	}
	_, before, err := rssKB(edgeProc)
	if err != nil {
		return nil, err
	}
	rep.EdgeRSSBefore = float64(before) / 1024
	addr := strings.TrimPrefix(t.baseURL(), "http://")
	path := "/download?n=" + strconv.FormatInt(cfg.Size, 10)
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := range cfg.Clients {
		from := net.IPv4(127, 0, 1, byte(2+i/budgetPerAddr))
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: from}}
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return rep, fmt.Errorf("client %d: %w", i, err)
		}
		conns = append(conns, c)
		c.(*net.TCPConn).SetReadBuffer(4 << 10)
		if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\n\r\n", path, t.host()); err != nil {
			return rep, fmt.Errorf("client %d: %w", i, err)
		}
	}
	logf(cfg.Progress, "budget: %d clients asked for %d MB each and read nothing", cfg.Clients, cfg.Size/1e6)
	last, since := int64(-1), time.Now()
	for time.Since(since) < cfg.Settle {
		if err := ctx.Err(); err != nil {
			return rep, err
		}
		if w := up.written.Load(); w != last {
			last, since = w, time.Now()
		}
		time.Sleep(100 * time.Millisecond)
	}
	rep.UpstreamMiB = float64(last) / (1 << 20)
	_, after, err := rssKB(edgeProc)
	if err != nil {
		return rep, err
	}
	rep.EdgeRSSAfter = float64(after) / 1024
	rep.EdgeRSSGrowth = rep.EdgeRSSAfter - rep.EdgeRSSBefore
	page, err := httpGet(ctx, t.baseURL()+"/metrics")
	if err != nil {
		return rep, err
	}
	rep.BudgetMiB = metric(page, "sluice_buffered_bytes_max") / (1 << 20)
	rep.BufferedMiB = metric(page, "sluice_buffered_bytes") / (1 << 20)
	rep.LimitMiB = rep.BudgetMiB + 64
	logf(cfg.Progress, "budget: edge RSS %.0f -> %.0f MiB (+%.0f, limit %.0f); buffered %.0f MiB of %.0f",
		rep.EdgeRSSBefore, rep.EdgeRSSAfter, rep.EdgeRSSGrowth, rep.LimitMiB, rep.BufferedMiB, rep.BudgetMiB)
	// A client that reads is still served, from another address.
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 2, 1)}}
	hc := &http.Client{Transport: &http.Transport{DialContext: d.DialContext}}
	req, _ := http.NewRequestWithContext(ctx, "GET", t.baseURL()+"/download?n=10000000", nil)
	req.Host = t.host()
	resp, err := hc.Do(req)
	if err != nil {
		return rep, fmt.Errorf("a reading client: %w", err)
	}
	n, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	rep.ReaderServedMB = float64(n) / 1e6
	if err != nil || n != 10e6 {
		return rep, fmt.Errorf("a reading client got %d bytes: %v", n, err)
	}
	if err := t.alive(); err != nil {
		return rep, err
	}
	if rep.EdgeRSSGrowth > rep.LimitMiB {
		return rep, fmt.Errorf("benchmark: budget: the edge grew by %.0f MiB, over the budget + 64 MiB (%.0f)", rep.EdgeRSSGrowth, rep.LimitMiB)
	}
	return rep, nil
}

func httpGet(ctx context.Context, url string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// metric returns a series' value in a Prometheus text page, or 0.
func metric(page, series string) float64 {
	sc := bufio.NewScanner(strings.NewReader(page))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			f, _ := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return f
		}
	}
	return 0
}

// WriteTable prints the report.
func (r *BudgetReport) WriteTable(w io.Writer) error {
	_, err := fmt.Fprintf(w, `buffer budget: %d clients never reading a %.0f MB download (v2, default flags)
  budget (--max-buffer)        %8.0f MiB
  buffered (/metrics)          %8.0f MiB
  upstream wrote               %8.0f MiB (kernel socket buffers included)
  edge RSS before              %8.0f MiB
  edge RSS after               %8.0f MiB
  edge RSS growth              %8.0f MiB (limit: budget + 64 MiB = %.0f)
  a reading client got         %8.1f MB
`, r.Clients, r.SizeMB, r.BudgetMiB, r.BufferedMiB, r.UpstreamMiB, r.EdgeRSSBefore, r.EdgeRSSAfter, r.EdgeRSSGrowth, r.LimitMiB, r.ReaderServedMB)
	return err
}
