package edge

import (
	"context"
	"errors"
	"html"
	"io"
	"log"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/sluicehq/sluice/api"
	"github.com/sluicehq/sluice/edge/h1"
	"github.com/sluicehq/sluice/internal/errpage"
	"github.com/sluicehq/sluice/tunnel"
	"github.com/sluicehq/sluice/wire"
)

// Server is an edge. New does no I/O; Serve runs it on a listener. All
// methods are safe for concurrent use.
type Server struct {
	cfg        Config
	registry   *registry
	metrics    *metrics
	push       *pushRegistry
	access     accessCache    // visitor rules of stored tunnels
	hosts      hostCache      // custom hostnames of stored tunnels
	handshakes handshakeLimit // pending agent handshakes per address
	authFails  authFailures   // failed basic-auth attempts per address and tunnel
	bcrypt     chan struct{}  // a slot per concurrent bcrypt check
	apex       *http.ServeMux
	forwarder  *tunnel.Proxy // to the other edges of the cluster (cluster.go)
	clusterM   *clusterMetrics

	ctx    context.Context // ends the agent sessions
	cancel context.CancelFunc
	// draining ends when a shutdown starts: push channels end then, so
	// that they never hold a shutdown for its grace period.
	draining context.Context
	drain    context.CancelFunc
	agents   sync.WaitGroup // agent connections and closing sessions
	port     atomic.Int32   // the listener's port, for public URLs

	acmeMu sync.Mutex // guards acme
	acme   *acme      // the certificate manager, once Serve started it (ACME on)

	buffers tunnel.BufferPool // the public proxies' copy buffers
	perIP   ipStreams         // public streams in flight per client IP
	tcp     portPool          // TCP tunnels' public ports
	ports   publicPorts       // the TCP ports held, by number
	udp     portPool          // UDP tunnels' public ports
}

// New returns an edge for cfg, or the reason cfg is not usable.
func New(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	s := &Server{cfg: cfg, registry: newRegistry(cfg.OfflineMemory), metrics: newMetrics(), push: newPushRegistry()}
	s.handshakes.max = cfg.MaxPendingHandshakesPerIP
	s.tcp = portPool{host: cfg.TCPListenHost, rng: cfg.TCPPorts, any: cfg.TCPAnyPort}
	s.udp = portPool{host: cfg.TCPListenHost, rng: cfg.UDPPorts, any: cfg.TCPAnyPort}
	s.initAccess()
	s.buffers.Budget = cfg.Session.Budget
	s.metrics.watchBudget(cfg.Session.Budget)
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.draining, s.drain = context.WithCancel(context.Background())
	s.apex = http.NewServeMux()
	s.apex.HandleFunc("GET /agent", s.serveAgent)
	s.apex.HandleFunc("GET /healthz", s.serveHealth)
	if cfg.Cluster != nil {
		s.initCluster()
	}
	s.apex.Handle("GET /metrics", promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{}))
	if cfg.Store != nil {
		s.routeAPI()
	} else {
		s.apex.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
			apiError(w, http.StatusNotFound, api.CodeNoStore, "this edge has no store: start it with --data DIR (or --store postgres://...) for the API")
		})
	}
	s.apex.HandleFunc("/", s.landing)
	return s, nil
}

// PublicURL returns the public URL of tunnel name.
func (s *Server) PublicURL(name string) string { return s.publicURLOf(name + "." + s.cfg.Domain) }

// publicURLOf is the URL of host as the edge is configured to be reached:
// its public scheme, and its public port unless that scheme's default.
func (s *Server) publicURLOf(host string) string {
	port := s.cfg.PublicPort
	if port == 0 {
		port = int(s.port.Load())
	}
	if port != 0 && port != defaultPort(s.cfg.PublicScheme) {
		host += ":" + strconv.Itoa(port)
	}
	return s.cfg.PublicScheme + "://" + host
}

