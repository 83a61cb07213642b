package main

import (
	"context"
	"io"

	"github.com/sluicehq/sluice/internal/benchmark"
	"github.com/sluicehq/sluice/internal/cli"
)

const budgetHelp = `Usage: go run ./bench/cmd/bench budget [flags]

Measures the edge's buffer budget (sluice edge --max-buffer, default 256 MiB)
under the issue's attack: 1,000 clients (from 127.0.1.2 to 127.0.1.5, 250
each, within the default --max-streams-per-ip) start a 50 MB download
through a v2 tunnel and never read it. The edge runs with its default flags.
The run fails (exit status 1) if the edge's resident memory grows by more
than the budget plus 64 MiB, or if a client that reads is not served.

Progress goes to stderr, the table (or JSON) to stdout.
`

func runBudget(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	sc := newScenario("budget", budgetHelp, stderr)
	fs := sc.fs
	clients := fs.Int("clients", 1000, "clients that never read")
	size := fs.Int64("size", 50e6, "bytes each client asks for")
	if err := sc.parse(args); err != nil {
		return err
	}
	if *clients <= 0 || *clients > 250*250 || *size <= 0 {
		return cli.Usagef("budget: --clients and --size must be positive")
	}
	return sc.run(ctx, stdout, stderr, func(bin string, progress io.Writer) (report, error) {
		rep, err := benchmark.Budget(ctx, benchmark.BudgetConfig{SluiceBin: bin, Clients: *clients, Size: *size, Progress: progress})
		if rep == nil {
			return nil, err
		}
		return rep, err
	})
}
