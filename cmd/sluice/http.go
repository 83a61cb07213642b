package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"github.com/sluicehq/sluice/internal/cli"
	"io"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sluicehq/sluice/agent"
	"github.com/sluicehq/sluice/api"
	"github.com/sluicehq/sluice/edge"
	"github.com/sluicehq/sluice/wire"
)

const httpHelp = `Usage: sluice http PORT|URL [flags]

Exposes a local HTTP server through a tunnel: requests to the public URL
reach PORT on 127.0.0.1 (or URL), streamed both ways. Without --edge, an
edge starts inside this process on 127.0.0.1, so that "sluice http 3000"
works alone on a laptop.

  sluice http 3000
  sluice http 3000 --edge http://127.0.0.1:8080 --token T --name demo
  sluice http http://127.0.0.1:5173 --host-header rewrite
  sluice http h2c://127.0.0.1:50051 --edge http://127.0.0.1:8080 --token T --name grpc
  sluice http https://127.0.0.1:8443 --upstream-ca ./local-ca.pem
  sluice http 3000 --basic-auth-file ./visitor-pass --allow 10.0.0.0/8

The local server is spoken to in HTTP/1.1 (PORT, http://), in HTTP/2
without TLS with prior knowledge (h2c://, what gRPC servers speak), or over
TLS with HTTP/2 when the server offers it (https://: its certificate is
verified, see --upstream-ca and --upstream-insecure).

Visitor rules: --basic-auth USER:PASSWORD (or --basic-auth-file, or
$SLUICE_BASIC_AUTH) makes the edge ask every visitor for that user and
password (401 without them), and --allow CIDR,... admits visitors from
those networks only (403 for others). The edge enforces them, for this
tunnel while the agent is connected; the password crosses the wire only as
a bcrypt hash. An edge too old to enforce them is refused: the tunnel is
never opened unprotected. A tunnel stored at the edge (sluice tunnels
create) has its own rules, set with sluice tunnels update: the edge refuses
rules sent for it.
`

