package edge

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"sync"
	"time"

	"github.com/sluicehq/sluice/api"
	"github.com/sluicehq/sluice/sse"
	"github.com/sluicehq/sluice/store"
	"github.com/sluicehq/sluice/wire"
)

// The push channel: GET /api/agent/push (bearer agent token) is an SSE
// stream that starts with a ": connected" comment, sends ": keepalive"
// comments while idle, and carries the events of package api
// (config_changed, tunnel_deleted, token_revoked) for the token's agent.
// GET /api/agent/config gives the agent its tunnels and the push URL.

// pushRegistry holds one push connection per agent token. A new connection
// for a token replaces the old one, which is closed without being waited
// for; a connection that ends unregisters itself (unless replaced).
type pushRegistry struct {
	mu    sync.Mutex
	conns map[string]*pushConn
}

type pushConn struct {
	stream *sse.Stream
	cancel context.CancelFunc // ends the connection's handler
}

func newPushRegistry() *pushRegistry { return &pushRegistry{conns: make(map[string]*pushConn)} }

func (p *pushRegistry) register(tokenID string, c *pushConn) {
	p.mu.Lock()
	old := p.conns[tokenID]
	p.conns[tokenID] = c
	p.mu.Unlock()
	if old != nil {
		old.cancel()
	}
}

func (p *pushRegistry) unregister(tokenID string, c *pushConn) {
	p.mu.Lock()
	if p.conns[tokenID] == c {
		delete(p.conns, tokenID)
	}
	p.mu.Unlock()
}

// count is the number of push connections.
func (p *pushRegistry) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

// send queues an event for the token's agent, if it is connected. The
// stream drops a client that lets 1 MiB pile up; it reconnects and fetches
// its config again, so nothing is lost but time.
func (p *pushRegistry) send(tokenID, typ string, data any) {
	p.mu.Lock()
	c := p.conns[tokenID]
	p.mu.Unlock()
	if c == nil {
		return
	}
	b, _ := json.Marshal(data)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c.stream.Send(ctx, sse.Event{Type: typ, Data: string(b)})
}

// broadcast queues an event for every connected agent and returns how
// many it reached.
func (p *pushRegistry) broadcast(typ string, data any) int {
	p.mu.Lock()
	conns := make([]*pushConn, 0, len(p.conns))
	for _, c := range p.conns {
		conns = append(conns, c)
	}
	p.mu.Unlock()
	b, _ := json.Marshal(data)
	enc, err := sse.AppendEvent(nil, sse.Event{Type: typ, Data: string(b)})
	if err != nil {
		return 0
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	n := 0
	for _, c := range conns {
		if c.stream.SendEncoded(ctx, enc) == nil {
			n++
		}
	}
	return n
}

// serveNotify is POST /api/agents/notify (admin): every connected managed
// agent gets config_changed and fetches its config again, as after a
// change made to the store behind the edge's back. The event's data says
// when it was sent (sent_at, Unix nanoseconds).
func (s *Server) serveNotify(w http.ResponseWriter, r *http.Request) {
	sent := time.Now()
	ev := api.ConfigChanged{Reason: api.ReasonNotify, SentAt: sent.UnixNano()}
	n := s.push.broadcast(api.EventConfigChanged, ev)
	s.publish(r.Context(), msgNotify, ev) // the agents of the other edges (not counted in n)
	writeJSON(w, http.StatusOK, api.NotifyResponse{Notified: n, TookMS: float64(time.Since(sent).Microseconds()) / 1000})
}

// agentToken authenticates an agent's bearer token against the store, or
// answers 401 itself.
func (s *Server) agentToken(w http.ResponseWriter, r *http.Request) (store.Token, bool) {
	tok, err := s.cfg.Store.Authenticate(r.Context(), bearer(r))
	switch {
	case bearer(r) == "":
		apiError(w, http.StatusUnauthorized, api.CodeUnauthorized, "an agent token is required: Authorization: Bearer TOKEN")
	case errors.Is(err, store.ErrRevoked):
		apiError(w, http.StatusUnauthorized, api.CodeTokenRevoked, "this agent token was revoked")
	case err != nil || tok.Kind != store.KindAgent:
		apiError(w, http.StatusUnauthorized, api.CodeUnauthorized, "wrong agent token")
	default:
		return tok, true
	}
	return store.Token{}, false
}

// pushURL is the push channel's URL, built from the edge's configured
// domain, scheme and port: never from the request's Host, which a client
// chooses (the agent sends its token there).
func (s *Server) pushURL() string { return s.publicURLOf(s.cfg.Domain) + "/api/agent/push" }

func (s *Server) serveAgentConfig(w http.ResponseWriter, r *http.Request) {
	tok, ok := s.agentToken(w, r)
	if !ok {
		return
	}
	list, err := s.cfg.Store.Tunnels(r.Context(), tok.ID)
	if err != nil {
		storeError(w, err, "tunnels")
		return
	}
	cfg := api.AgentConfig{AgentTokenID: tok.ID, Tunnels: make([]api.AgentTunnel, 0, len(list)), PushURL: s.pushURL(),
		Edge: api.AgentEdge{Domain: s.cfg.Domain}}
	for _, t := range list {
		at := api.AgentTunnel{Name: t.Name, Type: t.Type, Upstream: t.Upstream, RemotePort: t.RemotePort, HostHeader: t.HostHeader,
			Enabled: t.Enabled, Version: t.Version, PublicURL: s.PublicURL(t.Name)}
		if t.Type == wire.TunnelTCP || t.Type == wire.TunnelUDP {
			at.PublicURL = "" // known once the agent has a port
			if t.RemotePort != 0 {
				at.PublicURL = s.portURL(t.Type, t.RemotePort)
			}
		}
		cfg.Tunnels = append(cfg.Tunnels, at)
	}
	writeJSON(w, http.StatusOK, cfg)
}

func (s *Server) serveAgentPush(w http.ResponseWriter, r *http.Request) {
	tok, ok := s.agentToken(w, r)
	if !ok {
		return
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	stop := context.AfterFunc(s.draining, cancel) // the edge shutting down
	defer stop()
	w.Header().Set("Cache-Control", "no-cache, no-transform")
	st, err := sse.NewStream(w, r, sse.StreamConfig{KeepAlive: s.cfg.PushKeepalive, SlowClient: sse.Disconnect, BufferSize: 1 << 20, CloseTimeout: time.Second})
	if err != nil {
		return
	}
	defer st.Close()
	c := &pushConn{stream: st, cancel: cancel}
	// Registered before ": connected" goes out, so that an agent acting on
	// it cannot miss an event sent meanwhile.
	s.push.register(tok.ID, c)
	defer s.push.unregister(tok.ID, c)
	st.Comment(ctx, "connected")
	s.metrics.pushConns.Inc()
	defer s.metrics.pushConns.Dec()
	select {
	case <-ctx.Done():
	case <-st.Done():
	}
}
