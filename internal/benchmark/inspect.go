package benchmark

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// InspectConfig says what the inspector's overhead run measures.
type InspectConfig struct {
	// SluiceBin is the sluice binary run as the edge and the agent.
	SluiceBin string
	// Protocol is the tunnel's protocol (""; v2).
	Protocol string
	// Size is the bytes of the download (0: 1 GiB).
	Size int64
	// Clients and Duration are the small-request run's (0: 50 clients,
	// 5 s).
	Clients  int
	Duration time.Duration
	// Rounds is how many times each mode is measured, the two modes
	// alternating (0: 3); the report gives the medians.
	Rounds int
	// Progress, if set, receives one line per step.
	Progress io.Writer
}

// InspectReport is the outcome of an inspector overhead run. Its JSON form
// is "bench inspect --json".
type InspectReport struct {
	Env       Env     `json:"env"`
	Protocol  string  `json:"protocol"`
	SizeBytes int64   `json:"size_bytes"`
	Clients   int     `json:"clients"`
	DurationS float64 `json:"duration_s"`
	// Off and On are the medians of the rounds without and with the
	// inspector.
	Off InspectFigures `json:"off"`
	On  InspectFigures `json:"on"`
	// DownloadOverheadPct and SmallOverheadPct are how much slower the
	// medians are with the inspector, in percent (negative: faster).
	DownloadOverheadPct float64 `json:"download_overhead_pct"`
	SmallOverheadPct    float64 `json:"small_overhead_pct"`
	// Rounds are every measurement, in the order made.
	Rounds []InspectRound `json:"rounds"`
	Error  string         `json:"error,omitempty"`
}

// InspectFigures are one mode's figures. The agent's CPU time per MB
// downloaded and per small request (user and system, from /proc) depends
// less on what else the machine runs than the rates do.
type InspectFigures struct {
	DownloadMBps     float64 `json:"download_mb_per_s"`
	SmallReqPerSec   float64 `json:"small_req_per_s"`
	SmallP50Ms       float64 `json:"small_p50_ms"`
	SmallP99Ms       float64 `json:"small_p99_ms"`
	AgentCPUMsPerMB  float64 `json:"agent_cpu_ms_per_mb"`
	AgentCPUUsPerReq float64 `json:"agent_cpu_us_per_request"`
}

// InspectRound is one measurement of one mode.
type InspectRound struct {
	Inspector bool `json:"inspector"`
	InspectFigures
}

// Inspect measures the inspector's cost: the same tunnel (an edge and
// "sluice http" as child processes) with --inspect off and with the
// inspector on (its default body limit), each started afresh for every
// round, the modes alternating so that a drift of the machine's speed
// falls on both: download MB/s of one large body and small requests per
// second from Clients keep-alive clients. Every response is checked.
func Inspect(ctx context.Context, cfg InspectConfig) (*InspectReport, error) {
	if cfg.Protocol == "" {
		cfg.Protocol = "v2"
	}
	if cfg.Size == 0 {
		cfg.Size = 1 << 30
	}
	if cfg.Clients == 0 {
		cfg.Clients = 50
	}
	if cfg.Duration == 0 {
		cfg.Duration = 5 * time.Second
	}
	if cfg.Rounds == 0 {
		cfg.Rounds = 3
	}
	if cfg.SluiceBin == "" || cfg.Size < 0 || cfg.Clients < 0 || cfg.Duration < 0 || cfg.Rounds < 0 {
		return nil, errors.New("benchmark: inspect: no sluice binary, or a negative size, count or duration")
	}
	if cfg.Protocol != "v1" && cfg.Protocol != "v2" {
		return nil, fmt.Errorf("benchmark: inspect: unknown protocol %q (want v1 or v2)", cfg.Protocol)
	}
	if err := raiseFileLimit(2*cfg.Clients + 256); err != nil {
		return nil, err
	}
	up, err := startUpstream()
	if err != nil {
		return nil, err
	}
	defer up.close()
	rep := &InspectReport{
		Env:      Env{GoVersion: runtime.Version(), OS: runtime.GOOS, Arch: runtime.GOARCH, CPUs: runtime.NumCPU()},
		Protocol: cfg.Protocol, SizeBytes: cfg.Size, Clients: cfg.Clients, DurationS: cfg.Duration.Seconds(),
	}
	b := &bench{cfg: Config{Size: cfg.Size, Clients: cfg.Clients, Duration: cfg.Duration}, up: up, rep: &Report{}}
	for i := range cfg.Rounds {
		for _, on := range []bool{i%2 == 1, i%2 == 0} {
			if ctx.Err() != nil {
				return rep, fmt.Errorf("benchmark: inspect: interrupted: %w", ctx.Err())
			}
			r, err := inspectRound(ctx, cfg, b, on)
			if err != nil {
				rep.Error = err.Error()
				return rep, fmt.Errorf("benchmark: inspect: %w", err)
			}
			logf(cfg.Progress, "round %d, inspector %s: download %.0f MB/s (agent CPU %.2f ms/MB); small %.0f req/s, p50 %s ms, p99 %s ms (agent CPU %.0f µs/request)",
				i+1, onOff(on), r.DownloadMBps, r.AgentCPUMsPerMB, r.SmallReqPerSec, ms(r.SmallP50Ms), ms(r.SmallP99Ms), r.AgentCPUUsPerReq)
			rep.Rounds = append(rep.Rounds, r)
		}
	}
	rep.Off, rep.On = medians(rep.Rounds, false), medians(rep.Rounds, true)
	rep.DownloadOverheadPct = 100 * (1 - rep.On.DownloadMBps/rep.Off.DownloadMBps)
	rep.SmallOverheadPct = 100 * (1 - rep.On.SmallReqPerSec/rep.Off.SmallReqPerSec)
	return rep, nil
}

