package main

import (
	"context"
	"io"

	"github.com/sluicehq/sluice/internal/benchmark"
	"github.com/sluicehq/sluice/internal/cli"
)

const limitsHelp = `Usage: go run ./bench/cmd/bench limits [flags]

Runs two of the edge's visitor limits at the sizes of issue 11's checks,
against "sluice edge" child processes:

  names    200,000 requests for random names (NAME.localhost, all 404) to an
           edge with a store (--data in a temporary directory, an admin
           token, one stored tunnel). The edge's heap in use after a forced
           GC (its --pprof /debug/pprof/heap?gc=1 MemStats) must grow by at
           most 5 MiB, with no store query per name
           (sluice_access_store_queries_total{kind="tunnel"} 0) and the set
           of stored names read at most once per 5 s.
  uploads  1,030 uploads from 127.0.0.2 through a tunnel of an edge with its
           default flags, each sending its head and a byte, then a byte every
           --interval. Those past --max-streams-per-ip (default 256) must be
           refused with 429 at once, the others stay open, and requests from
           127.0.0.3 through the same tunnel must all get 200, before and
           after the held uploads send another byte.

A size of 0 skips its scenario. The run fails (exit status 1) if a check
fails. Progress goes to stderr, the table (or JSON) to stdout.
`

func runLimits(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	sc := newScenario("limits", limitsHelp, stderr)
	fs := sc.fs
	names := fs.Int("names", 200000, "requests for random names (0: skip the names scenario)")
	workers := fs.Int("workers", 8, "concurrent clients of the names scenario")
	uploads := fs.Int("uploads", 1030, "slow uploads from one address (0: skip the uploads scenario)")
	interval := fs.Duration("interval", 5e9, "how often each held upload sends a byte")
	perIP := fs.Int("max-streams-per-ip", 0, "the edge's --max-streams-per-ip in the uploads scenario (0: its default)")
	other := fs.Int("other-requests", 20, "requests from another address in each of the two rounds")
	if err := sc.parse(args); err != nil {
		return err
	}
	if *names < 0 || *uploads < 0 || *perIP < 0 || *workers <= 0 || *other <= 0 || *interval <= 0 {
		return cli.Usagef("limits: --names, --uploads and --max-streams-per-ip must not be negative, --workers, --other-requests and --interval must be positive")
	}
	if *names == 0 && *uploads == 0 {
		return cli.Usagef("limits: --names and --uploads are both 0: nothing to run")
	}
	return sc.run(ctx, stdout, stderr, func(bin string, progress io.Writer) (report, error) {
		rep, err := benchmark.Limits(ctx, benchmark.LimitsConfig{SluiceBin: bin, Names: *names, NamesWorkers: *workers, Uploads: *uploads,
			Interval: *interval, PerIP: *perIP, OtherRequests: *other, Progress: progress})
		if rep == nil {
			return nil, err
		}
		return rep, err
	})
}