// ServeHTTP routes by Host: NAME.DOMAIN to tunnel NAME, a custom hostname
// of a stored tunnel to that tunnel (hostnames.go), anything else to the
// apex (agents, health, metrics, landing page).
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	host, name, ok := s.tunnelHost(r.Host)
	custom := false
	if !ok {
		var err error
		if name, custom, err = s.hostTunnel(r.Context(), host); err != nil {
			errpage.Write(w, r, http.StatusServiceUnavailable, wire.CodeStoreUnavailable, "Edge store unavailable",
				"the edge could not read which tunnel "+host+" belongs to; try again.")
			return
		}
		if !custom {
			s.apex.ServeHTTP(w, r)
			return
		}
		r = withPublicHost(r, host)
	}
	// Every answer to a tunnel's host is counted (statusWriter), including
	// the limits' own (guard).
	sw := &statusWriter{ResponseWriter: w, m: s.metrics, writeIdle: s.cfg.WriteIdleTimeout}
	defer sw.done()
	gw, r := s.guard(sw, r)
	defer gw.finish()
	w = gw
	r, fromPeer := s.fromPeer(w, r)
	if r == nil {
		return // a forged cluster signature, refused
	}
	if !custom && !ValidName(name) {
		errpage.Write(w, r, http.StatusNotFound, wire.CodeTunnelNotFound, "No such tunnel",
			"there is no tunnel at "+host+": tunnel names are one DNS label, such as demo."+s.cfg.Domain+".")
		return
	}
	e := s.registry.lookup(name)
	if (e == nil || e.session == nil) && !fromPeer && s.forward(w, r, name) {
		return // held by another edge of the cluster, which applies the visitor rules
	}
	if !s.admit(w, r, name, e) {
		return
	}
	switch {
	case e == nil:
		errpage.Write(w, r, http.StatusNotFound, wire.CodeTunnelNotFound, "No such tunnel",
			"no agent has registered the tunnel "+host+" at this edge.")
	case e.session == nil && e.ended != "":
		s.endedPage(w, r, host, e.ended)
	case e.session == nil:
		errpage.Write(w, r, http.StatusBadGateway, wire.CodeAgentOffline, "agent offline",
			"the agent for "+host+" is not connected (it left "+time.Since(e.since).Round(time.Second).String()+" ago); the tunnel serves again when it reconnects.")
	case e.proxy == nil:
		errpage.Write(w, r, http.StatusNotFound, wire.CodeTunnelNotFound, "A TCP tunnel",
			"the tunnel "+host+" is a TCP tunnel: it serves connections to its own port of this edge, not HTTP requests.")
	default:
		e.proxy.ServeHTTP(w, r)
	}
}

// tunnelHost reads a request's Host: the host name (lower case, without
// port or final dot) and, for NAME.DOMAIN, the tunnel's name.
func (s *Server) tunnelHost(rawHost string) (host, name string, underDomain bool) {
	host = strings.ToLower(rawHost)
	host, _, _ = splitHostPort(host)
	host = strings.TrimSuffix(host, ".")
	d := s.cfg.Domain
	if len(host) > len(d) && host[len(host)-len(d)-1] == '.' && host[len(host)-len(d):] == d {
		return host, host[:len(host)-len(d)-1], true
	}
	return host, "", false
}

// lean reports whether r may be served by the edge's own HTTP/1.1
// server: a request to a tunnel's host under the domain (custom hostnames,
// which need the store, and the apex go to net/http's).
func (s *Server) lean(r *http.Request) bool {
	_, name, ok := s.tunnelHost(r.Host)
	return ok && name != ""
}

// endedPage answers for a tunnel that an admin's decision (code, a
// wire.Final code) took offline: the true reason, at once.
func (s *Server) endedPage(w http.ResponseWriter, r *http.Request, host, code string) {
	switch code {
	case wire.CodeTunnelDeleted:
		errpage.Write(w, r, http.StatusNotFound, code, "Tunnel deleted",
			"the tunnel "+host+" was deleted by the operator of this edge.")
	case wire.CodeTunnelDisabled:
		errpage.Write(w, r, http.StatusServiceUnavailable, code, "Tunnel disabled",
			"the tunnel "+host+" is disabled by its operator.")
	case wire.CodeTokenRevoked:
		errpage.Write(w, r, http.StatusServiceUnavailable, code, "Tunnel's token revoked",
			"the operator of this edge revoked the agent token of "+host+"; it serves again only with a new token.")
	default: // wire.CodeTunnelReplaced: given to another token, whose agent is not here yet
		errpage.Write(w, r, http.StatusBadGateway, wire.CodeAgentOffline, "agent offline",
			"the tunnel "+host+" was given to another agent, which has not connected yet.")
	}
}

