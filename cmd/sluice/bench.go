package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"

	"github.com/sluicehq/sluice/internal/benchmark"
)

const benchHelp = `Usage: sluice bench [flags]

Measures sluice on loopback against the upstream it fronts ("direct") and
against nginx as a streaming reverse proxy, in one run: download and upload
throughput, small requests per second with latency, Server-Sent Events
delivery delay with one and with many streams, and memory per held stream.
The upstream is a Go server inside this process; sluice runs as an edge and
an agent, two child processes of this binary, once with protocol v1 and once
with v2; nginx, if found, runs as a child process on a temporary
configuration. "relays" is two bare TCP relays in a chain (child processes
of this binary, "sluice bench-relay LISTEN TARGET"): what any tunnel with an
edge process and an agent process costs at least on this machine, since
every byte crosses three connections instead of one. Every figure is
checked (byte counts, event counts) and a failure ends with exit status 1.

  sluice bench                 the full run, a few minutes
  sluice bench --quick         a smoke run of a few seconds per target
  sluice bench --json          one JSON object with every number
  bash bench/run.sh            installs nginx if missing, builds and runs this

Progress goes to stderr, the table (or JSON) to stdout.
`

func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	def := benchmark.DefaultConfig()
	fs := newFlagSet("bench", benchHelp, stderr)
	size := fs.String("size", "1GiB", "bytes of the download and of the upload (suffixes KiB, MiB, GiB, KB, MB, GB)")
	clients := fs.Int("clients", def.Clients, "concurrent keep-alive clients of the small-request run")
	duration := fs.Duration("duration", def.Duration, "length of the small-request run")
	sseStreams := fs.Int("sse-streams", def.SSEStreams, "concurrent streams of the many-stream SSE run")
	sseDuration := fs.Duration("sse-duration", def.SSEDuration, "how long events are published in each SSE run")
	sseInterval := fs.Duration("sse-interval", def.SSEInterval, "time between two events of every stream")
	memStreams := fs.Int("mem-streams", def.MemStreams, "idle SSE streams held for the memory measurement")
	settle := fs.Duration("settle", def.MemSettle, "how long the idle streams are held before memory is read")
	targets := fs.String("targets", strings.Join(def.Targets, ","), "targets to measure, comma-separated: direct, relays, nginx, sluice-v1, sluice-v2 (sluice: both)")
	nginx := fs.String("nginx", "auto", `nginx binary: "auto" looks in PATH and /usr/sbin, "off" skips nginx`)
	sluiceBin := fs.String("sluice", "", "sluice binary run as edge, agent and relays (default: this one)")
	quick := fs.Bool("quick", false, "a smoke run: 32 MiB, 8 clients, 100 streams, 1 s runs (flags given override)")
	jsonOut := fs.Bool("json", false, "print one JSON object instead of the table")
	quiet := fs.Bool("quiet", false, "print no progress on stderr")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return usagef("bench: unexpected argument %q", pos[0])
	}

	cfg := def
	if *quick {
		cfg = benchmark.QuickConfig()
	}
	var flagErr error
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "size":
			n, err := parseByteSize(*size)
			if err != nil {
				flagErr = usagef("bench: --size: %v", err)
			}
			cfg.Size = n
		case "clients":
			cfg.Clients = *clients
		case "duration":
			cfg.Duration = *duration
		case "sse-streams":
			cfg.SSEStreams = *sseStreams
		case "sse-duration":
			cfg.SSEDuration = *sseDuration
		case "sse-interval":
			cfg.SSEInterval = *sseInterval
		case "mem-streams":
			cfg.MemStreams = *memStreams
		case "settle":
			cfg.MemSettle = *settle
		}
	})
	if flagErr != nil {
		return flagErr
	}
	cfg.Targets = nil
	for _, t := range strings.Split(*targets, ",") {
		switch t = strings.TrimSpace(t); t {
		case "":
		case "direct", "relays", "nginx", "sluice-v1", "sluice-v2":
			cfg.Targets = append(cfg.Targets, t)
		case "sluice":
			cfg.Targets = append(cfg.Targets, "sluice-v1", "sluice-v2")
		case "v1", "v2":
			cfg.Targets = append(cfg.Targets, "sluice-"+t)
		default:
			return usagef("bench: --targets: unknown target %q (want direct, relays, nginx, sluice-v1, sluice-v2, or sluice for both)", t)
		}
	}
	has := func(name string) bool {
		for _, t := range cfg.Targets {
			if t == name {
				return true
			}
		}
		return false
	}
	if has("sluice-v1") || has("sluice-v2") || has("relays") {
		cfg.SluiceBin = *sluiceBin
		if cfg.SluiceBin == "" {
			if cfg.SluiceBin, err = os.Executable(); err != nil {
				return fmt.Errorf("bench: finding this binary: %w", err)
			}
		}
	}
	switch *nginx {
	case "off", "":
		if has("nginx") {
			cfg.Targets = removeTarget(cfg.Targets, "nginx")
		}
	case "auto":
		cfg.NginxBin = findNginx()
	default:
		cfg.NginxBin = *nginx
	}
	if !*quiet {
		cfg.Progress = stderr
	}

	rep, runErr := benchmark.Run(ctx, cfg)
	if rep == nil {
		return runErr
	}
	if *jsonOut {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return err
		}
	} else {
		if !*quiet {
			fmt.Fprintln(stderr)
		}
		if err := rep.WriteTable(stdout); err != nil {
			return err
		}
	}
	if runErr != nil && ctx.Err() != nil {
		return nil // interrupted: exit 130 with what was measured
	}
	return runErr
}

func removeTarget(list []string, name string) []string {
	var out []string
	for _, t := range list {
		if t != name {
			out = append(out, t)
		}
	}
	return out
}

// findNginx returns the nginx in PATH or /usr/sbin, or "".
func findNginx() string {
	if p, err := exec.LookPath("nginx"); err == nil {
		return p
	}
	for _, p := range []string{"/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx"} {
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p
		}
	}
	return ""
}

// parseByteSize reads "1GiB", "64MiB", "500KB", "1e6" or "1048576".
func parseByteSize(s string) (int64, error) {
	units := []struct {
		suffix string
		mult   int64
	}{
		{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30},
		{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"B", 1},
	}
	t := strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range units {
		if strings.HasSuffix(strings.ToLower(t), strings.ToLower(u.suffix)) {
			t, mult = strings.TrimSpace(t[:len(t)-len(u.suffix)]), u.mult
			break
		}
	}
	v, err := strconv.ParseFloat(t, 64)
	if err != nil || v <= 0 || v*float64(mult) > 1<<50 {
		return 0, fmt.Errorf("%q is not a size such as 1GiB, 64MiB or 1000000", s)
	}
	return int64(v * float64(mult)), nil
}

const benchRelayHelp = `Usage: sluice bench-relay LISTEN TARGET

Forwards every TCP connection accepted on LISTEN to TARGET, bytes as they
are, until interrupted. "sluice bench" runs two in a chain as its "relays"
target: the least any two-process tunnel costs on the machine.
`

func runBenchRelay(ctx context.Context, args []string, stderr io.Writer) error {
	fs := newFlagSet("bench-relay", benchRelayHelp, stderr)
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 2 {
		return usagef("bench-relay: want LISTEN and TARGET, got %d arguments", len(pos))
	}
	return benchmark.Relay(ctx, pos[0], pos[1])
}
