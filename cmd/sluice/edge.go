package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"github.com/sluicehq/sluice/internal/cli"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/sluicehq/sluice/edge"
	"github.com/sluicehq/sluice/internal/cluster"
	"github.com/sluicehq/sluice/store"
)

const edgeHelp = `Usage: sluice edge [flags]

Runs an edge: the public side of sluice. Requests to http://NAME.DOMAIN:PORT/
go through the tunnel named NAME to its agent; the apex (DOMAIN, or the bare
address) serves the agents' endpoint /agent, /healthz and /metrics.

  sluice edge --listen 127.0.0.1:8080 --domain localhost --token T
  sluice http 3000 --edge http://127.0.0.1:8080 --token T --name demo
  curl http://demo.localhost:8080/

With a store (--data DIR, or --store postgres://...), tokens and tunnels
outlive restarts and are managed through the admin API (/api/):

  sluice edge --listen 127.0.0.1:8080 --data /var/lib/sluice --admin-token A
  sluice tokens create --edge http://127.0.0.1:8080 --admin-token A

TCP tunnels (sluice tcp) get public ports from --tcp-ports LOW-HIGH, on the
host of --listen; their public address is tcp://DOMAIN:PORT, so DOMAIN must
resolve to this machine for visitors. Without --tcp-ports the edge refuses
TCP tunnels. The visitor allowlist (--allow, or a stored tunnel's) applies
to each connection; basic auth does not (there is no HTTP request).

  sluice edge --listen 0.0.0.0:8080 --domain tunnel.example.com --token T --tcp-ports 20000-20099
  sluice tcp 5432 --edge http://tunnel.example.com:8080 --token T

Several edges behind a load balancer share a PostgreSQL store and a Redis
(--cluster): each claims in Redis the tunnels whose agents it holds, and
forwards a request for any other tunnel to the edge that holds it, at that
edge's --advertise URL. The advertise URL is the same listener as --listen,
as the other edges reach it: http:// (HTTP/2 with prior knowledge) on a
plain listener, https:// when it serves TLS with a certificate the other
edges trust for that host. Requests between edges are signed with the
secret of --cluster-secret-file, the same on every edge:

  openssl rand -hex 32 > /etc/sluice/cluster-secret
  sluice edge --listen 0.0.0.0:8080 --store postgres://sluice@db/sluice --admin-token-file A \
    --cluster redis://redis:6379/0 --advertise http://10.0.0.5:8080 --cluster-secret-file /etc/sluice/cluster-secret
` + acmeHelp + dnsHelp

