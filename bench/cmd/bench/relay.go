package main

import (
	"context"
	"github.com/sluicehq/sluice/internal/cli"
	"io"

	"github.com/sluicehq/sluice/internal/benchmark"
)

const relayHelp = `Usage: bench relay LISTEN TARGET

Forwards every TCP connection accepted on LISTEN to TARGET, bytes as they
are, until interrupted. The default run starts two in a chain as its
"relays" target: the least any two-process tunnel costs on the machine.
`

func runRelay(ctx context.Context, args []string, stderr io.Writer) error {
	fs := cli.NewFlagSet("relay", relayHelp, stderr)
	pos, err := cli.Parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 2 {
		return cli.Usagef("relay: want LISTEN and TARGET, got %d arguments", len(pos))
	}
	return benchmark.Relay(ctx, pos[0], pos[1])
}
