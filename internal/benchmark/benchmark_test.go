package benchmark

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"math"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestSmoke runs the whole benchmark with tiny sizes against direct, the
// relays and sluice (not nginx, which CI does not have): the sluice binary
// is built from ../../cmd/sluice and run as edge and agent child
// processes, the bench command from ../../bench/cmd/bench as the relays,
// as the bench command runs them. Then the gRPC run, as small.
func TestSmoke(t *testing.T) {
	bin := buildCmd(t, "sluice", "../../cmd/sluice")
	benchBin := buildCmd(t, "bench", "../../bench/cmd/bench")
	cfg := Config{
		Size:        3<<20 + 12345, // not a multiple of any buffer
		Clients:     4,
		Duration:    300 * time.Millisecond,
		SSEStreams:  20,
		SSEDuration: 300 * time.Millisecond,
		SSEInterval: 20 * time.Millisecond,
		// 20 streams × 10 events/s.
		SSEPacedInterval: 100 * time.Millisecond,
		SSEPacedDuration: 300 * time.Millisecond,
		MemStreams:       50,
		MemSettle:        100 * time.Millisecond,
		Targets:          []string{"direct", "relays", "sluice-v2"},
		SluiceBin:        bin,
		RelayCmd:         []string{benchBin, "relay"},
	}
	var progress bytes.Buffer
	cfg.Progress = &progress
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rep, err := Run(ctx, cfg)
	if err != nil {
		t.Fatalf("%v\nprogress:\n%s", err, progress.String())
	}
	if len(rep.Targets) != 3 || rep.Targets[0].Name != "direct" || rep.Targets[1].Name != "relays" || rep.Targets[2].Name != "sluice-v2" {
		t.Fatalf("targets: %+v", rep.Targets)
	}
	for _, r := range rep.Targets {
		if r.Error != "" {
			t.Errorf("%s: %s", r.Name, r.Error)
			continue
		}
		for what, tr := range map[string]*Transfer{"download": r.Download, "upload": r.Upload} {
			if tr == nil || tr.Bytes != cfg.Size || !(tr.MBps > 0) || !(tr.Seconds > 0) {
				t.Errorf("%s %s: %+v", r.Name, what, tr)
			}
		}
		if s := r.Small; s == nil || s.Requests <= 0 || s.AllRequests < s.Requests || !(s.ReqPerSec > 0) || !(s.P50Ms > 0) || s.P99Ms < s.P50Ms || s.Clients != cfg.Clients {
			t.Errorf("%s small: %+v", r.Name, s)
		}
		for _, c := range []struct {
			got      *SSEResult
			streams  int
			interval time.Duration
		}{{r.SSEOne, 1, cfg.SSEInterval}, {r.SSEMany, cfg.SSEStreams, cfg.SSEInterval}, {r.SSEPaced, cfg.SSEStreams, cfg.SSEPacedInterval}} {
			s := c.got
			if s == nil || s.Streams != c.streams || s.IntervalMs != durMs(c.interval) || s.Rounds <= 0 || s.Events != s.Rounds*int64(c.streams) ||
				!(s.P50Ms > 0) || s.P99Ms < s.P50Ms || s.MaxMs < s.P99Ms {
				t.Errorf("%s SSE %d streams every %v: %+v", r.Name, c.streams, c.interval, s)
			}
		}
	}
	if m, c := rep.Targets[0].Memory, rep.Targets[0].CPU; m != nil || c != nil {
		t.Errorf("direct memory %+v, CPU %+v; want none", m, c)
	}
	for _, r := range rep.Targets[1:] {
		if m := r.Memory; m == nil || m.Processes != 2 || m.Streams != cfg.MemStreams || m.BeforeKB <= 0 || !(m.PerStreamKB > 0) ||
			!splitOK(&m.ByRole, false) || m.ByRole.Total != m.PerStreamKB {
			t.Errorf("%s memory: %+v", r.Name, m)
		}
		// A few MiB move in less than a 10 ms tick of one process's CPU
		// time: the bulk figures may be 0, the small requests' not.
		if c := r.CPU; c == nil || !splitOK(c.DownloadSPerGiB, true) || !splitOK(c.UploadSPerGiB, true) || !splitOK(c.SmallUsPerReq, false) {
			t.Errorf("%s CPU: %+v", r.Name, c)
		}
	}

	var table strings.Builder
	if err := rep.WriteTable(&table); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"download MB/s", "sluice", "×)", "SSE delay p99 ms, 20 streams × 50/s", "SSE delay p99 ms, 20 streams × 10/s",
		"CPU µs per small request, total", "CPU µs per small request, edge", "CPU µs per small request, agent",
		"CPU s per GiB downloaded, total", "CPU s per GiB uploaded, agent",
		"memory KB per idle stream (50), total", "memory KB per idle stream (50), edge", "n/a"} {
		if !strings.Contains(table.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, table.String())
		}
	}
	if _, err := json.Marshal(rep); err != nil {
		t.Fatal(err)
	}
	if testing.Verbose() {
		t.Logf("\n%s", table.String())
	}

	t.Run("grpc", func(t *testing.T) { grpcSmoke(t, bin, []string{"v1", "v2"}) })
	t.Run("tcp", func(t *testing.T) { tcpSmoke(t, bin) })
}

