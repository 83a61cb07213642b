// Command bench measures sluice on loopback: against the upstream it
// fronts, two bare TCP relays and nginx (the default run), with many
// concurrent streams (scale), beside a stalled stream (hol), under
// injected network faults (faults), with gRPC calls (grpc), and as TCP
// tunnels beside frp and chisel (tcp). It is not part of the sluice binary, so that
// sluice does not link the harness; bash bench/run.sh builds and runs it.
//
//	go run ./bench/cmd/bench [flags]          the comparative run
//	go run ./bench/cmd/bench scale [flags]    10,000 SSE streams per protocol
//	go run ./bench/cmd/bench hol [flags]      head-of-line blocking beside a stalled download
//	go run ./bench/cmd/bench faults [flags]   toxiproxy faults on the agent's and the client's link
//	go run ./bench/cmd/bench budget [flags]   1,000 clients that never read: the edge's memory within --max-buffer
//	go run ./bench/cmd/bench limits [flags]   200,000 random names (the edge's heap), 1,030 slow uploads from one address
//	go run ./bench/cmd/bench grpc [flags]     gRPC unary calls/s and server-streaming rate, direct and through v1 and v2
//	go run ./bench/cmd/bench tcp [flags]      TCP tunnels: direct, sluice tcp v1 and v2, frp and chisel if given
//	go run ./bench/cmd/bench inspect [flags]  the inspector's cost: download MB/s and small requests/s, on vs off
//	go run ./bench/cmd/bench cluster [flags]  several edges: a forwarded request vs a local one, the routing table's rates
//	bench relay LISTEN TARGET                 one bare TCP relay (a child of the run)
//	bench sseload MODE [flags]                a load process of the scale run
//
// Run "go run ./bench/cmd/bench --help" for the flags of each.
package main

import (
	"context"
	"errors"
	"fmt"
	"github.com/sluicehq/sluice/internal/cli"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := Run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	interrupted := ctx.Err() != nil
	stop()
	os.Exit(cli.ExitCode(err, interrupted))
}

// Run runs the bench command line with args (without the program name).
// Errors have already been reported on stderr when Run returns them.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var err error
	verb, rest := "", args
	if len(args) > 0 && len(args[0]) > 0 && args[0][0] != '-' {
		verb, rest = args[0], args[1:]
	}
	switch verb {
	case "":
		err = runCompare(ctx, rest, stdout, stderr)
	case "scale":
		err = runScale(ctx, rest, stdout, stderr)
	case "hol":
		err = runHOL(ctx, rest, stdout, stderr)
	case "faults":
		err = runFaults(ctx, rest, stdout, stderr)
	case "budget":
		err = runBudget(ctx, rest, stdout, stderr)
	case "limits":
		err = runLimits(ctx, rest, stdout, stderr)
	case "grpc":
		err = runGRPC(ctx, rest, stdout, stderr)
	case "tcp":
		err = runTCP(ctx, rest, stdout, stderr)
	case "inspect":
		err = runInspect(ctx, rest, stdout, stderr)
	case "cluster":
		err = runCluster(ctx, rest, stdout, stderr)
	case "relay":
		err = runRelay(ctx, rest, stderr)
	case "sseload":
		err = runSSELoad(rest)
	default:
		err = cli.Usagef("unknown command %q (want no command, scale, hol, faults, budget, limits, grpc, tcp, inspect, cluster or relay; see --help)", verb)
	}
	if err != nil && !errors.Is(err, cli.ErrHelp) {
		fmt.Fprintf(stderr, "bench: %v\n", err)
	}
	return err
}

// self returns the command that runs this binary with verb.
func self(verb string) ([]string, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("finding this binary: %w", err)
	}
	return []string{exe, verb}, nil
}

// sluiceBinary returns bin if set, or else builds cmd/sluice of this
// module into a temporary directory, which cleanup removes.
func sluiceBinary(ctx context.Context, bin string, stderr io.Writer) (path string, cleanup func(), err error) {
	if bin != "" {
		return bin, func() {}, nil
	}
	dir, err := os.MkdirTemp("", "sluice-bench-")
	if err != nil {
		return "", nil, err
	}
	path = filepath.Join(dir, "sluice")
	build := exec.CommandContext(ctx, "go", "build", "-o", path, "github.com/sluicehq/sluice/cmd/sluice")
	build.Stdout, build.Stderr = stderr, stderr
	if err := build.Run(); err != nil {
		os.RemoveAll(dir)
		return "", nil, fmt.Errorf("building sluice (or pass --sluice): %w", err)
	}
	return path, func() { os.RemoveAll(dir) }, nil
}
