package main

import (
	"context"
	"io"
	"net"
	"strconv"

	"github.com/sluicehq/sluice/internal/cli"
)

const tcpHelp = `Usage: sluice tcp PORT|HOST:PORT [flags]

Exposes a local TCP server (a database, SSH, anything over TCP) through a
tunnel: each connection to the public port the edge gives reaches PORT on
127.0.0.1 (or HOST:PORT), bytes copied both ways, half-closes passed on.
It prints the public address as

  Forwarding tcp://HOST:PORT -> 127.0.0.1:PORT

HOST is the edge's domain (its --domain), PORT one of its --tcp-ports:
connect there (psql -h HOST -p PORT, ssh -p PORT HOST). Without --edge, an
edge starts inside this process on 127.0.0.1 and gives the tunnel any free
port of 127.0.0.1.

  sluice tcp 5432
  sluice tcp 22 --edge https://tunnel.example.com --token T --name ssh
  sluice tcp db.internal:5432 --edge https://tunnel.example.com --token T --remote-port 20432
  sluice tcp 5432 --allow 10.0.0.0/8

--remote-port asks for that public port: the edge refuses the tunnel if it
is outside its --tcp-ports range or taken (without it, any free port of
the range). --allow CIDR,... admits connections from those networks only
(the edge closes the others at once). Each connection prints a line:
the visitor's address, how long it lasted, bytes each way, and why it
failed if it did (such as "connection refused" from the local server).
`

func runTCP(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return runPorted(ctx, "tcp", tcpHelp, args, stdout, stderr)
}

// runPorted runs sluice tcp or sluice udp (cmd): a tunnel to a local
// HOST:PORT on a public port.
func runPorted(ctx context.Context, cmd, help string, args []string, stdout, stderr io.Writer) error {
	fs := cli.NewFlagSet(cmd, help+"\n"+configHelp, stderr)
	edgeURL := fs.String("edge", "", `edge URL, such as https://tunnel.example.com (default: the config file's, else an embedded edge on 127.0.0.1; --edge "" forces the embedded one)`)
	tokenFlag := cli.SecretFlag(fs, "token", "SLUICE_TOKEN", "agent credential the edge accepts (default: the config file's, for its edge)")
	ca := caFlag(fs)
	config := configFlag(fs)
	name := fs.String("name", "", "tunnel name at the edge, for its owner and logs (default: a random readable name)")
	remotePort := fs.Int("remote-port", 0, "the public port to ask the edge for (default: any free one of its --tcp-ports)")
	protocol := fs.String("protocol", "auto", `tunnel protocol: "v2" (binary, multiplexed), "v1" (JSON frames, Jetty-compatible), or "auto" (v2 when the edge offers it, else v1)`)
	allow := fs.String("allow", "", "comma-separated CIDRs visitors must connect from, such as 10.0.0.0/8 (enforced by the edge; default any address)")
	listen := fs.String("listen", "127.0.0.1:0", "with the embedded edge: its address (TCP and UDP tunnels get ports of its host)")
	quiet := fs.Bool("quiet", false, "print no line per connection (per session for UDP)")
	verbose := fs.Bool("v", false, "log debug messages")
	pprofAddr := pprofFlag(fs)
	pos, err := cli.ParseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		fs.Usage()
		return cli.Usagef("%s: want one PORT or HOST:PORT, got %d arguments", cmd, len(pos))
	}
	o := tunnelOptions{name: *name, protocol: *protocol, allow: cidrList(*allow), remotePort: *remotePort, udp: cmd == "udp"}
	if o.tcp, err = parseLocalAddr(pos[0]); err != nil {
		return err
	}
	if *remotePort < 0 || *remotePort > 65535 {
		return cli.Usagef("%s: --remote-port %d is not a port (1 to 65535)", cmd, *remotePort)
	}
	if o.name == "" {
		o.name = randomName()
	}
	if err := o.check(cmd); err != nil {
		return err
	}
	d, err := agentDefaults(fs, cmd, *edgeURL, tokenFlag, ca, config)
	if err != nil {
		return err
	}
	logger := newLogger(stderr, *verbose)
	if err := startPprof(ctx, *pprofAddr, stderr); err != nil {
		return err
	}
	return runAgents(ctx, d, []tunnelOptions{o}, *listen, !*quiet, nil, logger, stdout, stderr)
}

// parseLocalAddr takes "5432" (on 127.0.0.1) or "HOST:PORT".
func parseLocalAddr(s string) (string, error) {
	if port, err := strconv.Atoi(s); err == nil {
		if port < 1 || port > 65535 {
			return "", cli.Usagef("tcp: port %d out of range", port)
		}
		return "127.0.0.1:" + s, nil
	}
	host, port, err := net.SplitHostPort(s)
	if p, perr := strconv.Atoi(port); err != nil || host == "" || perr != nil || p < 1 || p > 65535 {
		return "", cli.Usagef("tcp: %q is not a PORT or HOST:PORT", s)
	}
	return net.JoinHostPort(host, port), nil
}
