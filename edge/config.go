package edge

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/sluicehq/sluice/internal/cluster"
	"github.com/sluicehq/sluice/store"
	"github.com/sluicehq/sluice/tunnel"
)

// Config configures an edge. Zero values mean the documented defaults.
type Config struct {
	// Domain is the apex domain; tunnel NAME is served at NAME.Domain.
	// Default "localhost".
	Domain string
	// Tokens are the agent credentials accepted (compared in constant
	// time). At least one is required, unless Store is set.
	Tokens []string
	// Store, if set, keeps tokens and tunnels: its agent tokens are
	// accepted too, its tunnels belong to their tokens, and the admin API
	// is served under /api/.
	Store *store.Store
	// AdminTokens are admin credentials for the API besides the store's
	// admin tokens (compared in constant time). They need Store.
	AdminTokens []string
	// PublicScheme is "http" (default) or "https", for public URLs.
	PublicScheme string
	// PublicPort is the port in public URLs; 0 means the listener's, and
	// 80/443 are left out of URLs.
	PublicPort int
	// Session configures each agent session: window, stream limit, body
	// limit for plain agents, frame size limit, ping interval and pong
	// timeout (dead-agent detection).
	Session tunnel.Config
	// RegisterTimeout bounds the wait for an agent's register frame.
	// Default 5 s: an unauthenticated connection is held no longer.
	RegisterTimeout time.Duration
	// MaxPendingHandshakesPerIP bounds the agent handshakes in progress
	// (upgraded, not yet registered or refused) from one address; more
	// are answered 429. Default 32.
	MaxPendingHandshakesPerIP int
	// OfflineMemory is how long a tunnel whose agent left is remembered, so
	// that its URL answers 502 "agent offline" rather than 404. Default 24 h.
	OfflineMemory time.Duration
	// IdleTimeout closes a public keep-alive connection that stays idle
	// between requests this long. It never cuts a response in progress:
	// streams have no time limit. Default 2 min.
	IdleTimeout time.Duration
	// EdgeName is how this edge names itself in the store's agents table.
	// Default: the host name.
	EdgeName string
	// PushKeepalive is the interval of the ": keepalive" comments on idle
	// push channels. Default 15 s (shorter than the 30 s of the original
	// design, since some proxies cut idle connections after 10-15 s).
	PushKeepalive time.Duration
	// TrustedProxies are the networks of the proxies in front of the edge
	// (a load balancer): from a peer in them, the visitor's address is
	// taken from X-Forwarded-For or Forwarded, for the tunnels' allowlists.
	// From any other peer, those fields are not believed. Default none.
	TrustedProxies []netip.Prefix
	// MaxBuffer bounds the body bytes the edge buffers for all tunnels
	// together, and the window it lets agents fill (tunnel.Budget): under
	// pressure streams get smaller windows, never more memory. Default
	// 256 MiB. Ignored when Session.Budget is set.
	MaxBuffer int64
	// MaxStreamsPerIP bounds the public requests in flight from one client
	// address, over all tunnels; past it the edge answers 429 with
	// Retry-After. Default 256.
	MaxStreamsPerIP int
	// BodyIdleTimeout ends a request body that sends nothing for this
	// long: the upload fails at the upstream and the client gets an error
	// or a closed connection. Default 60 s.
	BodyIdleTimeout time.Duration
	// WriteIdleTimeout cuts a client that reads nothing of a response for
	// this long (a response's write, between this and 1.25× this long
	// after it began: the deadline moves only when near). A response with
	// nothing to send (a quiet event stream) is idle, not slow, and is
	// never cut. Default 60 s.
	WriteIdleTimeout time.Duration
	// MaxHeaderBytes bounds a visitor's request head (request line and
	// header fields; HTTP/2 counts its header list): past it the edge
	// answers 431. Default 64 KiB; at most tunnel.MaxRequestHeaderBytes
	// (4 MiB).
	MaxHeaderBytes int
	// ACME, when its Email is set, gives the edge certificates of its own
	// (edge/acme.go): Serve then serves TLS, and public URLs are https.
	ACME ACMEConfig
	// DisableV2 makes the edge speak protocol v1 only: it does not offer
	// the sluice.v2 WebSocket subprotocol, and agents on "auto" fall back
	// to v1.
	DisableV2 bool
	// DisablePipes does not take the pipes v2 agents offer (sluice edge
	// --pipes=false; docs/protocol.md, "Pipes"): every request of theirs
	// is then a stream of its own.
	DisablePipes bool
	// TCPPorts is the range of public ports TCP tunnels get (sluice edge
	// --tcp-ports): the one an agent asks for if it is in the range and
	// free, else any free one of the range. Default none: the edge refuses
	// TCP tunnels, unless TCPAnyPort.
	TCPPorts PortRange
	// TCPAnyPort lets TCP tunnels have any free port (the one asked for,
	// else one the system chooses), TCPPorts aside: the embedded edge of
	// sluice tcp, on a laptop. Default false.
	TCPAnyPort bool
	// UDPPorts is the range of public ports UDP tunnels get (sluice edge
	// --udp-ports). Default TCPPorts; with NoUDP, none (UDP tunnels are
	// refused unless TCPAnyPort, which gives them any free port too).
	UDPPorts PortRange
	// NoUDP refuses UDP tunnels whatever TCPPorts is (sluice edge
	// --udp-ports none), TCPAnyPort aside. Default false.
	NoUDP bool
	// UDPIdleTimeout ends a UDP tunnel's session of one remote address
	// after that long without a datagram either way (sluice edge
	// --udp-idle-timeout). Default 60 s.
	UDPIdleTimeout time.Duration
	// TCPListenHost is the address the TCP tunnels' public ports listen
	// on (the host of sluice edge --listen). Default "": all addresses.
	TCPListenHost string
	// TCPHost is the host of TCP tunnels' public URLs (tcp://HOST:PORT),
	// what a visitor connects to. Default Domain.
	TCPHost string
	// Cluster, if set, makes the edge one of several sharing Store (which
	// must then be PostgreSQL) and a Redis (edge/cluster.go): it claims the
	// names of the agents it holds, forwards requests for the others to
	// the edges that hold them, and serves requests other edges forward.
	// Serve runs it (Cluster.Run) and leaves it at a graceful stop; the
	// caller closes it after Serve returns.
	Cluster *cluster.Cluster
	// Logger receives the edge's logs. Nil discards.
	Logger *slog.Logger
}

