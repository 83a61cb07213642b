package edge

import (
	"cmp"
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/sluicehq/sluice/internal/cluster"
	"github.com/sluicehq/sluice/store"
	"github.com/sluicehq/sluice/tunnel"
	"github.com/sluicehq/sluice/wire"
)

// replacedGrace is how long a replaced session's requests may run on.
const replacedGrace = 30 * time.Second

// serveAgent runs the WebSocket of one agent: the handshake (tunnel.Accept,
// with this edge's checks in authorize), then the session until it ends.
func (s *Server) serveAgent(w http.ResponseWriter, r *http.Request) {
	s.agents.Add(1)
	defer s.agents.Done()
	log := s.cfg.Logger.With("remote", r.RemoteAddr)
	release, ok := s.handshakes.acquire(s.clientIP(r))
	if !ok {
		s.metrics.agentConns.WithLabelValues("too_many_pending").Inc()
		s.cfg.Session.LogLimiter.Log(log, slog.LevelWarn, "handshake:too_many_pending", "agent handshake refused: too many pending from this address",
			"limit", s.cfg.MaxPendingHandshakesPerIP)
		w.Header().Set("Retry-After", "1")
		http.Error(w, "too many pending agent handshakes from this address", http.StatusTooManyRequests)
		return
	}
	s.metrics.handshakesPending.Inc()
	pending := true
	done := func() {
		if pending {
			pending = false
			release()
			s.metrics.handshakesPending.Dec()
		}
	}
	defer done()
	cfg := s.cfg.Session
	cfg.HandshakeTimeout = s.cfg.RegisterTimeout
	cfg.Logger = log
	cfg.OnFrameError = func(kind string) { s.metrics.frameErrors.WithLabelValues(kind).Inc() }
	var name string
	var attached, old tunnel.Session
	var features []string
	var tcp *tcpPort // the public port of a TCP tunnel
	var claim cluster.Claim
	var udp *udpPort // the public port of a UDP tunnel
	defer func() {
		if tcp != nil {
			tcp.close()
		}
		if udp != nil {
			udp.close()
		}
	}()
	session, err := tunnel.Accept(w, r, tunnel.AcceptConfig{
		Config:       cfg,
		DisableV2:    s.cfg.DisableV2,
		DisablePipes: s.cfg.DisablePipes,
		Authorize: func(ctx context.Context, reg *tunnel.Registration) (*tunnel.Grant, error) {
			features = reg.Features
			mark := s.registry.decision()
			g, owner, err := s.authorize(ctx, reg)
			if err != nil {
				return nil, err
			}
			access, err := adhocAccess(reg.Access, owner, g.TunnelID)
			if err != nil {
				s.metrics.agentConns.WithLabelValues("bad_access").Inc()
				return nil, err
			}
			g.Access = true // the rules sent are enforced (admit), or refused above
			name = g.TunnelID
			var reserved map[int]string // the ports other stored tunnels keep
			if reg.Type == wire.TunnelTCP || reg.Type == wire.TunnelUDP {
				if reserved, err = s.reservedPorts(ctx, reg.Type, name); err != nil {
					s.metrics.agentConns.WithLabelValues("store_error").Inc()
					return nil, err
				}
			}
			switch reg.Type {
			case "", wire.TunnelHTTP:
			case wire.TunnelTCP:
				if access != nil && access.user != "" {
					s.metrics.agentConns.WithLabelValues("bad_access").Inc()
					return nil, &tunnel.RegisterError{Code: wire.CodeBadAccess, Message: "basic auth does not apply to TCP tunnels (there is no HTTP request to ask it of); use allowed networks"}
				}
				if tcp, err = s.listenTCP(reg, name, owner, reserved, g.Logger); err != nil {
					return nil, err
				}
				g.PublicURL = tcp.url
			case wire.TunnelUDP:
				if access != nil && access.user != "" {
					s.metrics.agentConns.WithLabelValues("bad_access").Inc()
					return nil, &tunnel.RegisterError{Code: wire.CodeBadAccess, Message: "basic auth does not apply to UDP tunnels (there is no HTTP request to ask it of); use allowed networks"}
				}
				if udp, err = s.listenUDP(reg, name, reserved, g.Logger); err != nil {
					return nil, err
				}
				g.PublicURL = udp.url
			default:
				s.metrics.agentConns.WithLabelValues("bad_register").Inc()
				return nil, &tunnel.RegisterError{Code: wire.CodeBadRegister, Message: fmt.Sprintf("tunnel_type %q is not %q, %q or %q", reg.Type, wire.TunnelHTTP, wire.TunnelTCP, wire.TunnelUDP)}
			}
			g.Attach = func(session tunnel.Session) error {
				var p *proxy
				if tcp == nil && udp == nil {
					p = s.newProxy(name, session)
				}
				// The cluster's routing table first: another edge may
				// hold the name for another token.
				cl, err := s.clusterHold(r.Context(), name, reg.Token, owner)
				if err != nil {
					s.metrics.agentConns.WithLabelValues("name_taken").Inc()
					return &tunnel.RegisterError{Code: wire.CodeTunnelTaken, Message: fmt.Sprintf("tunnel %q is online at another edge of this cluster with another token", name)}
				}
				o, res := s.registry.claim(name, reg.Token, owner, mark, session, p, access)
				if res != claimed {
					s.clusterRelease(cl)
				}
				switch res {
				case claimTaken:
					s.metrics.agentConns.WithLabelValues("name_taken").Inc()
					return &tunnel.RegisterError{Code: wire.CodeTunnelTaken, Message: fmt.Sprintf("tunnel %q is already online with another token", name)}
				case claimReserved:
					s.metrics.agentConns.WithLabelValues("name_taken").Inc()
					return &tunnel.RegisterError{Code: wire.CodeTunnelTaken, Message: fmt.Sprintf("tunnel %q is taken: its agent, with another token, left less than %v ago and may reconnect", name, s.cfg.OfflineMemory)}
				case claimDecided:
					s.metrics.agentConns.WithLabelValues("decided").Inc()
					return &tunnel.RegisterError{Code: wire.CodeInternal, Message: fmt.Sprintf("an operator changed tunnel %q during the registration; register again", name)}
				}
				attached, old, claim = session, o, cl
				if tcp != nil {
					// The port's new connections go to this session from
					// now on, before registered goes out: a reconnect that
					// took the port over leaves no moment where they reach
					// the session it replaced (refused there).
					tcp.serve(session)
				}
				if old == nil {
					s.metrics.tunnelsOnline.Inc()
				} else {
					s.retireReplaced(old, name)
				}
				return nil
			}
			return g, nil
		},
	})
	done() // authenticated or refused: no longer pending
	if err != nil {
		var re *tunnel.RegisterError
		switch {
		case errors.As(err, &re):
			if re.Code == wire.CodeBadRegister {
				s.metrics.agentConns.WithLabelValues("bad_register").Inc()
				s.cfg.Session.LogLimiter.Log(log, slog.LevelWarn, "handshake:bad_register", "agent rejected", "err", err)
			}
		case attached != nil:
			// registered could not be sent after the session was
			// routable: take it back.
			if s.registry.release(name, attached) {
				s.metrics.tunnelsOnline.Dec()
			}
			s.clusterRelease(claim)
		}
		return
	}
	s.metrics.agentConns.WithLabelValues("ok").Inc()
	log.Info("agent connected", "tunnel", name, "protocol", session.Protocol(), "features", features, "replaced", old != nil)
	if tcp != nil {
		log.Info("tcp tunnel listening", "tunnel", name, "url", tcp.url)
	}
	if udp != nil {
		log.Info("udp tunnel listening", "tunnel", name, "url", udp.url)
		udp.serve(session)
	}

	err = session.Run(s.ctx)
	if s.registry.release(name, session) {
		s.metrics.tunnelsOnline.Dec()
	}
	s.clusterRelease(claim) // unless a newer session of this edge holds the name
	log.Info("agent disconnected", "tunnel", name, "err", err)
}

