package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluicehq/sluice/api"
	"github.com/sluicehq/sluice/internal/inspect"
	"github.com/sluicehq/sluice/sse"
	"github.com/sluicehq/sluice/tunnel"
	"github.com/sluicehq/sluice/wire"
	"golang.org/x/crypto/bcrypt"
)

// Config configures an agent. Zero values mean the documented defaults.
type Config struct {
	// Edge is the edge's URL (http:// or https://); the agent connects to
	// its /agent WebSocket.
	Edge string
	// Token is the agent credential the edge accepts.
	Token string
	// Name is the tunnel's name: its public URL is NAME.DOMAIN.
	Name string
	// Type is the kind of tunnel: "http" (the default: requests to
	// Upstream), "tcp" (connections to LocalAddr, on a public port) or
	// "udp" (datagrams to LocalAddr, a session per remote address).
	Type string
	// LocalAddr is, for a TCP tunnel, the local HOST:PORT each public
	// connection is carried to (within DialTimeout); for a UDP tunnel,
	// the one each session's datagrams go to.
	LocalAddr string
	// RemotePort is, for a TCP or UDP tunnel, the public port asked for;
	// 0: any port the edge gives.
	RemotePort int
	// UDPIdleTimeout ends a UDP tunnel's session (its local socket) after
	// this long without a datagram either way. Default 60 s
	// (tunnel.DefaultUDPIdleTimeout).
	UDPIdleTimeout time.Duration
	// Upstream is, for an HTTP tunnel, the local server, such as http://127.0.0.1:3000:
	// http:// (HTTP/1.1), https:// (HTTP/2 when the server offers it
	// through ALPN, else HTTP/1.1) or h2c:// (HTTP/2 without TLS, with
	// prior knowledge, as gRPC servers speak).
	Upstream *url.URL
	// UpstreamInsecure skips the verification of an https:// upstream's
	// certificate (a self-signed local one). Default false: verified.
	UpstreamInsecure bool
	// UpstreamCA, if set, holds PEM certificates trusted for https://
	// upstreams besides the system roots.
	UpstreamCA []byte
	// HostHeader is what the upstream sees as Host: "" or "preserve" keeps
	// the public host, "rewrite" uses the upstream's, anything else is used
	// as it is.
	HostHeader string
	// ResponseHeaderTimeout bounds the wait for the upstream's response
	// headers; bodies have no time limit. Default 60 s.
	ResponseHeaderTimeout time.Duration
	// MaxBackoff caps the wait between reconnects. Default 30 s.
	MaxBackoff time.Duration
	// Protocol is "auto" (the default: v2 when the edge offers it, else
	// v1), "v1" or "v2" (fails when the edge does not offer it).
	Protocol string
	// Session configures the tunnel session (window, frame limit, pings).
	Session tunnel.Config
	// Logger receives the agent's logs. Nil discards.
	Logger *slog.Logger
	// Console, if set, gets one line per request (per connection for a
	// TCP tunnel).
	Console io.Writer
	// Inspector, if set, records every request the agent serves (an HTTP
	// tunnel's), for the inspector's page and API (sluice --inspect).
	Inspector *inspect.Inspector
	// OnConnect, if set, is called with the public URL and the protocol
	// ("v1" or "v2") each time the tunnel is registered.
	OnConnect func(publicURL, protocol string)
	// OnRetry, if set, is called before each wait to reconnect.
	OnRetry func(err error, delay time.Duration)
	// UserAgent is sent with the WebSocket handshake; the edge records it
	// as the agent's version. Empty means "sluice-agent".
	UserAgent string
	// TLSClientConfig, if set, is used to connect to https:// edges.
	TLSClientConfig *tls.Config
	// BasicAuthUser and BasicAuthPassword, if set, are the user and
	// password the edge asks visitors for; AllowCIDRs, if set, the
	// networks visitors must come from. They are sent at registration (the
	// password as a bcrypt hash) and enforced by the edge, for ad-hoc
	// tunnels; an edge that does not confirm it enforces them is refused
	// (a *RegisterError with wire.CodeNoAccess), never served unprotected.
	BasicAuthUser     string
	BasicAuthPassword string
	AllowCIDRs        []string
}

