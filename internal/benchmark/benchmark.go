// Package benchmark measures sluice against the upstream it fronts and
// against nginx as a reverse proxy, on loopback, in one run (Run): bulk
// download and upload throughput, small-request rate and latency,
// Server-Sent Events delivery delay with one and with many streams, memory
// per held stream, and CPU time per GiB and per small request. Scale holds 10,000 streams through one tunnel,
// HeadOfLine measures a client's latency beside a stalled stream, and GRPC
// gRPC unary calls and server streaming to an h2c server, directly and
// through sluice. It is what the bench command (bench/cmd/bench) runs; the
// e2e tests run Scale and HeadOfLine small, for correctness, and this
// package's smoke test the comparison and GRPC.
//
// The upstream is a Go net/http server inside the benchmark process, shared
// by every target. The targets are "direct" (the upstream itself),
// "relays" (two bare TCP relays in a chain, child processes running Relay:
// the floor of any two-process tunnel on the machine), "nginx" (a
// child nginx configured as a streaming reverse proxy), "sluice-v1" and
// "sluice-v2" (an edge and an agent, each a child process of the given
// sluice binary), "sluice-tcp" (the same two processes as a TCP tunnel
// over v2: sluice's multiplexing with no HTTP at either end),
// "sluice-v2-base" (sluice-v2 run from an earlier binary, when one is
// given: a baseline for a change to sluice, measured in the same run), and
// "frp-tcp" and "chisel" (frp's TCP mode and chisel, TCP tunnels to the
// upstream, when their binaries are given). Beside the
// rates, Run reads the CPU time and the memory of each target's processes,
// split between the edge and the agent. Every
// measurement checks what it measured (byte counts, event counts and
// sequence numbers) and fails with an error when something does not add up.
package benchmark

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Config says what to measure and how much.
type Config struct {
	// Size is the bytes of the download and of the upload.
	Size int64
	// Clients is the number of concurrent clients of the small-request
	// run, each with a keep-alive connection.
	Clients int
	// Duration is the length of the small-request run.
	Duration time.Duration
	// SSEStreams is the number of concurrent streams of the many-stream SSE
	// run (the other SSE run has one stream).
	SSEStreams int
	// SSEDuration is how long the publisher sends in each SSE run.
	SSEDuration time.Duration
	// SSEInterval is the publisher's period: every interval, one event goes
	// to every open stream.
	SSEInterval time.Duration
	// SSEPacedInterval and SSEPacedDuration are those of a third SSE run
	// with SSEStreams streams, at a rate the machine carries (the default
	// run's is 2,000 streams × 1 event/s; SSEInterval's 50 events/s per
	// stream overload two cores even directly). Zero skips it.
	SSEPacedInterval time.Duration
	SSEPacedDuration time.Duration
	// MemStreams is the number of idle SSE streams held for the memory
	// measurement.
	MemStreams int
	// MemSettle is how long the idle streams are held before the target's
	// memory is read again.
	MemSettle time.Duration
	// Targets are the targets to measure, in order: any of TargetNames.
	Targets []string
	// SluiceBin is the sluice binary run as the edge and the agent.
	// Required when Targets holds a sluice target.
	SluiceBin string
	// BaseBin is an earlier sluice binary, run as the sluice-v2-base
	// target (v2, as sluice-v2): the figures a change started from,
	// measured in the same run as the change's. Empty skips the target
	// with a note saying so.
	BaseBin string
	// RelayCmd is the command that runs one relay (Relay) as a child
	// process, the listen and target addresses appended: the bench
	// command's is {itself, "relay"}. Required when Targets holds relays.
	RelayCmd []string
	// NginxBin is the nginx binary. Empty skips the nginx target with a
	// note saying so.
	NginxBin string
	// FrpDir is a directory holding frps and frpc, run as the frp-tcp
	// target (frp's TCP mode: one TCP proxy to the upstream). Empty skips
	// the target with a note saying so.
	FrpDir string
	// ChiselDir is a directory holding chisel, run as the chisel target
	// (a reverse TCP tunnel to the upstream). Empty skips the target with
	// a note saying so.
	ChiselDir string
	// Rounds is how many times every target is measured, the targets in
	// turn within each round, so that a spell of a slower machine (a
	// busy neighbour of a virtual machine) falls on every target alike;
	// the report holds each figure's median over the rounds. 0 or 1: once.
	Rounds int
	// NoPaired skips the paired run (PairedResult) of each tunnel.
	NoPaired bool
	// Progress, if set, receives one line per step.
	Progress io.Writer
}