// handshakeLimit bounds the agent handshakes in progress (upgraded, not yet
// registered or refused) per client address, so that one address cannot
// hold many unauthenticated connections (issue 11). One mutex owns the
// counts; an address's entry goes when its count is back to zero.
type handshakeLimit struct {
	max     int
	mu      sync.Mutex
	pending map[string]int
}

// acquire counts one handshake from remoteAddr (host:port); ok is false
// when the address has max pending already. release must be called once.
func (l *handshakeLimit) acquire(remoteAddr string) (release func(), ok bool) {
	ip, _, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		ip = remoteAddr
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.pending[ip] >= l.max {
		return nil, false
	}
	if l.pending == nil {
		l.pending = make(map[string]int)
	}
	l.pending[ip]++
	return func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		if l.pending[ip]--; l.pending[ip] <= 0 {
			delete(l.pending, ip)
		}
	}, true
}

// retireReplaced lets go of the session that a new one (with the same
// token, or the token the store gives the name to) replaced: new requests go to the new session at once; the old agent is
// told, so that it does not take the name back, and its requests in flight
// may finish (for a while) before its session closes. The new session
// never waits for any of this.
func (s *Server) retireReplaced(old tunnel.Session, name string) {
	s.agents.Add(1)
	go func() {
		defer s.agents.Done()
		ctx, cancel := context.WithTimeout(s.ctx, replacedGrace)
		defer cancel()
		old.Retire(ctx, wire.CodeTunnelReplaced, fmt.Sprintf("another agent registered tunnel %q (with the same token, or the token it belongs to)", name))
	}()
}

