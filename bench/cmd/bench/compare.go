package main

import (
	"context"
	"flag"
	"github.com/sluicehq/sluice/internal/cli"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"

	"github.com/sluicehq/sluice/internal/benchmark"
)

const compareHelp = `Usage: go run ./bench/cmd/bench [flags]

Measures sluice on loopback against the upstream it fronts ("direct") and
against nginx as a streaming reverse proxy, in one run: download and upload
throughput, small requests per second with latency, Server-Sent Events
delivery delay with one and with many streams (at --sse-interval, which
overloads two cores, and at --sse-paced-interval, which they carry), memory
per held stream, and the CPU time of the target's processes per GiB
downloaded and uploaded and per small request (from /proc/PID/stat), with
memory and CPU split between the edge and the agent.
The upstream is a Go server inside this process; sluice runs as an edge and
an agent, two child processes of the sluice binary, once with protocol v1
and once with v2; nginx, if found, runs as a child process on a temporary
configuration. "relays" is two bare TCP relays in a chain (child processes
of this binary, "bench relay LISTEN TARGET"): what any tunnel with an
edge process and an agent process costs at least on this machine, since
every byte crosses three connections instead of one. "sluice-tcp" is
sluice's edge and agent as a TCP tunnel over v2 ("sluice tcp"): its
multiplexing with no HTTP at either end, the floor of the HTTP tunnels'
cost per request over the same connection. frp's TCP mode
("frp-tcp": frps and frpc, --frp DIR or $SLUICE_BENCH_FRP) and chisel
(--chisel DIR or $SLUICE_BENCH_CHISEL) join the run as TCP tunnels to the
upstream when their binaries are given; they are never fetched.
"sluice-v2-base" is sluice-v2 run from an earlier sluice binary (--base
BIN): the figures a change started from, in the same run as the change's,
paired with the relays alike, where two separate runs would meet two
different machines (a shared machine's speed moves by a third within an
hour). Every
figure is checked (byte counts, event counts) and a failure ends with exit
status 1.

  go run ./bench/cmd/bench             the full run, a few minutes
  go run ./bench/cmd/bench --quick     a smoke run of a few seconds per target
  go run ./bench/cmd/bench --json      one JSON object with every number
  go run ./bench/cmd/bench --rounds 3  each figure the median of three rounds, the targets in turn
  go run ./bench/cmd/bench --base /tmp/sluice-before --targets direct,relays,v2,sluice-v2-base
                                       a change against the binary before it
  go run ./bench/cmd/bench scale       10,000 SSE streams per protocol (scale --help)
  go run ./bench/cmd/bench hol         head-of-line blocking beside a stalled download (hol --help)
  go run ./bench/cmd/bench faults      toxiproxy faults on the agent's and the client's link (faults --help)
  go run ./bench/cmd/bench grpc        gRPC unary calls/s and streaming rate, direct vs v1 and v2 (grpc --help)
  go run ./bench/cmd/bench tcp         TCP tunnels: direct, v1, v2, frp and chisel if given (tcp --help)
  go run ./bench/cmd/bench inspect     the inspector's cost, on vs off (inspect --help)
  bash bench/run.sh                    installs nginx if missing, builds and runs this

Progress goes to stderr, the table (or JSON) to stdout.
`

