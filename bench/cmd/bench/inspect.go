package main

import (
	"context"
	"io"
	"time"

	"github.com/sluicehq/sluice/internal/benchmark"
	"github.com/sluicehq/sluice/internal/cli"
)

const inspectHelp = `Usage: go run ./bench/cmd/bench inspect [flags]

Measures what the inspector costs: the same tunnel (an edge and "sluice
http", two child processes of the sluice binary) with --inspect off and
with the inspector on, in one run, each started afresh for every round and
the two modes alternating, so that a change in the machine's speed falls
on both. Per round: the download of one --size body (MB/s) and --clients
keep-alive clients' small requests for --duration (requests/s, p50, p99).
The table gives the medians per mode and their ratio; the goal is under
5 % on both. Every response is checked; a failure ends with exit status 1.

  go run ./bench/cmd/bench inspect
  go run ./bench/cmd/bench inspect --size 256MiB --duration 2s --rounds 5

Progress goes to stderr, the table (or JSON) to stdout.
`

func runInspect(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	sc := newScenario("inspect", inspectHelp, stderr)
	fs := sc.fs
	protocol := fs.String("protocol", "v2", "the tunnel's protocol: v1 or v2")
	size := cli.Size(1 << 30)
	fs.Var(&size, "size", "bytes of the download (suffixes KiB, MiB, GiB, KB, MB, GB)")
	clients := fs.Int("clients", 50, "concurrent keep-alive clients of the small-request run")
	duration := fs.Duration("duration", 5*time.Second, "length of the small-request run, per round")
	rounds := fs.Int("rounds", 3, "rounds per mode")
	if err := sc.parse(args); err != nil {
		return err
	}
	if *clients <= 0 || *duration <= 0 || *rounds <= 0 {
		return cli.Usagef("inspect: --clients, --duration and --rounds must be positive")
	}
	protos, err := parseProtocols("inspect", *protocol)
	if err != nil {
		return err
	}
	if len(protos) != 1 {
		return cli.Usagef("inspect: --protocol takes one protocol")
	}
	cfg := benchmark.InspectConfig{Protocol: protos[0], Size: int64(size), Clients: *clients, Duration: *duration, Rounds: *rounds}
	return sc.run(ctx, stdout, stderr, func(bin string, progress io.Writer) (report, error) {
		cfg.SluiceBin, cfg.Progress = bin, progress
		rep, err := benchmark.Inspect(ctx, cfg)
		if rep == nil {
			return nil, err
		}
		return rep, err
	})
}
