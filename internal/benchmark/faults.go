package benchmark

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2/client"

	"github.com/sluicehq/sluice/internal/stats"
)

// FaultsConfig says what the fault-injection run does. Zero values are
// the defaults of "bench faults".
type FaultsConfig struct {
	// Protocols are the protocols to run, in order (nil: v1 and v2).
	Protocols []string
	// Faults are the faults to inject, in order (nil: FaultNames).
	Faults []string
	// Links are where faults are injected (nil: agent and client).
	Links []string
	// SluiceBin is the sluice binary run as the edge and the agents.
	SluiceBin string
	// ToxiproxyBin is toxiproxy's server (go build
	// github.com/Shopify/toxiproxy/v2/cmd/server), run as a child
	// process: the proxies and their toxics are set through its API.
	ToxiproxyBin string
	// Requests is how many requests, half downloads and half uploads,
	// run at once under each fault (0: 16).
	Requests int
	// MaxSize is the largest body; sizes are random from 1 byte to it
	// (0: 1 MiB).
	MaxSize int64
	// Rate is the bandwidth fault's limit, in KB/s each way (0: 4096).
	Rate int64
	// PongTimeout is the edge's --pong-timeout, which bounds how long a
	// blackholed agent is held (0: 5 s).
	PongTimeout time.Duration
	// Seed makes the sizes and the bodies reproducible.
	Seed uint64
	// Progress, if set, receives one line per step.
	Progress io.Writer
}

// FaultNames are the faults, in the order a run injects them.
var FaultNames = []string{"latency", "bandwidth", "slicer", "blackhole", "reset_peer"}

// LinkNames are the connections a fault is put on: between the agent and
// the edge, and between the public client and the edge.
var LinkNames = []string{"agent", "client"}

func (c *FaultsConfig) defaults() error {
	if c.Protocols == nil {
		c.Protocols = []string{"v1", "v2"}
	}
	if c.Faults == nil {
		c.Faults = FaultNames
	}
	if c.Links == nil {
		c.Links = LinkNames
	}
	if c.Requests <= 0 {
		c.Requests = 16
	}
	if c.MaxSize <= 0 {
		c.MaxSize = 1 << 20
	}
	if c.Rate <= 0 {
		c.Rate = 4096
	}
	if c.PongTimeout <= 0 {
		c.PongTimeout = 5 * time.Second
	}
	for _, p := range c.Protocols {
		if p != "v1" && p != "v2" {
			return fmt.Errorf("faults: unknown protocol %q (want v1, v2)", p)
		}
	}
	for _, f := range c.Faults {
		if !slices.Contains(FaultNames, f) {
			return fmt.Errorf("faults: unknown fault %q (want %s)", f, strings.Join(FaultNames, ", "))
		}
	}
	for _, l := range c.Links {
		if !slices.Contains(LinkNames, l) {
			return fmt.Errorf("faults: unknown link %q (want agent, client)", l)
		}
	}
	return nil
}

// FaultsReport is the outcome of a fault-injection run. Its JSON form is
// "bench faults --json".
type FaultsReport struct {
	Env         Env           `json:"env"`
	Requests    int           `json:"requests_per_fault"`
	MaxSize     int64         `json:"max_size_bytes"`
	PongTimeout float64       `json:"pong_timeout_s"`
	Baselines   []FaultsBase  `json:"baselines"`
	Results     []FaultResult `json:"results"`
}

// FaultsBase is one protocol's state before any fault: the latency of the
// steady tunnel and the processes' goroutines and descriptors.
type FaultsBase struct {
	Protocol    string  `json:"protocol"`
	SteadyP50Ms float64 `json:"steady_p50_ms"`
	SteadyMaxMs float64 `json:"steady_max_ms"`
	Edge        Counts  `json:"edge"`
	Agent       Counts  `json:"agent"`
	Steady      Counts  `json:"steady_agent"`
}

// Counts are a process's goroutines and open file descriptors.
type Counts struct {
	Goroutines int `json:"goroutines"`
	FDs        int `json:"fds"`
}

