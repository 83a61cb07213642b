// Command sluice is a streaming-first HTTP tunnel, and a curl for
// Server-Sent Events. Run "sluice help" for its subcommands.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/sluicehq/sluice/internal/cli"
	"github.com/sluicehq/sluice/internal/gcfloor"
)

// servers are the commands that run until stopped: for them, SIGINT or
// SIGTERM followed by a clean drain is their normal end (exit 0). Any other
// command stopped by a signal was cut short (128+signal). See
// cli.ExitConvention.
var servers = map[string]bool{"edge": true, "http": true, "tcp": true, "udp": true, "agent": true, "demo": true, "start": true}

func main() {
	if len(os.Args) > 1 && servers[os.Args[1]] {
		// A server's live heap is small between requests: a floor under
		// the collector's goal spares it a collection every few
		// megabytes (GOGC in the environment wins).
		gcfloor.Start(gcfloor.Default)
	}
	stop := cli.NotifyStop(os.Stderr)
	err := Run(stop.Context(), os.Args[1:], os.Stdout, os.Stderr)
	stop.Stop()
	os.Exit(cli.ExitStatus(err, stop.Signal(), len(os.Args) > 1 && servers[os.Args[1]]))
}

// userAgent is what the agents send to the edge, which records it as their
// version.
func userAgent() string { return "sluice/" + currentVersion() }

const usage = `sluice: a streaming-first HTTP tunnel, and a curl for Server-Sent Events.

Usage:
  sluice <command> [arguments]

Commands:
  edge         run an edge: the public side, routing NAME.DOMAIN to tunnels
  http PORT    expose a local HTTP server through a tunnel
  tcp PORT     expose a local TCP server (a database, SSH) on a public port
  udp PORT     expose a local UDP server (DNS, a game server) on a public port
  agent        run a remotely managed agent: the tunnels its token has at the edge
  login        store an edge and its token in the config file, for http, agent and start
  start        start the tunnels the config file declares (--all, or by name)
  events URL   print the events of a Server-Sent Events stream
  replay ID    send a request the agent's inspector recorded to the local server again
  demo         run an edge, an agent and a demo app in one process
  tokens       create, list and revoke the tokens of an edge with a store
  tunnels      create, list, update and delete the tunnels of an edge with a store
  version      print the version
  help         print this help

Run "sluice <command> --help" for a command's flags.

The first SIGINT or SIGTERM stops a command (a server drains first, and
says for how long); a second one exits at once.

` + cli.ExitConvention

// Run runs the sluice command line with args (without the program name).
// Errors have already been reported on stderr when Run returns them.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return cli.Usagef("no command")
	}
	var err error
	switch cmd, rest := args[0], args[1:]; cmd {
	case "edge":
		err = runEdge(ctx, rest, stdout, stderr)
	case "http":
		err = runHTTP(ctx, rest, stdout, stderr)
	case "tcp":
		err = runTCP(ctx, rest, stdout, stderr)
	case "udp":
		err = runUDP(ctx, rest, stdout, stderr)
	case "events":
		err = runEvents(ctx, rest, stdout, stderr)
	case "replay":
		err = runReplay(ctx, rest, stdout, stderr)
	case "demo":
		err = runDemo(ctx, rest, stdout, stderr)
	case "agent":
		err = runAgent(ctx, rest, stdout, stderr)
	case "login":
		err = runLogin(ctx, rest, stdout, stderr)
	case "start":
		err = runStart(ctx, rest, stdout, stderr)
	case "tokens":
		err = runTokens(ctx, rest, stdout, stderr)
	case "tunnels":
		err = runTunnels(ctx, rest, stdout, stderr)
	case "bench", "bench-relay":
		// The benchmark harness is a command of its own, not linked here.
		err = cli.Usagef("%s is not part of sluice any more: run bash bench/run.sh or go run ./bench/cmd/bench", cmd)
	case "version", "--version", "-version":
		err = runVersion(stdout)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
	default:
		fmt.Fprint(stderr, usage)
		err = cli.Usagef("unknown command %q", cmd)
	}
	if err != nil && !errors.Is(err, cli.ErrHelp) {
		fmt.Fprintf(stderr, "sluice: %v\n", err)
	}
	return err
}
