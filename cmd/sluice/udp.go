package main

import (
	"context"
	"io"
)

const udpHelp = `Usage: sluice udp PORT|HOST:PORT [flags]

Exposes a local UDP server (DNS, a game server, anything over UDP) through
a tunnel: datagrams to the public port the edge gives reach PORT on
127.0.0.1 (or HOST:PORT), each whole, and the replies go back to their
sender. The datagrams of each remote address form a session with a local
socket of its own, ended after --idle-timeout (default 1m) without a
datagram either way.
It prints the public address as

  Forwarding udp://HOST:PORT -> 127.0.0.1:PORT

HOST is the edge's domain (its --domain), PORT one of its --udp-ports
(by default its --tcp-ports): send there (dig @HOST -p PORT). Without
--edge, an edge starts inside this process on 127.0.0.1 and gives the
tunnel any free port of 127.0.0.1.

  sluice udp 53
  sluice udp 5353 --edge https://tunnel.example.com --token T --name dns
  sluice udp 127.0.0.1:27015 --edge https://tunnel.example.com --token T --remote-port 20015

--remote-port asks for that public port: the edge refuses the tunnel if it
is outside its UDP port range or taken (without it, any free port of the
range). --allow CIDR,... admits datagrams from those networks only. Each
session prints a line when it ends: the visitor's address, how long it
lasted, datagrams and bytes each way, and why it failed if it did.
`

func runUDP(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return runPorted(ctx, "udp", udpHelp, args, stdout, stderr)
}