// RegisterError is the edge's refusal of a registration (a wrong token, a
// name taken by another agent, an invalid name), or its retirement of the
// tunnel (wire.Final codes). The agent does not retry after it.
type RegisterError = tunnel.RegisterError

// Agent keeps one tunnel registered at an edge. New does no I/O; Run blocks.
type Agent struct {
	cfg     Config
	handler http.Handler
	wsURL   string
	backoff sse.Backoff // between sessions
	target  atomic.Pointer[upstreamTarget]
	access  *tunnel.Access                      // the visitor rules sent at registration, or nil
	sess    atomic.Pointer[tunnel.AgentSession] // the session being served

	consoleMu sync.Mutex // one console line at a time (TCP tunnels)
	console   *console   // an HTTP tunnel's console lines (handler and pipes), if Config.Console
}

// upstreamTarget is where requests go, and the Host they carry.
type upstreamTarget struct {
	url        *url.URL
	hostHeader string
}

// SetUpstream changes where new requests go (and their Host rule), at
// once and without reconnecting: requests in flight finish where they
// started.
func (a *Agent) SetUpstream(u *url.URL, hostHeader string) {
	a.target.Store(&upstreamTarget{url: u, hostHeader: hostHeader})
	if s := a.sess.Load(); s != nil {
		// The edge's pipes go where the upstream was (pipe.go).
		if err := s.ResetPipes(); err != nil {
			a.cfg.Logger.Warn("telling the edge the upstream changed", "err", err)
		}
	}
}