func runEdge(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := cli.NewFlagSet("edge", edgeHelp, stderr)
	listen := fs.String("listen", "127.0.0.1:8080", "address to listen on")
	domain := fs.String("domain", "localhost", "apex domain: tunnel NAME is served at NAME.DOMAIN")
	token := cli.SecretFlag(fs, "token", "SLUICE_TOKEN", "agent credential (or --tokens)")
	tokens := fs.String("tokens", "", "file of agent credentials, one per line (# comments)")
	certFile := fs.String("tls-cert", "", "TLS certificate file (PEM); with --tls-key, serve HTTPS and HTTP/2")
	keyFile := fs.String("tls-key", "", "TLS key file (PEM)")
	publicPort := fs.Int("public-port", 0, "port in public URLs, when clients reach the edge through another port (0: the listener's)")
	maxBody := fs.Int64("max-body", 32<<20, "largest request body sent whole to a plain Jetty agent, in bytes (413 past it)")
	maxStreams := fs.Int("max-streams", 1024, "concurrent requests per tunnel (503 past it)")
	maxFrame := fs.Int("max-frame", 32<<20, "largest frame accepted from an agent, in bytes (larger ones are skipped and counted)")
	ping := fs.Duration("ping-interval", 10*time.Second, "how often agents are pinged")
	pong := fs.Duration("pong-timeout", 30*time.Second, "drop an agent silent for this long (dead-agent detection)")
	idle := fs.Duration("idle-timeout", 2*time.Minute, "close a public keep-alive connection idle this long between requests (responses in progress are never cut)")
	grace := fs.Duration("shutdown-grace", 10*time.Second, "on shutdown, how long requests in flight may finish before they are aborted")
	dataDir := fs.String("data", "", "keep tokens and tunnels in SQLite under this directory (created if missing); serves the admin API under /api/")
	storeURL := fs.String("store", "", "keep tokens and tunnels in PostgreSQL instead, such as postgres://user:pass@host/db")
	adminToken := cli.SecretFlag(fs, "admin-token", "SLUICE_ADMIN_TOKEN", "admin credential for the API (/api/), besides the store's admin tokens; needs --data or --store")
	pushKeepalive := fs.Duration("push-keepalive", 15*time.Second, "interval of the keepalive comments on managed agents' push channels")
	trustedProxies := fs.String("trusted-proxies", "", "CIDR,... of the load balancers in front of the edge: from them, the visitor's address is taken from X-Forwarded-For or Forwarded (for --allow lists); default none: those fields are not believed")
	protocols := fs.String("protocols", "v1,v2", `agent protocols offered: "v1,v2" or "v1" (agents on --protocol auto then use v1)`)
	pipes := fs.Bool("pipes", true, "carry the simple requests (GET and HEAD without a body) of v2 agents that offer it as HTTP/1.1 bytes on pooled streams the agent pipes to its local server, with less CPU per request (docs/protocol.md, \"Pipes\"); false: each request is a stream of its own")
	maxBuffer := cli.Size(256 << 20)
	fs.Var(&maxBuffer, "max-buffer", "body bytes the edge may buffer for all tunnels together, windows granted to agents included (a `size` such as 64MiB, 1GiB or plain bytes); under pressure streams get smaller windows")
	maxHeader := cli.Size(64 << 10)
	fs.Var(&maxHeader, "max-header-bytes", "largest request head a visitor may send, request line and header fields (a `size` such as 64KiB or 1MiB, at most 4MiB); 431 past it")
	maxPerIP := fs.Int("max-streams-per-ip", 256, "concurrent public requests from one client address, over all tunnels (429 with Retry-After past it)")
	maxHandshakes := fs.Int("max-pending-handshakes-per-ip", 32, "agent WebSocket handshakes from one address not yet registered or refused (429 past it); each costs the edge little until its agent is authenticated")
	registerTimeout := fs.Duration("register-timeout", 5*time.Second, "how long an agent's WebSocket may wait before sending its register frame")
	bodyIdle := fs.Duration("body-idle-timeout", time.Minute, "end a request body that sends nothing for this long (the upstream sees the upload fail)")
	writeIdle := fs.Duration("write-idle-timeout", time.Minute, "cut a client that reads nothing of a response for this long (over HTTP/1 within 1.25x this long: the deadline moves only when near; a response with nothing to send is never cut)")
	acmeOpts := addACMEFlags(fs)
	dnsOpts := addDNSFlags(fs)
	udpPorts := fs.String("udp-ports", "", `public ports for UDP tunnels, LOW-HIGH, or "none" (default: the --tcp-ports range)`)
	udpIdle := fs.Duration("udp-idle-timeout", 0, "end a UDP tunnel's session of one remote address after this long without a datagram (default 1m0s)")
	tcpPorts := fs.String("tcp-ports", "", "public ports for TCP tunnels, LOW-HIGH such as 20000-20099, on the host of --listen (default none: TCP tunnels refused)")
	clusterURL := fs.String("cluster", "", "run as one of several edges sharing --store postgres://... and this Redis, redis://HOST:PORT/DB (rediss:// for TLS): the routing table of tunnels to edges")
	advertise := fs.String("advertise", "", "with --cluster: the URL other edges reach this edge at, such as http://10.0.0.5:8080; it is this edge's --listen listener (no other), as seen from the other edges")
	clusterSecret := fs.String("cluster-secret-file", "", fmt.Sprintf("with --cluster: a file of at least %d random bytes, the same on every edge, that signs the requests edges forward to each other (openssl rand -hex 32 > FILE)", cluster.MinSecretLen))
	clusterLease := fs.Duration("cluster-lease", cluster.DefaultLease, "with --cluster: how long this edge's claims outlive it if it dies (renewed every third of it)")
	verbose := fs.Bool("v", false, "log debug messages")
	pprofAddr := pprofFlag(fs)
	pos, err := cli.ParseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return cli.Usagef("edge: unexpected argument %q", pos[0])
	}
	cfg := edge.DefaultConfig()
	cfg.Domain = *domain
	cfg.PublicPort = *publicPort
	tok, tokFrom, err := token.Value()
	if err != nil {
		return fmt.Errorf("edge: %w", err)
	}
	if tok != "" && (tokFrom != "$SLUICE_TOKEN" || *tokens == "") {
		cfg.Tokens = append(cfg.Tokens, tok)
		cli.WarnWeak(stderr, tokFrom, tok)
	}
	if *tokens != "" {
		list, err := readTokens(*tokens)
		if err != nil {
			return err
		}
		cfg.Tokens = append(cfg.Tokens, list...)
		for _, t := range list {
			cli.WarnWeak(stderr, "--tokens", t)
		}
	}
	if *dataDir != "" && *storeURL != "" {
		return cli.Usagef("edge: --data and --store are two stores: give one")
	}
	admin, adminFrom, err := adminToken.Value()
	if err != nil {
		return fmt.Errorf("edge: %w", err)
	}
	if admin != "" && *dataDir == "" && *storeURL == "" {
		if adminFrom != "$SLUICE_ADMIN_TOKEN" {
			return cli.Usagef("edge: --admin-token needs a store: --data DIR or --store postgres://...")
		}
		admin = "" // set for the admin commands, maybe: this edge has no API
	}
	cli.WarnWeak(stderr, adminFrom, admin)
	ccfg, err := clusterConfig(*clusterURL, *advertise, *clusterSecret, *clusterLease, *dataDir, *storeURL)
	if err != nil {
		return err
	}
	if target := *dataDir + *storeURL; target != "" {
		st, err := store.Open(ctx, target)
		if err != nil {
			return fmt.Errorf("edge: %w", err)
		}
		defer st.Close()
		cfg.Store = st
		if admin != "" {
			cfg.AdminTokens = []string{admin}
		}
	}
	if len(cfg.Tokens) == 0 && cfg.Store == nil {
		return cli.Usagef("edge: give agents a credential with --token T or --tokens FILE, or keep tokens in a store with --data DIR")
	}
	if (*certFile == "") != (*keyFile == "") {
		return cli.Usagef("edge: --tls-cert and --tls-key go together")
	}
	if *certFile != "" {
		cfg.PublicScheme = "https"
	}
	if err := acmeOpts.configure(&cfg, *certFile != ""); err != nil {
		return err
	}
	if err := dnsOpts.configure(&cfg.ACME); err != nil {
		return err
	}
	cfg.DisablePipes = !*pipes
	switch strings.ReplaceAll(*protocols, " ", "") {
	case "v1,v2", "v2,v1":
	case "v1":
		cfg.DisableV2 = true
	default:
		return cli.Usagef(`edge: --protocols must be "v1,v2" or "v1" (v1 cannot be turned off: plain Jetty agents speak it)`)
	}
	for c := range strings.SplitSeq(*trustedProxies, ",") {
		if c = strings.TrimSpace(c); c == "" {
			continue
		}
		p, err := netip.ParsePrefix(c)
		if a, aerr := netip.ParseAddr(c); aerr == nil {
			p, err = netip.PrefixFrom(a, a.BitLen()), nil // one address
		}
		if err != nil {
			return cli.Usagef("edge: --trusted-proxies: %q is not a CIDR such as 10.0.0.0/8", c)
		}
		cfg.TrustedProxies = append(cfg.TrustedProxies, p.Masked())
	}
	cfg.IdleTimeout = *idle
	cfg.PushKeepalive = *pushKeepalive
	cfg.Session.V1.MaxBody = *maxBody
	cfg.Session.MaxStreams = *maxStreams
	cfg.Session.V1.MaxFrameSize = *maxFrame
	cfg.Session.PingInterval = *ping
	cfg.Session.PongTimeout = *pong
	cfg.MaxBuffer = int64(maxBuffer)
	cfg.MaxStreamsPerIP = *maxPerIP
	cfg.MaxPendingHandshakesPerIP = *maxHandshakes
	cfg.RegisterTimeout = *registerTimeout
	cfg.BodyIdleTimeout = *bodyIdle
	cfg.WriteIdleTimeout = *writeIdle
	cfg.MaxHeaderBytes = int(maxHeader)
	cfg.Logger = newLogger(stderr, *verbose)
	if *tcpPorts != "" {
		if cfg.TCPPorts, err = edge.ParsePortRange(*tcpPorts); err != nil {
			return cli.Usagef("edge: --tcp-ports: %v", err)
		}
		cfg.TCPListenHost, _, _ = net.SplitHostPort(*listen)
	}
	switch *udpPorts {
	case "":
	case "none":
		cfg.NoUDP = true
	default:
		if cfg.UDPPorts, err = edge.ParsePortRange(*udpPorts); err != nil {
			return cli.Usagef("edge: --udp-ports: %v", err)
		}
		cfg.TCPListenHost, _, _ = net.SplitHostPort(*listen)
	}
	cfg.UDPIdleTimeout = *udpIdle
	if ccfg != nil {
		ccfg.Logger = cfg.Logger
		c, err := cluster.New(*ccfg)
		if err != nil {
			return cli.Usagef("edge: --cluster: %v", err)
		}
		defer c.Close()
		cluster.QuietRedis() // the cluster says when Redis goes and comes back, once
		cfg.Cluster = c
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	if err := startPprof(ctx, *pprofAddr, stderr); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("edge: listen: %w", err)
	}
	if cfg.PublicPort == 0 {
		cfg.PublicPort = ln.Addr().(*net.TCPAddr).Port
	}
	var httpLn net.Listener
	if *acmeOpts.httpListen != "" {
		if httpLn, err = net.Listen("tcp", *acmeOpts.httpListen); err != nil {
			ln.Close()
			return fmt.Errorf("edge: --http-listen: %w", err)
		}
		defer httpLn.Close()
		if cfg.ACME.Email != "" {
			cfg.ACME.HTTPAddr = httpLn.Addr().String()
		}
	}
	srv, err := edge.New(cfg)
	if err != nil {
		ln.Close()
		return err
	}
	if *certFile != "" {
		cert, err := tls.LoadX509KeyPair(*certFile, *keyFile)
		if err != nil {
			ln.Close()
			return fmt.Errorf("edge: TLS: %w", err)
		}
		ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2", "http/1.1"}})
	}
	fmt.Fprintf(stderr, "sluice edge listening on %s; tunnels at %s\n", ln.Addr(), srv.PublicURL("NAME"))
	if c := cfg.Cluster; c != nil {
		fmt.Fprintf(stderr, "sluice edge cluster member %s, advertised at %s\n", c.ID(), c.Advertise())
	}
	cli.Draining(ctx, *grace, "public requests in flight may finish")
	if httpLn == nil {
		return srv.Serve(ctx, ln, *grace)
	}
	fmt.Fprintf(stderr, "sluice edge redirecting plain HTTP on %s to HTTPS\n", httpLn.Addr())
	sctx, stop := context.WithCancel(ctx)
	redirected := make(chan error, 1)
	go func() { redirected <- srv.ServeRedirect(sctx, httpLn) }()
	err = srv.Serve(ctx, ln, *grace)
	stop()
	if rerr := <-redirected; err == nil && rerr != nil {
		err = fmt.Errorf("edge: --http-listen: %w", rerr)
	}
	return err
}