func (s *Server) landing(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/" {
		errpage.Write(w, r, http.StatusNotFound, wire.CodeNotFound, "Not found", r.URL.Path+" is not a page of this edge.")
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	u := html.EscapeString(s.PublicURL("NAME")) // the edge's real public scheme and port
	io.WriteString(w, `<!doctype html><meta charset="utf-8"><title>sluice edge</title>`+
		`<style>body{font:16px system-ui,sans-serif;margin:3rem;max-width:40rem}code{background:#eee;padding:0 .2em}</style>`+
		`<h1>sluice edge</h1><p>Tunnels of this edge are served at <code>`+u+`</code>. `+
		`Expose a local server with <code>sluice http 3000 --edge URL --token T --name NAME</code>.</p>`+
		`<p><a href="/healthz">/healthz</a> · <a href="/metrics">/metrics</a></p>`)
}

// Serve serves on ln until ctx ends, then shuts down gracefully: it stops
// accepting, lets requests in flight run for up to grace, then aborts them
// and closes the agents' sessions. It returns nil after a shutdown asked
// for by ctx. With ACME (Config.ACME), ln is a plain listener on which
// Serve serves TLS with the managed certificates.
func (s *Server) Serve(ctx context.Context, ln net.Listener, grace time.Duration) error {
	if tcp, ok := ln.Addr().(*net.TCPAddr); ok {
		s.port.Store(int32(tcp.Port))
	}
	if s.cfg.ACME.enabled() {
		ln = s.serveACME(ln)
	}
	hs := &http.Server{
		Handler:           s,
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       s.cfg.IdleTimeout,
		MaxHeaderBytes:    s.cfg.MaxHeaderBytes,
		ErrorLog:          log.New(slogWriter{s.cfg.Logger}, "", 0), // TLS handshake errors (refused SNI names), clients that left: debug
	}
	// HTTP/2 through ALPN on a TLS listener, and with prior knowledge
	// (h2c, what gRPC clients speak without TLS) on a plain one.
	hs.Protocols = new(http.Protocols)
	hs.Protocols.SetHTTP1(true)
	hs.Protocols.SetHTTP2(true)
	hs.Protocols.SetUnencryptedHTTP2(true)
	// Tunnel traffic over HTTP/1.1 (plain or TLS) goes through the edge's
	// own server (edge/h1); everything else (HTTP/2, upgrades, the apex)
	// through hs.
	srv := &h1.Server{Handler: s, Lean: s.lean, Fallback: hs, ReadHeaderTimeout: hs.ReadHeaderTimeout, IdleTimeout: hs.IdleTimeout}
	stopCluster := s.runCluster()
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		s.Close()
		stopCluster(false)
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	s.drain()                 // push channels end now: agents reconnect elsewhere or later
	err := srv.Shutdown(sctx) // waits for public requests, up to grace
	s.Close()                 // then the sessions go, aborting what is left
	stopCluster(true)         // and this edge leaves the cluster's tables
	if err != nil {
		srv.Close()
	}
	if serr := <-errc; serr != nil && !errors.Is(serr, http.ErrServerClosed) {
		return serr
	}
	return nil
}

// Close closes every agent session and returns once the agent connections
// have ended. Public requests through them fail. It is idempotent.
func (s *Server) Close() error {
	s.drain()
	s.cancel()
	for _, sess := range s.registry.online() {
		sess.Close()
	}
	s.agents.Wait()
	if a := s.acmeReady(); a != nil {
		a.stop()
	}
	return nil
}