// splitOK reports whether s has the edge's and the agent's shares and a
// total that is their sum, all positive (or, with zero, not negative).
func splitOK(s *Split, zero bool) bool {
	if s == nil || s.Edge == nil || s.Agent == nil || math.Abs(*s.Edge+*s.Agent-s.Total) > 1e-9*math.Abs(s.Total) {
		return false
	}
	if zero {
		return *s.Edge >= 0 && *s.Agent >= 0
	}
	return *s.Edge > 0 && *s.Agent > 0
}

// buildCmd builds the main package at pkg into a temporary directory.
func buildCmd(t *testing.T, name, pkg string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), name)
	build := exec.Command("go", "build", "-o", bin, pkg)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building %s: %v\n%s", name, err, out)
	}
	return bin
}

// A target that is not there fails the run with its error, and the other
// targets are still measured.
func TestFailingTargetIsReported(t *testing.T) {
	cfg := Config{
		Size: 1 << 20, Clients: 2, Duration: 100 * time.Millisecond,
		SSEStreams: 2, SSEDuration: 100 * time.Millisecond, SSEInterval: 20 * time.Millisecond,
		MemStreams: 2, Targets: []string{"sluice-v1", "direct"},
		SluiceBin: filepath.Join(t.TempDir(), "no-such-sluice"),
	}
	rep, err := Run(context.Background(), cfg)
	if err == nil || !strings.Contains(err.Error(), "sluice") {
		t.Fatalf("err = %v, want the sluice target's failure", err)
	}
	if len(rep.Targets) != 2 || rep.Targets[0].Error == "" || rep.Targets[1].Error != "" || rep.Targets[1].Download == nil {
		t.Fatalf("targets: %+v", rep.Targets)
	}
}

func TestPatternReader(t *testing.T) {
	data := []byte("0123456789")
	r := &patternReader{data: data, left: 25}
	got, err := io.ReadAll(io.LimitReader(r, 100))
	if err != nil || string(got) != "0123456789012345678901234" {
		t.Fatalf("%q, %v", got, err)
	}
}

func TestConfigValidate(t *testing.T) {
	c := QuickConfig()
	c.Targets = []string{"direct", "caddy"}
	if err := c.validate(); err == nil {
		t.Error("unknown target accepted")
	}
	for _, name := range SluiceTargets {
		c.Targets = []string{name}
		if err := c.validate(); err == nil {
			t.Errorf("%s without a binary accepted", name)
		}
	}
	c.Targets = []string{"direct", "direct"}
	if err := c.validate(); err == nil {
		t.Error("a target given twice accepted")
	}
	c.Targets = []string{"relays"}
	if err := c.validate(); err == nil {
		t.Error("relays without a relay command accepted")
	}
	c.Targets = []string{"direct"}
	c.SSEPacedInterval = -time.Second
	if err := c.validate(); err == nil {
		t.Error("a negative paced SSE interval accepted")
	}
	c.SSEPacedInterval, c.SSEPacedDuration = time.Second, 0
	if err := c.validate(); err == nil {
		t.Error("a paced SSE run of no duration accepted")
	}
	c.SSEPacedInterval = 0 // no paced run
	if err := c.validate(); err != nil {
		t.Errorf("no paced SSE run: %v", err)
	}
}

// Without an nginx binary, or frp's or chisel's, their targets are
// skipped with a note, not failed.
func TestSkippedWhenAbsent(t *testing.T) {
	cfg := QuickConfig()
	cfg.Targets = []string{"nginx", "frp-tcp", "chisel"}
	rep, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Targets) != 0 || !strings.Contains(rep.Skipped["nginx"], "no nginx binary") ||
		!strings.Contains(rep.Skipped["frp-tcp"], "--frp DIR") || !strings.Contains(rep.Skipped["chisel"], "--chisel DIR") {
		t.Fatalf("report: %+v", rep)
	}
	var table strings.Builder
	rep.WriteTable(&table)
	for _, want := range []string{"nginx: skipped", "frp-tcp: skipped", "chisel: skipped"} {
		if !strings.Contains(table.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, table.String())
		}
	}
}

