package edge

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/sluicehq/sluice/api"
	"github.com/sluicehq/sluice/store"
	"github.com/sluicehq/sluice/wire"
)

// Fan-out between the edges of a cluster (cluster.Publish, Redis
// pub/sub): what one edge decides or changes through its API reaches the
// agents and caches of every edge. Each change is applied here first, then
// published; the other edges apply it on receipt (clusterHandler), in the
// order it was published. Without a cluster, publishing does nothing.
//
// What a lost message costs: an edge whose subscription broke hears
// Resync when it is back, forgets every cached visitor rule and hostname,
// and sends config_changed to its managed agents (which fetch their
// config again and so learn of deletions and revocations). Replacements
// are also found by the lease renewals (cluster.Handler.Lost).

// The messages (kinds and data).
const (
	msgPush    = "edge.push"    // pushMsg: an event for one managed agent's push channel
	msgNotify  = "edge.notify"  // api.ConfigChanged: config_changed for every managed agent
	msgRetire  = "edge.retire"  // decision: an admin's decision that ends sessions
	msgChanged = "edge.changed" // changedMsg: a stored tunnel changed (visitor rules, hostnames)
)

type pushMsg struct {
	TokenID string          `json:"token_id"`
	Type    string          `json:"type"`
	Data    json.RawMessage `json:"data"`
}

// decision is an admin's decision that ends sessions (retire), in a form
// every edge can apply: the sessions of tunnel Name (with OwnerID: those
// of Name with another token than OwnerID's), or those of the revoked
// token TokenID.
type decision struct {
	Name    string `json:"name,omitempty"`
	OwnerID string `json:"owner_id,omitempty"`
	TokenID string `json:"token_id,omitempty"`
	Code    string `json:"code"`
	Why     string `json:"why"`
}

type changedMsg struct {
	Tunnel string `json:"tunnel"`
}

// publish sends a message to the other edges; a failure is logged: they
// see the change when their caches expire or they resync.
func (s *Server) publish(ctx context.Context, kind string, data any) {
	c := s.cfg.Cluster
	if c == nil {
		return
	}
	if err := c.Publish(ctx, kind, data); err != nil {
		s.cfg.Logger.Warn("cluster: the other edges could not be told of a change; they learn of it when Redis is back", "kind", kind, "err", err)
	}
}

// pushSend sends a push event to the token's managed agent, whichever
// edge it is connected to.
func (s *Server) pushSend(ctx context.Context, tokenID, typ string, data any) {
	s.push.send(tokenID, typ, data)
	if s.cfg.Cluster != nil {
		b, _ := json.Marshal(data)
		s.publish(ctx, msgPush, pushMsg{TokenID: tokenID, Type: typ, Data: b})
	}
}

// decide applies an admin's decision at every edge.
func (s *Server) decide(ctx context.Context, d decision) {
	s.applyDecision(ctx, d)
	s.publish(ctx, msgRetire, d)
}

// applyDecision applies d to this edge's registry (retire).
func (s *Server) applyDecision(ctx context.Context, d decision) {
	switch {
	case d.TokenID != "":
		s.retire(func(_, token string) bool {
			got, err := s.cfg.Store.Authenticate(ctx, token)
			return errors.Is(err, store.ErrRevoked) && got.ID == d.TokenID
		}, d.Code, d.Why)
	case d.OwnerID != "":
		s.retire(func(n, token string) bool {
			if n != d.Name {
				return false
			}
			t, err := s.cfg.Store.Authenticate(ctx, token)
			return err != nil || t.ID != d.OwnerID
		}, d.Code, d.Why)
	default:
		s.retire(func(n, _ string) bool { return n == d.Name }, d.Code, d.Why)
	}
}

// tunnelChanged drops what every edge caches of stored tunnel name: its
// visitor rules, the set of stored names and the map of hostnames.
func (s *Server) tunnelChanged(ctx context.Context, name string) {
	s.access.forget(name)
	s.hosts.changed()
	s.publish(ctx, msgChanged, changedMsg{Tunnel: name})
}

// clusterHandler is what this edge does with the cluster's news
// (cluster.Handler).
type clusterHandler struct{ s *Server }

// Lost: an agent with the same token (or the name's owner) connected to
// another edge, which claimed the name: the session here is let go of as
// a replaced one, and requests for the name go to that edge.
func (h clusterHandler) Lost(name string) {
	s := h.s
	sess := s.registry.drop(name)
	if sess == nil {
		return
	}
	s.metrics.tunnelsOnline.Dec()
	s.clusterM.lost.Inc()
	s.retireReplaced(sess, name)
}

func (h clusterHandler) Message(kind string, data []byte) {
	s := h.s
	ctx, cancel := context.WithTimeout(s.ctx, 10*time.Second)
	defer cancel()
	switch kind {
	case msgPush:
		var m pushMsg
		if json.Unmarshal(data, &m) == nil {
			s.push.send(m.TokenID, m.Type, m.Data)
		}
	case msgNotify:
		var m api.ConfigChanged
		if json.Unmarshal(data, &m) == nil {
			s.push.broadcast(api.EventConfigChanged, m)
		}
	case msgRetire:
		var d decision
		if json.Unmarshal(data, &d) == nil && wire.Final(d.Code) {
			s.applyDecision(ctx, d)
		}
	case msgChanged:
		var m changedMsg
		if json.Unmarshal(data, &m) == nil {
			s.access.forget(m.Tunnel)
			s.hosts.changed()
		}
	default:
		s.cfg.Logger.Debug("cluster: a message of an unknown kind, ignored (an edge of another version?)", "kind", kind)
		return
	}
	s.clusterM.messages.WithLabelValues(kind).Inc()
}

// Resync: messages may have been missed while this edge's subscription
// was broken.
func (h clusterHandler) Resync() {
	s := h.s
	s.access.reset()
	s.hosts.changed()
	s.push.broadcast(api.EventConfigChanged, api.ConfigChanged{Reason: api.ReasonResync, SentAt: time.Now().UnixNano()})
	s.clusterM.messages.WithLabelValues("resync").Inc()
}