// FaultResult is what one fault on one link did to one protocol.
type FaultResult struct {
	Protocol string `json:"protocol"`
	Link     string `json:"link"`
	Fault    string `json:"fault"`
	// Requests ran under the fault: Complete ones were answered 200 with
	// every byte right, Aborted ones ended with an error the client saw
	// (a failed request or a failed read), Refused ones were answered
	// with an error status (such as 502 while the agent was away).
	Requests int `json:"requests"`
	Complete int `json:"complete"`
	Aborted  int `json:"aborted"`
	Refused  int `json:"refused"`
	// BytesChecked are the body bytes compared with what was sent, by the
	// client (downloads) and by the upstream (uploads).
	BytesChecked int64 `json:"bytes_checked"`
	// Reconnects are the agent registrations the edge counted during the
	// case; BackMs the time from the fault's removal to the first request
	// the faulty tunnel served again.
	Reconnects int     `json:"reconnects"`
	BackMs     float64 `json:"back_ms"`
	// SettleMs is how long the processes took to return to their
	// goroutine and descriptor counts of before the faults.
	SettleMs float64 `json:"settle_ms"`
	// Steady* are the other tunnel's requests on the same edge during
	// the case.
	SteadyRequests int     `json:"steady_requests"`
	SteadyP50Ms    float64 `json:"steady_p50_ms"`
	SteadyMaxMs    float64 `json:"steady_max_ms"`
	// Violations are responses cut short and presented as complete (or
	// wrong bytes), the steady tunnel's failures, leaks and an agent
	// that did not come back.
	Violations []string `json:"violations,omitempty"`
	Errors     []string `json:"errors,omitempty"` // a sample of the aborts, for the log
}

// faultsCeiling bounds every wait of the run: a generous ceiling for a
// busy machine, reached only by a run that is stuck.
const faultsCeiling = 2 * time.Minute

// clientPatience is how long a client blackholed from the edge waits
// before it gives up on its requests.
const clientPatience = time.Second

// Slack over the counts of before the faults: a pprof request in progress,
// a connection the edge has not reaped yet.
const (
	goroutineSlack = 4
	fdSlack        = 2
)

// Faults runs the fault-injection suite: for each protocol, an edge with
// two tunnels, "faulty" whose agent reaches the edge through a toxiproxy
// proxy and "steady" whose agent connects directly, and a second proxy in
// front of the edge for public clients. For each fault and link, requests
// run through the faulty tunnel while the fault is on; each must be
// complete and byte-exact or visibly aborted, the faulty agent must come
// back once the fault is removed, the processes must return to their
// goroutine and descriptor counts, and the steady tunnel must serve every
// request meanwhile. The error lists every violation; the report has the
// figures.
func Faults(ctx context.Context, cfg FaultsConfig) (*FaultsReport, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	rep := &FaultsReport{
		Env:         Env{GoVersion: runtime.Version(), OS: runtime.GOOS, Arch: runtime.GOARCH, CPUs: runtime.NumCPU()},
		Requests:    cfg.Requests,
		MaxSize:     cfg.MaxSize,
		PongTimeout: cfg.PongTimeout.Seconds(),
	}
	up, err := startFaultUpstream()
	if err != nil {
		return nil, err
	}
	defer up.close()
	var errs []error
	for _, proto := range cfg.Protocols {
		if err := faultsOne(ctx, cfg, up, proto, rep); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", proto, err))
		}
		if ctx.Err() != nil {
			break
		}
	}
	for _, r := range rep.Results {
		for _, v := range r.Violations {
			errs = append(errs, fmt.Errorf("%s, %s link, %s: %s", r.Protocol, r.Link, r.Fault, v))
		}
	}
	return rep, errors.Join(errs...)
}

// faultRig is one protocol's processes and proxies.
type faultRig struct {
	cfg        FaultsConfig
	up         *faultUpstream
	proto      string
	edgeAddr   string
	edgeHost   string // the edge's port, for Host headers
	children   []*child
	pprof      map[*child]string // the children's pprof addresses
	edge       *child
	agent      *child // the faulty tunnel's agent
	steady     *child
	toxiproxy  *child
	agentProxy *toxiproxy.Proxy
	clientPrx  *toxiproxy.Proxy
	rng        *rand.Rand
	base       map[*child]Counts
}