// DefaultConfig is the full run: about a minute per target on two cores.
func DefaultConfig() Config {
	return Config{
		Size:        1 << 30,
		Clients:     50,
		Duration:    5 * time.Second,
		SSEStreams:  2000,
		SSEDuration: 3 * time.Second,
		SSEInterval: 20 * time.Millisecond,
		// 2,000 streams × 1 event/s.
		SSEPacedInterval: time.Second,
		SSEPacedDuration: 10 * time.Second,
		MemStreams:       1000,
		MemSettle:        2 * time.Second,
		Targets:          slices.Clone(TargetNames),
	}
}

// maxStreams is the stream limit per tunnel the sluice targets' edge is
// given: the default (1024) would turn the many-stream runs into 503s (or,
// through a TCP tunnel, refused connections).
func (c Config) maxStreams() int {
	return max(c.SSEStreams, c.MemStreams, c.Clients, 1024) + 64
}

// TargetNames are the targets the benchmark knows, in the order of a full
// run.
var TargetNames = []string{"direct", "relays", "nginx", "sluice-v1", "sluice-v2", "sluice-v2-base", "sluice-tcp", "frp-tcp", "chisel"}

// SluiceTargets are the targets that run the sluice binary (Config.SluiceBin).
var SluiceTargets = []string{"sluice-v1", "sluice-v2", "sluice-tcp"}

// QuickConfig is a smoke run of a few seconds per target.
func QuickConfig() Config {
	c := DefaultConfig()
	c.Size = 32 << 20
	c.Clients = 8
	c.Duration = time.Second
	c.SSEStreams = 100
	c.SSEDuration = time.Second
	c.SSEPacedInterval = 250 * time.Millisecond
	c.SSEPacedDuration = time.Second
	c.MemStreams = 100
	c.MemSettle = 500 * time.Millisecond
	return c
}

func (c *Config) validate() error {
	switch {
	case c.Size <= 0:
		return errors.New("benchmark: size must be positive")
	case c.Rounds < 0:
		return errors.New("benchmark: rounds must not be negative")
	case c.Clients <= 0:
		return errors.New("benchmark: clients must be positive")
	case c.Duration <= 0 || c.SSEDuration <= 0 || c.SSEInterval <= 0:
		return errors.New("benchmark: durations must be positive")
	case c.SSEPacedInterval < 0 || (c.SSEPacedInterval > 0 && c.SSEPacedDuration <= 0):
		return errors.New("benchmark: the paced SSE run needs a positive interval and duration (or no interval)")
	case c.SSEStreams <= 0 || c.MemStreams <= 0:
		return errors.New("benchmark: stream counts must be positive")
	case c.MemSettle < 0:
		return errors.New("benchmark: settle time must not be negative")
	case len(c.Targets) == 0:
		return errors.New("benchmark: no target")
	}
	seen := map[string]bool{}
	for _, t := range c.Targets {
		if !slices.Contains(TargetNames, t) {
			return fmt.Errorf("benchmark: unknown target %q (want one of %s)", t, strings.Join(TargetNames, ", "))
		}
		if seen[t] {
			return fmt.Errorf("benchmark: target %q given twice", t)
		}
		seen[t] = true
	}
	if slices.ContainsFunc(SluiceTargets, func(t string) bool { return seen[t] }) && c.SluiceBin == "" {
		return errors.New("benchmark: the sluice targets need the sluice binary")
	}
	if seen["relays"] && len(c.RelayCmd) == 0 {
		return errors.New("benchmark: the relays target needs the relay command")
	}
	return nil
}

