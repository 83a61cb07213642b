package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sluicehq/sluice/agent"
	"github.com/sluicehq/sluice/api"
	"github.com/sluicehq/sluice/edge"
	"github.com/sluicehq/sluice/internal/cli"
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
  sluice http 3000 --edge https://tunnel.example.com --ca ./edge-ca.pem --token-file ./token
  sluice login --edge https://tunnel.example.com --token-file ./token; sluice http 3000

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

` + inspectHelp

func runHTTP(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := cli.NewFlagSet("http", httpHelp+"\n"+configHelp, stderr)
	edgeURL := fs.String("edge", "", `edge URL, such as https://tunnel.example.com (default: the config file's, else an embedded edge on 127.0.0.1; --edge "" forces the embedded one)`)
	tokenFlag := cli.SecretFlag(fs, "token", "SLUICE_TOKEN", "agent credential the edge accepts (default: the config file's, for its edge)")
	ca := caFlag(fs)
	config := configFlag(fs)
	name := fs.String("name", "", "tunnel name, the NAME of NAME.DOMAIN (default: a random readable name)")
	hostHeader := fs.String("host-header", "preserve", `Host the local server sees: "preserve" (the public host), "rewrite" (the upstream's), or a literal host`)
	protocol := fs.String("protocol", "auto", `tunnel protocol: "v2" (binary, multiplexed), "v1" (JSON frames, Jetty-compatible), or "auto" (v2 when the edge offers it, else v1)`)
	headerTimeout := fs.Duration("header-timeout", 60*time.Second, "longest wait for the local server's response headers (bodies have no limit)")
	basicAuth := cli.SecretFlag(fs, "basic-auth", "SLUICE_BASIC_AUTH", "USER:PASSWORD every visitor must give (basic auth, enforced by the edge)")
	allow := fs.String("allow", "", "comma-separated CIDRs visitors must come from, such as 10.0.0.0/8,192.168.1.0/24 (enforced by the edge; default any address)")
	upstreamTLS := upstreamTLSFlags(fs)
	listen := fs.String("listen", "127.0.0.1:0", "with the embedded edge: its address")
	quiet := quietFlag(fs)
	verbose := fs.Bool("v", false, "log debug messages")
	pprofAddr := pprofFlag(fs)
	inspectOpts := inspectFlags(fs)
	pos, err := cli.ParseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		fs.Usage()
		return cli.Usagef("http: want one PORT or URL, got %d arguments", len(pos))
	}
	o := tunnelOptions{name: *name, hostHeader: *hostHeader, protocol: *protocol, headerTimeout: *headerTimeout, allow: cidrList(*allow)}
	if o.upstream, err = parseUpstream(pos[0]); err != nil {
		return err
	}
	if o.name == "" {
		o.name = randomName()
	}
	auth, _, err := basicAuth.Value()
	if err != nil {
		return fmt.Errorf("http: %w", err)
	}
	if err := o.setBasicAuth(auth); err != nil {
		return err
	}
	if o.upstreamInsecure, o.upstreamCA, err = upstreamTLS(); err != nil {
		return fmt.Errorf("http: %w", err)
	}
	if err := o.check("http"); err != nil {
		return err
	}
	d, err := agentDefaults(fs, "http", *edgeURL, tokenFlag, ca, config)
	if err != nil {
		return err
	}
	logger := newLogger(stderr, *verbose)
	if err := startPprof(ctx, *pprofAddr, stderr); err != nil {
		return err
	}
	insp, err := inspectOpts.open("http", stdout, stderr)
	if err != nil {
		return err
	}
	return runAgents(ctx, d, []tunnelOptions{o}, *listen, !*quiet, insp, logger, stdout, stderr)
}

// agentDefaults reads --edge, the token and --ca of an agent command
// (http, start), with the config file's values where they are not given.
func agentDefaults(fs *flag.FlagSet, cmd, edgeURL string, tokenFlag *cli.Secret, ca func() (string, *tls.Config, error), config func() (string, bool, error)) (edgeDefaults, error) {
	d := edgeDefaults{edge: edgeURL}
	fs.Visit(func(f *flag.Flag) { d.edgeGiven = d.edgeGiven || f.Name == "edge" })
	var err error
	if d.token, _, err = tokenFlag.Value(); err != nil {
		return d, fmt.Errorf("%s: %w", cmd, err)
	}
	if d.ca, _, err = ca(); err != nil {
		return d, fmt.Errorf("%s: %w", cmd, err)
	}
	path, given, err := config()
	if err != nil {
		return d, fmt.Errorf("%s: %w", cmd, err)
	}
	c, err := loadConfig(path, given)
	if err != nil {
		return d, fmt.Errorf("%s: %w", cmd, err)
	}
	d.resolve(c)
	return d, nil
}

// tunnelOptions is one tunnel of sluice http or sluice start: what its
// agent needs besides the edge.
type tunnelOptions struct {
	upstream           *url.URL // an HTTP tunnel's local server
	tcp                string   // a TCP (or UDP) tunnel's local HOST:PORT ("" for HTTP)
	udp                bool     // tcp is a UDP tunnel's
	remotePort         int      // the public port a TCP tunnel asks for (0: any)
	name               string
	hostHeader         string
	protocol           string
	headerTimeout      time.Duration
	authUser, authPass string
	allow              []string
	upstreamInsecure   bool
	upstreamCA         []byte
	// udpIdle is a UDP tunnel's session idle timeout at the agent (0: its
	// default).
	udpIdle time.Duration
}

// setBasicAuth sets the visitors' USER:PASSWORD ("" for none).
func (o *tunnelOptions) setBasicAuth(auth string) error {
	if auth == "" {
		return nil
	}
	var ok bool
	o.authUser, o.authPass, ok = strings.Cut(auth, ":")
	if !ok || o.authUser == "" || o.authPass == "" {
		return cli.Usagef("http: --basic-auth wants USER:PASSWORD")
	}
	return nil
}

