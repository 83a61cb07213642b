package main

import (
	"context"
	"github.com/sluicehq/sluice/internal/cli"
	"io"

	"github.com/sluicehq/sluice/internal/benchmark"
	"github.com/sluicehq/sluice/internal/sseload"
)

const scaleHelp = `Usage: go run ./bench/cmd/bench scale [flags]

Holds many concurrent Server-Sent Events streams (10,000 by default) through
one tunnel, for each protocol in turn, and reports how long they took to
connect, the delivery delay of an event broadcast to all of them once they
were connected, and the edge's and the agent's resident memory per held
stream. The SSE upstream and the clients are child processes of this
binary ("bench sseload upstream|clients"), the edge and the agent of the
sluice binary. Every stream must connect, stay connected and receive the
broadcast, and the upstream's streams must end when the clients leave; a
failure ends with exit status 1. The default test suite runs the same with
300 streams (e2e/scale_test.go).

  go run ./bench/cmd/bench scale                 10,000 streams, v1 then v2
  go run ./bench/cmd/bench scale --streams 2000 --protocols v2

Progress goes to stderr, the table (or JSON) to stdout.
`

func runScale(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := cli.NewFlagSet("scale", scaleHelp, stderr)
	streams := fs.Int("streams", 10000, "concurrent SSE streams held through the tunnel")
	protocols := fs.String("protocols", "v1,v2", "protocols to run, comma-separated: v1, v2")
	concurrency := fs.Int("concurrency", 200, "connection attempts in progress at once")
	timeout := fs.Duration("timeout", 0, "ceiling of each wait (connecting, the broadcast, the clients leaving) (default 5m)")
	sluiceBin := fs.String("sluice", "", "sluice binary run as edge and agent (default: built from this module with go build)")
	jsonOut := fs.Bool("json", false, "print one JSON object instead of the table")
	quiet := fs.Bool("quiet", false, "print no progress on stderr")
	pos, err := cli.Parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return cli.Usagef("scale: unexpected argument %q", pos[0])
	}
	if *streams <= 0 || *concurrency <= 0 || *timeout < 0 {
		return cli.Usagef("scale: --streams and --concurrency must be positive, --timeout not negative")
	}
	cfg := benchmark.ScaleConfig{Streams: *streams, Concurrency: *concurrency, Timeout: *timeout}
	if cfg.Protocols, err = parseProtocols("scale", *protocols); err != nil {
		return err
	}
	if cfg.LoadCmd, err = self("sseload"); err != nil {
		return err
	}
	bin, cleanup, err := sluiceBinary(ctx, *sluiceBin, stderr)
	if err != nil {
		return err
	}
	defer cleanup()
	cfg.SluiceBin = bin
	if !*quiet {
		cfg.Progress = stderr
	}

	rep, runErr := benchmark.Scale(ctx, cfg)
	if rep == nil {
		return runErr
	}
	return printReport(ctx, rep, runErr, *jsonOut, *quiet, stdout, stderr)
}

// runSSELoad is a load process of the scale run: "bench sseload MODE".
func runSSELoad(args []string) error { return sseload.Main(args) }