// authorize decides on an agent's registration: a valid name and a valid
// credential for it; owner says that the store gives the name to this
// credential. (Whether the name is free is decided when the session is
// attached to it.)
func (s *Server) authorize(ctx context.Context, reg *tunnel.Registration) (g *tunnel.Grant, owner bool, err error) {
	log := s.cfg.Logger.With("remote", reg.Request.RemoteAddr)
	name := strings.ToLower(reg.TunnelID)
	if !ValidName(name) {
		s.metrics.agentConns.WithLabelValues("bad_name").Inc()
		return nil, false, &tunnel.RegisterError{Code: wire.CodeInvalidTunnelID, Message: fmt.Sprintf("tunnel_id %q is not a DNS label (a-z, 0-9 and '-', 1 to 63 long)", reg.TunnelID)}
	}
	owner, stored, err := s.authAgent(ctx, reg.Token, name, reg.Request.UserAgent())
	if err == nil && owner {
		if err := storedType(reg, stored); err != nil {
			s.metrics.agentConns.WithLabelValues("bad_register").Inc()
			return nil, false, err
		}
	}
	if err != nil {
		var re *tunnel.RegisterError
		if errors.As(err, &re) {
			s.metrics.agentConns.WithLabelValues("bad_token").Inc()
			s.cfg.Session.LogLimiter.Log(log, slog.LevelWarn, "handshake:"+re.Code, "agent rejected", "tunnel", name, "code", re.Code)
		} else {
			s.metrics.agentConns.WithLabelValues("store_error").Inc()
		}
		return nil, false, err
	}
	return &tunnel.Grant{TunnelID: name, PublicURL: s.PublicURL(name), Logger: log.With("tunnel", name)}, owner, nil
}

// storedType checks a registration of a stored tunnel against the stored
// type, and gives a tcp or udp tunnel its stored port (when it has one).
func storedType(reg *tunnel.Registration, stored store.Tunnel) error {
	typ := cmp.Or(reg.Type, wire.TunnelHTTP)
	if want := cmp.Or(stored.Type, wire.TunnelHTTP); typ != want {
		return &tunnel.RegisterError{Code: wire.CodeBadRegister, Message: fmt.Sprintf("tunnel %q is stored as a tunnel of type %s, not %s", stored.Name, want, typ)}
	}
	if typ != wire.TunnelHTTP && stored.RemotePort != 0 {
		if reg.RemotePort != 0 && reg.RemotePort != stored.RemotePort {
			return &tunnel.RegisterError{Code: wire.CodePortUnavailable, Message: fmt.Sprintf("tunnel %q is stored with port %d, not %d", stored.Name, stored.RemotePort, reg.RemotePort)}
		}
		reg.RemotePort = stored.RemotePort
	}
	return nil
}

func (s *Server) validToken(token string) bool {
	ok := 0
	for _, t := range s.cfg.Tokens {
		ok |= subtle.ConstantTimeCompare([]byte(t), []byte(token))
	}
	return ok == 1
}

// authAgent checks an agent's credential for tunnel name: one of the
// edge's --token values, or an agent token of the store. A tunnel kept in
// the store belongs to its token alone (owner is then true). It returns a
// *tunnel.RegisterError to refuse, or another error when the store failed
// (the agent is then told to retry later, never that its token is wrong).
//
// With a store token, the agent's connection is recorded in the store
// (version from its User-Agent, this edge's name).
func (s *Server) authAgent(ctx context.Context, token, name, userAgent string) (owner bool, stored store.Tunnel, err error) {
	refuse := func(code, msg string) error { return &tunnel.RegisterError{Code: code, Message: msg} }
	// storedOwner returns the stored tunnel's token, "" if none is stored
	// (and keeps the stored tunnel in stored).
	storedOwner := func() (string, error) {
		t, err := s.cfg.Store.Tunnel(ctx, name)
		switch {
		case errors.Is(err, store.ErrNotFound):
			return "", nil
		case err != nil:
			return "", fmt.Errorf("edge: look up tunnel %q: %w", name, err)
		}
		stored = t
		return t.AgentTokenID, nil
	}
	if s.validToken(token) {
		if s.cfg.Store != nil {
			if id, err := storedOwner(); err != nil {
				return false, stored, err
			} else if id != "" {
				return false, stored, refuse(wire.CodeTunnelTaken, fmt.Sprintf("tunnel %q belongs to another agent token", name))
			}
		}
		return false, stored, nil
	}
	if s.cfg.Store == nil || token == "" {
		return false, stored, refuse(wire.CodeUnauthorized, "wrong agent token")
	}
	tok, err := s.cfg.Store.Authenticate(ctx, token)
	switch {
	case errors.Is(err, store.ErrRevoked):
		return false, stored, refuse(wire.CodeTokenRevoked, "this agent token was revoked")
	case errors.Is(err, store.ErrNotFound) || err == nil && tok.Kind != store.KindAgent:
		return false, stored, refuse(wire.CodeUnauthorized, "wrong agent token")
	case err != nil:
		return false, stored, fmt.Errorf("edge: authenticate an agent: %w", err)
	}
	id, err := storedOwner()
	if err != nil {
		return false, stored, err
	} else if id != "" && id != tok.ID {
		return false, stored, refuse(wire.CodeTunnelTaken, fmt.Sprintf("tunnel %q belongs to another agent token", name))
	}
	if err := s.cfg.Store.SeenAgent(ctx, store.Agent{TokenID: tok.ID, Version: userAgent, LastSeen: time.Now(), Edge: s.cfg.EdgeName}); err != nil {
		s.cfg.Logger.Warn("recording the agent in the store failed", "err", err)
	}
	return id != "", stored, nil
}