// Report is the outcome of a run. Its JSON form is "bench --json".
type Report struct {
	Env     Env            `json:"env"`
	Config  ConfigSummary  `json:"config"`
	Targets []TargetResult `json:"targets"`
	// Rounds holds every round's results when the run had more than one;
	// Targets then holds their medians (medianResult).
	Rounds [][]TargetResult `json:"rounds,omitempty"`
	// Skipped maps a target that was not run to the reason.
	Skipped map[string]string `json:"skipped,omitempty"`
	// Notes are remarks on the run that do not invalidate a figure.
	Notes []string `json:"notes,omitempty"`
}

// Env describes where the run happened.
type Env struct {
	GoVersion    string `json:"go_version"`
	OS           string `json:"os"`
	Arch         string `json:"arch"`
	CPUs         int    `json:"cpus"`
	NginxVersion string `json:"nginx_version,omitempty"`
}

// ConfigSummary is the configuration in the report.
type ConfigSummary struct {
	SizeBytes     int64   `json:"size_bytes"`
	Clients       int     `json:"clients"`
	DurationS     float64 `json:"duration_s"`
	SSEStreams    int     `json:"sse_streams"`
	SSEDurationS  float64 `json:"sse_duration_s"`
	SSEIntervalMs float64 `json:"sse_interval_ms"`
	// SSEPacedIntervalMs is 0 when the paced run is skipped.
	SSEPacedIntervalMs float64 `json:"sse_paced_interval_ms"`
	SSEPacedDurationS  float64 `json:"sse_paced_duration_s"`
	MemStreams         int     `json:"mem_streams"`
	MemSettleS         float64 `json:"mem_settle_s"`
	Rounds             int     `json:"rounds"`
}

// TargetResult holds one target's figures. Error is set when a measurement
// failed; the figures measured before it are kept.
type TargetResult struct {
	Name     string       `json:"name"`
	Download *Transfer    `json:"download"`
	Upload   *Transfer    `json:"upload"`
	Small    *SmallResult `json:"small"`
	SSEOne   *SSEResult   `json:"sse_1"`
	SSEMany  *SSEResult   `json:"sse_many"`
	// SSEPaced is the many-stream run at SSEPacedInterval.
	SSEPaced *SSEResult    `json:"sse_paced,omitempty"`
	Memory   *MemoryResult `json:"memory"`
	// CPU is the CPU time of the target's processes per GiB and per
	// small request (none for direct).
	CPU *CPUResult `json:"cpu,omitempty"`
	// Paired is a tunnel's small requests measured at the same time as
	// the relays' (PairedResult); none for the other targets.
	Paired *PairedResult `json:"paired,omitempty"`
	// MemoryNote says why Memory is missing, for direct.
	MemoryNote string `json:"memory_note,omitempty"`
	Error      string `json:"error,omitempty"`
}

// Transfer is one bulk transfer.
type Transfer struct {
	Bytes   int64   `json:"bytes"`
	Seconds float64 `json:"seconds"`
	MBps    float64 `json:"mb_per_s"` // 10^6 bytes per second
}

// SmallResult is the small-request run.
type SmallResult struct {
	Clients  int   `json:"clients"`
	Requests int64 `json:"requests"`
	// AllRequests counts the warm-up's requests too: every request of
	// the phase, which CPU time per request divides by.
	AllRequests int64   `json:"requests_all"`
	Seconds     float64 `json:"seconds"`
	ReqPerSec   float64 `json:"req_per_s"`
	P50Ms       float64 `json:"p50_ms"`
	P99Ms       float64 `json:"p99_ms"`
}

// SSEResult is one SSE delivery run: the delay from the publisher's Send
// to the client's parser returning the event.
type SSEResult struct {
	Streams    int     `json:"streams"`
	IntervalMs float64 `json:"interval_ms"` // the publisher's period
	Events     int64   `json:"events"`      // events received and checked, all streams
	Rounds     int64   `json:"rounds"`      // publisher rounds (one event per stream each)
	Seconds    float64 `json:"seconds"`
	P50Ms      float64 `json:"p50_ms"`
	P99Ms      float64 `json:"p99_ms"`
	MaxMs      float64 `json:"max_ms"`
	DrainMs    float64 `json:"drain_ms"` // from the last send to the last event received
}