// DefaultConfig returns the defaults with tokens to be filled in.
func DefaultConfig() Config {
	return Config{Domain: "localhost", PublicScheme: "http", RegisterTimeout: 5 * time.Second, MaxPendingHandshakesPerIP: 32, OfflineMemory: 24 * time.Hour, IdleTimeout: 2 * time.Minute,
		MaxBuffer: tunnel.DefaultMaxBuffer, MaxStreamsPerIP: 256, BodyIdleTimeout: time.Minute, WriteIdleTimeout: time.Minute, MaxHeaderBytes: 64 << 10}
}

// Validate reports what is wrong with the configuration.
func (c *Config) Validate() error {
	if len(c.Tokens) == 0 && c.Store == nil {
		return errors.New("edge: no agent token: give at least one (--token or --tokens), or a store (--data or --store)")
	}
	if c.Cluster != nil && c.Store == nil {
		return errors.New("edge: a cluster needs a store shared by its edges (--store postgres://...)")
	}
	if len(c.AdminTokens) > 0 && c.Store == nil {
		return errors.New("edge: an admin token needs a store (--data DIR or --store postgres://...)")
	}
	for _, t := range c.AdminTokens {
		if t == "" {
			return errors.New("edge: empty admin token")
		}
	}
	for _, t := range c.Tokens {
		if t == "" {
			return errors.New("edge: empty agent token")
		}
	}
	if c.Domain != "" && (strings.Contains(c.Domain, "/") || strings.Contains(c.Domain, ":")) {
		return errors.New("edge: domain must be a host name without scheme or port, like example.com")
	}
	if c.PublicScheme != "" && c.PublicScheme != "http" && c.PublicScheme != "https" {
		return errors.New(`edge: public scheme must be "http" or "https"`)
	}
	if c.MaxHeaderBytes > tunnel.MaxRequestHeaderBytes {
		return fmt.Errorf("edge: the largest request head may be at most %d bytes (4MiB), not %d", tunnel.MaxRequestHeaderBytes, c.MaxHeaderBytes)
	}
	if err := c.TCPPorts.validate(); err != nil {
		return err
	}
	if err := c.UDPPorts.validate(); err != nil {
		return err
	}
	if c.UDPIdleTimeout < 0 {
		return errors.New("edge: the UDP idle timeout must not be negative")
	}
	return nil
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.Domain == "" {
		c.Domain = d.Domain
	}
	c.Domain = strings.ToLower(strings.TrimSuffix(c.Domain, "."))
	if c.TCPHost == "" {
		c.TCPHost = c.Domain
	}
	if c.UDPPorts.Empty() && !c.NoUDP {
		c.UDPPorts = c.TCPPorts
	}
	if c.UDPIdleTimeout == 0 {
		c.UDPIdleTimeout = tunnel.DefaultUDPIdleTimeout
	}
	if c.PublicScheme == "" {
		c.PublicScheme = d.PublicScheme
	}
	if c.ACME.enabled() {
		c.PublicScheme = "https"
	}
	if c.RegisterTimeout <= 0 {
		c.RegisterTimeout = d.RegisterTimeout
	}
	if c.MaxPendingHandshakesPerIP <= 0 {
		c.MaxPendingHandshakesPerIP = d.MaxPendingHandshakesPerIP
	}
	if c.OfflineMemory <= 0 {
		c.OfflineMemory = d.OfflineMemory
	}
	if c.EdgeName == "" {
		c.EdgeName, _ = os.Hostname()
	}
	if c.PushKeepalive <= 0 {
		c.PushKeepalive = 15 * time.Second
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = d.IdleTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.MaxBuffer <= 0 {
		c.MaxBuffer = d.MaxBuffer
	}
	if c.MaxStreamsPerIP <= 0 {
		c.MaxStreamsPerIP = d.MaxStreamsPerIP
	}
	if c.BodyIdleTimeout <= 0 {
		c.BodyIdleTimeout = d.BodyIdleTimeout
	}
	if c.WriteIdleTimeout <= 0 {
		c.WriteIdleTimeout = d.WriteIdleTimeout
	}
	if c.MaxHeaderBytes <= 0 {
		c.MaxHeaderBytes = d.MaxHeaderBytes
	}
	if c.Session.Budget == nil {
		c.Session.Budget = tunnel.NewBudget(c.MaxBuffer)
	}
	c.Session = c.Session.WithDefaults()
	return c
}

// ValidName reports whether name is a usable tunnel name: a DNS label of
// lowercase letters, digits and hyphens, 1 to 63 long, not starting or
// ending with a hyphen.
func ValidName(name string) bool { return store.ValidLabel(name) }
