package benchmark

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/sluicehq/sluice/internal/sseload"
)

// ScaleConfig says what the scale run holds: Streams concurrent SSE
// streams through one tunnel, for each protocol in turn.
type ScaleConfig struct {
	// Streams is the number of concurrent streams (0: 10,000).
	Streams int
	// Protocols are the protocols to run, in order (nil: v1 and v2).
	Protocols []string
	// SluiceBin is the sluice binary run as the edge and the agent.
	SluiceBin string
	// LoadCmd is the command that runs an internal/sseload mode as a child
	// process, the mode and its flags appended: the bench command's is
	// {itself, "sseload"}.
	LoadCmd []string
	// Concurrency bounds the clients' connection attempts in progress
	// (0: 200).
	Concurrency int
	// Timeout bounds each wait of the run: connecting every stream and
	// every stream receiving an event sent after that, the clients
	// leaving, the upstream's streams ending (0: 5 minutes). It is a
	// ceiling for a stuck run, not a figure that is checked.
	Timeout time.Duration
	// Progress, if set, receives one line per step.
	Progress io.Writer
}

func (c *ScaleConfig) defaults() error {
	if c.Streams == 0 {
		c.Streams = 10000
	}
	if c.Protocols == nil {
		c.Protocols = []string{"v1", "v2"}
	}
	if c.Concurrency == 0 {
		c.Concurrency = 200
	}
	if c.Timeout == 0 {
		c.Timeout = 5 * time.Minute
	}
	switch {
	case c.Streams < 0 || c.Concurrency < 0 || c.Timeout < 0:
		return errors.New("benchmark: scale: negative streams, concurrency or timeout")
	case c.SluiceBin == "":
		return errors.New("benchmark: scale: no sluice binary")
	case len(c.LoadCmd) == 0:
		return errors.New("benchmark: scale: no load command")
	}
	for _, p := range c.Protocols {
		if p != "v1" && p != "v2" {
			return fmt.Errorf("benchmark: scale: unknown protocol %q (want v1 or v2)", p)
		}
	}
	return nil
}

// ScaleReport is the outcome of a scale run. Its JSON form is
// "bench scale --json".
type ScaleReport struct {
	Env       Env           `json:"env"`
	Streams   int           `json:"streams"`
	Protocols []ScaleResult `json:"protocols"`
}

// ScaleResult is one protocol's figures: the clients' summary, and the
// edge's and agent's resident memory before the streams and while they
// are held. Error is set when something did not add up.
type ScaleResult struct {
	Protocol string          `json:"protocol"`
	Clients  sseload.Summary `json:"clients"`
	Edge     HeldMemory      `json:"edge"`
	Agent    HeldMemory      `json:"agent"`
	// UpstreamStreams is the streams the upstream held with every client
	// connected.
	UpstreamStreams int `json:"upstream_streams"`
	// ReleaseSeconds is the time from the clients leaving until the
	// upstream's streams had all ended.
	ReleaseSeconds float64 `json:"release_s"`
	Error          string  `json:"error,omitempty"`
}

// HeldMemory is a process's resident memory before and while the streams
// are held.
type HeldMemory struct {
	BeforeKB    int64   `json:"before_kb"`
	HeldKB      int64   `json:"held_kb"`
	PerStreamKB float64 `json:"per_stream_kb"`
	Files       int     `json:"files"` // open file descriptors while held
}

// Scale holds cfg.Streams concurrent SSE streams through one tunnel, for
// each protocol in turn: an sseload upstream publishing an event every
// second, an edge and an agent, and an sseload crowd of clients, each a
// process of its own. Every stream must connect, stay connected and
// receive an event sent after the last one connected; when the clients
// leave, the upstream's streams must all end. A protocol that fails is
// reported with its error and the others still run; Scale then returns
// the report and an error naming the failures.
func Scale(ctx context.Context, cfg ScaleConfig) (*ScaleReport, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	// The clients, the edge, the agent and the upstream each hold a socket
	// per stream.
	if err := raiseFileLimit(cfg.Streams + 1000); err != nil {
		return nil, err
	}
	rep := &ScaleReport{
		Env:     Env{GoVersion: runtime.Version(), OS: runtime.GOOS, Arch: runtime.GOARCH, CPUs: runtime.NumCPU()},
		Streams: cfg.Streams,
	}
	var failed []string
	for _, proto := range cfg.Protocols {
		if ctx.Err() != nil {
			break
		}
		res, err := scaleOne(ctx, cfg, proto)
		if err != nil {
			res.Error = err.Error()
			first, _, _ := strings.Cut(res.Error, "\n")
			failed = append(failed, proto+": "+first)
			logf(cfg.Progress, "%s: FAILED: %v", proto, err)
		}
		rep.Protocols = append(rep.Protocols, res)
	}
	if ctx.Err() != nil {
		return rep, fmt.Errorf("benchmark: scale: interrupted: %w", ctx.Err())
	}
	if len(failed) > 0 {
		return rep, fmt.Errorf("benchmark: scale failed: %s", strings.Join(failed, "; "))
	}
	return rep, nil
}

