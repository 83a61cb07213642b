package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/sluicehq/sluice/internal/benchmark"
	"github.com/sluicehq/sluice/internal/cli"
)

const faultsHelp = `Usage: go run ./bench/cmd/bench faults [flags]

Injects faults with toxiproxy (github.com/Shopify/toxiproxy, its server run
as a child process) between the agent and the edge and between the public
client and the edge, for each protocol in turn: latency with jitter, a
bandwidth limit, the slicer (writes cut into small random pieces), a
blackhole (nothing goes through) and reset_peer (a TCP reset). Under each,
concurrent downloads and uploads of random sizes go through a tunnel; every
one must be complete and byte-exact or visibly aborted (a failed request or
read, never a short body ended as complete); the agent must come back once
the fault is removed (the time is reported); the edge and agents must
return to their goroutine and descriptor counts; and a second tunnel on the
same edge, without faults, must serve every request meanwhile (its latency
is reported). The edge and agents are child processes of the sluice
binary, the upstream a Go server in this process. A failure ends with exit
status 1. The default test suite runs the same with 4 requests per fault
(internal/benchmark/faults_test.go).

Progress goes to stderr, the table (or JSON) to stdout.
`

func runFaults(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	sc := newScenario("faults", faultsHelp, stderr)
	fs := sc.fs
	protocols := fs.String("protocols", "v1,v2", "protocols to run, comma-separated: v1, v2")
	faults := fs.String("faults", strings.Join(benchmark.FaultNames, ","), "faults to inject, comma-separated")
	links := fs.String("links", strings.Join(benchmark.LinkNames, ","), "links to put them on, comma-separated: agent, client")
	requests := fs.Int("requests", 16, "concurrent requests under each fault, half downloads and half uploads")
	maxSize := fs.String("max-size", "1MiB", "largest body; sizes are random from 2 bytes to it")
	rate := fs.Int64("rate", 4096, "the bandwidth fault's limit in KB/s, each way")
	pongTimeout := fs.Duration("pong-timeout", 5*time.Second, "the edge's --pong-timeout, which bounds how long a blackholed agent is held")
	seed := fs.Uint64("seed", 0, "seed of the sizes and bodies (0: from the clock)")
	toxiproxyBin := fs.String("toxiproxy", "", "toxiproxy's server binary (default: built from the module github.com/Shopify/toxiproxy/v2 with go build)")
	if err := sc.parse(args); err != nil {
		return err
	}
	if *requests < 1 || *rate < 1 || *pongTimeout <= 0 {
		return cli.Usagef("faults: --requests, --rate and --pong-timeout must be positive")
	}
	cfg := benchmark.FaultsConfig{Requests: *requests, Rate: *rate, PongTimeout: *pongTimeout, Seed: *seed}
	var err error
	if cfg.MaxSize, err = cli.ParseSize(*maxSize); err != nil || cfg.MaxSize < 2 {
		return cli.Usagef("faults: --max-size: want at least 2 bytes, got %q", *maxSize)
	}
	if cfg.Seed == 0 {
		cfg.Seed = uint64(time.Now().UnixNano())
	}
	if cfg.Protocols, err = parseProtocols("faults", *protocols); err != nil {
		return err
	}
	if cfg.Faults, err = pickList("faults", "fault", *faults, benchmark.FaultNames); err != nil {
		return err
	}
	if cfg.Links, err = pickList("faults", "link", *links, benchmark.LinkNames); err != nil {
		return err
	}
	tbin, tcleanup, err := toxiproxyBinary(ctx, *toxiproxyBin, stderr)
	if err != nil {
		return err
	}
	defer tcleanup()
	cfg.ToxiproxyBin = tbin
	return sc.run(ctx, stdout, stderr, func(bin string, progress io.Writer) (report, error) {
		cfg.SluiceBin, cfg.Progress = bin, progress
		if progress != nil {
			fmt.Fprintf(progress, "faults: seed %d\n", cfg.Seed)
		}
		rep, err := benchmark.Faults(ctx, cfg)
		if rep == nil {
			return nil, err
		}
		return rep, err
	})
}

// pickList reads a comma-separated list of names from valid.
func pickList(verb, what, list string, valid []string) ([]string, error) {
	var out []string
	for _, x := range strings.Split(list, ",") {
		switch x = strings.TrimSpace(x); {
		case x == "":
		case slices.Contains(valid, x):
			out = append(out, x)
		default:
			return nil, cli.Usagef("%s: unknown %s %q (want %s)", verb, what, x, strings.Join(valid, ", "))
		}
	}
	if len(out) == 0 {
		return nil, cli.Usagef("%s: no %s given", verb, what)
	}
	return out, nil
}

// toxiproxyBinary returns bin if set, or else builds toxiproxy's server
// from the module this one requires (a tool in go.mod) into a temporary
// directory, which cleanup removes.
func toxiproxyBinary(ctx context.Context, bin string, stderr io.Writer) (path string, cleanup func(), err error) {
	if bin != "" {
		return bin, func() {}, nil
	}
	dir, err := os.MkdirTemp("", "sluice-bench-toxiproxy-")
	if err != nil {
		return "", nil, err
	}
	path = filepath.Join(dir, "toxiproxy-server")
	build := exec.CommandContext(ctx, "go", "build", "-o", path, "github.com/Shopify/toxiproxy/v2/cmd/server")
	build.Stdout, build.Stderr = stderr, stderr
	if err := build.Run(); err != nil {
		os.RemoveAll(dir)
		return "", nil, fmt.Errorf("building toxiproxy (or pass --toxiproxy): %w", err)
	}
	return path, func() { os.RemoveAll(dir) }, nil
}
