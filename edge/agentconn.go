package edge

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/gorilla/websocket"
	"github.com/sluicehq/sluice/store"
	"github.com/sluicehq/sluice/tunnel"
	"github.com/sluicehq/sluice/wire"
)

// replacedGrace is how long a replaced session's requests may run on.
const replacedGrace = 30 * time.Second

var upgrader = websocket.Upgrader{
	// 64 KiB buffers: measured here, gorilla/websocket moves 2.5 GB/s of
	// 32 KiB messages with them.
	ReadBufferSize:  64 << 10,
	WriteBufferSize: 64 << 10,
	// Agents are not browsers and authenticate with a token, so the
	// Origin check that protects cookies does not apply.
	CheckOrigin: func(*http.Request) bool { return true },
}

// serveAgent runs the WebSocket of one agent: register, then the session
// until it ends.
func (s *Server) serveAgent(w http.ResponseWriter, r *http.Request) {
	up := upgrader
	if !s.cfg.DisableV2 {
		up.Subprotocols = []string{tunnel.Subprotocol}
	}
	ws, err := up.Upgrade(w, r, nil)
	if err != nil {
		return // Upgrade answered the client already
	}
	v2 := ws.Subprotocol() == tunnel.Subprotocol
	s.agents.Add(1)
	defer s.agents.Done()
	log := s.cfg.Logger.With("remote", r.RemoteAddr)

	reg, err := s.readRegister(ws)
	if err != nil {
		s.metrics.agentConns.WithLabelValues("bad_register").Inc()
		log.Warn("agent rejected", "err", err)
		s.refuse(ws, wire.CodeBadRegister, err.Error())
		return
	}
	name := strings.ToLower(reg.TunnelID)
	if !ValidName(name) {
		s.metrics.agentConns.WithLabelValues("bad_name").Inc()
		s.refuse(ws, wire.CodeInvalidTunnelID, fmt.Sprintf("tunnel_id %q is not a DNS label (a-z, 0-9 and '-', 1 to 63 long)", reg.TunnelID))
		return
	}
	if code, msg := s.authAgent(r.Context(), reg.AgentToken, name, r.UserAgent()); code != "" {
		s.metrics.agentConns.WithLabelValues("bad_token").Inc()
		log.Warn("agent rejected", "tunnel", name, "code", code)
		s.refuse(ws, code, msg)
		return
	}
	var features []string
	for _, f := range reg.Features {
		if wire.HasFeature(wire.Features, f) {
			features = append(features, f)
		}
	}
	cfg := s.cfg.Session
	cfg.Features = features
	cfg.Logger = log.With("tunnel", name)
	cfg.OnFrameError = func(kind string) { s.metrics.frameErrors.WithLabelValues(kind).Inc() }
	var session tunnel.Session
	if v2 {
		session = tunnel.NewMuxSession(ws, cfg)
	} else {
		session = tunnel.NewEdgeSession(ws, cfg)
	}
	old, ok := s.registry.claim(name, reg.AgentToken, session, s.newProxy(name, session))
	if !ok {
		s.metrics.agentConns.WithLabelValues("name_taken").Inc()
		s.refuse(ws, wire.CodeTunnelTaken, fmt.Sprintf("tunnel %q is already online with another token", name))
		return
	}
	if old != nil {
		// Replaced: new requests go to the new session at once. The old
		// agent is told, so that it does not take the name back, and its
		// requests in flight may finish (for a while) before its session
		// closes. The new session never waits for any of this.
		s.agents.Add(1)
		go func() {
			defer s.agents.Done()
			ctx, cancel := context.WithTimeout(s.ctx, replacedGrace)
			defer cancel()
			old.Retire(ctx, wire.CodeTunnelReplaced, fmt.Sprintf("another agent registered tunnel %q with the same token", name))
		}()
	} else {
		s.metrics.tunnelsOnline.Inc()
	}
	// The tunnel is routable from here, but requests wait in RoundTrip
	// until registered has gone out: it is the agent's first frame.
	answer := wire.Frame{Type: wire.TypeRegistered, TunnelID: name, PublicURL: s.PublicURL(name)}
	if reg.Features != nil {
		answer.Features = append([]string{}, features...)
	}
	if err := session.Open(&answer, s.cfg.RegisterTimeout); err != nil {
		if s.registry.release(name, session) {
			s.metrics.tunnelsOnline.Dec()
		}
		session.Close()
		return
	}
	s.metrics.agentConns.WithLabelValues("ok").Inc()
	log.Info("agent connected", "tunnel", name, "protocol", session.Protocol(), "features", features, "replaced", old != nil)

	err = session.Run(s.ctx)
	if s.registry.release(name, session) {
		s.metrics.tunnelsOnline.Dec()
	}
	log.Info("agent disconnected", "tunnel", name, "err", err)
}