func faultsOne(ctx context.Context, cfg FaultsConfig, up *faultUpstream, proto string, rep *FaultsReport) (err error) {
	rig, err := startFaultRig(ctx, cfg, up, proto)
	if err != nil {
		return err
	}
	defer func() {
		if stopErr := rig.stop(); stopErr != nil && err == nil {
			err = stopErr
		}
	}()
	// Warm up both paths at the run's concurrency, so that connection
	// pools and buffers are at their size before the counts are taken.
	for _, link := range cfg.Links {
		res := FaultResult{}
		rig.runRequests(ctx, link, nil, &res)
		if res.Complete != res.Requests {
			return fmt.Errorf("warming up the %s link: %d of %d requests complete: %v %v", link, res.Complete, res.Requests, res.Errors, res.Violations)
		}
	}
	var lat []time.Duration
	for range 20 {
		d, err := rig.steadyRequest(ctx)
		if err != nil {
			return fmt.Errorf("the steady tunnel: %w", err)
		}
		lat = append(lat, d)
	}
	s := stats.Summarize(lat)
	base := FaultsBase{Protocol: proto, SteadyP50Ms: durMs(s.P50), SteadyMaxMs: durMs(s.Max)}
	if err := rig.settleBaseline(ctx); err != nil {
		return err
	}
	base.Edge, base.Agent, base.Steady = rig.base[rig.edge], rig.base[rig.agent], rig.base[rig.steady]
	rep.Baselines = append(rep.Baselines, base)
	logf(cfg.Progress, "%s: ready; steady tunnel p50 %.1f ms; edge %d goroutines %d fds, agent %d/%d, steady agent %d/%d", proto, base.SteadyP50Ms,
		base.Edge.Goroutines, base.Edge.FDs, base.Agent.Goroutines, base.Agent.FDs, base.Steady.Goroutines, base.Steady.FDs)

	for _, fault := range cfg.Faults {
		for _, link := range cfg.Links {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			res := rig.runCase(ctx, link, fault)
			rep.Results = append(rep.Results, res)
			logf(cfg.Progress, "%s %s link %s: %d requests: %d complete, %d aborted, %d refused; %s checked; %d reconnects, back after %.0f ms; settled after %.0f ms; steady tunnel %d requests, p50 %.1f ms, max %.1f ms%s",
				proto, link, fault, res.Requests, res.Complete, res.Aborted, res.Refused, mib(res.BytesChecked),
				res.Reconnects, res.BackMs, res.SettleMs, res.SteadyRequests, res.SteadyP50Ms, res.SteadyMaxMs, violationNote(res))
			if err := rig.alive(); err != nil {
				return fmt.Errorf("after %s on the %s link: %w\n%s", fault, link, err, rig.output())
			}
		}
	}
	return nil
}

func mib(n int64) string { return fmt.Sprintf("%.2f MiB", float64(n)/(1<<20)) }

func violationNote(r FaultResult) string {
	if len(r.Violations) == 0 {
		return ""
	}
	return "; VIOLATIONS: " + strings.Join(r.Violations, "; ")
}