// New checks cfg and returns an agent.
func New(cfg Config) (*Agent, error) {
	u, err := api.ParseURL(cfg.Edge)
	if err != nil {
		return nil, fmt.Errorf("agent: edge %w", err)
	}
	switch cfg.Type {
	case "", wire.TunnelHTTP:
		cfg.Type = wire.TunnelHTTP
		if cfg.Upstream == nil || cfg.Upstream.Host == "" {
			return nil, errors.New("agent: no upstream")
		}
		if _, err := api.ParseUpstream(cfg.Upstream.String()); err != nil {
			return nil, fmt.Errorf("agent: upstream %w", err)
		}
	case wire.TunnelTCP, wire.TunnelUDP:
		if _, _, err := net.SplitHostPort(cfg.LocalAddr); err != nil {
			return nil, fmt.Errorf("agent: local address %q is not HOST:PORT", cfg.LocalAddr)
		}
		if cfg.RemotePort < 0 || cfg.RemotePort > 65535 {
			return nil, fmt.Errorf("agent: remote port %d is not a port", cfg.RemotePort)
		}
		if cfg.UDPIdleTimeout < 0 {
			return nil, fmt.Errorf("agent: UDP idle timeout %v is negative", cfg.UDPIdleTimeout)
		}
		if cfg.BasicAuthUser != "" || cfg.BasicAuthPassword != "" {
			return nil, errors.New("agent: basic auth does not apply to TCP and UDP tunnels; use allowed networks")
		}
		cfg.Upstream = &url.URL{Scheme: cfg.Type, Host: cfg.LocalAddr} // for the handler below, which a TCP or UDP tunnel never calls
	default:
		return nil, fmt.Errorf(`agent: tunnel type %q is not "http", "tcp" or "udp"`, cfg.Type)
	}
	upstreamTLS, err := newUpstreamTLS(cfg.UpstreamInsecure, cfg.UpstreamCA)
	if err != nil {
		return nil, err
	}
	if cfg.Name == "" {
		return nil, errors.New("agent: no tunnel name")
	}
	switch cfg.Protocol {
	case "":
		cfg.Protocol = "auto"
	case "auto", "v1", "v2":
	default:
		return nil, fmt.Errorf(`agent: protocol %q is not "auto", "v1" or "v2"`, cfg.Protocol)
	}
	if cfg.ResponseHeaderTimeout <= 0 {
		cfg.ResponseHeaderTimeout = 60 * time.Second
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	// A copy of our own: an http.Transport that shares the caller's
	// config adds "h2" to its NextProtos, which a WebSocket cannot speak.
	cfg.TLSClientConfig = cfg.TLSClientConfig.Clone()
	access, err := newAccess(cfg)
	if err != nil {
		return nil, err
	}
	u.Scheme = map[string]string{"http": "ws", "https": "wss"}[u.Scheme]
	u.Path = strings.TrimSuffix(u.Path, "/") + "/agent"
	a := &Agent{cfg: cfg, wsURL: u.String(), backoff: sse.Backoff{Max: cfg.MaxBackoff, Min: 50 * time.Millisecond}, access: access}
	a.SetUpstream(cfg.Upstream, cfg.HostHeader)
	a.handler = newProxy(&a.cfg, upstreamTLS, a.target.Load)
	if cfg.Inspector != nil {
		// Inside the console's wrap: a replay, sent by the inspector to
		// Handler (through a Wrap of its own, which records it once), gets
		// its console line too.
		a.handler = cfg.Inspector.Wrap(a.handler)
	}
	if cfg.Console != nil {
		a.console = &console{w: cfg.Console}
		a.handler = a.console.wrap(a.handler)
	}
	return a, nil
}

// newUpstreamTLS returns the TLS configuration for https:// upstreams: the
// system roots plus the PEM certificates of ca, or no verification at all
// when insecure. Nil means the defaults (the system roots).
func newUpstreamTLS(insecure bool, ca []byte) (*tls.Config, error) {
	switch {
	case insecure:
		return &tls.Config{InsecureSkipVerify: true}, nil
	case len(ca) == 0:
		return nil, nil
	}
	c, err := TrustCA(ca)
	if err != nil {
		return nil, fmt.Errorf("agent: the upstream CA: %w", err)
	}
	return c, nil
}

// TrustCA returns a TLS client configuration that trusts the system roots
// plus the PEM certificates of ca: for an edge (Config.TLSClientConfig,
// sluice --ca) or an upstream (Config.UpstreamCA) whose certificate comes
// from a private CA.
func TrustCA(ca []byte) (*tls.Config, error) {
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool() // no system roots here: the CA alone
	}
	if !pool.AppendCertsFromPEM(ca) {
		return nil, ErrNoPEM
	}
	return &tls.Config{RootCAs: pool}, nil
}

// newAccess checks cfg's visitor rules and hashes the password (once, not
// at each reconnect); nil when cfg sets none.
func newAccess(cfg Config) (*tunnel.Access, error) {
	if cfg.BasicAuthUser == "" && cfg.BasicAuthPassword == "" && len(cfg.AllowCIDRs) == 0 {
		return nil, nil
	}
	a := &tunnel.Access{BasicAuthUser: cfg.BasicAuthUser, AllowCIDRs: cfg.AllowCIDRs}
	if cfg.BasicAuthUser != "" || cfg.BasicAuthPassword != "" {
		if cfg.BasicAuthUser == "" || cfg.BasicAuthPassword == "" || strings.Contains(cfg.BasicAuthUser, ":") {
			return nil, errors.New("agent: basic auth needs a user (without ':') and a password")
		}
		h, err := bcrypt.GenerateFromPassword([]byte(cfg.BasicAuthPassword), bcrypt.DefaultCost)
		if err != nil {
			return nil, fmt.Errorf("agent: basic auth: %w", err)
		}
		a.BasicAuthBcrypt = string(h)
	}
	for _, c := range cfg.AllowCIDRs {
		if _, _, err := net.ParseCIDR(c); err != nil {
			return nil, fmt.Errorf("agent: allowed network %q is not a CIDR such as 10.0.0.0/8", c)
		}
	}
	return a, nil
}

