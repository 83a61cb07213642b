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
	fs := cli.NewFlagSet("budget", budgetHelp, stderr)
	clients := fs.Int("clients", 1000, "clients that never read")
	size := fs.Int64("size", 50e6, "bytes each client asks for")
	sluiceBin := fs.String("sluice", "", "sluice binary run as edge and agent (default: built from this module with go build)")
	jsonOut := fs.Bool("json", false, "print one JSON object instead of the table")
	quiet := fs.Bool("quiet", false, "print no progress on stderr")
	pos, err := cli.Parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return cli.Usagef("budget: unexpected argument %q", pos[0])
	}
	if *clients <= 0 || *clients > 250*250 || *size <= 0 {
		return cli.Usagef("budget: --clients and --size must be positive")
	}
	bin, cleanup, err := sluiceBinary(ctx, *sluiceBin, stderr)
	if err != nil {
		return err
	}
	defer cleanup()
	cfg := benchmark.BudgetConfig{SluiceBin: bin, Clients: *clients, Size: *size}
	if !*quiet {
		cfg.Progress = stderr
	}
	rep, runErr := benchmark.Budget(ctx, cfg)
	if rep == nil {
		return runErr
	}
	return printReport(ctx, rep, runErr, *jsonOut, *quiet, stdout, stderr)
}