// readRegister reads the agent's first frame, which must be register.
func (s *Server) readRegister(ws *websocket.Conn) (*wire.Frame, error) {
	ws.SetReadDeadline(time.Now().Add(s.cfg.RegisterTimeout))
	ws.SetReadLimit(64 << 10)
	typ, msg, err := ws.ReadMessage()
	if err != nil {
		return nil, fmt.Errorf("no register frame: %w", err)
	}
	ws.SetReadDeadline(time.Time{})
	if typ != websocket.TextMessage {
		return nil, errors.New("first message must be a JSON register frame")
	}
	var f wire.Frame
	if err := wire.Decode(msg, &f); err != nil {
		return nil, err
	}
	if f.Type != wire.TypeRegister {
		return nil, fmt.Errorf("first frame must be register, got %q", f.Type)
	}
	return &f, nil
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
// the store belongs to its token alone. It returns the error code and
// message of a refusal, or "" to accept.
//
// With a store token, the agent's connection is recorded in the store
// (version from its User-Agent, this edge's name).
func (s *Server) authAgent(ctx context.Context, token, name, userAgent string) (code, msg string) {
	if s.validToken(token) {
		if s.cfg.Store != nil {
			if t, err := s.cfg.Store.Tunnel(ctx, name); err == nil {
				return wire.CodeTunnelTaken, fmt.Sprintf("tunnel %q belongs to another agent token", t.Name)
			}
		}
		return "", ""
	}
	if s.cfg.Store == nil || token == "" {
		return wire.CodeUnauthorized, "wrong agent token"
	}
	tok, err := s.cfg.Store.Authenticate(ctx, token)
	switch {
	case errors.Is(err, store.ErrRevoked):
		return wire.CodeTokenRevoked, "this agent token was revoked"
	case err != nil || tok.Kind != store.KindAgent:
		return wire.CodeUnauthorized, "wrong agent token"
	}
	if t, err := s.cfg.Store.Tunnel(ctx, name); err == nil && t.AgentTokenID != tok.ID {
		return wire.CodeTunnelTaken, fmt.Sprintf("tunnel %q belongs to another agent token", name)
	}
	if err := s.cfg.Store.SeenAgent(ctx, store.Agent{TokenID: tok.ID, Version: userAgent, LastSeen: time.Now(), Edge: s.cfg.EdgeName}); err != nil {
		s.cfg.Logger.Warn("recording the agent in the store failed", "err", err)
	}
	return "", ""
}

// refuse sends an error frame and closes the connection.
func (s *Server) refuse(ws *websocket.Conn, code, msg string) {
	f := wire.Frame{Type: wire.TypeError, Code: code, Message: msg}
	ws.SetWriteDeadline(time.Now().Add(5 * time.Second))
	ws.WriteMessage(websocket.TextMessage, wire.AppendFrame(nil, &f, wire.EncodeOptions{}))
	ws.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.ClosePolicyViolation, code))
	ws.Close()
}
