package edge

import (
	"context"
	"errors"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sluicehq/sluice/internal/cluster"
	"github.com/sluicehq/sluice/internal/errpage"
	"github.com/sluicehq/sluice/tunnel"
	"github.com/sluicehq/sluice/wire"
)

// Several edges (Config.Cluster, package internal/cluster): the edge
// claims in the routing table every tunnel whose agent it holds, and a
// public request for a tunnel it does not hold goes to the edge that does,
// over one HTTP/2 connection per peer, streaming as through a tunnel
// (tunnel.Proxy, flushed at once, trailers, upgrades over HTTP/1.1). The owning edge applies the tunnel's visitor rules, with the
// visitor's address that the forwarding edge signed; a signed request is
// served there and never forwarded again. An agent that connects to
// another edge with the same token takes its name there, and this edge
// lets go of its session (clusterHandler.Lost); what an edge's API decides
// reaches the others through Redis pub/sub (fanout.go).

// peerKey is the context key of a forwarded request's cluster.Forwarded
// (set once its signature is verified).
type peerKey struct{}

// routeKey is the context key of the route a request is forwarded along.
type routeKey struct{}

type forwardRoute struct {
	name  string
	route cluster.Route
}

// clusterMetrics are the cluster's series on the edge's registry.
type clusterMetrics struct {
	forwarded     prometheus.Counter
	forwardErrors prometheus.Counter
	received      prometheus.Counter
	refused       prometheus.Counter
	messages      *prometheus.CounterVec
	lost          prometheus.Counter
}

// initCluster readies the forwarding proxy and the cluster's metrics.
func (s *Server) initCluster() {
	c := s.cfg.Cluster
	c.SetHandler(clusterHandler{s})
	m := &clusterMetrics{
		forwarded: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sluice_cluster_forwarded_total", Help: "Public requests for a tunnel held by another edge, forwarded to it.",
		}),
		forwardErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sluice_cluster_forward_errors_total", Help: "Forwarded requests whose edge could not be reached (answered 502).",
		}),
		received: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sluice_cluster_received_total", Help: "Requests forwarded by other edges of the cluster (signed), served here.",
		}),
		refused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sluice_cluster_refused_total", Help: "Requests with a Sluice-Cluster field not signed with the cluster secret (forged or stale), refused with 403.",
		}),
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_cluster_messages_total", Help: "Messages of other edges applied here, by kind (push events, retirements, changes of stored tunnels, resyncs).",
		}, []string{"kind"}),
		lost: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sluice_cluster_lost_total", Help: "Agent sessions let go of because their tunnel was claimed at another edge (an agent with the same token connected there).",
		}),
	}
	degraded := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "sluice_cluster_degraded", Help: "1 while the cluster's routing table (Redis) cannot be reached: the edge serves the tunnels it holds, not the others.",
	}, func() float64 {
		if c.Degraded() {
			return 1
		}
		return 0
	})
	held := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "sluice_cluster_tunnels_held", Help: "Tunnels whose route this edge claims in the cluster's routing table.",
	}, func() float64 { return float64(c.Held()) })
	s.metrics.reg.MustRegister(m.forwarded, m.forwardErrors, m.received, m.refused, m.messages, m.lost, degraded, held)
	s.clusterM = m
	s.forwarder = tunnel.NewProxy(tunnel.Proxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			fr := pr.In.Context().Value(routeKey{}).(forwardRoute)
			// The request goes on as the visitor sent it: the forwarding
			// fields untouched (the owning edge adds the visitor's
			// address, as if it had been reached directly), no Sluice-*
			// field but the signature.
			tunnel.RemoveInternal(pr.Out.Header)
			for _, k := range tunnel.ForwardingHeaders {
				if v := pr.In.Header[k]; v != nil {
					pr.Out.Header[k] = append([]string(nil), v...)
				}
			}
			u, _ := url.Parse(fr.route.URL) // checked by cluster.Config.Validate on its edge
			pr.Out.URL.Scheme, pr.Out.URL.Host = u.Scheme, u.Host
			pr.Out.Host = pr.In.Host
			c.Sign(pr.Out, pr.In.RemoteAddr, pr.In.TLS != nil)
		},
		Transport:    c.Transport(),
		Buffers:      &s.buffers,
		ErrorHandler: s.forwardError,
	}, log.New(slogWriter{s.cfg.Logger}, "", 0))
}