func runHTTP(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := cli.NewFlagSet("http", httpHelp, stderr)
	edgeURL := fs.String("edge", "", "edge URL, such as https://tunnel.example.com (default: an embedded edge on 127.0.0.1)")
	tokenFlag := cli.SecretFlag(fs, "token", "SLUICE_TOKEN", "agent credential the edge accepts")
	name := fs.String("name", "", "tunnel name, the NAME of NAME.DOMAIN (default: a random readable name)")
	hostHeader := fs.String("host-header", "preserve", `Host the local server sees: "preserve" (the public host), "rewrite" (the upstream's), or a literal host`)
	protocol := fs.String("protocol", "auto", `tunnel protocol: "v2" (binary, multiplexed), "v1" (JSON frames, Jetty-compatible), or "auto" (v2 when the edge offers it, else v1)`)
	headerTimeout := fs.Duration("header-timeout", 60*time.Second, "longest wait for the local server's response headers (bodies have no limit)")
	basicAuth := cli.SecretFlag(fs, "basic-auth", "SLUICE_BASIC_AUTH", "USER:PASSWORD every visitor must give (basic auth, enforced by the edge)")
	allow := fs.String("allow", "", "comma-separated CIDRs visitors must come from, such as 10.0.0.0/8,192.168.1.0/24 (enforced by the edge; default any address)")
	upstreamTLS := upstreamTLSFlags(fs)
	listen := fs.String("listen", "127.0.0.1:0", "with the embedded edge: its address")
	quiet := fs.Bool("quiet", false, "print no line per request")
	verbose := fs.Bool("v", false, "log debug messages")
	pprofAddr := pprofFlag(fs)
	pos, err := cli.ParseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		fs.Usage()
		return cli.Usagef("http: want one PORT or URL, got %d arguments", len(pos))
	}
	upstream, err := parseUpstream(pos[0])
	if err != nil {
		return err
	}
	if *protocol != "v1" && *protocol != "v2" && *protocol != "auto" {
		return cli.Usagef(`http: --protocol must be "auto", "v1" or "v2"`)
	}
	if *name == "" {
		*name = randomName()
	}
	*name = strings.ToLower(*name)
	if !edge.ValidName(*name) {
		return cli.Usagef("http: --name %q is not a DNS label (a-z, 0-9 and '-', 1 to 63 long)", *name)
	}
	token, _, err := tokenFlag.Value()
	if err != nil {
		return fmt.Errorf("http: %w", err)
	}
	auth, _, err := basicAuth.Value()
	if err != nil {
		return fmt.Errorf("http: %w", err)
	}
	var authUser, authPass string
	if auth != "" {
		var ok bool
		authUser, authPass, ok = strings.Cut(auth, ":")
		if !ok || authUser == "" || authPass == "" {
			return cli.Usagef("http: --basic-auth wants USER:PASSWORD")
		}
	}
	upstreamInsecure, upstreamCA, err := upstreamTLS()
	if err != nil {
		return fmt.Errorf("http: %w", err)
	}
	allowCIDRs := cidrList(*allow)
	for _, c := range allowCIDRs {
		if _, _, err := net.ParseCIDR(c); err != nil {
			return cli.Usagef("http: --allow: %q is not a CIDR such as 10.0.0.0/8", c)
		}
	}
	logger := newLogger(stderr, *verbose)
	if err := startPprof(ctx, *pprofAddr, stderr); err != nil {
		return err
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	if *edgeURL == "" {
		// The embedded edge: local only, with a one-off token.
		tok := make([]byte, 16)
		rand.Read(tok)
		token = hex.EncodeToString(tok)
		cfg := edge.DefaultConfig()
		cfg.Tokens = []string{token}
		cfg.Logger = logger
		srv, err := edge.New(cfg)
		if err != nil {
			return err
		}
		ln, err := net.Listen("tcp", *listen)
		if err != nil {
			return fmt.Errorf("http: embedded edge: %w", err)
		}
		*edgeURL = "http://" + ln.Addr().String()
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := srv.Serve(ctx, ln, time.Second); err != nil {
				fmt.Fprintf(stderr, "sluice: embedded edge: %v\n", err)
			}
		}()
	}
	cfg := agent.Config{
		UserAgent:             userAgent(),
		Edge:                  *edgeURL,
		Token:                 token,
		Name:                  *name,
		Upstream:              upstream,
		UpstreamInsecure:      upstreamInsecure,
		UpstreamCA:            upstreamCA,
		HostHeader:            *hostHeader,
		Protocol:              *protocol,
		ResponseHeaderTimeout: *headerTimeout,
		BasicAuthUser:         authUser,
		BasicAuthPassword:     authPass,
		AllowCIDRs:            allowCIDRs,
		Logger:                logger,
		OnConnect: func(public, protocol string) {
			fmt.Fprintf(stdout, "Forwarding %s -> %s\n", public, upstream)
			fmt.Fprintf(stderr, "tunnel up, protocol %s\n", protocol)
			if authUser != "" {
				fmt.Fprintf(stderr, "visitors must give basic auth, user %q (enforced by the edge)\n", authUser)
			}
			if len(allowCIDRs) > 0 {
				fmt.Fprintf(stderr, "visitors must come from %s (enforced by the edge)\n", strings.Join(allowCIDRs, ", "))
			}
		},
		OnRetry: func(err error, delay time.Duration) {
			fmt.Fprintf(stderr, "tunnel lost (%v); reconnecting in %v\n", err, delay.Round(time.Millisecond))
		},
	}
	if !*quiet {
		cfg.Console = stdout
	}
	a, err := agent.New(cfg)
	if err != nil {
		return err
	}
	err = a.Run(ctx)
	cancel()
	var re *agent.RegisterError
	if errors.As(err, &re) {
		switch re.Code {
		case wire.CodeTunnelReplaced:
			return fmt.Errorf("tunnel taken over, stopping: %s", re.Message)
		case wire.CodeNoV2, wire.CodeNoAccess:
			return errors.New(re.Message)
		case wire.CodeTunnelDeleted, wire.CodeTunnelDisabled, wire.CodeTokenRevoked:
			return fmt.Errorf("the edge ended the tunnel, stopping: %s", re.Message)
		}
		return fmt.Errorf("the edge refused the tunnel: %s", re.Message)
	}
	return err
}

// parseUpstream takes "3000", "localhost:3000" or a URL (http://,
// https:// or h2c://).
func parseUpstream(s string) (*url.URL, error) {
	if port, err := strconv.Atoi(s); err == nil {
		if port < 1 || port > 65535 {
			return nil, cli.Usagef("http: port %d out of range", port)
		}
		return &url.URL{Scheme: "http", Host: "127.0.0.1:" + s}, nil
	}
	if !strings.Contains(s, "://") {
		s = "http://" + s
	}
	u, err := api.ParseUpstream(s)
	if err != nil {
		return nil, cli.Usagef("http: %q is not a port or an http://, https:// or h2c:// URL", s)
	}
	return u, nil
}

var (
	nameAdjectives = []string{"amber", "brisk", "calm", "dusty", "eager", "fuzzy", "gentle", "hazy", "icy", "jolly", "keen", "lucky", "mellow", "nimble", "odd", "proud", "quiet", "rapid", "sunny", "tidy", "vivid", "witty"}
	nameNouns      = []string{"otter", "falcon", "maple", "river", "comet", "badger", "cedar", "heron", "lynx", "meadow", "pebble", "quartz", "raven", "spruce", "tulip", "walrus", "willow", "yak", "zephyr", "harbor"}
)

// randomName returns a readable tunnel name such as "brisk-otter-42".
func randomName() string {
	b := make([]byte, 3)
	rand.Read(b)
	return fmt.Sprintf("%s-%s-%d", nameAdjectives[int(b[0])%len(nameAdjectives)], nameNouns[int(b[1])%len(nameNouns)], 10+int(b[2])%90)
}
