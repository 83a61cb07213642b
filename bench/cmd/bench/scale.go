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
	sc := newScenario("scale", scaleHelp, stderr)
	fs := sc.fs
	streams := fs.Int("streams", 10000, "concurrent SSE streams held through the tunnel")
	protocols := fs.String("protocols", "v1,v2", "protocols to run, comma-separated: v1, v2")
	concurrency := fs.Int("concurrency", 200, "connection attempts in progress at once")
	timeout := fs.Duration("timeout", 0, "ceiling of each wait (connecting, the broadcast, the clients leaving) (default 5m)")
	if err := sc.parse(args); err != nil {
		return err
	}
	if *streams <= 0 || *concurrency <= 0 || *timeout < 0 {
		return cli.Usagef("scale: --streams and --concurrency must be positive, --timeout not negative")
	}
	cfg := benchmark.ScaleConfig{Streams: *streams, Concurrency: *concurrency, Timeout: *timeout}
	var err error
	if cfg.Protocols, err = parseProtocols("scale", *protocols); err != nil {
		return err
	}
	if cfg.LoadCmd, err = self("sseload"); err != nil {
		return err
	}
	return sc.run(ctx, stdout, stderr, func(bin string, progress io.Writer) (report, error) {
		cfg.SluiceBin, cfg.Progress = bin, progress
		rep, err := benchmark.Scale(ctx, cfg)
		if rep == nil {
			return nil, err
		}
		return rep, err
	})
}

// runSSELoad is a load process of the scale run: "bench sseload MODE".
func runSSELoad(args []string) error { return sseload.Main(args) }