// MemoryResult is the resident memory of the target's processes before and
// after holding Streams idle SSE streams.
type MemoryResult struct {
	Streams     int     `json:"streams"`
	Processes   int     `json:"processes"`
	BeforeKB    int64   `json:"before_kb"`
	AfterKB     int64   `json:"after_kb"`
	PerStreamKB float64 `json:"per_stream_kb"`
	// ByRole is PerStreamKB split into the edge's and the agent's shares
	// (none for nginx).
	ByRole Split `json:"per_stream_kb_by_role"`
	// ByProcess splits the figures by process.
	ByProcess []ProcessMemory `json:"by_process"`
}

// ProcessMemory is one process's part of a MemoryResult.
type ProcessMemory struct {
	Name        string  `json:"name"`
	Role        string  `json:"role,omitempty"` // "edge", "agent" or none
	PID         int     `json:"pid"`
	BeforeKB    int64   `json:"before_kb"`
	AfterKB     int64   `json:"after_kb"`
	PerStreamKB float64 `json:"per_stream_kb"`
}

// Run measures every target of cfg in turn. A target that fails is
// reported with its error in the Report and the others still run; Run then
// returns the Report and an error naming the failures. ctx ends the run
// early.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	rep := &Report{
		Env: Env{GoVersion: runtime.Version(), OS: runtime.GOOS, Arch: runtime.GOARCH, CPUs: runtime.NumCPU()},
		Config: ConfigSummary{
			SizeBytes: cfg.Size, Clients: cfg.Clients, DurationS: cfg.Duration.Seconds(),
			SSEStreams: cfg.SSEStreams, SSEDurationS: cfg.SSEDuration.Seconds(),
			SSEIntervalMs:      float64(cfg.SSEInterval) / 1e6,
			SSEPacedIntervalMs: float64(cfg.SSEPacedInterval) / 1e6, SSEPacedDurationS: cfg.SSEPacedDuration.Seconds(),
			MemStreams: cfg.MemStreams, MemSettleS: cfg.MemSettle.Seconds(),
			Rounds: max(cfg.Rounds, 1),
		},
		Skipped: map[string]string{},
	}
	if err := raiseFileLimit(2*max(cfg.SSEStreams, cfg.MemStreams, cfg.Clients) + 256); err != nil {
		return nil, err
	}
	up, err := startUpstream()
	if err != nil {
		return nil, err
	}
	defer up.close()
	b := &bench{cfg: cfg, up: up, rep: rep}

	var failed []string
	results := map[string][]TargetResult{}
	var order []string
	for round := range max(cfg.Rounds, 1) {
		if cfg.Rounds > 1 {
			b.logf("round %d of %d", round+1, cfg.Rounds)
		}
		var this []TargetResult
		for _, name := range cfg.Targets {
			if ctx.Err() != nil {
				break
			}
			if round == 0 {
				if why := skipReason(cfg, name); why != "" {
					rep.Skipped[name] = why
					b.logf("%s: skipped: %s", name, why)
					continue
				}
				order = append(order, name)
			} else if !slices.Contains(order, name) {
				continue
			}
			res := b.runTarget(ctx, name)
			this = append(this, res)
			results[name] = append(results[name], res)
			if res.Error != "" {
				first, _, _ := strings.Cut(res.Error, "\n")
				failed = append(failed, name+": "+first)
			}
		}
		if !cfg.NoPaired && slices.Contains(order, "relays") {
			for i := range this {
				name := this[i].Name
				if !slices.Contains(pairedTargets, name) || this[i].Error != "" || ctx.Err() != nil {
					continue
				}
				b.logf("%s: paired with the relays: starting", name)
				p, err := b.paired(ctx, name)
				if err != nil {
					this[i].Error = "paired with the relays: " + err.Error()
					failed = append(failed, name+": "+this[i].Error)
					b.logf("%s: paired with the relays: FAILED: %v", name, err)
					continue
				}
				this[i].Paired = p
				b.logf("%s: paired with the relays, %d clients each: %.0f against %.0f CPU µs/request (%.2f×), %.0f against %.0f req/s (%.2f×)",
					name, p.Clients, p.UsPerReq, p.RelaysUsPerReq, p.CPURatio, p.ReqPerSec, p.RelaysReqPerSec, p.ReqRatio)
			}
			for _, r := range this {
				rs := results[r.Name]
				rs[len(rs)-1] = r
			}
		}
		if cfg.Rounds > 1 {
			rep.Rounds = append(rep.Rounds, this)
		}
		if len(failed) > 0 || ctx.Err() != nil {
			break
		}
	}
	for _, name := range order {
		rs := results[name]
		if len(rs) == 0 {
			continue
		}
		if last := rs[len(rs)-1]; last.Error != "" || len(rs) == 1 {
			rep.Targets = append(rep.Targets, last)
			continue
		}
		m, err := medianResult(rs)
		if err != nil {
			return rep, err
		}
		rep.Targets = append(rep.Targets, m)
	}
	if len(rep.Skipped) == 0 {
		rep.Skipped = nil
	}
	if ctx.Err() != nil {
		return rep, fmt.Errorf("benchmark: interrupted: %w", ctx.Err())
	}
	if len(failed) > 0 {
		return rep, fmt.Errorf("benchmark failed: %s", strings.Join(failed, "; "))
	}
	return rep, nil
}