// fromPeer checks the cluster signature of r, if it has one: a signed
// request is returned with the visitor's address as its RemoteAddr, and
// fromPeer true; a request with a bad signature is refused (403) and nil
// returned. Without a cluster the field means nothing, and the tunnel's
// proxy removes it.
func (s *Server) fromPeer(w http.ResponseWriter, r *http.Request) (out *http.Request, fromPeer bool) {
	c := s.cfg.Cluster
	if c == nil || len(r.Header.Values(cluster.Header)) == 0 {
		return r, false
	}
	f, err := c.Verify(r)
	if err != nil {
		s.clusterM.refused.Inc()
		s.cfg.Session.LogLimiter.Log(s.cfg.Logger, slog.LevelWarn, "cluster:bad_signature", "request with a bad cluster signature refused",
			"remote", r.RemoteAddr, "host", r.Host, "err", err)
		errpage.Write(w, r, http.StatusForbidden, wire.CodeBadClusterAuth, "Forbidden",
			"this request carries a "+cluster.Header+" field that no edge of this cluster signed.")
		return nil, false
	}
	s.clusterM.received.Inc()
	r = r.WithContext(context.WithValue(r.Context(), peerKey{}, f))
	r.RemoteAddr = f.RemoteAddr
	return r, true
}

// forwardedTLS reports whether r was forwarded by another edge for a
// visitor who came over TLS.
func forwardedTLS(r *http.Request) bool {
	f, ok := r.Context().Value(peerKey{}).(cluster.Forwarded)
	return ok && f.TLS
}

// forward sends r, a public request for tunnel name that this edge does
// not hold, to the edge that holds it, and reports whether it answered r:
// false when no other live edge holds name (the caller answers as for a
// tunnel of its own).
func (s *Server) forward(w http.ResponseWriter, r *http.Request, name string) bool {
	c := s.cfg.Cluster
	if c == nil {
		return false
	}
	rt, err := c.Lookup(r.Context(), name)
	switch {
	case errors.Is(err, cluster.ErrNoRoute) || err == nil && rt.Edge == c.ID():
		return false
	case err != nil:
		w.Header().Set("Retry-After", "1")
		errpage.Write(w, r, http.StatusServiceUnavailable, wire.CodeClusterUnavailable, "Edge cluster unavailable",
			"this edge cannot tell now which edge of its cluster holds the agent of "+r.Host+"; try again.")
		return true
	}
	done, ok := s.admitStream(w, r)
	if !ok {
		return true
	}
	defer done()
	s.clusterM.forwarded.Inc()
	s.forwarder.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), routeKey{}, forwardRoute{name, rt})))
	return true
}

func (s *Server) forwardError(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, context.Canceled) {
		w.WriteHeader(499) // the client left; nobody reads this answer
		return
	}
	fr := r.Context().Value(routeKey{}).(forwardRoute)
	s.cfg.Cluster.Forget(fr.name)
	s.clusterM.forwardErrors.Inc()
	id := errpage.Write(w, r, http.StatusBadGateway, wire.CodeAgentOffline, "agent offline",
		"the agent of "+r.Host+" is connected to another edge of this cluster, which could not be reached; try again.")
	s.cfg.Logger.Warn("cluster: forwarding failed", "tunnel", fr.name, "edge", fr.route.Edge, "url", fr.route.URL, "request_id", id, "err", err)
}

// clusterHold claims name for this edge in the routing table, for the
// agent with token (owner: the store gives it the name). It fails when
// another edge holds the name for another token.
func (s *Server) clusterHold(ctx context.Context, name, token string, owner bool) (cluster.Claim, error) {
	if s.cfg.Cluster == nil {
		return cluster.Claim{}, nil
	}
	return s.cfg.Cluster.Hold(ctx, name, cluster.Holder{Token: token, Owner: owner})
}

// clusterRelease gives back a claim of clusterHold.
func (s *Server) clusterRelease(cl cluster.Claim) {
	if s.cfg.Cluster != nil {
		s.cfg.Cluster.Release(cl)
	}
}

// runCluster renews this edge's claims while it serves; the function it
// returns stops that and, for a graceful stop, leaves the cluster (the
// sessions have released their names by then).
func (s *Server) runCluster() (stop func(graceful bool)) {
	c := s.cfg.Cluster
	if c == nil {
		return func(bool) {}
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { c.Run(ctx) })
	return func(graceful bool) {
		cancel()
		wg.Wait()
		if graceful {
			if err := c.Leave(context.Background()); err != nil {
				s.cfg.Logger.Debug("cluster: leaving failed; this edge's entries run out with their leases", "err", err)
			}
		}
	}
}

// serveHealth is /healthz: "ok", or with a cluster whose routing table
// cannot be reached, "degraded" (still 200: the edge serves the tunnels it
// holds, and a load balancer should keep sending it their traffic).
func (s *Server) serveHealth(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	c := s.cfg.Cluster
	switch {
	case c == nil:
		io.WriteString(w, "ok\n")
	case c.Degraded():
		io.WriteString(w, "degraded: the cluster's routing table (Redis) cannot be reached; this edge serves the "+
			strconv.Itoa(c.Held())+" tunnels whose agents it holds, not the others\n")
	default:
		io.WriteString(w, "ok\ncluster: edge "+c.ID()+", "+strconv.Itoa(c.Held())+" tunnels held, lease "+c.Lease().String()+"\n")
	}
}