// clusterConfig returns the cluster's configuration from the flags (nil
// without --cluster), or what is wrong with them: --cluster needs a store
// that several edges can share, an advertise URL and a secret, and those
// need --cluster. Nothing is connected to yet.
func clusterConfig(redisURL, advertise, secretFile string, lease time.Duration, dataDir, storeURL string) (*cluster.Config, error) {
	if redisURL == "" {
		if advertise != "" || secretFile != "" {
			return nil, cli.Usagef("edge: --advertise and --cluster-secret-file are for a cluster: give --cluster redis://HOST:PORT/DB too")
		}
		return nil, nil
	}
	if err := clusterFlagsNeeded(advertise, secretFile, dataDir, storeURL); err != nil {
		return nil, err
	}
	secret, err := readClusterSecret(secretFile)
	if err != nil {
		return nil, err
	}
	cfg := &cluster.Config{Redis: redisURL, Advertise: advertise, Secret: secret, Lease: lease}
	if err := cfg.Validate(); err != nil {
		return nil, cli.Usagef("edge: --advertise, --cluster-lease: %v", err)
	}
	if !strings.HasPrefix(redisURL, "redis://") && !strings.HasPrefix(redisURL, "rediss://") {
		return nil, cli.Usagef("edge: --cluster takes a Redis URL, redis://HOST:PORT/DB or rediss://HOST:PORT/DB")
	}
	return cfg, nil
}