// skipReason says why a target of cfg cannot run, or "".
func skipReason(cfg Config, name string) string {
	switch {
	case name == "nginx" && cfg.NginxBin == "":
		return "no nginx binary found (install nginx, or pass its path)"
	case name == "sluice-v2-base" && cfg.BaseBin == "":
		return "no base binary given (--base BIN: an earlier sluice, to measure a change against)"
	case name == "frp-tcp" && cfg.FrpDir == "":
		return "no frps/frpc given (--frp DIR or $SLUICE_BENCH_FRP)"
	case name == "chisel" && cfg.ChiselDir == "":
		return "no chisel given (--chisel DIR or $SLUICE_BENCH_CHISEL)"
	}
	return ""
}

// raiseFileLimit lifts the soft RLIMIT_NOFILE to the hard limit and checks
// that the run fits: need is about the file descriptors the busiest process
// holds (in the comparative run, this one: every stream holds a client and
// an upstream connection here). The Go runtime raised the soft limit
// already at start, but gives child processes the original one back unless
// the program calls Setrlimit itself: calling it always makes the children
// (nginx, sluice, load processes) inherit the raised limit.
func raiseFileLimit(need int) error {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return fmt.Errorf("benchmark: getrlimit: %w", err)
	}
	lim.Cur = lim.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return fmt.Errorf("benchmark: setrlimit: %w", err)
	}
	if lim.Cur < uint64(need) {
		return fmt.Errorf("benchmark: the run needs about %d file descriptors in one process; RLIMIT_NOFILE is %d (raise it with ulimit -n, or use fewer streams)",
			need, lim.Cur)
	}
	return nil
}

// bench is one run in progress.
type bench struct {
	cfg Config
	up  *upstream
	rep *Report
}

func (b *bench) logf(format string, args ...any) {
	if b.cfg.Progress != nil {
		fmt.Fprintf(b.cfg.Progress, format+"\n", args...)
	}
}

func (b *bench) note(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	b.rep.Notes = append(b.rep.Notes, msg)
	b.logf("note: %s", msg)
}

