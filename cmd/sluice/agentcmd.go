package main

import (
	"context"
	"errors"
	"fmt"
	"github.com/sluicehq/sluice/internal/cli"
	"io"
	"sync"
	"time"

	"github.com/sluicehq/sluice/agent"
)

const agentHelp = `Usage: sluice agent --edge URL --token T [flags]

Runs a remotely managed agent: it serves every tunnel that the edge's store
lists for its token, each to the upstream stored with it, and follows the
changes the edge pushes (tunnels created, changed, deleted; the token
revoked) without a restart. Tunnels are managed with "sluice tunnels".

  sluice tokens create --edge http://127.0.0.1:8080 --admin-token A
  sluice tunnels create web --upstream http://127.0.0.1:3000 --agent-token T --edge http://127.0.0.1:8080 --admin-token A
  sluice agent --edge http://127.0.0.1:8080 --token T
  sluice agent --edge https://tunnel.example.com --ca ./edge-ca.pem --token-file ./token

Upstreams are http:// (HTTP/1.1), h2c:// (HTTP/2 without TLS, such as a
gRPC server) or https:// (HTTP/2 when the server offers it; its
certificate verified, see --upstream-ca and --upstream-insecure).

` + inspectHelp

func runAgent(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := cli.NewFlagSet("agent", agentHelp+"\n"+configHelp, stderr)
	edgeURL := fs.String("edge", "", "the edge's URL, such as https://tunnel.example.com (default: the config file's)")
	tokenFlag := cli.SecretFlag(fs, "token", "SLUICE_TOKEN", "an agent token of the edge's store (default: the config file's, for its edge)")
	ca := caFlag(fs)
	config := configFlag(fs)
	protocol := fs.String("protocol", "auto", `tunnel protocol: "auto", "v1" or "v2"`)
	upstreamTLS := upstreamTLSFlags(fs)
	quiet := quietFlag(fs)
	verbose := fs.Bool("v", false, "log debug messages")
	inspectOpts := inspectFlags(fs)
	pos, err := cli.ParseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return cli.Usagef("agent: unexpected argument %q (tunnels come from the edge: see sluice tunnels)", pos[0])
	}
	d, err := agentDefaults(fs, "agent", *edgeURL, tokenFlag, ca, config)
	if err != nil {
		return err
	}
	if d.edge == "" || d.token == "" {
		fs.Usage()
		return cli.Usagef("agent: --edge and --token (or --token-file, or $SLUICE_TOKEN, or sluice login) are required")
	}
	tc, err := loadCA(d.ca)
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	if *protocol != "v1" && *protocol != "v2" && *protocol != "auto" {
		return cli.Usagef(`agent: --protocol must be "auto", "v1" or "v2"`)
	}
	upstreamInsecure, upstreamCA, err := upstreamTLS()
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	cfg := agent.ManagedConfig{
		UpstreamInsecure: upstreamInsecure,
		UpstreamCA:       upstreamCA,
		Edge:             d.edge,
		Token:            d.token,
		TLSClientConfig:  tc,
		Protocol:         *protocol,
		UserAgent:        userAgent(),
		HTTPClient:       httpClient(tc),
		Logger:           newLogger(stderr, *verbose),
		Status: func(line string) {
			fmt.Fprintf(stderr, "%s  %s\n", time.Now().Format("15:04:05"), line)
		},
	}
	if !*quiet {
		cfg.Console = stdout
	}
	insp, err := inspectOpts.open("agent", stdout, stderr)
	if err != nil {
		return err
	}
	cfg.Inspector = insp.inspector()
	m, err := agent.NewManaged(cfg)
	if err != nil {
		insp.close()
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	insp.serve(ctx, &wg, m.Handler())
	err = m.Run(ctx)
	cancel()
	wg.Wait()
	if errors.Is(err, agent.ErrTokenRevoked) {
		return errors.New("the edge revoked this agent's token: stopping")
	}
	return err
}
