package main

import (
	"context"
	"encoding/json"
	"fmt"
	"github.com/sluicehq/sluice/internal/cli"
	"io"
	"strings"

	"github.com/sluicehq/sluice/internal/benchmark"
)

const holHelp = `Usage: go run ./bench/cmd/bench hol [flags]

Measures head-of-line blocking on one tunnel, for each protocol in turn: a
client sends a small request every 10 ms and reads an event stream (an
event every 20 ms) for one phase; then another client starts a 1 GiB
download and reads it at about 100 KB/s, so that its stream fills its
flow-control window, and the first client is measured again beside it. The
table gives the p50 and p99 of both phases: a stalled stream must not hold
up the others. The upstream is a Go server inside this process, the edge
and the agent child processes of the sluice binary. The download must be
held by flow control, every request answered and every event delivered; a
failure ends with exit status 1. The default test suite runs the same with
1 s phases and checks only that (e2e/hol_test.go).

Progress goes to stderr, the table (or JSON) to stdout.
`

func runHOL(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	sc := newScenario("hol", holHelp, stderr)
	fs := sc.fs
	protocols := fs.String("protocols", "v1,v2", "protocols to run, comma-separated: v1, v2")
	phase := fs.Duration("phase", 0, "length of each measured phase, unloaded and loaded (default 3s)")
	if err := sc.parse(args); err != nil {
		return err
	}
	if *phase < 0 {
		return cli.Usagef("hol: --phase must not be negative")
	}
	cfg := benchmark.HOLConfig{Phase: *phase}
	var err error
	if cfg.Protocols, err = parseProtocols("hol", *protocols); err != nil {
		return err
	}
	return sc.run(ctx, stdout, stderr, func(bin string, progress io.Writer) (report, error) {
		cfg.SluiceBin, cfg.Progress = bin, progress
		rep, err := benchmark.HeadOfLine(ctx, cfg)
		if rep == nil {
			return nil, err
		}
		return rep, err
	})
}

// parseProtocols reads a --protocols list of v1 and v2.
func parseProtocols(verb, list string) ([]string, error) {
	var out []string
	for _, p := range strings.Split(list, ",") {
		switch p = strings.TrimSpace(p); p {
		case "":
		case "v1", "v2":
			out = append(out, p)
		default:
			return nil, cli.Usagef("%s: --protocols: unknown protocol %q (want v1, v2)", verb, p)
		}
	}
	if len(out) == 0 {
		return nil, cli.Usagef("%s: --protocols: none given", verb)
	}
	return out, nil
}

// printReport prints rep as JSON or as its table, and returns the run's
// error, or nil if the run was interrupted (exit 130 with what was
// measured).
func printReport(ctx context.Context, rep interface{ WriteTable(io.Writer) error }, runErr error, jsonOut, quiet bool, stdout, stderr io.Writer) error {
	if jsonOut {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return err
		}
	} else {
		if !quiet {
			fmt.Fprintln(stderr)
		}
		if err := rep.WriteTable(stdout); err != nil {
			return err
		}
	}
	if runErr != nil && ctx.Err() != nil {
		return nil
	}
	return runErr
}