func clusterFlagsNeeded(advertise, secretFile, dataDir, storeURL string) error {
	switch {
	case dataDir != "":
		return cli.Usagef("edge: --cluster needs a store shared by every edge: --store postgres://... (--data is SQLite, a file of this machine)")
	case storeURL == "":
		return cli.Usagef("edge: --cluster needs a store shared by every edge: --store postgres://...")
	case !strings.HasPrefix(storeURL, "postgres://") && !strings.HasPrefix(storeURL, "postgresql://"):
		return cli.Usagef("edge: --cluster needs a PostgreSQL store (--store postgres://...), shared by every edge")
	case advertise == "":
		return cli.Usagef("edge: --cluster needs --advertise URL: where the other edges reach this one, such as http://10.0.0.5:8080")
	case secretFile == "":
		return cli.Usagef("edge: --cluster needs --cluster-secret-file FILE: at least %d random bytes, the same on every edge (openssl rand -hex 32 > FILE)", cluster.MinSecretLen)
	}
	return nil
}

// readClusterSecret reads the cluster secret: the file's content without
// the surrounding white space, at least cluster.MinSecretLen bytes.
func readClusterSecret(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("edge: --cluster-secret-file: %w", err)
	}
	b = bytes.TrimSpace(b)
	if len(b) < cluster.MinSecretLen {
		return nil, fmt.Errorf("edge: --cluster-secret-file %s holds %d bytes; the cluster secret needs at least %d random ones (openssl rand -hex 32 > %s)",
			path, len(b), cluster.MinSecretLen, path)
	}
	return b, nil
}

func readTokens(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("edge: tokens: %w", err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line != "" && !strings.HasPrefix(line, "#") {
			out = append(out, line)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("edge: tokens: %w", err)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("edge: tokens: %s holds no token", path)
	}
	return out, nil
}

func newLogger(w io.Writer, verbose bool) *slog.Logger {
	level := slog.LevelInfo
	if verbose {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}