func TestScaleConfig(t *testing.T) {
	ok := ScaleConfig{SluiceBin: "sluice", LoadCmd: []string{"sseload"}}
	if err := ok.defaults(); err != nil || ok.Streams != 10000 || len(ok.Protocols) != 2 || ok.Timeout <= 0 || ok.Concurrency <= 0 {
		t.Fatalf("defaults: %+v, %v", ok, err)
	}
	for name, c := range map[string]ScaleConfig{
		"no sluice":        {LoadCmd: []string{"sseload"}},
		"no load command":  {SluiceBin: "sluice"},
		"unknown protocol": {SluiceBin: "sluice", LoadCmd: []string{"sseload"}, Protocols: []string{"v3"}},
		"negative streams": {SluiceBin: "sluice", LoadCmd: []string{"sseload"}, Streams: -1},
	} {
		if err := c.defaults(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// grpcSmoke runs the gRPC benchmark for a fraction of a second per phase,
// directly and through sluice (bin) with each protocol: every call must
// succeed and every figure be positive; no figure is compared with
// another.
func grpcSmoke(t *testing.T, bin string, protocols []string) {
	cfg := GRPCConfig{
		Protocols:   protocols,
		SluiceBin:   bin,
		Callers:     4,
		Streams:     2,
		MessageSize: 3000,
		Batch:       50,
		Duration:    300 * time.Millisecond,
	}
	var progress bytes.Buffer
	cfg.Progress = &progress
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rep, err := GRPC(ctx, cfg)
	if err != nil {
		t.Fatalf("%v\nprogress:\n%s", err, progress.String())
	}
	want := append([]string{"direct"}, prefixAll("sluice-", cfg.Protocols)...)
	if len(rep.Targets) != len(want) {
		t.Fatalf("targets: %+v, want %v", rep.Targets, want)
	}
	for i, r := range rep.Targets {
		if r.Name != want[i] || r.Error != "" {
			t.Errorf("target %d: %s, error %q; want %s", i, r.Name, r.Error, want[i])
			continue
		}
		if u := r.Unary; u == nil || u.Calls <= 0 || u.Callers != cfg.Callers || !(u.CallsPerSec > 0) || !(u.P50Ms > 0) || u.P99Ms < u.P50Ms {
			t.Errorf("%s unary: %+v", r.Name, u)
		}
		if s := r.Stream; s == nil || s.Calls <= 0 || s.Messages != s.Calls*int64(cfg.Batch) || s.MessageSize != cfg.MessageSize ||
			!(s.MsgsPerSec > 0) || !(s.MBps > 0) {
			t.Errorf("%s stream: %+v", r.Name, s)
		}
	}
	var table strings.Builder
	if err := rep.WriteTable(&table); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"unary calls/s (4 callers)", "streamed messages/s (3000 B each)", "direct"} {
		if !strings.Contains(table.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, table.String())
		}
	}
	if _, err := json.Marshal(rep); err != nil {
		t.Fatal(err)
	}
	if testing.Verbose() {
		t.Logf("\n%s\nprogress:\n%s", table.String(), progress.String())
	}
}

// The tunnels under measure run without the inspector (on by default in
// sluice http), unless the caller asks for it (the inspect scenario).
func TestSluiceWithoutInspector(t *testing.T) {
	bin := buildCmd(t, "sluice", "../../cmd/sluice")
	up, err := startUpstream()
	if err != nil {
		t.Fatal(err)
	}
	defer up.close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, tc := range []struct {
		name  string
		args  []string
		shown bool
	}{{"default", nil, false}, {"asked", []string{"--inspect", "127.0.0.1:0"}, true}} {
		t.Run(tc.name, func(t *testing.T) {
			tgt, err := startSluiceTo(ctx, bin, strconv.Itoa(up.port), "v2", 64, 64, "/small", tc.args...)
			if err != nil {
				t.Fatal(err)
			}
			agent := tgt.children[len(tgt.children)-1]
			args := strings.Join(agent.cmd.Args, " ")
			out := tgt.output()
			if err := tgt.stop(); err != nil {
				t.Fatal(err)
			}
			if strings.Count(args, "--inspect ") != 1 || strings.Contains(args, "--inspect off") == tc.shown ||
				strings.Contains(out, "Inspector  http://") != tc.shown {
				t.Fatalf("agent %q, output:\n%s", args, out)
			}
		})
	}
}