// runTarget starts a target, measures it and stops it.
// start starts target name.
func (b *bench) start(ctx context.Context, name string) (target, error) {
	switch name {
	case "direct":
		return directTarget(b.up), nil
	case "relays":
		return startRelays(ctx, b.cfg, b.up.port)
	case "nginx":
		t, err := startNginx(ctx, b.cfg, b.up.port)
		if err == nil && b.rep.Env.NginxVersion == "" {
			b.rep.Env.NginxVersion = nginxVersion(b.cfg.NginxBin)
		}
		return t, err
	case "sluice-v1", "sluice-v2", "sluice-v2-base":
		bin, protocol := b.cfg.SluiceBin, strings.TrimPrefix(name, "sluice-")
		if name == "sluice-v2-base" {
			bin, protocol = b.cfg.BaseBin, "v2"
		}
		maxStreams := b.cfg.maxStreams()
		return startSluice(ctx, bin, b.up.port, protocol, maxStreams, maxStreams, "/small")
	case "sluice-tcp", "frp-tcp", "chisel":
		return startTCPTunnel(ctx, b.cfg, name, b.up.port)
	}
	return nil, fmt.Errorf("benchmark: unknown target %q", name)
}

func (b *bench) runTarget(ctx context.Context, name string) (res TargetResult) {
	res.Name = name
	b.logf("%s: starting", name)
	t, err := b.start(ctx, name)
	if err != nil {
		res.Error = err.Error()
		b.logf("%s: FAILED: %v", name, err)
		return res
	}
	defer func() {
		if err := t.stop(); err != nil {
			b.note("%s: stopping: %v", name, err)
		}
	}()
	fail := func(what string, err error) TargetResult {
		res.Error = what + ": " + err.Error()
		if out := t.output(); out != "" {
			res.Error += "\n" + name + " output:\n" + out
		}
		b.logf("%s: %s FAILED: %v", name, what, err)
		return res
	}
	c := &client{base: t.baseURL(), host: t.host()}

	// Memory first, while the target's processes are fresh.
	if t.measurable() {
		m, err := b.measureMemory(ctx, c, t)
		if err != nil {
			return fail("memory", err)
		}
		res.Memory = m
		var parts []string
		for _, p := range m.ByProcess {
			parts = append(parts, fmt.Sprintf("%s %d: %d -> %d KB, %.1f KB/stream", p.Name, p.PID, p.BeforeKB, p.AfterKB, p.PerStreamKB))
		}
		b.logf("%s: memory: %.1f KB per idle stream (%d streams; %d -> %d KB; %s)",
			name, m.PerStreamKB, m.Streams, m.BeforeKB, m.AfterKB, strings.Join(parts, "; "))
	} else {
		res.MemoryNote = "n/a: the upstream runs inside the benchmark process, with the clients"
		b.logf("%s: memory: %s", name, res.MemoryNote)
	}

	// The CPU time of the target's processes over a phase, per unit of
	// work (none for direct, whose upstream shares this process with the
	// clients).
	if t.measurable() {
		res.CPU = &CPUResult{}
	}
	var meter *cpuMeter
	startPhase := func() error {
		if res.CPU == nil {
			return nil
		}
		procs, err := t.procs()
		if err == nil {
			meter, err = startCPU(procs)
		}
		return err
	}
	endPhase := func(per float64) (*Split, error) {
		if res.CPU == nil {
			return nil, nil
		}
		procs, err := t.procs()
		if err != nil {
			return nil, err
		}
		used, err := meter.used(procs)
		if err != nil {
			return nil, err
		}
		s := splitByRole(procs, used, per)
		return &s, nil
	}
	gib := func(n int64) float64 { return float64(n) / (1 << 30) }

	if err := startPhase(); err != nil {
		return fail("download", err)
	}
	if res.Download, err = b.download(ctx, c); err != nil {
		return fail("download", err)
	}
	if res.CPU != nil {
		if res.CPU.DownloadSPerGiB, err = endPhase(gib(res.Download.Bytes)); err != nil {
			return fail("download", err)
		}
	}
	b.logf("%s: download: %s in %.2f s: %.0f MB/s%s", name, byteSize(res.Download.Bytes), res.Download.Seconds, res.Download.MBps,
		cpuLog(res.CPU, func(c *CPUResult) *Split { return c.DownloadSPerGiB }, "%.2f", "CPU s/GiB"))
	if err := startPhase(); err != nil {
		return fail("upload", err)
	}
	if res.Upload, err = b.upload(ctx, c); err != nil {
		return fail("upload", err)
	}
	if res.CPU != nil {
		if res.CPU.UploadSPerGiB, err = endPhase(gib(res.Upload.Bytes)); err != nil {
			return fail("upload", err)
		}
	}
	b.logf("%s: upload: %s in %.2f s: %.0f MB/s%s", name, byteSize(res.Upload.Bytes), res.Upload.Seconds, res.Upload.MBps,
		cpuLog(res.CPU, func(c *CPUResult) *Split { return c.UploadSPerGiB }, "%.2f", "CPU s/GiB"))
	if err := startPhase(); err != nil {
		return fail("small requests", err)
	}
	if res.Small, err = b.small(ctx, c); err != nil {
		return fail("small requests", err)
	}
	if res.CPU != nil {
		if res.CPU.SmallUsPerReq, err = endPhase(float64(res.Small.AllRequests) / 1e6); err != nil {
			return fail("small requests", err)
		}
	}
	b.logf("%s: small: %d clients, %d requests in %.1f s: %.0f req/s, p50 %s ms, p99 %s ms%s",
		name, res.Small.Clients, res.Small.Requests, res.Small.Seconds, res.Small.ReqPerSec, ms(res.Small.P50Ms), ms(res.Small.P99Ms),
		cpuLog(res.CPU, func(c *CPUResult) *Split { return c.SmallUsPerReq }, "%.0f", "CPU µs/request"))
	if res.SSEOne, err = b.sse(ctx, c, 1, b.cfg.SSEInterval, b.cfg.SSEDuration); err != nil {
		return fail("SSE, 1 stream", err)
	}
	b.logSSE(name, res.SSEOne)
	if res.SSEMany, err = b.sse(ctx, c, b.cfg.SSEStreams, b.cfg.SSEInterval, b.cfg.SSEDuration); err != nil {
		return fail(fmt.Sprintf("SSE, %d streams", b.cfg.SSEStreams), err)
	}
	b.logSSE(name, res.SSEMany)
	if b.cfg.SSEPacedInterval > 0 {
		if res.SSEPaced, err = b.sse(ctx, c, b.cfg.SSEStreams, b.cfg.SSEPacedInterval, b.cfg.SSEPacedDuration); err != nil {
			return fail(fmt.Sprintf("SSE, %d streams %s", b.cfg.SSEStreams, perStream(b.cfg.SSEPacedInterval)), err)
		}
		b.logSSE(name, res.SSEPaced)
	}
	if err := t.alive(); err != nil {
		return fail("after the run", err)
	}
	return res
}