func startFaultRig(ctx context.Context, cfg FaultsConfig, up *faultUpstream, proto string) (*faultRig, error) {
	rig := &faultRig{cfg: cfg, up: up, proto: proto, pprof: map[*child]string{},
		rng: rand.New(rand.NewPCG(cfg.Seed, uint64(proto[len(proto)-1])))}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	rig.edgeAddr = "127.0.0.1:" + strconv.Itoa(port)
	rig.edgeHost = strconv.Itoa(port)
	tok := make([]byte, 16)
	for i := range tok {
		tok[i] = byte('a' + rig.rng.IntN(26))
	}
	token := string(tok)
	start := func(name string, args ...string) (*child, error) {
		pp, err := freePort()
		if err != nil {
			return nil, err
		}
		addr := "127.0.0.1:" + strconv.Itoa(pp)
		c, err := startChild(name, cfg.SluiceBin, append(args, "--pprof", addr)...)
		if err != nil {
			return nil, err
		}
		rig.children = append(rig.children, c)
		rig.pprof[c] = addr
		return c, nil
	}
	if rig.edge, err = start("sluice edge", "edge", "--listen", rig.edgeAddr, "--domain", "localhost", "--token", token,
		"--ping-interval", (cfg.PongTimeout / 5).String(), "--pong-timeout", cfg.PongTimeout.String()); err != nil {
		return nil, err
	}
	if err := rig.waitOK(ctx, "http://"+rig.edgeAddr+"/healthz", ""); err != nil {
		rig.stop()
		return nil, fmt.Errorf("the edge did not start: %w\n%s", err, rig.output())
	}

	if err := rig.startToxiproxy(ctx); err != nil {
		rig.stop()
		return nil, err
	}
	// The agents run without the inspector, as startSluiceTo's do.
	agentArgs := func(name, edge string) []string {
		return append([]string{"http", strconv.Itoa(up.port), "--edge", "http://" + edge,
			"--token", token, "--name", name, "--quiet", "--protocol", proto}, inspectOff...)
	}
	if rig.agent, err = start("sluice http (faulty)", agentArgs("faulty", rig.agentProxy.Listen)...); err != nil {
		rig.stop()
		return nil, err
	}
	if rig.steady, err = start("sluice http (steady)", agentArgs("steady", rig.edgeAddr)...); err != nil {
		rig.stop()
		return nil, err
	}
	for _, name := range []string{"faulty", "steady"} {
		if err := rig.waitOK(ctx, "http://"+rig.edgeAddr+"/data?n=1", rig.host(name)); err != nil {
			rig.stop()
			return nil, fmt.Errorf("the %s tunnel did not come up: %w\n%s", name, err, rig.output())
		}
	}
	return rig, nil
}

// startToxiproxy starts toxiproxy's server and its two proxies to the
// edge, "agent" and "client".
func (r *faultRig) startToxiproxy(ctx context.Context) error {
	port, err := freePort()
	if err != nil {
		return err
	}
	api := "127.0.0.1:" + strconv.Itoa(port)
	c, err := startChild("toxiproxy", r.cfg.ToxiproxyBin, "-host", "127.0.0.1", "-port", strconv.Itoa(port), "-seed", strconv.FormatInt(int64(r.cfg.Seed>>1), 10))
	if err != nil {
		return err
	}
	r.toxiproxy = c
	if err := r.waitOK(ctx, "http://"+api+"/version", ""); err != nil {
		return fmt.Errorf("toxiproxy did not start: %w\n%s", err, c.out.String())
	}
	cl := toxiproxy.NewClient(api)
	if r.agentProxy, err = cl.CreateProxy("agent", "127.0.0.1:0", r.edgeAddr); err != nil {
		return fmt.Errorf("toxiproxy: %w", err)
	}
	if r.clientPrx, err = cl.CreateProxy("client", "127.0.0.1:0", r.edgeAddr); err != nil {
		return fmt.Errorf("toxiproxy: %w", err)
	}
	return nil
}

func (r *faultRig) host(tunnel string) string { return tunnel + ".localhost:" + r.edgeHost }

func (r *faultRig) alive() error {
	if r.toxiproxy != nil {
		if err := r.toxiproxy.alive(); err != nil {
			return err
		}
	}
	for _, c := range r.children {
		if err := c.alive(); err != nil {
			return err
		}
	}
	return nil
}

func (r *faultRig) output() string {
	var b strings.Builder
	for _, c := range r.children {
		if out := c.out.String(); out != "" {
			fmt.Fprintf(&b, "--- %s:\n%s\n", c.name, strings.TrimRight(out, "\n"))
		}
	}
	return b.String()
}

func (r *faultRig) stop() error {
	var errs []error
	if r.toxiproxy != nil {
		// toxiproxy exits 0 on SIGTERM, but without closing its
		// connections first: the agent behind it may see an abrupt end.
		if err := r.toxiproxy.stop(); err != nil {
			errs = append(errs, err)
		}
	}
	for i := len(r.children) - 1; i >= 0; i-- {
		if err := r.children[i].stop(); err != nil {
			errs = append(errs, err)
		}
	}
	// The toxiproxy client uses http.DefaultClient.
	http.DefaultTransport.(*http.Transport).CloseIdleConnections()
	return errors.Join(errs...)
}