// Run keeps the tunnel up until ctx ends (then it returns nil), the edge
// refuses the registration (a *RegisterError), or the edge's certificate
// fails verification CertAttempts times in a row (a *CertError). After a
// lost connection it
// reconnects with exponential backoff and full jitter, capped at
// MaxBackoff, starting over after a session that lasted.
func (a *Agent) Run(ctx context.Context) error {
	failures, certFailures := 0, 0
	for {
		start := time.Now()
		err := a.session(ctx)
		if ctx.Err() != nil {
			return nil
		}
		var re *RegisterError
		if errors.As(err, &re) && re.Code != wire.CodeInternal {
			return err
		}
		var pe *tunnel.PeerError
		if errors.As(err, &pe) && wire.Final(pe.Code) {
			// Another agent took the tunnel over with our credential
			// (reconnecting would only take it back, over and over), or
			// the operator deleted or disabled the tunnel or revoked the
			// token: the edge wants this agent gone.
			return &RegisterError{Code: pe.Code, Message: pe.Message}
		}
		if !IsCertError(err) {
			certFailures = 0
		} else if certFailures++; certFailures >= CertAttempts {
			return &CertError{Edge: a.cfg.Edge, Attempts: certFailures, Err: err}
		}
		if a.backoff.Healthy(time.Since(start)) {
			failures = 0 // a healthy session: start the backoff over
		}
		failures++
		delay := a.backoff.Delay(failures)
		a.cfg.Logger.Warn("tunnel lost", "err", err, "retry_in", delay)
		if a.cfg.OnRetry != nil {
			a.cfg.OnRetry(err, delay)
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// session connects, registers and serves until the connection ends.
func (a *Agent) session(ctx context.Context) error {
	var dial, dialUDP func(context.Context, string) (net.Conn, error)
	var pipe func(context.Context) (net.Conn, error)
	switch a.cfg.Type {
	case wire.TunnelTCP:
		dial = a.dialTCP
	case wire.TunnelUDP:
		dialUDP = a.dialUDP
	}
	if a.offersPipes() {
		pipe = a.dialPipe
	}
	sess, err := tunnel.Dial(ctx, tunnel.DialConfig{
		Config:          a.cfg.Session,
		URL:             a.wsURL,
		TunnelID:        a.cfg.Name,
		Token:           a.cfg.Token,
		Protocol:        a.cfg.Protocol,
		UserAgent:       a.cfg.UserAgent,
		TLSClientConfig: a.cfg.TLSClientConfig,
		Access:          a.access,
		Type:            a.cfg.Type,
		RemotePort:      a.cfg.RemotePort,
		DialTCP:         dial,
		DialUDP:         dialUDP,
		UDPIdleTimeout:  a.cfg.UDPIdleTimeout,
		Pipe:            pipe,
	})
	if err != nil {
		var re *tunnel.RegisterError
		if errors.As(err, &re) && re.Code == wire.CodeNoV2 {
			re.Message = "the edge at " + a.cfg.Edge + " does not offer protocol v2 (use --protocol auto or v1)"
		}
		if errors.As(err, &re) && re.Code == wire.CodeNoAccess {
			re.Message = "the edge at " + a.cfg.Edge + " does not enforce visitor rules (basic auth, allowed networks): it is older than this agent, so the tunnel was not opened; upgrade the edge or start without them"
		}
		return err
	}
	publicURL := sess.PublicURL
	if publicURL == "" {
		publicURL = a.cfg.Name + " (the edge sent no public URL)"
	}
	if a.cfg.OnConnect != nil {
		a.cfg.OnConnect(publicURL, sess.Protocol)
	}
	a.sess.Store(sess)
	defer a.sess.CompareAndSwap(sess, nil)
	return sess.Serve(ctx, a.handler)
}

// Handler returns the agent's local handler: the reverse proxy to the
// upstream, with the inspector's capture and the console log if
// configured. It is what the inspector's replays go to
// (inspect.HandlerConfig.Upstream).
func (a *Agent) Handler() http.Handler { return a.handler }
