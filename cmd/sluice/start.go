package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/sluicehq/sluice/internal/cli"
)

const startHelp = `Usage: sluice start NAME... | --all [flags]

Starts the tunnels that the config file declares (all of them with --all,
or those named), in one process, at the edge "sluice login" stored (or
--edge, or an embedded edge on 127.0.0.1 when there is none), as that many
"sluice http" would. If one stops with an error, the others stop too.

The file (JSON; see README, "Several tunnels at once") is the one sluice
login writes, or --config FILE:

  {
    "edge": "https://tunnel.example.com",
    "token": "...",
    "tunnels": {
      "web": {"upstream": "3000"},
      "api": {"upstream": "http://127.0.0.1:8000", "host_header": "rewrite",
              "basic_auth": "me:secret", "allow": ["10.0.0.0/8"]}
    }
  }

A tunnel's name is its key; its fields are sluice http's flags:
"upstream" (PORT or URL, required), "host_header", "protocol",
"basic_auth" (USER:PASSWORD), "allow" (CIDRs), "upstream_ca" (a PEM
file) and "upstream_insecure".

  sluice start --all
  sluice start web api --config ./sluice.json
`

func runStart(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := cli.NewFlagSet("start", startHelp+"\n"+configHelp, stderr)
	all := fs.Bool("all", false, "start every tunnel of the config file")
	edgeURL := fs.String("edge", "", `edge URL (default: the config file's, else an embedded edge on 127.0.0.1; --edge "" forces the embedded one)`)
	tokenFlag := cli.SecretFlag(fs, "token", "SLUICE_TOKEN", "agent credential the edge accepts (default: the config file's, for its edge)")
	ca := caFlag(fs)
	config := configFlag(fs)
	listen := fs.String("listen", "127.0.0.1:0", "with the embedded edge: its address")
	quiet := quietFlag(fs)
	verbose := fs.Bool("v", false, "log debug messages")
	pos, err := cli.ParseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if *all == (len(pos) > 0) {
		fs.Usage()
		return cli.Usagef("start: want tunnel names or --all, not both")
	}
	path, given, err := config()
	if err != nil {
		return fmt.Errorf("start: %w", err)
	}
	uc, err := loadConfig(path, true)
	if err != nil {
		return fmt.Errorf("start: %w", err)
	}
	names := pos
	if *all {
		names = uc.tunnelNames()
	}
	if len(names) == 0 {
		return cli.Usagef("start: %s declares no tunnels", path)
	}
	var tunnels []tunnelOptions
	for _, name := range names {
		tc, ok := uc.Tunnels[name]
		if !ok {
			return cli.Usagef("start: %s has no tunnel %q (it has %s)", path, name, strings.Join(uc.tunnelNames(), ", "))
		}
		o, err := tc.options(name)
		if err != nil {
			return fmt.Errorf("start: tunnel %s: %w", name, err)
		}
		tunnels = append(tunnels, o)
	}
	// The file was read once: the defaults come from the same content.
	config = func() (string, bool, error) { return path, given, nil }
	d, err := agentDefaults(fs, "start", *edgeURL, tokenFlag, ca, config)
	if err != nil {
		return err
	}
	return runAgents(ctx, d, tunnels, *listen, !*quiet, nil, newLogger(stderr, *verbose), stdout, stderr)
}

// options returns the tunnel's options, with sluice http's defaults for
// what the file leaves out.
func (tc tunnelConfig) options(name string) (tunnelOptions, error) {
	o := tunnelOptions{name: name, hostHeader: tc.HostHeader, protocol: tc.Protocol, headerTimeout: 60 * time.Second,
		allow: tc.Allow, upstreamInsecure: tc.UpstreamInsecure}
	if o.hostHeader == "" {
		o.hostHeader = "preserve"
	}
	if o.protocol == "" {
		o.protocol = "auto"
	}
	var err error
	if tc.Upstream == "" {
		return o, cli.Usagef("no upstream")
	}
	if o.upstream, err = parseUpstream(tc.Upstream); err != nil {
		return o, err
	}
	if err := o.setBasicAuth(tc.BasicAuth); err != nil {
		return o, err
	}
	if tc.UpstreamCA != "" {
		if o.upstreamCA, err = os.ReadFile(tc.UpstreamCA); err != nil {
			return o, fmt.Errorf("upstream_ca: %w", err)
		}
	}
	return o, o.check("start")
}