// waitOK polls url until it answers 200, for up to faultsCeiling.
func (r *faultRig) waitOK(ctx context.Context, url, host string) error {
	_, err := r.pollOK(ctx, url, host)
	return err
}

// pollOK polls url every 10 ms until it answers 200 with a body, and
// returns how long that took.
func (r *faultRig) pollOK(ctx context.Context, url, host string) (time.Duration, error) {
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	defer hc.CloseIdleConnections()
	start := time.Now()
	var last string
	for {
		if err := r.alive(); err != nil {
			return 0, err
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return 0, err
		}
		req.Host = host
		resp, err := hc.Do(req)
		if err == nil {
			body, rerr := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && rerr == nil {
				return time.Since(start), nil
			}
			last = fmt.Sprintf("%s: %s", resp.Status, bytes.TrimSpace(body))
		} else {
			last = err.Error()
		}
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		if time.Since(start) > faultsCeiling {
			return 0, fmt.Errorf("GET %s (Host %s) still failing after %v: %s", url, host, faultsCeiling, last)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// counts reads a child's goroutines (from its pprof endpoint) and open
// descriptors.
func (r *faultRig) counts(ctx context.Context, c *child) (Counts, error) {
	fds := openFiles(c.cmd.Process.Pid)
	if fds < 0 {
		return Counts{}, fmt.Errorf("%s: cannot count descriptors", c.name)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+r.pprof[c]+"/debug/pprof/goroutine?debug=1", nil)
	if err != nil {
		return Counts{}, err
	}
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	defer hc.CloseIdleConnections()
	resp, err := hc.Do(req)
	if err != nil {
		return Counts{}, fmt.Errorf("%s: goroutines: %w", c.name, err)
	}
	defer resp.Body.Close()
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil {
		return Counts{}, fmt.Errorf("%s: goroutines: %w", c.name, err)
	}
	// "goroutine profile: total 23"
	n, err := strconv.Atoi(strings.TrimSpace(line[strings.LastIndexByte(line, ' ')+1:]))
	if err != nil {
		return Counts{}, fmt.Errorf("%s: goroutines: %q", c.name, line)
	}
	return Counts{Goroutines: n, FDs: fds}, nil
}

// settleBaseline takes the counts of every child once they are stable:
// the same twice in a row, a second apart (idle connections closed).
func (r *faultRig) settleBaseline(ctx context.Context) error {
	start := time.Now()
	prev := map[*child]Counts{}
	for {
		cur := map[*child]Counts{}
		for _, c := range r.children {
			n, err := r.counts(ctx, c)
			if err != nil {
				return err
			}
			cur[c] = n
		}
		same := len(prev) == len(cur)
		for c, n := range cur {
			same = same && prev[c] == n
		}
		if same {
			r.base = cur
			return nil
		}
		if time.Since(start) > faultsCeiling {
			return fmt.Errorf("the processes' counts did not settle: %v then %v", prev, cur)
		}
		prev = cur
		select {
		case <-time.After(time.Second):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// settle waits until every child is back to its baseline counts (with a
// little slack) and the edge has no stream open, and returns how long it
// took, or a description of what stayed.
func (r *faultRig) settle(ctx context.Context) (time.Duration, error) {
	start := time.Now()
	for {
		var over []string
		for _, c := range r.children {
			n, err := r.counts(ctx, c)
			if err != nil {
				return 0, err
			}
			b := r.base[c]
			if n.Goroutines > b.Goroutines+goroutineSlack || n.FDs > b.FDs+fdSlack {
				over = append(over, fmt.Sprintf("%s has %d goroutines and %d fds (before the faults: %d and %d)", c.name, n.Goroutines, n.FDs, b.Goroutines, b.FDs))
			}
		}
		open, err := r.metric(ctx, "sluice_open_streams")
		if err != nil {
			return 0, err
		}
		if open != 0 {
			over = append(over, fmt.Sprintf("the edge has %d streams open", open))
		}
		if len(over) == 0 {
			return time.Since(start), nil
		}
		if time.Since(start) > faultsCeiling {
			return 0, fmt.Errorf("leak: after %v, %s", faultsCeiling, strings.Join(over, "; "))
		}
		select {
		case <-time.After(100 * time.Millisecond):
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
}

// metric reads one unlabelled (or labelled: name{...}) sample of the
// edge's /metrics.
func (r *faultRig) metric(ctx context.Context, name string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+r.edgeAddr+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	defer hc.CloseIdleConnections()
	resp, err := hc.Do(req)
	if err != nil {
		return 0, fmt.Errorf("edge metrics: %w", err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return 0, fmt.Errorf("edge metrics: %s: %q", name, v)
			}
			return int(f), nil
		}
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("edge metrics: %w", err)
	}
	return 0, nil // a counter not yet incremented
}

// toxic returns the toxiproxy toxic type and attributes of a fault,
// which is put on both directions of a link.
func (r *faultRig) toxic(fault string) (string, toxiproxy.Attributes) {
	switch fault {
	case "latency": // 40 ms ± 30 ms on every write
		return "latency", toxiproxy.Attributes{"latency": 40, "jitter": 30}
	case "bandwidth":
		return "bandwidth", toxiproxy.Attributes{"rate": r.cfg.Rate}
	case "slicer": // writes cut into pieces of 16 to 112 bytes, 20 µs apart
		return "slicer", toxiproxy.Attributes{"average_size": 64, "size_variation": 48, "delay": 20}
	case "blackhole": // nothing goes through, and nothing is closed
		return "timeout", toxiproxy.Attributes{"timeout": 0}
	default: // reset_peer: a TCP reset as soon as data comes
		return "reset_peer", toxiproxy.Attributes{"timeout": 0}
	}
}

var directions = []string{"upstream", "downstream"}

// disrupts says whether a fault breaks connections: the others only slow
// them, and every request must then complete.
func disrupts(fault string) bool { return fault == "blackhole" || fault == "reset_peer" }

// runCase injects one fault on one link while requests run, removes it,
// and checks what came of it.
func (r *faultRig) runCase(ctx context.Context, link, fault string) (res FaultResult) {
	res = FaultResult{Protocol: r.proto, Link: link, Fault: fault}
	fail := func(format string, args ...any) {
		res.Violations = append(res.Violations, fmt.Sprintf(format, args...))
	}
	proxy := r.agentProxy
	if link == "client" {
		proxy = r.clientPrx
	}
	regs0, err := r.metric(ctx, `sluice_agent_registrations_total{result="ok"}`)
	if err != nil {
		fail("%v", err)
		return res
	}
	shortUploads0 := r.up.shortUploads.Load()

	// The steady tunnel, for the whole case.
	steadyCtx, steadyStop := context.WithCancel(ctx)
	var steadyLat []time.Duration
	var steadyErrs []string
	steadyDone := make(chan struct{})
	go func() {
		defer close(steadyDone)
		for steadyCtx.Err() == nil {
			d, err := r.steadyRequest(steadyCtx)
			if steadyCtx.Err() != nil {
				return
			}
			if err != nil {
				steadyErrs = append(steadyErrs, err.Error())
			} else {
				steadyLat = append(steadyLat, d)
			}
			select {
			case <-time.After(10 * time.Millisecond):
			case <-steadyCtx.Done():
			}
		}
	}()

	kind, attrs := r.toxic(fault)
	installed := 0
	install := func() bool {
		for _, dir := range directions {
			if _, err := proxy.AddToxic(fault+"_"+dir, kind, dir, 1, attrs); err != nil {
				fail("toxiproxy: adding %s %s: %v", kind, dir, err)
				return false
			}
			installed++
		}
		return true
	}
	remove := func() {
		for _, dir := range directions[:installed] {
			if err := proxy.RemoveToxic(fault + "_" + dir); err != nil {
				fail("toxiproxy: removing %s %s: %v", kind, dir, err)
			}
		}
		installed = 0
	}
	if !disrupts(fault) {
		// The fault is on for the whole of every request.
		if install() {
			r.runRequests(ctx, link, nil, &res)
		}
		remove()
		if res.Complete != res.Requests {
			fail("%d of %d requests did not complete under a fault that only slows the link: %s", res.Requests-res.Complete, res.Requests, strings.Join(res.Errors, "; "))
		}
	} else {
		// The fault comes when every request is halfway through its body.
		gate := r.up.newGate(r.cfg.Requests)
		done := make(chan struct{})
		var reqs FaultResult
		reqCtx, reqCancel := context.WithCancel(ctx)
		defer reqCancel()
		go func() {
			defer close(done)
			r.runRequests(reqCtx, link, gate, &reqs)
		}()
		select {
		case <-gate.halfway:
		case <-done:
		case <-time.After(faultsCeiling):
			fail("the requests did not reach their middle within %v", faultsCeiling)
		}
		ok := install()
		close(gate.open)
		switch {
		case ok && link == "agent":
			// Held until the edge has dropped the agent.
			if err := r.waitMetric(ctx, "sluice_tunnels_online", 1); err != nil {
				fail("the edge did not drop the faulty agent: %v", err)
			}
		case ok && fault == "blackhole":
			// Nothing ends a blackholed client's requests but the
			// client: it gives up after a while, as people do.
			select {
			case <-time.After(clientPatience):
			case <-ctx.Done():
			}
			reqCancel()
		}
		select {
		case <-done:
		case <-time.After(faultsCeiling):
			fail("the requests did not end within %v of the fault", faultsCeiling)
			remove()
			<-done
		}
		remove()
		res.Requests, res.Complete, res.Aborted, res.Refused = reqs.Requests, reqs.Complete, reqs.Aborted, reqs.Refused
		res.BytesChecked, res.Errors = reqs.BytesChecked, reqs.Errors
		res.Violations = append(res.Violations, reqs.Violations...)
	}

	// The agent is back: the faulty tunnel serves again.
	back, err := r.pollOK(ctx, "http://"+r.edgeAddr+"/data?n=1", r.host("faulty"))
	if err != nil {
		fail("the faulty agent is not back: %v", err)
	}
	res.BackMs = durMs(back)
	steadyStop()
	<-steadyDone
	regs, err := r.metric(ctx, `sluice_agent_registrations_total{result="ok"}`)
	if err != nil {
		fail("%v", err)
	}
	res.Reconnects = regs - regs0
	if link == "client" && res.Reconnects != 0 {
		fail("the agent reconnected %d times under a fault between the client and the edge", res.Reconnects)
	}
	if n := r.up.shortUploads.Load() - shortUploads0; n != 0 {
		fail("the upstream got %d uploads cut short and ended as if complete", n)
	}
	s := stats.Summarize(steadyLat)
	res.SteadyRequests, res.SteadyP50Ms, res.SteadyMaxMs = s.N+len(steadyErrs), durMs(s.P50), durMs(s.Max)
	if len(steadyErrs) > 0 {
		fail("the steady tunnel failed %d of %d requests: %s", len(steadyErrs), res.SteadyRequests, steadyErrs[0])
	}
	settled, err := r.settle(ctx)
	if err != nil {
		fail("%v", err)
	}
	res.SettleMs = durMs(settled)
	return res
}

// waitMetric waits until an edge metric reads want.
func (r *faultRig) waitMetric(ctx context.Context, name string, want int) error {
	start := time.Now()
	for {
		got, err := r.metric(ctx, name)
		if err != nil {
			return err
		}
		if got == want {
			return nil
		}
		if time.Since(start) > faultsCeiling {
			return fmt.Errorf("%s is %d after %v, want %d", name, got, faultsCeiling, want)
		}
		select {
		case <-time.After(20 * time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// steadyRequest downloads 64 KiB from the steady tunnel and checks it.
func (r *faultRig) steadyRequest(ctx context.Context) (time.Duration, error) {
	hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: faultsCeiling}
	defer hc.CloseIdleConnections()
	seed := rand.Uint64() // not r.rng, which the case's goroutine uses
	start := time.Now()
	o := download(ctx, hc, "http://"+r.edgeAddr, r.host("steady"), 64<<10, seed, nil)
	if o.kind != outcomeComplete {
		return 0, o.err
	}
	return time.Since(start), nil
}

// runRequests runs cfg.Requests requests at once through link to the
// faulty tunnel, half downloads and half uploads of random sizes, and
// adds their outcomes to res. With a gate, each stops halfway through its
// body until the gate opens.
func (r *faultRig) runRequests(ctx context.Context, link string, gate *faultGate, res *FaultResult) {
	base := "http://" + r.edgeAddr
	if link == "client" {
		base = "http://" + r.clientPrx.Listen
	}
	hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: faultsCeiling}
	defer hc.CloseIdleConnections()
	type job struct {
		upload bool
		size   int64
		seed   uint64
	}
	jobs := make([]job, r.cfg.Requests)
	for i := range jobs {
		jobs[i] = job{upload: i%2 == 1, size: 2 + r.rng.Int64N(r.cfg.MaxSize-1), seed: r.rng.Uint64()}
	}
	outs := make([]outcome, len(jobs))
	var wg sync.WaitGroup
	for i, j := range jobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if j.upload {
				outs[i] = upload(ctx, hc, base, r.host("faulty"), j.size, j.seed, gate)
			} else {
				outs[i] = download(ctx, hc, base, r.host("faulty"), j.size, j.seed, gate)
			}
		}()
	}
	wg.Wait()
	for i, o := range outs {
		res.Requests++
		res.BytesChecked += o.checked
		what := "download"
		if jobs[i].upload {
			what = "upload"
		}
		switch o.kind {
		case outcomeComplete:
			res.Complete++
		case outcomeAborted:
			res.Aborted++
			if len(res.Errors) < 4 {
				res.Errors = append(res.Errors, fmt.Sprintf("%s of %d bytes: %v", what, jobs[i].size, o.err))
			}
		case outcomeRefused:
			res.Refused++
			if len(res.Errors) < 4 {
				res.Errors = append(res.Errors, fmt.Sprintf("%s of %d bytes: %v", what, jobs[i].size, o.err))
			}
		case outcomeViolation:
			res.Violations = append(res.Violations, fmt.Sprintf("%s of %d bytes: %v", what, jobs[i].size, o.err))
		}
	}
}

// WriteTable prints the report: a line per protocol, link and fault.
func (r *FaultsReport) WriteTable(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "sluice fault injection (toxiproxy), %s %s/%s, %d CPUs; %d requests per fault (half uploads), bodies up to %s, edge --pong-timeout %gs\n",
		r.Env.GoVersion, r.Env.OS, r.Env.Arch, r.Env.CPUs, r.Requests, byteSize(r.MaxSize), r.PongTimeout)
	for _, base := range r.Baselines {
		fmt.Fprintf(&b, "%s before the faults: steady tunnel p50 %.1f ms, max %.1f ms\n", base.Protocol, base.SteadyP50Ms, base.SteadyMaxMs)
	}
	var total int64
	for _, res := range r.Results {
		total += res.BytesChecked
	}
	fmt.Fprintf(&b, "%s checked in all\n", mib(total))
	b.WriteString("\nprotocol  link    fault        complete  aborted  refused  bytes checked  reconnects  back after  steady p50 / max\n")
	for _, res := range r.Results {
		fmt.Fprintf(&b, "%-8s  %-6s  %-11s  %8s  %7d  %7d  %13s  %10d  %10s  %s / %s ms",
			res.Protocol, res.Link, res.Fault, fmt.Sprintf("%d/%d", res.Complete, res.Requests), res.Aborted, res.Refused,
			mib(res.BytesChecked), res.Reconnects, ms(res.BackMs)+" ms", ms(res.SteadyP50Ms), ms(res.SteadyMaxMs))
		if len(res.Violations) > 0 {
			fmt.Fprintf(&b, "  FAILED: %s", strings.Join(res.Violations, "; "))
		}
		b.WriteByte('\n')
	}
	_, err := io.WriteString(w, b.String())
	return err
}