// check validates o, lowercasing its name.
func (o *tunnelOptions) check(cmd string) error {
	if o.protocol != "v1" && o.protocol != "v2" && o.protocol != "auto" {
		return cli.Usagef(`%s: --protocol must be "auto", "v1" or "v2"`, cmd)
	}
	o.name = strings.ToLower(o.name)
	if !edge.ValidName(o.name) {
		return cli.Usagef("%s: --name %q is not a DNS label (a-z, 0-9 and '-', 1 to 63 long)", cmd, o.name)
	}
	for _, c := range o.allow {
		if _, _, err := net.ParseCIDR(c); err != nil {
			return cli.Usagef("%s: --allow: %q is not a CIDR such as 10.0.0.0/8", cmd, c)
		}
	}
	return nil
}

// runAgents runs one agent per tunnel at the edge of d (an embedded edge
// on listen if none) until ctx ends or one of them stops with an error,
// which stops the others. insp, if not nil, records the HTTP tunnels'
// requests; its replays go to the first tunnel's agent.
func runAgents(ctx context.Context, d edgeDefaults, tunnels []tunnelOptions, listen string, console bool, insp *inspector, logger *slog.Logger, stdout, stderr io.Writer) error {
	served := false
	defer func() {
		if !served {
			insp.close()
		}
	}()
	tc, err := loadCA(d.ca)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	if d.edge == "" {
		// The embedded edge: local only, with a one-off token.
		tok := make([]byte, 16)
		rand.Read(tok)
		d.token = hex.EncodeToString(tok)
		cfg := edge.DefaultConfig()
		cfg.Tokens = []string{d.token}
		cfg.Logger = logger
		for _, o := range tunnels {
			if o.tcp != "" {
				// TCP tunnels on any free port of the listen host,
				// named by it: what a local client connects to.
				cfg.TCPAnyPort = true
				cfg.TCPListenHost, _, _ = net.SplitHostPort(listen)
				cfg.TCPHost = cfg.TCPListenHost
			}
		}
		srv, err := edge.New(cfg)
		if err != nil {
			return err
		}
		ln, err := net.Listen("tcp", listen)
		if err != nil {
			return fmt.Errorf("http: embedded edge: %w", err)
		}
		d.edge = "http://" + ln.Addr().String()
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := srv.Serve(ctx, ln, time.Second); err != nil {
				fmt.Fprintf(stderr, "sluice: embedded edge: %v\n", err)
			}
		}()
	}
	agents := make([]*agent.Agent, len(tunnels))
	for i, o := range tunnels {
		cfg := o.agentConfig(d.edge, d.token, tc, logger, stdout, stderr, len(tunnels) > 1)
		if console {
			cfg.Console = stdout
		}
		cfg.Inspector = insp.inspector()
		if agents[i], err = agent.New(cfg); err != nil {
			return err
		}
	}
	if len(agents) > 0 {
		insp.serve(ctx, &wg, agents[0].Handler())
		served = true
	}
	var once sync.Once
	var first error
	for _, a := range agents {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := agentError(a.Run(ctx))
			if err != nil || len(agents) == 1 {
				once.Do(func() { first = err })
				cancel()
			}
		}()
	}
	wg.Wait()
	return first
}

// agentConfig returns the agent's configuration for tunnel o at edgeURL.
// With named, its status lines on stderr name the tunnel.
func (o tunnelOptions) agentConfig(edgeURL, token string, tc *tls.Config, logger *slog.Logger, stdout, stderr io.Writer, named bool) agent.Config {
	prefix := ""
	if named {
		prefix = o.name + ": "
	}
	target := o.tcp
	if target == "" {
		target = o.upstream.String()
	}
	cfg := agent.Config{
		UserAgent:             userAgent(),
		Edge:                  edgeURL,
		Token:                 token,
		TLSClientConfig:       tc,
		Name:                  o.name,
		Upstream:              o.upstream,
		UpstreamInsecure:      o.upstreamInsecure,
		UpstreamCA:            o.upstreamCA,
		HostHeader:            o.hostHeader,
		Protocol:              o.protocol,
		ResponseHeaderTimeout: o.headerTimeout,
		BasicAuthUser:         o.authUser,
		BasicAuthPassword:     o.authPass,
		AllowCIDRs:            o.allow,
		Logger:                logger.With("tunnel", o.name),
		OnConnect: func(public, protocol string) {
			fmt.Fprintf(stdout, "Forwarding %s -> %s\n", public, target)
			fmt.Fprintf(stderr, "%stunnel up, protocol %s\n", prefix, protocol)
			if o.authUser != "" {
				fmt.Fprintf(stderr, "%svisitors must give basic auth, user %q (enforced by the edge)\n", prefix, o.authUser)
			}
			if len(o.allow) > 0 {
				fmt.Fprintf(stderr, "%svisitors must come from %s (enforced by the edge)\n", prefix, strings.Join(o.allow, ", "))
			}
		},
		OnRetry: func(err error, delay time.Duration) {
			fmt.Fprintf(stderr, "%stunnel lost (%v); reconnecting in %v\n", prefix, err, delay.Round(time.Millisecond))
		},
	}
	if o.tcp != "" {
		cfg.Type, cfg.LocalAddr, cfg.RemotePort = wire.TunnelTCP, o.tcp, o.remotePort
		if o.udp {
			cfg.Type, cfg.UDPIdleTimeout = wire.TunnelUDP, o.udpIdle
		}
	}
	return cfg
}

// agentError is the message for what ended an agent's Run.
func agentError(err error) error {
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