func logf(w io.Writer, format string, args ...any) {
	if w != nil {
		fmt.Fprintf(w, format+"\n", args...)
	}
}

// loadChild starts an sseload mode as a child process, its standard input
// a pipe that holds it.
func loadChild(cfg ScaleConfig, name string, args ...string) (*child, error) {
	return startChildWith(name, true, cfg.LoadCmd[0], append(slices.Clone(cfg.LoadCmd[1:]), args...)...)
}

// waitLine waits until c's standard output holds a full line and returns
// its first line, or fails when c exits, ctx ends or timeout passes.
func waitLine(ctx context.Context, c *child, timeout time.Duration) (string, error) {
	deadline := time.Now().Add(timeout)
	for {
		if line, _, ok := strings.Cut(c.stdout.String(), "\n"); ok {
			return line, nil
		}
		if err := c.alive(); err != nil {
			return "", fmt.Errorf("%w\n%s", err, c.out.String())
		}
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("%s printed nothing in %v\n%s", c.name, timeout, c.out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func scaleOne(ctx context.Context, cfg ScaleConfig, proto string) (res ScaleResult, err error) {
	res.Protocol = proto
	n := cfg.Streams
	began := time.Now()

	up, err := loadChild(cfg, "sseload upstream", "upstream", "-interval", "1s")
	if err != nil {
		return res, err
	}
	defer up.stop()
	line, err := waitLine(ctx, up, time.Minute)
	if err != nil {
		return res, fmt.Errorf("sseload upstream did not start: %w", err)
	}
	upAddr, ok := strings.CutPrefix(line, "listening ")
	if !ok {
		return res, fmt.Errorf("sseload upstream printed %q", line)
	}
	_, portStr, _ := strings.Cut(upAddr, ":")
	upPort, err := strconv.Atoi(portStr)
	if err != nil {
		return res, fmt.Errorf("sseload upstream address %q: %w", upAddr, err)
	}
	// No keep-alive: nothing is left behind (the e2e tests check for leaks).
	hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
	upstreamStreams := func() (int, error) {
		resp, err := hc.Get("http://" + upAddr + "/stats")
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		var v struct{ Streams int }
		err = json.NewDecoder(resp.Body).Decode(&v)
		return v.Streams, err
	}

	t, err := startSluice(ctx, cfg.SluiceBin, upPort, proto, n+1024, n+1024, "/stats")
	if err != nil {
		return res, err
	}
	defer func() {
		if stopErr := t.stop(); stopErr != nil && err == nil {
			err = stopErr
		}
	}()
	procs, err := t.procs() // the edge, then the agent
	if err != nil {
		return res, err
	}
	before, _, err := rssKB(procs)
	if err != nil {
		return res, err
	}
	logf(cfg.Progress, "%s: opening %d streams", proto, n)

	cl, err := loadChild(cfg, "sseload clients", "clients",
		"-addr", strings.TrimPrefix(t.base, "http://"), "-host", t.hostHdr,
		"-n", strconv.Itoa(n), "-concurrency", strconv.Itoa(cfg.Concurrency), "-timeout", cfg.Timeout.String())
	if err != nil {
		return res, err
	}
	defer cl.stop()
	line, err = waitLine(ctx, cl, cfg.Timeout+time.Minute)
	if err != nil {
		return res, fmt.Errorf("sseload clients printed no summary: %w", err)
	}
	s := &res.Clients
	if err := json.Unmarshal([]byte(line), s); err != nil {
		return res, fmt.Errorf("sseload clients summary %q: %w", line, err)
	}
	ready := time.Since(began)

	// Held: every stream open, events flowing.
	held, _, err := rssKB(procs)
	if err != nil {
		return res, err
	}
	for i, m := range []*HeldMemory{&res.Edge, &res.Agent} {
		*m = HeldMemory{BeforeKB: before[i], HeldKB: held[i], PerStreamKB: float64(held[i]-before[i]) / float64(n), Files: openFiles(procs[i].pid)}
	}
	upOpen, upErr := upstreamStreams()
	res.UpstreamStreams = upOpen
	logf(cfg.Progress, "%s: %d streams connected in %.2f s (%d failed, %d dropped, %d retried attempts); "+
		"every stream had an event sent after the last connected %.2f s later; "+
		"delivery of those events p50 %.1f ms, p99 %.1f ms, max %.1f ms; fewest events on a stream %d",
		proto, s.Connected, s.ConnectSeconds, s.Failed, s.Dropped, s.Retries,
		s.FreshSeconds, s.DeliveryP50ms, s.DeliveryP99ms, s.DeliveryMaxms, s.MinEvents)
	logf(cfg.Progress, "%s: edge RSS %d -> %d MiB (%.1f KiB per held stream, %d fds); agent RSS %d -> %d MiB (%.1f KiB per held stream, %d fds); upstream holds %d streams",
		proto, res.Edge.BeforeKB>>10, res.Edge.HeldKB>>10, res.Edge.PerStreamKB, res.Edge.Files,
		res.Agent.BeforeKB>>10, res.Agent.HeldKB>>10, res.Agent.PerStreamKB, res.Agent.Files, upOpen)

	var errs []error
	if s.Connected != n || s.Failed != 0 {
		errs = append(errs, fmt.Errorf("%d of %d streams connected, %d failed; first error: %s", s.Connected, n, s.Failed, s.FirstError))
	}
	if s.Dropped != 0 {
		errs = append(errs, fmt.Errorf("%d streams ended while held; first error: %s", s.Dropped, s.FirstError))
	}
	if s.Fresh != n || s.MinEvents < 1 {
		errs = append(errs, fmt.Errorf("%d of %d streams received an event sent after all were connected (fewest events on a stream: %d); first error: %s",
			s.Fresh, n, s.MinEvents, s.FirstError))
	}
	if upErr != nil || upOpen != n {
		errs = append(errs, fmt.Errorf("the upstream holds %d streams (%v), want %d", upOpen, upErr, n))
	}
	if err := t.alive(); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return res, fmt.Errorf("%w\n%s", errors.Join(errs...), t.output())
	}

	// The clients leave: the upstream's streams must all end.
	cl.stdin.Close()
	left := time.Now()
	select {
	case <-cl.exited:
		if cl.waitErr != nil {
			return res, fmt.Errorf("sseload clients: %v\n%s", cl.waitErr, cl.out.String())
		}
	case <-time.After(cfg.Timeout):
		return res, fmt.Errorf("sseload clients did not exit %v after its standard input closed", cfg.Timeout)
	case <-ctx.Done():
		return res, ctx.Err()
	}
	for {
		open, err := upstreamStreams()
		if err == nil && open == 0 {
			break
		}
		if time.Since(left) > cfg.Timeout {
			return res, fmt.Errorf("%v after the clients left, the upstream still holds %d streams (%v)", cfg.Timeout, open, err)
		}
		if ctx.Err() != nil {
			return res, ctx.Err()
		}
		time.Sleep(100 * time.Millisecond)
	}
	res.ReleaseSeconds = time.Since(left).Seconds()
	logf(cfg.Progress, "%s: the upstream's streams all ended %.2f s after the clients left; whole run %v (streams held after %v)",
		proto, res.ReleaseSeconds, time.Since(began).Round(time.Millisecond), ready.Round(time.Millisecond))
	return res, nil
}

// openFiles counts a process's open file descriptors; -1 if it cannot.
func openFiles(pid int) int {
	ents, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/fd")
	if err != nil {
		return -1
	}
	return len(ents)
}

// WriteTable prints the report as a table with a column per protocol.
func (r *ScaleReport) WriteTable(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "sluice scale: %d SSE streams through one tunnel, loopback, %d CPUs, %s %s/%s\n\n",
		r.Streams, r.Env.CPUs, r.Env.GoVersion, r.Env.OS, r.Env.Arch)
	rows := []protocolRow[ScaleResult]{
		{"all streams connected, s", func(p *ScaleResult) string { return fmt.Sprintf("%.2f", p.Clients.ConnectSeconds) }},
		{"broadcast delivery p50 / p99 ms", func(p *ScaleResult) string {
			return fmt.Sprintf("%.1f / %.1f", p.Clients.DeliveryP50ms, p.Clients.DeliveryP99ms)
		}},
		{"broadcast delivery max ms", func(p *ScaleResult) string { return fmt.Sprintf("%.1f", p.Clients.DeliveryMaxms) }},
		{"edge KiB per held stream", func(p *ScaleResult) string { return fmt.Sprintf("%.1f", p.Edge.PerStreamKB) }},
		{"agent KiB per held stream", func(p *ScaleResult) string { return fmt.Sprintf("%.1f", p.Agent.PerStreamKB) }},
		{"edge / agent RSS held, MiB", func(p *ScaleResult) string {
			return fmt.Sprintf("%d / %d", p.Edge.HeldKB>>10, p.Agent.HeldKB>>10)
		}},
		{"streams ended after the clients left, s", func(p *ScaleResult) string { return fmt.Sprintf("%.2f", p.ReleaseSeconds) }},
	}
	writeProtocolTable(&b, r.Protocols, func(p *ScaleResult) (string, string) { return p.Protocol, p.Error }, rows, 16)
	b.WriteString("\n(broadcast: an event published after the last stream connected, from the upstream's send to the client's read. KiB per held stream: VmRSS growth over the streams.)\n")
	_, err := io.WriteString(w, b.String())
	return err
}