// cpuLog is a phase's CPU figures for the progress log: the total, the
// edge's and the agent's, each formatted with format, then unit; ""
// without them.
func cpuLog(c *CPUResult, which func(*CPUResult) *Split, format, unit string) string {
	if c == nil || which(c) == nil {
		return ""
	}
	s := which(c)
	out := "; " + fmt.Sprintf(format, s.Total) + " " + unit
	if s.Edge != nil && s.Agent != nil {
		out += " (edge " + fmt.Sprintf(format, *s.Edge) + ", agent " + fmt.Sprintf(format, *s.Agent) + ")"
	}
	return out
}

// perStream names an SSE publisher's rate per stream, such as "× 1/s"
// for an interval of a second.
func perStream(interval time.Duration) string {
	return "× " + strconv.FormatFloat(float64(time.Second)/float64(interval), 'g', 3, 64) + "/s"
}

func (b *bench) logSSE(name string, r *SSEResult) {
	b.logf("%s: SSE %d stream(s) %s: %d events in %d rounds, delay p50 %s ms, p99 %s ms, max %s ms (drained %s ms after the last send)",
		name, r.Streams, perStream(time.Duration(r.IntervalMs*1e6)), r.Events, r.Rounds, ms(r.P50Ms), ms(r.P99Ms), ms(r.MaxMs), ms(r.DrainMs))
}

// nginxVersion returns what "nginx -v" says, or "".
func nginxVersion(bin string) string {
	out, err := exec.Command(bin, "-v").CombinedOutput()
	if err != nil {
		return ""
	}
	s := strings.TrimSpace(string(out))
	return strings.TrimPrefix(s, "nginx version: ")
}