func onOff(on bool) string {
	if on {
		return "on"
	}
	return "off"
}

// inspectRound starts the tunnel in one mode and measures it.
func inspectRound(ctx context.Context, cfg InspectConfig, b *bench, on bool) (r InspectRound, err error) {
	r.Inspector = on
	flags := inspectOff
	if on {
		flags = []string{"--inspect", "127.0.0.1:0"}
	}
	maxStreams := max(cfg.Clients, 1024) + 64
	t, err := startSluiceTo(ctx, cfg.SluiceBin, strconv.Itoa(b.up.port), cfg.Protocol, maxStreams, maxStreams, "/small", flags...)
	if err != nil {
		return r, err
	}
	defer func() {
		if stopErr := t.stop(); stopErr != nil && err == nil {
			err = stopErr
		}
	}()
	c := &client{base: t.baseURL(), host: t.host()}
	agent := t.children[len(t.children)-1].cmd.Process.Pid
	cpu0, err := cpuSeconds(agent)
	if err != nil {
		return r, err
	}
	d, err := b.download(ctx, c)
	if err != nil {
		return r, fmt.Errorf("inspector %s: download: %w\n%s", onOff(on), err, t.output())
	}
	cpu1, err := cpuSeconds(agent)
	if err != nil {
		return r, err
	}
	s, err := b.small(ctx, c)
	if err != nil {
		return r, fmt.Errorf("inspector %s: small requests: %w\n%s", onOff(on), err, t.output())
	}
	cpu2, err := cpuSeconds(agent)
	if err != nil {
		return r, err
	}
	r.DownloadMBps, r.SmallReqPerSec, r.SmallP50Ms, r.SmallP99Ms = d.MBps, s.ReqPerSec, s.P50Ms, s.P99Ms
	r.AgentCPUMsPerMB = (cpu1 - cpu0) * 1e3 / (float64(d.Bytes) / 1e6)
	// The small run's CPU time is its warm-up's too: per request of all.
	r.AgentCPUUsPerReq = (cpu2 - cpu1) * 1e6 / float64(s.AllRequests)
	return r, t.alive()
}

// medians are the medians of one mode's rounds, figure by figure.
func medians(rounds []InspectRound, on bool) InspectFigures {
	var dl, rps, p50, p99, cpuMB, cpuReq []float64
	for _, r := range rounds {
		if r.Inspector == on {
			dl, rps = append(dl, r.DownloadMBps), append(rps, r.SmallReqPerSec)
			p50, p99 = append(p50, r.SmallP50Ms), append(p99, r.SmallP99Ms)
			cpuMB, cpuReq = append(cpuMB, r.AgentCPUMsPerMB), append(cpuReq, r.AgentCPUUsPerReq)
		}
	}
	return InspectFigures{median(dl), median(rps), median(p50), median(p99), median(cpuMB), median(cpuReq)}
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	v = slices.Clone(v)
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

// WriteTable prints the report as a table: each figure off, on, and the
// ratio.
func (r *InspectReport) WriteTable(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "sluice inspector overhead: protocol %s, a %s download, %d clients' small requests for %.0f s, medians of %d rounds per mode; loopback, %d CPUs, %s %s/%s\n\n",
		r.Protocol, byteSize(r.SizeBytes), r.Clients, r.DurationS, len(r.Rounds)/2, r.Env.CPUs, r.Env.GoVersion, r.Env.OS, r.Env.Arch)
	tw := tabwriter.NewWriter(&b, 0, 0, 3, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "\tinspector off\tinspector on\ton / off\t\n")
	row := func(label string, off, on float64, f func(float64) string) {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%.3f\t\n", label, f(off), f(on), on/off)
	}
	n0 := func(v float64) string { return fmt.Sprintf("%.0f", v) }
	row("download MB/s", r.Off.DownloadMBps, r.On.DownloadMBps, n0)
	row("small requests/s", r.Off.SmallReqPerSec, r.On.SmallReqPerSec, n0)
	row("small p50 ms", r.Off.SmallP50Ms, r.On.SmallP50Ms, ms)
	row("small p99 ms", r.Off.SmallP99Ms, r.On.SmallP99Ms, ms)
	f2 := func(v float64) string { return fmt.Sprintf("%.2f", v) }
	row("agent CPU ms per MB downloaded", r.Off.AgentCPUMsPerMB, r.On.AgentCPUMsPerMB, f2)
	row("agent CPU µs per small request", r.Off.AgentCPUUsPerReq, r.On.AgentCPUUsPerReq, n0)
	tw.Flush()
	fmt.Fprintf(&b, "\noverhead: download %.1f %%, small requests %.1f %% (rates); agent CPU %+.1f %% per MB, %+.1f %% per request\n",
		r.DownloadOverheadPct, r.SmallOverheadPct, 100*(r.On.AgentCPUMsPerMB/r.Off.AgentCPUMsPerMB-1), 100*(r.On.AgentCPUUsPerReq/r.Off.AgentCPUUsPerReq-1))
	if r.Error != "" {
		fmt.Fprintf(&b, "FAILED: %s\n", r.Error)
	}
	_, err := io.WriteString(w, b.String())
	return err
}