// runCompare is the default run: every target measured in turn.
func runCompare(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	def := benchmark.DefaultConfig()
	fs := cli.NewFlagSet("bench", compareHelp, stderr)
	size := fs.String("size", "1GiB", "bytes of the download and of the upload (suffixes KiB, MiB, GiB, KB, MB, GB)")
	clients := fs.Int("clients", def.Clients, "concurrent keep-alive clients of the small-request run")
	duration := fs.Duration("duration", def.Duration, "length of the small-request run")
	sseStreams := fs.Int("sse-streams", def.SSEStreams, "concurrent streams of the many-stream SSE run")
	sseDuration := fs.Duration("sse-duration", def.SSEDuration, "how long events are published in each SSE run")
	sseInterval := fs.Duration("sse-interval", def.SSEInterval, "time between two events of every stream")
	ssePacedInterval := fs.Duration("sse-paced-interval", def.SSEPacedInterval, "time between two events of every stream in the paced many-stream SSE run (0: no such run)")
	ssePacedDuration := fs.Duration("sse-paced-duration", def.SSEPacedDuration, "how long events are published in the paced many-stream SSE run")
	memStreams := fs.Int("mem-streams", def.MemStreams, "idle SSE streams held for the memory measurement")
	settle := fs.Duration("settle", def.MemSettle, "how long the idle streams are held before memory is read")
	targets := fs.String("targets", strings.Join(def.Targets, ","), "targets to measure, comma-separated: "+strings.Join(benchmark.TargetNames, ", ")+" (sluice: v1 and v2)")
	nginx := fs.String("nginx", "auto", `nginx binary: "auto" looks in PATH and /usr/sbin, "off" skips nginx`)
	frp := fs.String("frp", os.Getenv("SLUICE_BENCH_FRP"), "directory holding frps and frpc, for the frp-tcp target (default $SLUICE_BENCH_FRP; none: skipped)")
	chisel := fs.String("chisel", os.Getenv("SLUICE_BENCH_CHISEL"), "directory holding chisel, for the chisel target (default $SLUICE_BENCH_CHISEL; none: skipped)")
	sluiceBin := fs.String("sluice", "", "sluice binary run as edge and agent (default: built from this module with go build)")
	base := fs.String("base", "", "an earlier sluice binary, for the sluice-v2-base target: the baseline of a change (none: skipped)")
	rounds := fs.Int("rounds", 1, "measure every target this many times, the targets in turn in each round, and report each figure's median (a busy neighbour slowing the machine for a while then falls on every target alike)")
	paired := fs.Bool("paired", true, "measure each tunnel's small requests again at the same time as the relays' (when the relays are a target), and report the ratio of the two")
	quick := fs.Bool("quick", false, "a smoke run: 32 MiB, 8 clients, 100 streams, 1 s runs, paced SSE every 250 ms (flags given override)")
	jsonOut := fs.Bool("json", false, "print one JSON object instead of the table")
	quiet := fs.Bool("quiet", false, "print no progress on stderr")
	pos, err := cli.Parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return cli.Usagef("unexpected argument %q", pos[0])
	}

	cfg := def
	if *quick {
		cfg = benchmark.QuickConfig()
	}
	var flagErr error
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "size":
			n, err := cli.ParseSize(*size)
			if err != nil {
				flagErr = cli.Usagef("--size: %v", err)
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
		case "sse-paced-interval":
			cfg.SSEPacedInterval = *ssePacedInterval
		case "sse-paced-duration":
			cfg.SSEPacedDuration = *ssePacedDuration
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
		case "sluice":
			cfg.Targets = append(cfg.Targets, "sluice-v1", "sluice-v2")
		case "v1", "v2":
			cfg.Targets = append(cfg.Targets, "sluice-"+t)
		case "frp":
			cfg.Targets = append(cfg.Targets, "frp-tcp")
		default:
			if !slices.Contains(benchmark.TargetNames, t) {
				return cli.Usagef("--targets: unknown target %q (want %s, or sluice for v1 and v2)", t, strings.Join(benchmark.TargetNames, ", "))
			}
			cfg.Targets = append(cfg.Targets, t)
		}
	}
	if *rounds < 1 {
		return cli.Usagef("--rounds must be at least 1")
	}
	cfg.Rounds = *rounds
	cfg.NoPaired = !*paired
	cfg.FrpDir, cfg.ChiselDir, cfg.BaseBin = *frp, *chisel, *base
	has := func(name string) bool { return slices.Contains(cfg.Targets, name) }
	if *base != "" {
		if !has("sluice-v2-base") {
			return cli.Usagef("--base is measured as the target sluice-v2-base: add it to --targets")
		}
		if _, err := os.Stat(*base); err != nil {
			return cli.Usagef("--base: %v", err)
		}
	}
	if slices.ContainsFunc(benchmark.SluiceTargets, has) {
		bin, cleanup, err := sluiceBinary(ctx, *sluiceBin, stderr)
		if err != nil {
			return err
		}
		defer cleanup()
		cfg.SluiceBin = bin
	}
	if has("relays") {
		if cfg.RelayCmd, err = self("relay"); err != nil {
			return err
		}
	}
	switch *nginx {
	case "off", "":
		cfg.Targets = slices.DeleteFunc(cfg.Targets, func(t string) bool { return t == "nginx" })
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
	return printReport(ctx, rep, runErr, *jsonOut, *quiet, stdout, stderr)
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
